//! How to reach metal-api: base URL, timeouts, TLS, credentials, retries.

use capms_core::secret::SecretString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The HMAC user a shared key belongs to. metal-api compares the name case-sensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HmacAuthType {
    /// `Metal-View`: reads only.
    View,
    /// `Metal-Edit`: reads plus allocate and free (what capms needs).
    Edit,
    /// `Metal-Admin`: everything, including tag updates.
    Admin,
}

impl HmacAuthType {
    /// The auth type as sent in the `Authorization` header.
    pub fn as_str(self) -> &'static str {
        match self {
            HmacAuthType::View => "Metal-View",
            HmacAuthType::Edit => "Metal-Edit",
            HmacAuthType::Admin => "Metal-Admin",
        }
    }

    /// Parses `Metal-View`, `Metal-Edit` or `Metal-Admin` (exactly, as the server does).
    pub fn parse(value: &str) -> Option<HmacAuthType> {
        match value {
            "Metal-View" => Some(HmacAuthType::View),
            "Metal-Edit" => Some(HmacAuthType::Edit),
            "Metal-Admin" => Some(HmacAuthType::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for HmacAuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The credentials sent with every request. `Debug` never shows a key or token.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No `Authorization` header (only `/v1/health` and `/v1/version` accept that).
    #[default]
    None,
    /// metal-api's HMAC scheme with a shared key (see the crate docs).
    Hmac { key: SecretString, auth_type: HmacAuthType },
    /// `Authorization: Bearer <token>`: an OIDC token of a provider-tenant user.
    Bearer(SecretString),
}

/// Extra trust for metal-api's TLS certificate. When set, only these certificates are trusted
/// (like a kubeconfig's `certificate-authority`), not the system roots.
#[derive(Clone, PartialEq, Eq)]
pub enum CaBundle {
    /// One or more PEM certificates.
    Pem(Vec<u8>),
    /// A file with one or more PEM certificates, read when the client is created.
    Path(PathBuf),
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaBundle::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
            CaBundle::Path(path) => f.debug_tuple("Path").field(path).finish(),
        }
    }
}

/// Bounded, jittered retries for read operations. Writes are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per read, the first one included; 1 disables retries.
    pub attempts_max: u32,
    /// The delay before the first retry; doubles per retry.
    pub base_backoff: Duration,
    /// The cap of the doubling delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy { attempts_max: 1, ..RetryPolicy::default() }
    }

    /// The delay before retry number `retry` (1 for the first retry): "equal jitter", half of
    /// the capped exponential delay plus a random part of the other half, so that many
    /// reconcilers failing together do not retry in lockstep and no delay is zero.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let doubling = 2u32.saturating_pow(retry.saturating_sub(1));
        let capped = self.base_backoff.saturating_mul(doubling).min(self.max_backoff);
        let half = capped / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = random.checked_rem(half_nanos.saturating_add(1)).unwrap_or(0);
        half.saturating_add(Duration::from_nanos(jitter))
    }
}

/// Everything the client needs to talk to one metal-api.
#[derive(Debug, Clone)]
pub struct MetalConfig {
    /// `scheme://host[:port][/prefix]`; `v1/...` is appended (mini-lab:
    /// `http://api.172.17.0.1.nip.io:8080/metal`).
    pub base_url: String,
    pub auth: Auth,
    /// Time to establish a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time for one whole attempt, from sending to the last byte of the answer.
    pub request_timeout: Duration,
    pub ca_bundle: Option<CaBundle>,
    /// Accept any certificate. Only for labs; logged loudly when the client is created.
    pub insecure_skip_tls_verify: bool,
    pub retry: RetryPolicy,
    /// Honour `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` from the environment.
    pub use_env_proxy: bool,
}

impl MetalConfig {
    /// A configuration with defaults: no auth, 5 s connect, 30 s per attempt, system roots,
    /// three attempts per read.
    pub fn new(base_url: impl Into<String>) -> Self {
        MetalConfig {
            base_url: base_url.into(),
            auth: Auth::None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            ca_bundle: None,
            insecure_skip_tls_verify: false,
            retry: RetryPolicy::default(),
            use_env_proxy: true,
        }
    }

    pub fn with_hmac(mut self, key: SecretString, auth_type: HmacAuthType) -> Self {
        self.auth = Auth::Hmac { key, auth_type };
        self
    }

    pub fn with_bearer(mut self, token: SecretString) -> Self {
        self.auth = Auth::Bearer(token);
        self
    }

    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    pub fn with_ca_bundle(mut self, bundle: CaBundle) -> Self {
        self.ca_bundle = Some(bundle);
        self
    }

    pub fn with_insecure_skip_tls_verify(mut self, insecure: bool) -> Self {
        self.insecure_skip_tls_verify = insecure;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_env_proxy(mut self, use_env_proxy: bool) -> Self {
        self.use_env_proxy = use_env_proxy;
        self
    }
}

/// Why a client could not be created. Never contains a key or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid metal-api base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("cannot read the CA bundle {path:?}: {reason}")]
    CaBundleRead { path: PathBuf, reason: String },
    #[error("invalid CA bundle: {0}")]
    CaBundle(String),
    #[error("the {0} contains characters that cannot be sent in an HTTP header")]
    Credentials(&'static str),
    #[error("cannot create the HTTP client: {0}")]
    Http(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let policy = RetryPolicy {
            attempts_max: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        assert_eq!(policy.backoff(1, 0), Duration::from_millis(50));
        assert_eq!(
            policy.backoff(1, u64::MAX),
            Duration::from_millis(50) + Duration::from_nanos(u64::MAX % 50_000_001)
        );
        assert_eq!(policy.backoff(2, 0), Duration::from_millis(100));
        assert_eq!(policy.backoff(3, 0), Duration::from_millis(150), "capped at 300 ms");
        assert_eq!(policy.backoff(40, 0), Duration::from_millis(150), "no overflow");
        for random in [0, 1, 12_345_678, u64::MAX] {
            let delay = policy.backoff(2, random);
            assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200), "{delay:?}");
        }
        let zero = RetryPolicy { base_backoff: Duration::ZERO, ..policy };
        assert_eq!(zero.backoff(1, 7), Duration::ZERO);
    }

    #[test]
    fn auth_types_are_spelled_like_the_server() {
        for auth_type in [HmacAuthType::View, HmacAuthType::Edit, HmacAuthType::Admin] {
            assert_eq!(HmacAuthType::parse(auth_type.as_str()), Some(auth_type));
        }
        assert_eq!(HmacAuthType::parse("metal-admin"), None, "case-sensitive");
    }
}
