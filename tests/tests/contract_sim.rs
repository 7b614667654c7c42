//! The `MetalBackend` contract suite against the simulated datacenter (`SimBackend`).

capms_tests::contract_suite!(capms_tests::contract::Harness::simulated());
