//! An in-process fake Kubernetes apiserver for the operator tests.
//!
//! [`FakeApiServer`] implements `tower::Service<http::Request<kube::client::Body>>`, so
//! `kube::Client::new(server.clone(), "default")` (or [`FakeApiServer::client`]) talks to it
//! without a socket. Typed `kube::Api<K>`, kube-runtime's `watcher`, `Controller` and
//! `events::Recorder` work against it. Objects are kept as `serde_json::Value`.
//!
//! ```no_run
//! # async fn example() -> Result<(), kube::Error> {
//! use capms_fake_apiserver::FakeApiServer;
//! use k8s_openapi::api::core::v1::ConfigMap;
//!
//! let server = FakeApiServer::new();
//! let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(server.client(), "default");
//! let list = configmaps.list(&Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # Faithful
//!
//! - Paths: `/api/v1/...`, `/apis/{group}/{version}/...`, namespaced
//!   (`/namespaces/{ns}/{plural}[/{name}[/status]]`) and all-namespaces list/watch; unknown
//!   resources, wrong scopes and missing objects answer a 404 `NotFound` Status.
//! - Built-in kinds: core/v1 Namespace, Secret, ConfigMap, Event; events.k8s.io/v1 Event;
//!   coordination.k8s.io/v1 Lease; apiextensions.k8s.io/v1 CustomResourceDefinition. Creating
//!   or updating a CRD object serves its versions ([`FakeApiServer::register_crd`] does it
//!   without an object).
//! - resourceVersion is one global counter (strings on the wire). Create sets uid,
//!   creationTimestamp, resourceVersion, generation 1, and supports `generateName`; an existing
//!   name is 409 `AlreadyExists`. Replace with a stale resourceVersion is 409 `Conflict` (custom
//!   resources must send one: 422 otherwise). A resourceVersion inside a patch is a
//!   precondition too. Generation grows when anything outside metadata (and status, when it is
//!   a subresource) changes. A write that changes nothing keeps the version and emits nothing.
//! - Status subresource: `/status` writes change only `.status`; main-resource writes keep
//!   `.status`; create drops `.status`.
//! - Merge patch (RFC 7386) and JSON patch (RFC 6902, up to `max_json_patch_operations`); a
//!   failing operation, `test` included, answers 422 `Invalid` as the apiserver does.
//! - Delete: with finalizers, deletionTimestamp is set and the object stays until a write
//!   removes the last finalizer (then it is removed with a DELETED event); no finalizer may be
//!   added meanwhile (422). Deleting an object being deleted changes nothing. Preconditions
//!   (uid, resourceVersion) are checked; `dryRun=All` is honoured on every write.
//! - List: label selectors (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`),
//!   field selectors, `limit`/`continue` pagination (kube-runtime asks for pages of 500).
//! - Watch: `resourceVersion` (events after it), unset or "0" (current objects as ADDED
//!   first), `sendInitialEvents` (streaming lists, closed by an `initial-events-end`
//!   bookmark), `allowWatchBookmarks` (a BOOKMARK before a timeout closes the stream),
//!   `timeoutSeconds`, selectors (objects entering or leaving a selector are ADDED or DELETED).
//!   A resourceVersion older than the retained history answers one `ERROR` event with a 410
//!   `Expired` Status in a 200 stream, which is what makes kube-runtime's watcher re-list.
//! - `Accept: ...;as=PartialObjectMetadata` (metadata watchers) answers
//!   `PartialObjectMetadata[List]`.
//!
//! # Approximated
//!
//! - Server-side apply: the applied object (JSON only; kube sends JSON) is merged into the
//!   existing one, or creates it. Objects merge key by key; every list is atomic (no list-map
//!   keys). Each apply manager's leaf fields are recorded in `metadata.managedFields`
//!   (`operation: Apply`, `fieldsV1` with `f:` keys only). A field owned by another apply
//!   manager with a different value is a 409 `Conflict` unless `force=true`, which takes it
//!   over; fields a manager stops applying are removed unless another manager owns them. Only
//!   `labels`, `annotations`, `finalizers` and `ownerReferences` of metadata are applied.
//!   Non-apply writes record no manager and never conflict.
//! - Strategic merge patch is a JSON merge patch (lists replaced whole).
//! - Garbage collection: automatic and synchronous: removing an owner deletes (finalizers
//!   respected) dependents left without a live owner in the same request, and strips the
//!   reference from dependents with another live owner. `propagationPolicy=Orphan` strips
//!   references; `Foreground` behaves as `Background`. [`FakeApiServer::collect_garbage`] scans
//!   everything (useful with [`FakeApiServer::set_garbage_collection`]`(false)`).
//! - Field selectors accept any dotted path to a value (the apiserver allows a fixed set).
//! - Versions of one resource share storage and are not converted; `apiVersion` is rewritten.
//! - No admission, validation (OpenAPI schemas, CEL), defaulting, RBAC or namespace lifecycle:
//!   objects may be created in namespaces that do not exist, and deleting a Namespace does not
//!   delete its contents. List `resourceVersion`/`resourceVersionMatch` are ignored (lists are
//!   always current). Deleting a CRD keeps its resources served.
//! - Core/v1 and events.k8s.io/v1 Events are separate stores (the apiserver shares one).
//! - Discovery is the legacy one (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/g/v`), not
//!   aggregated discovery.
//! - Timestamps come from the wall clock; uids and generated names are deterministic
//!   (a counter, and a ChaCha RNG seeded with 0).
//!
//! # Limits
//!
//! Everything is bounded by [`Limits`]: stored objects, retained history, open watches, events
//! queued per watch (a watch that falls behind is closed and its client resumes), request log
//! entries, body size, watch duration and JSON patch operations.
//!
//! # Faults
//!
//! Off by default. [`FakeApiServer::fail_next`] / [`FakeApiServer::fail_randomly`] answer
//! resource requests with an error Status (5xx, 429...), which kube surfaces as
//! `kube::Error::Api`; [`FakeApiServer::drop_watches`] ends every watch stream;
//! [`FakeApiServer::expire_history`] makes the next resume from an old version get 410.
//!
//! Tests wait for the store with [`FakeApiServer::wait_until`], which re-checks a predicate
//! after every committed change, bounded by a number of changes or a tokio timeout.

mod discovery;
mod error;
mod faults;
mod gc;
mod helpers;
mod limits;
mod object;
mod patch;
mod registry;
mod route;
mod selector;
mod server;
mod state;
mod verbs;
mod watch;

pub use error::ApiError;
pub use faults::FaultTarget;
pub use helpers::{RecordedEvent, WaitBound, WaitError};
pub use limits::Limits;
pub use registry::ResourceType;
pub use selector::{FieldSelector, LabelSelector};
pub use server::{FakeApiServer, ResponseBody};
pub use state::RequestRecord;
