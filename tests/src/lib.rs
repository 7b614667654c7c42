//! Support code for the workspace integration tests in `tests/tests/`.
//!
//! [`contract`] holds the `MetalBackend` contract suite: metal-api's semantics as stories that
//! every backend must pass, instantiated per backend with [`contract_suite!`]; [`http`] runs
//! it over the wire and [`spec`] checks every exchange against metal-api's real spec.

pub mod contract;
pub mod http;
pub mod spec;
