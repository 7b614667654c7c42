//! The HTTP client: building it from a [`MetalConfig`], one attempt, bounded retries.

use crate::auth::auth_headers;
use crate::config::{Auth, CaBundle, ConfigError, MetalConfig, RetryPolicy};
use crate::decode::{decode_body, error_from_answer};
use crate::observe::{CallObserver, CallOutcome};
use capms_core::{BackendError, ErrorKind, Operation};
use rand::TryRngCore;
use rand::rngs::OsRng;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest 2xx body accepted (a find over a big partition is a few MB).
const BODY_LENGTH_MAX: usize = 256 * 1024 * 1024;
/// How much of an error body is read; the message is cut far shorter anyway.
const ERROR_BODY_LENGTH_MAX: usize = 64 * 1024;
const JSON: &str = "application/json";

/// The metal-api v1 client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct MetalClient {
    http: reqwest::Client,
    base_url: Url,
    auth: Auth,
    retry: RetryPolicy,
    observer: Option<Arc<dyn CallObserver>>,
}

impl fmt::Debug for MetalClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetalClient")
            .field("base_url", &self.base_url.as_str())
            .field("auth", &self.auth)
            .field("retry", &self.retry)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// Checks the base URL: http(s), no credentials, no query or fragment.
pub fn parse_base_url(url: &str) -> Result<Url, ConfigError> {
    let invalid = |reason: &str| ConfigError::BaseUrl { url: url.to_string(), reason: reason.to_string() };
    let mut parsed = Url::parse(url).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // They would end up in logs and errors; credentials belong in `auth`.
        return Err(ConfigError::BaseUrl {
            url: "<redacted>".to_string(),
            reason: "credentials in the URL are not supported, configure auth instead".to_string(),
        });
    }
    if parsed.cannot_be_a_base() {
        return Err(invalid("not a base URL"));
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

/// `<base>/v1/<segments...>`, whether or not the base has a path prefix or ends with '/'.
/// Segments are percent-encoded, so an id can never change the path.
pub fn endpoint(base: &Url, segments: &[&str]) -> Option<Url> {
    let mut url = base.clone();
    url.path_segments_mut().ok()?.pop_if_empty().push("v1").extend(segments);
    Some(url)
}

fn load_ca_bundle(bundle: &CaBundle) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let pem = match bundle {
        CaBundle::Pem(pem) => pem.clone(),
        CaBundle::Path(path) => std::fs::read(path)
            .map_err(|error| ConfigError::CaBundleRead { path: path.clone(), reason: error.to_string() })?,
    };
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|error| ConfigError::CaBundle(error.to_string()))?;
    if certificates.is_empty() {
        return Err(ConfigError::CaBundle("no PEM certificate found".to_string()));
    }
    Ok(certificates)
}

/// Creates the reqwest client. With the `rustls` feature reqwest uses the process-wide rustls
/// provider if one is installed and aws-lc-rs otherwise: it builds its TLS config from an
/// explicit provider, so creation never panics over an ambiguous default provider.
fn http_client(config: &MetalConfig) -> Result<reqwest::Client, ConfigError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("capms-backend-metal/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        // metal-api never redirects; following one could turn a POST into a GET elsewhere.
        .redirect(reqwest::redirect::Policy::none());
    if !config.use_env_proxy {
        builder = builder.no_proxy();
    }
    if let Some(bundle) = &config.ca_bundle {
        builder = builder.tls_certs_only(load_ca_bundle(bundle)?);
    }
    if config.insecure_skip_tls_verify {
        tracing::warn!(
            base_url = %config.base_url,
            "TLS certificate verification of metal-api is DISABLED (insecure_skip_tls_verify): \
             anyone on the network path can read the HMAC-signed requests and forge answers"
        );
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|error| ConfigError::Http(error.to_string()))
}

/// Checks once that the credentials fit in a header, so that no request fails over it later.
fn check_credentials(auth: &Auth) -> Result<(), ConfigError> {
    let fits = |value: &str| HeaderValue::from_str(value).is_ok();
    match auth {
        Auth::Bearer(token) if !fits(token.expose()) || token.is_empty() => {
            Err(ConfigError::Credentials("bearer token"))
        }
        Auth::Hmac { key, .. } if key.is_empty() => Err(ConfigError::Credentials("HMAC key")),
        _ => Ok(()),
    }
}

/// A random number for backoff jitter. Jitter only spreads retries: without entropy the
/// delay is simply not jittered.
fn jitter_seed() -> u64 {
    OsRng.try_next_u64().unwrap_or(0)
}

/// How one attempt ended before decoding: a status and body, or no answer.
type Answer = Result<(u16, Vec<u8>), BackendError>;

impl MetalClient {
    /// Creates a client. Fails on a bad base URL, CA bundle or credentials; never panics.
    pub fn new(config: MetalConfig) -> Result<MetalClient, ConfigError> {
        let base_url = parse_base_url(&config.base_url)?;
        check_credentials(&config.auth)?;
        let http = http_client(&config)?;
        Ok(MetalClient { http, base_url, auth: config.auth, retry: config.retry, observer: None })
    }

    /// Reports every attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn set_observer(&mut self, observer: Option<Arc<dyn CallObserver>>) {
        self.observer = observer;
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// One operation: reads are retried within the policy on transient failures, writes are
    /// sent exactly once (metal-api has no idempotency key; see the crate docs).
    pub(crate) async fn call<B, W>(
        &self,
        operation: Operation,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<W, BackendError>
    where
        B: Serialize + ?Sized,
        W: DeserializeOwned,
    {
        let url = endpoint(&self.base_url, segments).ok_or_else(|| {
            BackendError::new(ErrorKind::Permanent, operation, "the base URL cannot take a path")
        })?;
        let body = body.map(serde_json::to_vec).transpose().map_err(|error| {
            BackendError::new(ErrorKind::Permanent, operation, format!("cannot encode the request: {error}"))
        })?;
        let attempts = if operation.is_read() { self.retry.attempts_max.max(1) } else { 1 };
        let mut attempt = 1;
        loop {
            let result = self.attempt(operation, &method, &url, body.as_deref()).await;
            match result {
                Err(error) if attempt < attempts && error.kind() == ErrorKind::Transient => {
                    let delay = self.retry.backoff(attempt, jitter_seed());
                    tracing::debug!(%operation, attempt, ?delay, error = %error, "retrying metal-api read");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One HTTP exchange and the decoding of its answer; observed with its latency.
    async fn attempt<W: DeserializeOwned>(
        &self,
        operation: Operation,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<W, BackendError> {
        let started = Instant::now();
        let answer = self.exchange(operation, method, url, body).await;
        let latency = started.elapsed();
        let outcome = match &answer {
            Ok((status, _)) => CallOutcome::of_status(*status),
            Err(_) => CallOutcome::Transport,
        };
        self.report(operation, outcome, latency, url);
        let (status, bytes) = answer?;
        if outcome == CallOutcome::Success {
            decode_body(operation, &bytes)
        } else {
            Err(error_from_answer(operation, status, &bytes))
        }
    }

    fn report(&self, operation: Operation, outcome: CallOutcome, latency: Duration, url: &Url) {
        tracing::debug!(%operation, path = url.path(), %outcome, ?latency, "metal-api call");
        if let Some(observer) = &self.observer {
            observer.observe(operation, outcome, latency);
        }
    }

    /// Sends one request with fresh auth headers and reads the answer.
    async fn exchange(
        &self,
        operation: Operation,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Answer {
        let headers = auth_headers(&self.auth, method.as_str(), jiff::Timestamp::now())
            .map_err(|error| BackendError::new(ErrorKind::Transient, operation, error.to_string()))?;
        let mut request =
            self.http.request(method.clone(), url.clone()).headers(headers).header(ACCEPT, JSON);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, JSON).body(body.to_vec());
        }
        let mut response = request.send().await.map_err(|error| transport_error(operation, &error))?;
        let status = response.status().as_u16();
        let limit = if response.status().is_success() { BODY_LENGTH_MAX } else { ERROR_BODY_LENGTH_MAX };
        let body = read_body(operation, &mut response, limit).await?;
        Ok((status, body))
    }
}

/// Reads at most `limit` bytes: an error body is simply cut there; a success body that long
/// is refused (Permanent: the same request would produce it again).
async fn read_body(
    operation: Operation,
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BackendError> {
    let success = response.status().is_success();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| body_error(operation, &error))? {
        let room = limit.saturating_sub(body.len());
        if chunk.len() > room {
            if success {
                let message = format!("the answer exceeds {limit} bytes");
                return Err(BackendError::new(ErrorKind::Permanent, operation, message));
            }
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Describes a reqwest error without its URL (the operation names the endpoint already; the
/// outermost message is only "error sending request for url (...)") but with the chain of
/// causes, which is where "connection refused" lives.
fn describe(error: &reqwest::Error) -> String {
    let mut parts = vec![error_kind_text(error).to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.retain(|part| !part.is_empty());
    parts.dedup();
    parts.join(": ")
}

fn error_kind_text(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "reading the answer failed"
    } else if error.is_request() {
        "sending the request failed"
    } else {
        "HTTP error"
    }
}

/// No answer arrived. A write whose connection was established may have reached the server:
/// its outcome is unknown. Reads change nothing, so theirs is known.
fn transport_error(operation: Operation, error: &reqwest::Error) -> BackendError {
    let outcome_unknown = !operation.is_read() && !error.is_connect();
    BackendError::transport(operation, describe(error), outcome_unknown)
}

/// The status line arrived but the body broke off: a write was processed.
fn body_error(operation: Operation, error: &reqwest::Error) -> BackendError {
    BackendError::transport(operation, describe(error), !operation.is_read())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(base: &str, segments: &[&str]) -> String {
        let base = parse_base_url(base).expect("valid base");
        endpoint(&base, segments).expect("joins").to_string()
    }

    #[test]
    fn joins_without_prefix() {
        assert_eq!(
            url("http://metal.203.0.113.1.nip.io:8080", &["machine", "m1"]),
            "http://metal.203.0.113.1.nip.io:8080/v1/machine/m1"
        );
        assert_eq!(
            url("http://metal.example:8080/", &["machine", "find"]),
            "http://metal.example:8080/v1/machine/find"
        );
    }

    #[test]
    fn joins_with_prefix_with_and_without_slash() {
        let expected = "http://api.172.17.0.1.nip.io:8080/metal/v1/machine/m1/free";
        assert_eq!(url("http://api.172.17.0.1.nip.io:8080/metal", &["machine", "m1", "free"]), expected);
        assert_eq!(url("http://api.172.17.0.1.nip.io:8080/metal/", &["machine", "m1", "free"]), expected);
        assert_eq!(url("https://h/a/b/?x=1#f", &["partition"]), "https://h/a/b/v1/partition");
    }

    #[test]
    fn ids_cannot_escape_their_segment() {
        assert_eq!(url("http://h/metal", &["ip", "2001:db8::1"]), "http://h/metal/v1/ip/2001:db8::1");
        assert_eq!(url("http://h", &["machine", "../admin?x"]), "http://h/v1/machine/..%2Fadmin%3Fx");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["metal.example:8080", "ftp://h/", "mailto:x@y", "not a url"] {
            assert!(matches!(parse_base_url(bad), Err(ConfigError::BaseUrl { .. })), "{bad}");
        }
        let error = parse_base_url("https://user:hunter2@h/").expect_err("credentials refused");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
