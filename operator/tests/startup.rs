//! Start-up: the manager refuses to run without its CRDs and says how to install them.

mod support;

use capms_core::Timestamp;
use capms_fake_apiserver::FakeApiServer;
use capms_operator::clock::Clock;
use capms_operator::manager;
use capms_operator::metrics::Metrics;
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
