//! capms-operator: `capms-manager`, the kube-rs operator that runs the core reconcilers
//! against a management cluster and metal-api.
//!
//! - [`cli`]: flags and environment (Go-provider compatible);
//! - [`manager`]: start-up checks, endpoints, leader election; [`manager::run`] is what the
//!   binary and the end-to-end tests run;
//! - [`controller`]: the controllers and their watches;
//! - [`gather`] and [`apply`]: a reconcile's inputs from, and its outcome to, the cluster;
//! - [`backend`]: default and per-cluster metal-api backends, metrics and allocation limits
//!   around every call;
//! - [`backoff`]: per-object exponential backoff of failed reconciles;
//! - [`credentials`]: per-cluster credentials Secrets kept until their clusters are gone;
//! - [`metrics`], [`telemetry`]: Prometheus metrics and logging;
//! - [`manifests`]: CRDs and clusterctl artifacts;
//! - [`trace`]: `--record-trace`, the rotating trace file.

pub mod apply;
pub mod backend;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod credentials;
pub mod error;
pub mod gather;
pub mod manager;
pub mod manifests;
pub mod metrics;
pub mod telemetry;
pub mod trace;
