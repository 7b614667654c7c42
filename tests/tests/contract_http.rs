//! The `MetalBackend` contract suite over the wire: `MetalClient` → HTTP on loopback → the
//! simulated metal-api server, every exchange checked against metal-api's spec.

capms_tests::contract_suite!(capms_tests::http::over_http().await);
