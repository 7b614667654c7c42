//! capms-sim-scenarios: the whole-world simulator.
//!
//! A [`World`] holds the simulated metal-stack datacenter (`capms-backend-sim`), management
//! clusters (a model of the Kubernetes object store, of CAPI core, and capms-manager replicas
//! running the core reconcilers from a work queue), one seeded ChaCha RNG and virtual time.
//! Every step is followed by safety checks that look only at the datacenter and the stores
//! ([`checks`]). The same seed gives the same trace, byte for byte.
//!
//! Scenario files ([`scenario`], `scenarios/*.yaml`) describe a run step by step in YAML.
//!
//! The `capms-sim` binary runs the demo (`capms-sim demo`) and scenario files
//! (`capms-sim run FILE`).

pub mod bench;
pub mod capi;
pub mod checks;
pub mod demo;
pub mod explore;
pub mod operator;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod serve;
pub mod store;
pub mod world;

pub use capi::ClusterPlan;
pub use world::{Until, World};
