//! capms-core: what a Cluster API provider for metal-stack knows, free of any I/O.
//!
//! This crate holds the metal-stack domain model ([`metal`]), the [`MetalBackend`] trait that
//! every metal-api implementation satisfies, the error classification that drives backoff
//! ([`BackendError`], [`ErrorKind`]), the tagging rules that make allocations idempotent
//! ([`tags`]) and the providerID format ([`ProviderId`]).
//!
//! Invariants (checked by the `tests` crate and by clippy's `disallowed-*` lints):
//! - no clock: time enters as a [`Timestamp`] value;
//! - no entropy: nothing here draws random numbers;
//! - no hashing order: maps are `BTreeMap`;
//! - no Kubernetes client, no tokio, no HTTP client in the normal dependency tree.

pub mod api;
pub mod backend;
pub mod error;
pub mod glue;
pub mod metal;
pub mod provider_id;
pub mod reconcile;
pub mod secret;
pub mod tags;
pub mod trace;
pub mod wire;

pub use backend::MetalBackend;
pub use error::{BackendError, ErrorKind, Operation};
pub use provider_id::{ProviderId, ProviderIdError};
pub use secret::UserData;

/// A point in time. Core never reads a clock; callers pass the current time in.
pub use jiff::Timestamp;
