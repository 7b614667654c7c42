//! Start-up: the manager refuses to run without its CRDs and says how to install them; its
//! endpoints listen where Go-style flags say.

mod support;

use capms_core::Timestamp;
use capms_fake_apiserver::FakeApiServer;
use capms_operator::cli::parse_bind_address;
use capms_operator::clock::Clock;
use capms_operator::manager;
use capms_operator::metrics::Metrics;
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::sync::Arc;

#[tokio::test(start_paused = true)]
async fn without_the_crds_the_manager_stops_at_once_and_says_how_to_install_them() {
    let api = FakeApiServer::new();
    let clock = Clock::tokio(Timestamp::from_second(1_767_225_600).expect("a valid start"));
    let settings = support::settings(clock);
    let result =
        manager::run(api.client(), None, settings, Arc::new(Metrics::new()), std::future::pending()).await;
    let error = result.expect_err("no CRDs, no start");
    assert!(error.contains("metalstackclusters.infrastructure.cluster.x-k8s.io"), "{error}");
    assert!(error.contains("clusters.cluster.x-k8s.io"), "{error}");
    assert!(error.contains("capms-manager crds | kubectl apply -f -"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
}

/// `--metrics-bind-address :8080` (the default) and the probe address listen on all
/// interfaces of both families, as Go's ":8080" does: a dual-stack pod is scraped and probed
/// over IPv4 and IPv6 alike.
#[test]
fn a_go_style_all_interfaces_address_listens_on_ipv4_and_ipv6() {
    let address = parse_bind_address(":0").expect("parses").expect("not off");
    let listener = manager::bind_listener(address).expect("binds");
    let local = listener.local_addr().expect("an address");
    TcpStream::connect((Ipv4Addr::LOCALHOST, local.port())).expect("reachable over IPv4");
    // Without IPv6 in the sandbox the listener falls back to 0.0.0.0, which is checked above.
    if local.is_ipv6() {
        TcpStream::connect((Ipv6Addr::LOCALHOST, local.port())).expect("reachable over IPv6");
    }
}
