//! End-to-end: `capms-manager`'s real controller wiring (`manager::run`) against the fake
//! apiserver and the simulated datacenter, with the test playing CAPI core. Assertions are on
//! final states, never on request order or timing.

mod support;

use capms_core::ProviderId;
use capms_core::api::capi::Cluster;
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use capms_core::metal::Machine as MetalMachine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use support::{Capi, Env, condition_status, is_provisioned, objects};

fn allocated(sim: &capms_backend_sim::Sim) -> Vec<MetalMachine> {
    sim.machines().into_iter().filter(|machine| machine.allocation.is_some()).collect()
}

fn provider_id(object: &Value) -> Option<String> {
    object.pointer("/spec/providerID").and_then(Value::as_str).map(str::to_string)
}

async fn one_plus_two(env: &Env, name: &str) -> Cluster {
    let capi = Capi { env };
    let cluster = capi.create_cluster(name, false, true).await;
    capi.create_machine(&cluster, &format!("{name}-cp-0"), true).await;
    capi.create_machine(&cluster, &format!("{name}-md-0"), false).await;
    capi.create_machine(&cluster, &format!("{name}-md-1"), false).await;
    capi.wait_and_sync_cluster(name).await;
    env.wait("all three MetalStackMachines provisioned", |api| {
        let machines = objects::<MetalStackMachine>(api);
        machines.len() == 3 && machines.iter().all(is_provisioned)
    })
    .await;
    cluster
}

#[tokio::test(start_paused = true)]
async fn a_one_plus_two_cluster_becomes_provisioned_with_provider_ids_addresses_and_conditions() {
    let env = Env::start().await;
    one_plus_two(&env, "alpha").await;

    let machines = objects::<MetalStackMachine>(&env.api);
    let firewalls = objects::<MetalStackFirewall>(&env.api);
    assert_eq!(firewalls.len(), 1, "one firewall for the cluster");
    let allocated = allocated(&env.sim);
    assert_eq!(allocated.len(), 4, "three machines and a firewall in the datacenter");
    for machine in &machines {
        let id = provider_id(machine).expect("every MetalStackMachine has a providerID");
        let parsed = ProviderId::parse(&id).expect("a well-formed providerID");
        assert!(
            allocated.iter().any(|metal| metal.id == parsed.machine_id()),
            "{id} names an allocated machine"
        );
        let addresses =
            machine.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
        assert!(!addresses.is_empty(), "{id} reports addresses");
        assert_eq!(
            condition_status(machine, "Ready").as_deref().map(|s| s.starts_with("True")),
            Some(true),
            "{machine}"
        );
    }
    let metal_cluster = &objects::<MetalStackCluster>(&env.api)[0];
    assert!(is_provisioned(metal_cluster));
    assert!(
        metal_cluster.pointer("/spec/controlPlaneEndpoint/host").is_some(),
        "the control-plane endpoint is written back"
    );
    assert!(metal_cluster.pointer("/spec/nodeNetworkID").is_some(), "the node network is written back");
    let metrics = env.metrics.encode().expect("metrics encode");
    assert!(
        metrics.contains("capms_metal_api_calls_total{operation=\"allocateMachine\",status_class=\"2xx\"}"),
        "{metrics}"
    );
    assert!(
        env.api.events().iter().any(|event| event.regarding_kind == "MetalStackMachine"),
        "events are recorded"
    );
    env.stop().await.expect("the manager stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn deleting_the_cluster_frees_everything_in_the_datacenter() {
    let env = Env::start().await;
    one_plus_two(&env, "beta").await;
    assert!(!allocated(&env.sim).is_empty());

    env.api::<Cluster>().delete("beta", &DeleteParams::background()).await.expect("the Cluster is deleted");
    env.wait("every capms object is gone", |api| {
        objects::<MetalStackMachine>(api).is_empty()
            && objects::<MetalStackCluster>(api).is_empty()
            && objects::<MetalStackFirewall>(api).is_empty()
    })
    .await;
    // IPs are released asynchronously by metal-api after a machine free: give it its time.
    env.idle(Duration::from_secs(600)).await;
    assert!(allocated(&env.sim).is_empty(), "no machine stays allocated: {:?}", allocated(&env.sim));
    let project_networks: Vec<_> = env
        .sim
        .networks()
        .into_iter()
        .filter(|network| network.project_id.as_deref() == Some(support::PROJECT))
        .collect();
    assert!(project_networks.is_empty(), "the node network is freed: {project_networks:?}");
    let project_ips: Vec<_> =
        env.sim.ips().into_iter().filter(|ip| ip.project_id == support::PROJECT).collect();
    assert!(project_ips.is_empty(), "every IP is freed: {project_ips:?}");
    env.stop().await.expect("the manager stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn a_paused_cluster_is_left_alone_until_unpaused() {
    let env = Env::start().await;
    let capi = Capi { env: &env };
    let cluster = capi.create_cluster("gamma", true, false).await;
    capi.create_machine(&cluster, "gamma-md-0", false).await;
    env.idle(Duration::from_secs(30 * 60)).await;
    assert!(allocated(&env.sim).is_empty(), "nothing is allocated for a paused cluster");
    assert!(env.sim.networks().iter().all(|network| network.project_id.as_deref() != Some(support::PROJECT)));
    for object in objects::<MetalStackMachine>(&env.api).iter().chain(&objects::<MetalStackCluster>(&env.api))
    {
        assert!(
            object.pointer("/metadata/finalizers").is_none_or(|f| f == &json!([])),
            "no finalizer while paused: {object}"
        );
    }

    let unpause = json!({"spec": {"paused": false}});
    env.api::<Cluster>()
        .patch("gamma", &PatchParams::default(), &Patch::Merge(&unpause))
        .await
        .expect("unpaused");
    capi.wait_and_sync_cluster("gamma").await;
    env.wait("the machine is provisioned after unpausing", |api| {
        objects::<MetalStackMachine>(api).iter().all(is_provisioned)
    })
    .await;
    env.stop().await.expect("the manager stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn a_machine_freed_outside_capms_gets_its_condition() {
    let env = Env::start().await;
    one_plus_two(&env, "delta").await;
    let machines = objects::<MetalStackMachine>(&env.api);
    let victim = machines
        .iter()
        .find(|m| m.pointer("/metadata/name") == Some(&json!("delta-md-1")))
        .expect("delta-md-1");
    let id = provider_id(victim).expect("a providerID");
    let machine_id = ProviderId::parse(&id).expect("well-formed").machine_id().to_string();
    assert!(env.sim.free_machine_externally(&machine_id));

    env.wait("the freed machine reports MachineFreedExternally", |api| {
        objects::<MetalStackMachine>(api).iter().any(|m| {
            m.pointer("/metadata/name") == Some(&json!("delta-md-1"))
                && serde_json::to_string(m.pointer("/status/conditions").unwrap_or(&Value::Null))
                    .is_ok_and(|conditions| conditions.contains("MachineFreedExternally"))
        })
    })
    .await;
    env.stop().await.expect("the manager stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn a_trace_recorded_by_the_manager_replays_without_divergence() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("capms.trace");
    let env = support::Env::start_recording(&path).await;
    one_plus_two(&env, "traced").await;
    env.stop().await.expect("the manager stops cleanly");
    let text = std::fs::read_to_string(&path).expect("the trace was written");
    let summary = capms_sim_scenarios::replay::replay_text(&text, Default::default())
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(summary.machines > 0 && summary.clusters > 0 && summary.firewalls > 0, "{summary}");
    assert!(summary.backend_calls > 0, "{summary}");
    assert!(!text.contains(support::BOOTSTRAP_SECRET_MARKER), "no user data in the trace");
    assert!(text.contains("fnv1a64:"), "the allocations keep a digest of their user data");
}

/// Someone else's MetalStackFirewall already has the name capms gives the cluster's firewall.
/// capms neither adopts it, waits for it nor deletes it: the cluster's reconcile fails with a
/// clear error until the name is free, then creates its own.
#[tokio::test(start_paused = true)]
async fn a_foreign_object_under_the_firewall_name_is_left_alone_until_it_is_gone() {
    let env = Env::start().await;
    let foreign = MetalStackFirewall {
        metadata: ObjectMeta { name: Some("omega-firewall".to_string()), ..ObjectMeta::default() },
        spec: support::firewall_template().to_firewall_spec(),
        status: None,
    };
    let firewalls = env.api::<MetalStackFirewall>();
    firewalls.create(&PostParams::default(), &foreign).await.expect("the foreign firewall");
    let capi = Capi { env: &env };
    capi.create_cluster("omega", false, true).await;
    env.idle(Duration::from_secs(600)).await;

    let untouched = firewalls.get("omega-firewall").await.expect("the foreign firewall stays");
    assert!(untouched.metadata.owner_references.is_none(), "not adopted: {:?}", untouched.metadata);
    assert!(untouched.metadata.deletion_timestamp.is_none(), "not deleted");
    let metrics = env.metrics.encode().expect("metrics encode");
    assert!(
        metrics.contains("capms_reconcile_errors_total{kind=\"MetalStackCluster\",class=\"invalid\"}"),
        "the cluster reports the taken name:\n{metrics}"
    );
    assert!(
        env.api.events().iter().any(|event| event.reason == "FirewallNameTaken"),
        "a Warning event says why: {:?}",
        env.api.events()
    );

    firewalls.delete("omega-firewall", &DeleteParams::default()).await.expect("deleted by its owner");
    env.wait("the cluster creates its own firewall", |api| {
        objects::<MetalStackFirewall>(api)
            .iter()
            .any(|firewall| firewall.pointer("/metadata/ownerReferences/0/name") == Some(&json!("omega")))
    })
    .await;
    env.stop().await.expect("the manager stops cleanly");
}
