//! capms-operator: `capms-manager`, the kube-rs operator that runs the core reconcilers
//! against a management cluster and metal-api.
//!
//! - [`cli`]: flags and environment (Go-provider compatible);
//! - [`manager`]: start-up checks, endpoints, leader election; [`manager::run`] is what the
//!   binary and the end-to-end tests run;
//! - [`controller`]: the controllers, the shared reflector stores they read (core's glue
//!   gathers, plans, maps watch events and backs off over them: [`capms_core::glue`]);
//! - [`apply`]: the glue's writes as Kubernetes requests;
//! - [`backend`]: default and per-cluster metal-api backends, metrics and allocation limits
//!   around every call;
//! - [`credentials`]: per-cluster credentials Secrets kept until their clusters are gone;
//! - [`metrics`], [`telemetry`]: Prometheus metrics and logging;
//! - [`manifests`]: CRDs and clusterctl artifacts;
//! - [`trace`]: `--record-trace`, the rotating trace file.

pub mod apply;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod credentials;
pub mod error;
pub mod manager;
pub mod manifests;
pub mod metrics;
pub mod namespace;
pub mod telemetry;
pub mod trace;
