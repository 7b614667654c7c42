//! `--leader-elect`: the manager takes the Lease `capms-manager-leader` before it reconciles,
//! and releases it when it shuts down (a successor starts at once).

mod support;

use capms_core::api::MetalStackMachine;
use capms_operator::manager::LEASE_NAME;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{Capi, Env, is_provisioned, management_cluster, objects};

#[tokio::test(start_paused = true)]
async fn an_elected_manager_holds_the_lease_reconciles_and_releases_it_on_shutdown() {
    let env = Env::start_configured(management_cluster(), 8, |settings| settings.leader_elect = true).await;
    let capi = Capi { env: &env };
    let cluster = capi.create_cluster("lead", false, false).await;
    capi.create_machine(&cluster, "lead-md-0", false).await;
    capi.wait_and_sync_cluster("lead").await;
    env.wait("the machine is provisioned by the leader", |api| {
        objects::<MetalStackMachine>(api).iter().all(is_provisioned)
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "capms-system");
    let lease = leases.get(LEASE_NAME).await.expect("the Lease exists");
    let holder = lease.spec.and_then(|spec| spec.holder_identity).unwrap_or_default();
    assert!(!holder.is_empty(), "the Lease names its holder");
    env.stop().await.expect("the manager stops cleanly");
    let lease = leases.get(LEASE_NAME).await.expect("the Lease still exists");
    let holder = lease.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(holder, None, "the Lease is released on shutdown");
}
