//! capms-operator: `capms-manager`, the kube-rs operator that runs the core reconcilers
//! against a management cluster and metal-api.
//!
//! Not built yet: this crate is a skeleton that the operator issue fills. See ARCHITECTURE.md.
