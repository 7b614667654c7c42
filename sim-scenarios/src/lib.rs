//! capms-sim-scenarios: the whole-world simulator (simulated metal-stack, a model of the
//! Kubernetes object store and of CAPI core, the core reconcilers) and the `capms-sim` binary.
//!
//! Not built yet: this crate is a skeleton that the reconcilers issue fills. See
//! ARCHITECTURE.md.
