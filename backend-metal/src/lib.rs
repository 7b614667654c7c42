//! capms-backend-metal: the metal-api v1 client that implements
//! [`capms_core::MetalBackend`] against a real metal-stack, over HTTP(S) with reqwest and
//! rustls.
//!
//! ```no_run
//! # use capms_backend_metal::{HmacAuthType, MetalClient, MetalConfig};
//! # use capms_core::secret::SecretString;
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MetalConfig::new("http://api.172.17.0.1.nip.io:8080/metal")
//!     .with_hmac(SecretString::new("metal-edit"), HmacAuthType::Edit);
//! let client = MetalClient::new(config)?;
//! # use capms_core::MetalBackend;
//! let machine = client.get_machine("00000000-0000-0000-0000-000000000001").await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! **One schema.** Bodies are the `capms_core::wire` types, shared with the simulated
//! metal-api, so the client and the simulation cannot drift apart. The base URL may carry a
//! path prefix (`.../metal`); `v1/...` is appended with or without a trailing slash, and ids are
//! percent-encoded path segments.
//!
//! **Authentication** is computed per attempt, never reused:
//! - HMAC (`Metal-View`, `Metal-Edit`, `Metal-Admin`): `X-Date` is the current UTC second as
//!   `YYYY-MM-DDTHH:MM:SSZ`, `X-Data-Salt` 24 random letters from the OS generator, and
//!   `Authorization: <type> <hex HMAC-SHA256(key, X-Date ‖ METHOD ‖ salt)>`. metal-api rejects
//!   dates older than 30 s (view, edit) or 90 s (admin), so a retry signs again; it keeps no
//!   replay cache. Path and body are not signed. See [`hmac_authorization`].
//! - Bearer: `Authorization: Bearer <token>` (an OIDC token of a provider-tenant user).
//!
//! Keys, tokens and user data never reach `Debug`, logs or error messages: they are
//! `SecretString`/`UserData`, header values are marked sensitive, and errors are built from
//! statuses and server messages only.
//!
//! **Retries.** Reads ([`Operation::is_read`](capms_core::Operation::is_read)) are retried a
//! bounded number of times with jittered exponential backoff when the failure is transient
//! (no answer, 5xx, 429, an unreadable 2xx body). Writes (allocate, free) are **never**
//! retried here: metal-api has no idempotency key, so a blind retry after a lost answer
//! allocates a second machine, IP or network. Instead a write that may have reached the server
//! fails with `outcome_unknown` set, and the reconciler looks for the result by its tags before
//! it writes again (adoption, see `capms_core::tags`). Higher-level backoff belongs to the
//! reconcilers, which see the error's [`ErrorKind`](capms_core::ErrorKind).
//!
//! **Errors.** Every non-2xx answer becomes a `BackendError` classified by
//! `capms_core::error::classify` from the status and the server's message, whether the body is
//! metal-api's `{"statuscode","message"}`, a bare JSON string (the tenant check's 403) or a
//! proxy's HTML page (kept as a bounded excerpt). Any 2xx is success (metal-api answers 201 to
//! IP and network allocation). A 2xx body that cannot be decoded is a transient error (reads)
//! or an `outcome_unknown` error (writes); valid JSON the domain cannot represent is permanent
//! for reads. Nothing panics on what the server sends.
//!
//! **TLS** is rustls with the aws-lc-rs provider (the one the operator uses) and the platform
//! verifier. reqwest builds its TLS configuration from the process-wide rustls provider if one
//! is installed and from aws-lc-rs otherwise, so creating a client never panics over provider
//! selection. A custom CA bundle replaces the system roots; `insecure_skip_tls_verify` turns
//! verification off and logs a warning.
//!
//! **Metrics.** A [`CallObserver`] set on the client sees every HTTP attempt with its
//! operation, status class and latency.

mod auth;
mod backend;
mod client;
mod config;
mod decode;
mod observe;

#[cfg(test)]
mod tests;

pub use auth::{SALT_LENGTH, SignError, X_DATA_SALT, X_DATE, hmac_authorization, random_salt, x_date};
pub use client::{MetalClient, endpoint, parse_base_url};
pub use config::{Auth, CaBundle, ConfigError, HmacAuthType, MetalConfig, RetryPolicy};
pub use decode::MESSAGE_LENGTH_MAX;
pub use observe::{CallObserver, CallOutcome};

/// The answer decoding of [`MetalClient`] for the fuzz targets in `fuzz/` (`metal_decode`).
/// Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::decode::{all_to_domain, decode_body, error_from_answer, error_message, to_domain};
}
