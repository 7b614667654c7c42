//! `FakeApiServer`: the handle, and the `tower::Service` that answers kube's requests.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::discovery;
use crate::error::ApiError;
use crate::limits::Limits;
use crate::route::{self, Query, ResourcePath, Route};
use crate::state::{RequestRecord, State};
use crate::verbs::Target;
use crate::watch::{WatchFilter, WatchStart, WatchStream};

/// The response body: a whole JSON document, or a watch stream.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// An in-process fake Kubernetes apiserver. Cheap to clone: clones share one state.
///
/// Use [`FakeApiServer::client`] for a `kube::Client` talking to it.
#[derive(Debug, Clone)]
pub struct FakeApiServer {
    pub(crate) state: Arc<Mutex<State>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

/// What a resource request answers.
enum Reply {
    Json(u16, Value),
    Watch(Box<WatchStream>),
}

impl FakeApiServer {
    /// A fake with the built-in kinds registered and default [`Limits`].
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A fake with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self { state: Arc::new(Mutex::new(State::new(limits))) }
    }

    /// A `kube::Client` (default namespace `default`) whose requests this fake answers.
    /// Must be called inside a tokio runtime (kube's client spawns its buffer worker).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters to a test fake; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn handle(self, request: Request<kube::client::Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let limit = self.lock().limits.max_body_bytes;
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let error = ApiError::new(413, "RequestEntityTooLarge", format!("request body: {error}"));
                return json_response(error.code, &error.to_status());
            }
        };
        match self.respond(&parts, &body) {
            Ok(Reply::Json(code, value)) => json_response(code, &value),
            Ok(Reply::Watch(stream)) => stream_response(*stream),
            Err(error) => json_response(error.code, &error.to_status()),
        }
    }

    fn respond(&self, parts: &http::request::Parts, body: &Bytes) -> Result<Reply, ApiError> {
        let mut state = self.lock();
        let content_type = header(parts, CONTENT_TYPE.as_str());
        state.log(RequestRecord {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: content_type.clone(),
            accept: header(parts, ACCEPT.as_str()),
        });
        tracing::debug!(method = %parts.method, uri = %parts.uri, "fake apiserver request");
        match route::parse(parts.uri.path()) {
            Route::Resource(path) => self.resource_request(&mut state, parts, path, body),
            other => discovery::answer(&state.registry, &other).map(|value| Reply::Json(200, value)),
        }
    }

    fn resource_request(
        &self,
        state: &mut State,
        parts: &http::request::Parts,
        path: ResourcePath,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let query = Query::parse(parts.uri.query().unwrap_or_default());
        let write = !matches!(parts.method, Method::GET | Method::HEAD);
        if let Some(code) = state.faults.next(write) {
            return Err(ApiError::injected(code));
        }
        let target = target(state, parts, path)?;
        let ok = |value| Reply::Json(200, value);
        let dry_run = query.dry_run();
        match (&parts.method, target.name.is_some()) {
            (&Method::GET, true) => state.get(&target).map(ok),
            (&Method::GET, false) if query.flag("watch") => self.watch(state, &target, &query),
            (&Method::GET, false) => state.list(&target, &query).map(ok),
            (&Method::POST, false) => {
                state.create(&target, parse_body(body)?, dry_run, None).map(|value| Reply::Json(201, value))
            }
            (&Method::PUT, true) => state.replace(&target, parse_body(body)?, dry_run).map(ok),
            (&Method::PATCH, true) => {
                let content_type = header(parts, CONTENT_TYPE.as_str()).unwrap_or_default();
                let (code, value) = state.patch(&target, &content_type, body, &query)?;
                Ok(Reply::Json(code, value))
            }
            (&Method::DELETE, true) => {
                let options = if body.is_empty() { json!({}) } else { parse_body(body)? };
                state.delete(&target, &options, &query).map(ok)
            }
            (&Method::DELETE, false) => state.delete_collection(&target, &query).map(ok),
            _ => Err(ApiError::new(405, "MethodNotAllowed", format!("{} is not allowed here", parts.method))),
        }
    }

    fn watch(&self, state: &mut State, target: &Target, query: &Query) -> Result<Reply, ApiError> {
        let start =
            if query.flag("sendInitialEvents") {
                WatchStart::InitialEvents
            } else {
                match query.get("resourceVersion") {
                    None | Some("0") => WatchStart::Current,
                    Some(version) => WatchStart::After(version.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {version:?}"))
                    })?),
                }
            };
        let filter = WatchFilter {
            selection: target.selection(query)?,
            api_version: target.api_version(),
            kind: target.resource.kind.clone(),
            bookmarks: query.flag("allowWatchBookmarks"),
            metadata_only: target.metadata_only,
        };
        let limit = state.limits.max_watch_seconds;
        let seconds = query.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).filter(|s| *s > 0);
        let timeout = Duration::from_secs(seconds.unwrap_or(limit).min(limit));
        let opened = state.open_watch(filter.clone(), start)?;
        Ok(Reply::Watch(Box::new(WatchStream::new(opened, timeout, Arc::clone(&self.state), filter))))
    }
}

/// Resolves the resource, checks scope and subresource.
fn target(state: &State, parts: &http::request::Parts, path: ResourcePath) -> Result<Target, ApiError> {
    let unknown = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let resource =
        state.registry.find(&path.group, &path.version, &path.plural).cloned().ok_or_else(unknown)?;
    let all_namespaces_read = parts.method == Method::GET && path.name.is_none();
    let scope_fits = match (resource.namespaced, &path.namespace) {
        (true, None) => all_namespaces_read,
        (true, Some(_)) => true,
        (false, namespace) => namespace.is_none(),
    };
    let status = match path.subresource.as_deref() {
        None => false,
        Some("status") if resource.status_subresource => true,
        Some(_) => return Err(unknown()),
    };
    if !scope_fits {
        return Err(unknown());
    }
    let metadata_only =
        header(parts, ACCEPT.as_str()).is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    Ok(Target {
        resource,
        version: path.version,
        namespace: path.namespace,
        name: path.name,
        status,
        metadata_only,
    })
}

fn header(parts: &http::request::Parts, name: &str) -> Option<String> {
    parts.headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

fn json_response(code: u16, value: &Value) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(value.to_string())).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn stream_response(stream: WatchStream) -> Response<ResponseBody> {
    let mut response = Response::new(stream.into_body());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl tower::Service<Request<kube::client::Body>> for FakeApiServer {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move { Ok(server.handle(request).await) })
    }
}
