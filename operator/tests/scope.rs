//! `--watch-filter`: the manager reconciles only objects carrying
//! `cluster.x-k8s.io/watch-filter=<value>`; everything else is left alone.

mod support;

use capms_core::api::capi::{Cluster, Machine, WATCH_FILTER_LABEL};
use capms_core::api::{MetalStackCluster, MetalStackMachine};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::time::Duration;
use support::{Capi, Env, is_provisioned, management_cluster, objects};

async fn label_all(env: &Env, cluster: &str, machine: &str, value: &str) {
    let patch = json!({"metadata": {"labels": {"cluster.x-k8s.io/watch-filter": value}}});
    let params = PatchParams::default();
    env.api::<Cluster>().patch(cluster, &params, &Patch::Merge(&patch)).await.expect("Cluster labelled");
    env.api::<MetalStackCluster>()
        .patch(cluster, &params, &Patch::Merge(&patch))
        .await
        .expect("MetalStackCluster labelled");
    env.api::<Machine>().patch(machine, &params, &Patch::Merge(&patch)).await.expect("Machine labelled");
    env.api::<MetalStackMachine>()
        .patch(machine, &params, &Patch::Merge(&patch))
        .await
        .expect("MetalStackMachine labelled");
}

#[tokio::test(start_paused = true)]
async fn only_objects_with_the_watch_filter_label_are_reconciled() {
    let env = Env::start_configured(management_cluster(), 8, |settings| {
        settings.scope.watch_filter = Some("team-a".to_string());
    })
    .await;
    let capi = Capi { env: &env };

    let other = capi.create_cluster("other", false, false).await;
    capi.create_machine(&other, "other-md-0", false).await;
    label_all(&env, "other", "other-md-0", "team-b").await;
    let ours = capi.create_cluster("ours", false, false).await;
    capi.create_machine(&ours, "ours-md-0", false).await;
    label_all(&env, "ours", "ours-md-0", "team-a").await;

    capi.wait_and_sync_cluster("ours").await;
    env.wait("the labelled machine is provisioned", |api| {
        objects::<MetalStackMachine>(api).iter().any(|machine| {
            machine.pointer("/metadata/name") == Some(&json!("ours-md-0")) && is_provisioned(machine)
        })
    })
    .await;
    env.idle(Duration::from_secs(15 * 60)).await;
    for object in objects::<MetalStackCluster>(&env.api).iter().chain(&objects::<MetalStackMachine>(&env.api))
    {
        if object.pointer("/metadata/labels").and_then(|labels| labels.get(WATCH_FILTER_LABEL))
            == Some(&json!("team-b"))
        {
            assert!(
                object.get("status").is_none(),
                "an object of another watch filter got a status: {object}"
            );
            assert!(object.pointer("/metadata/finalizers").is_none(), "...or a finalizer: {object}");
        }
    }
    let allocated = env.sim.machines().into_iter().filter(|machine| machine.allocation.is_some()).count();
    assert_eq!(allocated, 1, "only the labelled cluster's machine is allocated");
    env.stop().await.expect("the manager stops cleanly");
}
