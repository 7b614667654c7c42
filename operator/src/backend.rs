//! Which `MetalBackend` a reconcile talks to, and what wraps every call: metrics and the
//! per-partition limit on allocations in flight.
//!
//! A MetalStackCluster may name its own credentials (`spec.credentialsRef`, a Secret in its
//! namespace with keys `url`, and `hmac` (+ optional `hmacAuthType`) or `token`; the Go
//! provider's names `METAL_API_URL`, `METAL_API_HMAC`, `METAL_API_HMAC_AUTH_TYPE`,
//! `METAL_API_TOKEN` work too). Otherwise the manager's default backend is used. Clients built
//! from Secrets are cached per Secret and rebuilt when its data changes.

use crate::error::OperatorError;
use crate::metrics::Metrics;
use async_trait::async_trait;
use capms_backend_metal::{ConfigError, HmacAuthType, MetalClient, MetalConfig};
use capms_core::api::MetalStackCluster;
use capms_core::backend::BackendResult;
use capms_core::glue::{CredentialsError, CredentialsProblem};
use capms_core::metal::{FirewallAllocateRequest, MachineAllocateRequest};
use capms_core::secret::SecretString;
use capms_core::{BackendError, MetalBackend, Operation};
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Bounds the machine and firewall allocations in flight per partition, so that a large
/// scale-up does not hit metal-api with hundreds of parallel allocations (metal-api answers
/// those with conflicts and timeouts).
#[derive(Debug, Default)]
pub struct PartitionLimiter {
    in_flight_max: usize,
    partitions: Mutex<BTreeMap<String, Arc<Semaphore>>>,
}

impl PartitionLimiter {
    /// `in_flight_max` 0 means no limit.
    pub fn new(in_flight_max: usize) -> Self {
        PartitionLimiter { in_flight_max, partitions: Mutex::new(BTreeMap::new()) }
    }

    fn semaphore(&self, partition: &str) -> Option<Arc<Semaphore>> {
        if self.in_flight_max == 0 {
            return None;
        }
        let mut partitions = self.partitions.lock().ok()?;
        if !partitions.contains_key(partition) && partitions.len() >= PARTITIONS_MAX {
            // Partition names come from user specs (typos included): drop the idle ones.
            partitions.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
        let semaphore = partitions
            .entry(partition.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.in_flight_max)));
        Some(semaphore.clone())
    }

    /// How many partitions have a semaphore now.
    pub fn partitions_tracked(&self) -> usize {
        self.partitions.lock().map(|partitions| partitions.len()).unwrap_or(0)
    }
}

/// Above this many partitions with a semaphore, those without an allocation in flight are
/// dropped before another is added.
pub const PARTITIONS_MAX: usize = 64;

/// A backend with metrics and the allocation limit around every call.
pub struct Instrumented {
    inner: Arc<dyn MetalBackend>,
    metrics: Arc<Metrics>,
    limiter: Arc<PartitionLimiter>,
}

impl fmt::Debug for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented").finish_non_exhaustive()
    }
}

/// The status class of a call's result, as the metrics label it.
pub fn status_class<T>(result: &BackendResult<T>) -> &'static str {
    match result {
        Ok(_) => "2xx",
        Err(error) => match error.status() {
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "transport",
        },
    }
}

impl Instrumented {
    pub fn new(inner: Arc<dyn MetalBackend>, metrics: Arc<Metrics>, limiter: Arc<PartitionLimiter>) -> Self {
        Instrumented { inner, metrics, limiter }
    }

    fn observe<T>(&self, operation: Operation, started: Instant, result: &BackendResult<T>) {
        self.metrics.metal_api_call(operation.operation_id(), status_class(result), started.elapsed());
    }

    async fn allocation<T>(
        &self,
        kind: &str,
        partition: &str,
        call: impl Future<Output = BackendResult<T>>,
    ) -> BackendResult<T> {
        let permit = match self.limiter.semaphore(partition) {
            Some(semaphore) => semaphore.acquire_owned().await.ok(),
            None => None,
        };
        let result = call.await;
        drop(permit);
        self.metrics.allocation(kind, if result.is_ok() { "allocated" } else { "failed" });
        result
    }
}

/// Which allocations the partition limit holds back: machine and firewall allocations, by
/// partition (what `with_backend_methods!` describes each request with).
struct AllocationScope;

impl AllocationScope {
    fn machine<'a>(&self, request: &'a MachineAllocateRequest) -> Option<(&'static str, &'a str)> {
        Some(("machine", &request.partition_id))
    }
    fn firewall<'a>(&self, request: &'a FirewallAllocateRequest) -> Option<(&'static str, &'a str)> {
        Some(("firewall", &request.machine.partition_id))
    }
    fn id(&self, _: &str) -> Option<(&'static str, &'static str)> {
        None
    }
    fn plain<T>(&self, _: &T) -> Option<(&'static str, &'static str)> {
        None
    }
    fn address_and<T>(&self, _: &str, _: &T) -> Option<(&'static str, &'static str)> {
        None
    }
    fn none(&self) -> Option<(&'static str, &'static str)> {
        None
    }
}

macro_rules! instrumented {
    ($( fn $name:ident($($arg:ident: $type:ty),*) -> $out:ty, $operation:ident, |$scope:ident| $request:expr; )*) => {
        #[async_trait]
        impl MetalBackend for Instrumented {
            $(
                async fn $name(&self $(, $arg: $type)*) -> BackendResult<$out> {
                    let call = async {
                        let started = Instant::now();
                        let result = self.inner.$name($($arg),*).await;
                        self.observe(Operation::$operation, started, &result);
                        result
                    };
                    let $scope = AllocationScope;
                    match $request {
                        Some((kind, partition)) => self.allocation(kind, partition, call).await,
                        None => call.await,
                    }
                }
            )*
        }
    };
}

capms_core::with_backend_methods!(instrumented);

/// The metal-api credentials of a Secret, read leniently from either naming convention.
fn secret_value(secret: &Secret, keys: &[&str]) -> Option<String> {
    let data = secret.data.as_ref();
    let string_data = secret.string_data.as_ref();
    keys.iter().find_map(|key| {
        data.and_then(|data| data.get(*key))
            .map(|value| String::from_utf8_lossy(&value.0).trim().to_string())
            .or_else(|| string_data.and_then(|data| data.get(*key)).map(|value| value.trim().to_string()))
            .filter(|value| !value.is_empty())
    })
}

/// Builds a metal-api client configuration from a credentials Secret; what is wrong with it
/// otherwise, naming keys, never values.
pub fn config_from_secret(secret: &Secret) -> Result<MetalConfig, CredentialsProblem> {
    let url = secret_value(secret, &["url", "METAL_API_URL"]).ok_or(CredentialsProblem::UrlMissing)?;
    let config = MetalConfig::new(url);
    if let Some(token) = secret_value(secret, &["token", "METAL_API_TOKEN"]) {
        return Ok(config.with_bearer(SecretString::new(token)));
    }
    let hmac =
        secret_value(secret, &["hmac", "METAL_API_HMAC"]).ok_or(CredentialsProblem::AuthenticationMissing)?;
    let auth_type = match secret_value(secret, &["hmacAuthType", "METAL_API_HMAC_AUTH_TYPE"]) {
        None => HmacAuthType::Edit,
        Some(value) => HmacAuthType::parse(&value).ok_or_else(|| CredentialsProblem::KeyInvalid {
            key: "hmacAuthType",
            problem: "it must be Metal-View, Metal-Edit or Metal-Admin".to_string(),
        })?,
    };
    Ok(config.with_hmac(SecretString::new(hmac), auth_type))
}

/// What a client configuration that cannot be built means for its Secret.
fn client_problem(error: ConfigError) -> CredentialsProblem {
    match error {
        // The reason never quotes the URL (it says what is wrong with it).
        ConfigError::BaseUrl { reason, .. } => CredentialsProblem::KeyInvalid { key: "url", problem: reason },
        other => CredentialsProblem::Unusable { problem: other.to_string() },
    }
}

/// The backends of the manager: the default one and those of clusters with own credentials.
pub struct Backends {
    default: Option<Arc<dyn MetalBackend>>,
    client: kube::Client,
    metrics: Arc<Metrics>,
    limiter: Arc<PartitionLimiter>,
    per_secret: Mutex<BTreeMap<SecretKey, CachedBackend>>,
}

/// A Secret by namespace and name.
type SecretKey = (String, String);

/// A backend built from a Secret's data (known by its digest), and when it was last handed out.
struct CachedBackend {
    digest: [u8; 32],
    backend: Arc<dyn MetalBackend>,
    used: Instant,
}

/// A client built from a Secret and not used for this long is dropped, at the next lookup of
/// any Secret's client (its Secret may be gone without this manager seeing it: released by
/// another manager or an earlier leader).
pub const CLIENT_IDLE_MAX: Duration = Duration::from_secs(60 * 60);

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backends").field("default", &self.default.is_some()).finish_non_exhaustive()
    }
}

impl Backends {
    /// `default` is wrapped with metrics and the allocation limit here.
    pub fn new(
        default: Option<Arc<dyn MetalBackend>>,
        client: kube::Client,
        metrics: Arc<Metrics>,
        limiter: Arc<PartitionLimiter>,
    ) -> Self {
        let default = default.map(|inner| {
            Arc::new(Instrumented::new(inner, metrics.clone(), limiter.clone())) as Arc<dyn MetalBackend>
        });
        Backends { default, client, metrics, limiter, per_secret: Mutex::new(BTreeMap::new()) }
    }

    /// The backend for objects of `metal_cluster`.
    pub async fn for_cluster(
        &self,
        metal_cluster: Option<&MetalStackCluster>,
    ) -> Result<Arc<dyn MetalBackend>, OperatorError> {
        let secret = match metal_cluster {
            Some(cluster) => self.credentials_secret(cluster).await?,
            None => None,
        };
        self.backend(metal_cluster, secret.as_ref())
    }

    /// The credentials Secret `cluster` names, read live; `None` if it names none.
    pub async fn credentials_secret(
        &self,
        cluster: &MetalStackCluster,
    ) -> Result<Option<Secret>, OperatorError> {
        let Some(reference) = cluster.spec.credentials_ref.as_ref() else { return Ok(None) };
        let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
        let secrets: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), &namespace);
        match secrets.get_opt(&reference.name).await? {
            Some(secret) => Ok(Some(secret)),
            None => Err(credentials_error(cluster, CredentialsProblem::SecretMissing).into()),
        }
    }

    /// The backend for objects of `metal_cluster`, whose credentials Secret (if it names one)
    /// is `secret`: the default backend if it names none.
    pub fn backend(
        &self,
        metal_cluster: Option<&MetalStackCluster>,
        secret: Option<&Secret>,
    ) -> Result<Arc<dyn MetalBackend>, OperatorError> {
        match (metal_cluster, secret) {
            (Some(cluster), Some(secret)) => self.backend_of_secret(cluster, secret),
            _ => self.default.clone().ok_or(OperatorError::NoCredentials),
        }
    }

    /// Drops the client built from the Secret `namespace/name` (no cluster names it any more).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut cache) = self.per_secret.lock() {
            cache.remove(&(namespace.to_string(), name.to_string()));
            self.metrics.credentials_clients.set(gauge_value(cache.len()));
        }
    }

    fn backend_of_secret(
        &self,
        cluster: &MetalStackCluster,
        secret: &Secret,
    ) -> Result<Arc<dyn MetalBackend>, OperatorError> {
        let digest = data_digest(secret);
        let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
        let key = (namespace, secret.metadata.name.clone().unwrap_or_default());
        let failed = |problem| OperatorError::from(credentials_error(cluster, problem));
        let poisoned =
            || CredentialsProblem::Unusable { problem: "the client cache is poisoned".to_string() };
        let mut cache = self.per_secret.lock().map_err(|_| failed(poisoned()))?;
        let now = Instant::now();
        cache.retain(|_, cached| now.duration_since(cached.used) < CLIENT_IDLE_MAX);
        self.metrics.credentials_clients.set(gauge_value(cache.len()));
        if let Some(cached) = cache.get_mut(&key)
            && cached.digest == digest
        {
            cached.used = now;
            return Ok(cached.backend.clone());
        }
        let config = config_from_secret(secret).map_err(failed)?;
        let client = MetalClient::new(config).map_err(|error| failed(client_problem(error)))?;
        let backend: Arc<dyn MetalBackend> =
            Arc::new(Instrumented::new(Arc::new(client), self.metrics.clone(), self.limiter.clone()));
        cache.insert(key, CachedBackend { digest, backend: backend.clone(), used: now });
        self.metrics.credentials_clients.set(gauge_value(cache.len()));
        Ok(backend)
    }
}

/// The error of `cluster`'s credentials Secret.
fn credentials_error(cluster: &MetalStackCluster, problem: CredentialsProblem) -> CredentialsError {
    CredentialsError {
        namespace: cluster.metadata.namespace.clone().unwrap_or_default(),
        secret: cluster
            .spec
            .credentials_ref
            .as_ref()
            .map(|reference| reference.name.clone())
            .unwrap_or_default(),
        cluster: cluster.metadata.name.clone().unwrap_or_default(),
        problem,
    }
}

/// A digest of a Secret's data: the client is rebuilt when the credentials change, not when
/// only the Secret's metadata does (the finalizer and label capms adds, for one).
fn data_digest(secret: &Secret) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // Length-prefixed fields, so that no two different maps give the same bytes; `stringData`
    // too, which `secret_value` falls back to (a real apiserver folds it into `data`).
    let mut field = |bytes: &[u8]| {
        hasher.update(u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes());
        hasher.update(bytes);
    };
    for (key, value) in secret.data.iter().flatten() {
        field(b"data");
        field(key.as_bytes());
        field(&value.0);
    }
    for (key, value) in secret.string_data.iter().flatten() {
        field(b"stringData");
        field(key.as_bytes());
        field(value.as_bytes());
    }
    hasher.finalize().into()
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The class label of a backend error (metrics, conditions).
pub fn error_class(error: &BackendError) -> &'static str {
    error.kind().as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let data = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
            .collect();
        Secret { data: Some(data), ..Secret::default() }
    }

    #[test]
    fn allocations_are_limited_per_partition_and_zero_means_no_limit() {
        let limiter = PartitionLimiter::new(1);
        let first = limiter.semaphore("mini-lab").and_then(|semaphore| semaphore.try_acquire_owned().ok());
        assert!(first.is_some(), "the first allocation in a partition may run");
        let second = limiter.semaphore("mini-lab").and_then(|semaphore| semaphore.try_acquire_owned().ok());
        assert!(second.is_none(), "a second one in the same partition waits");
        let elsewhere = limiter.semaphore("other").and_then(|semaphore| semaphore.try_acquire_owned().ok());
        assert!(elsewhere.is_some(), "another partition is not affected");
        drop(first);
        let after = limiter.semaphore("mini-lab").and_then(|semaphore| semaphore.try_acquire_owned().ok());
        assert!(after.is_some(), "the permit returns when the allocation ends");
        assert!(PartitionLimiter::new(0).semaphore("mini-lab").is_none());
    }

    #[test]
    fn idle_partitions_are_dropped_past_the_limit_and_busy_ones_kept() {
        let limiter = PartitionLimiter::new(1);
        let busy = limiter.semaphore("busy").and_then(|semaphore| semaphore.try_acquire_owned().ok());
        assert!(busy.is_some());
        for index in 0..PARTITIONS_MAX * 2 {
            let _ = limiter.semaphore(&format!("typo-{index}"));
        }
        assert!(limiter.partitions_tracked() <= PARTITIONS_MAX, "{}", limiter.partitions_tracked());
        let again = limiter.semaphore("busy").and_then(|semaphore| semaphore.try_acquire_owned().ok());
        assert!(again.is_none(), "the partition with an allocation in flight kept its semaphore");
    }

    #[test]
    fn only_a_change_of_the_data_changes_the_digest() {
        let mut marked = secret(&[("url", "http://metal/metal"), ("hmac", "k")]);
        let before = data_digest(&marked);
        marked.metadata.finalizers = Some(vec!["capms".to_string()]);
        marked.metadata.resource_version = Some("2".to_string());
        assert_eq!(data_digest(&marked), before, "metadata only");
        let rotated = secret(&[("url", "http://metal/metal"), ("hmac", "k2")]);
        assert_ne!(data_digest(&rotated), before, "a new key");
        // Without length prefixes both would hash as "url" "http://metal/metal" "hmack".
        let shifted = secret(&[("url", "http://metal/metal"), ("hmack", "")]);
        assert_ne!(data_digest(&shifted), before, "keys and values are delimited");
    }

    #[test]
    fn credentials_come_from_either_naming_convention() {
        assert!(config_from_secret(&secret(&[("url", "http://metal/metal"), ("hmac", "k")])).is_ok());
        let go_style = secret(&[
            ("METAL_API_URL", "http://m"),
            ("METAL_API_HMAC", "k"),
            ("METAL_API_HMAC_AUTH_TYPE", "Metal-View"),
        ]);
        assert!(config_from_secret(&go_style).is_ok());
        assert!(config_from_secret(&secret(&[("url", "http://m"), ("token", "t")])).is_ok());
    }

    #[test]
    fn incomplete_credentials_say_what_is_missing() {
        assert_eq!(config_from_secret(&secret(&[("hmac", "k")])).err(), Some(CredentialsProblem::UrlMissing));
        assert_eq!(
            config_from_secret(&secret(&[("url", "http://m")])).err(),
            Some(CredentialsProblem::AuthenticationMissing)
        );
        let wrong_type = secret(&[("url", "http://m"), ("hmac", "k"), ("hmacAuthType", "root")]);
        assert!(matches!(
            config_from_secret(&wrong_type),
            Err(CredentialsProblem::KeyInvalid { key: "hmacAuthType", .. })
        ));
    }

    #[test]
    fn an_invalid_url_names_the_key_not_the_value() {
        let relative = secret(&[("url", "metal-api.internal/metal"), ("hmac", "k")]);
        let problem = config_from_secret(&relative)
            .map_err(|problem| problem.to_string())
            .and_then(|config| MetalClient::new(config).map_err(|error| client_problem(error).to_string()))
            .err()
            .unwrap_or_default();
        assert!(problem.starts_with("has an invalid key url"), "{problem}");
        assert!(!problem.contains("metal-api.internal"), "{problem}");
    }

    #[test]
    fn error_messages_of_secrets_never_contain_the_key() {
        let wrong_type =
            secret(&[("url", "http://m"), ("hmac", "very-secret-key"), ("hmacAuthType", "root")]);
        let error =
            config_from_secret(&wrong_type).err().map(|problem| problem.to_string()).unwrap_or_default();
        assert!(
            !error.is_empty() && !error.contains("very-secret-key") && !error.contains("root"),
            "{error}"
        );
    }
}
