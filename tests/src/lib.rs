//! Support code for the workspace integration tests in `tests/tests/`.
//!
//! [`contract`] holds the `MetalBackend` contract suite: metal-api's semantics as stories that
//! every backend must pass, instantiated per backend with [`contract_suite!`].

pub mod contract;
