//! The flows of issue 11 against a real management cluster: real etcd, kube-apiserver,
//! kube-controller-manager, Cluster API v1.14.2 managers and `clusterctl`, capms-manager as its
//! own process under its ServiceAccount, and `capms-sim serve` as metal-api.
//!
//! They need the real parts (`scripts/real-parts`) and capms's binaries, so they are ignored in
//! a plain `cargo test`; `scripts/test` runs them:
//!
//!     cargo test -p capms-realcluster --test flows -- --ignored --test-threads 1
//!
//! A failing flow keeps its folder (kubeconfigs, every process's log) and prints its path.

mod support;

use capms_realcluster::Error;
use capms_realcluster::workload::capms;
use support::{Flow, Workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real parts; scripts/test runs it"]
async fn every_provider_installs_and_its_manager_becomes_ready() {
    Flow::run("install", async |flow| {
        let cluster = flow.management_cluster("install").await?;
        support::inventory_has_every_provider(&cluster).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real parts; scripts/test runs it"]
async fn a_generated_cluster_with_a_firewall_comes_up_and_its_deletion_frees_everything() {
    Flow::run("default flavor", async |flow| {
        let mut cluster = flow.management_cluster("default-flavor").await?;
        let manifest = support::generate_cluster(flow, &cluster, "prod", None, 1).await?;
        cluster.apply_manifest("prod", &manifest).await?;
        support::until_running(flow, &mut cluster, "prod", 2).await?;
        support::delete_and_check_nothing_left(flow, &mut cluster, "prod").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real parts; scripts/test runs it"]
async fn every_cel_rule_of_the_crds_refuses_the_case_it_exists_for() {
    Flow::run("CEL rules", async |flow| {
        let cluster = flow.management_cluster("cel").await?;
        let cases = support::cel::cases();
        let mut covered: Vec<(String, String, String)> =
            cases.iter().map(|case| (case.kind.to_string(), case.path.to_string(), case.message.to_string())).collect();
        covered.sort();
        let installed = support::cel::installed_rules(&cluster).await?;
        if covered != installed {
            return Err(capms_realcluster::Error::Invalid(format!(
                "the cases do not match the CRDs' rules one to one:\n cases: {covered:?}\n rules: {installed:?}"
            )));
        }
        for (index, case) in cases.iter().enumerate() {
            support::cel::check(&cluster, index, case).await?;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real parts; scripts/test runs it"]
async fn clusters_of_the_no_firewall_and_topology_flavors_come_up_side_by_side_and_go_away() {
    Flow::run("flavors", async |flow| {
        let mut cluster = flow.management_cluster("flavors").await?;
        for (name, flavor) in [("plain", "no-firewall"), ("classy", "topology")] {
            let manifest = support::generate_cluster(flow, &cluster, name, Some(flavor), 1).await?;
            cluster.apply_manifest(name, &manifest).await?;
        }
        support::until_running(flow, &mut cluster, "plain", 2).await?;
        support::until_running(flow, &mut cluster, "classy", 2).await?;
        support::delete_cluster(flow, &mut cluster, "plain").await?;
        support::delete_cluster(flow, &mut cluster, "classy").await?;
        support::check_nothing_left(flow, &cluster).await
    })
    .await;
}

/// `clusterctl move` of a running cluster with its own credentials Secret to a second
/// management cluster: nothing is freed or allocated, the Secret comes along, the target's capms
/// takes over, and the cluster deletes cleanly there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real parts; scripts/test runs it"]
async fn clusterctl_move_hands_a_running_cluster_over_without_freeing_or_allocating() {
    Flow::run("move", async |flow| {
        let mut source = flow.management_cluster("source").await?;
        support::create_credentials(flow, &source, "moved-credentials").await?;
        let manifest = support::generate_cluster(flow, &source, "moved", Some("no-firewall"), 1).await?;
        let manifest = support::with_credentials(&manifest, "moved-credentials")?;
        source.apply_manifest("moved", &manifest).await?;
        support::until_running(flow, &mut source, "moved", 2).await?;
        let mut target = flow.management_cluster("target").await?;
        let before = support::datacenter(flow).await?;
        let secret = support::secret_data(&source, "moved-credentials").await?;
        support::clusterctl_move(flow, &source, &target).await?;
        let after = support::datacenter(flow).await?;
        if before != after {
            return Err(Error::Invalid(format!(
                "the move changed the datacenter:\n before {before:?}\n after  {after:?}"
            )));
        }
        if support::secret_data(&target, "moved-credentials").await? != secret {
            return Err(Error::Invalid("the credentials Secret did not come along unchanged".to_string()));
        }
        let left = support::names(&source, &capms("MetalStackCluster", "metalstackclusters")).await?;
        if !left.is_empty() {
            return Err(Error::Invalid(format!("MetalStackClusters left on the source: {left:?}")));
        }
        support::until_running_with(flow, &mut target, "moved", 2, Workload::AsIs).await?;
        if support::datacenter(flow).await? != before {
            return Err(Error::Invalid("the target's take-over changed the datacenter".to_string()));
        }
        support::delete_and_check_nothing_left(flow, &mut target, "moved").await
    })
    .await;
}

/// A MachineHealthCheck on the MachineDeployment: a Node turned NotReady makes Cluster API
/// delete its Machine; capms frees the metal machine and a new one is allocated and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real parts; scripts/test runs it"]
async fn a_machine_health_check_replaces_a_worker_whose_node_is_not_ready() {
    Flow::run("health check", async |flow| {
        let mut cluster = flow.management_cluster("health").await?;
        let manifest = support::generate_cluster(flow, &cluster, "healing", Some("no-firewall"), 1).await?;
        cluster.apply_manifest("healing", &manifest).await?;
        support::until_running(flow, &mut cluster, "healing", 2).await?;
        support::create_node_health_check(&cluster, "healing").await?;
        let [(machine, provider_id)] = &support::workers(&cluster, "healing").await?[..] else {
            return Err(Error::Invalid("expected one worker Machine".to_string()));
        };
        support::node_not_ready(&cluster, machine).await?;
        support::until_replaced(flow, &mut cluster, "healing", machine, provider_id).await?;
        support::until_running(flow, &mut cluster, "healing", 2).await?;
        let replacement = support::workers(&cluster, "healing").await?;
        if replacement.iter().any(|(name, id)| name == machine || id == provider_id) {
            return Err(Error::Invalid(format!("the worker was not replaced: {replacement:?}")));
        }
        support::delete_and_check_nothing_left(flow, &mut cluster, "healing").await
    })
    .await;
}

/// A second MachineHealthCheck, on `InfrastructureReady`: a worker whose machine metal-api
/// reports `Unknown` (it went silent while allocated) is marked by capms, replaced by Cluster
/// API, freed by capms, and the replacement runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real parts; scripts/test runs it"]
async fn a_machine_health_check_replaces_a_worker_whose_machine_metal_api_reports_unknown() {
    Flow::run("liveliness health check", async |flow| {
        let mut cluster = flow.management_cluster("liveliness").await?;
        let manifest = support::generate_cluster(flow, &cluster, "silent", Some("no-firewall"), 1).await?;
        cluster.apply_manifest("silent", &manifest).await?;
        support::until_running(flow, &mut cluster, "silent", 2).await?;
        support::create_infrastructure_health_check(&cluster, "silent").await?;
        let [(machine, provider_id)] = &support::workers(&cluster, "silent").await?[..] else {
            return Err(Error::Invalid("expected one worker Machine".to_string()));
        };
        let metal_id = provider_id.rsplit('/').next().unwrap_or(provider_id);
        flow.metal().kill(metal_id).await?;
        support::until_replaced(flow, &mut cluster, "silent", machine, provider_id).await?;
        support::until_running(flow, &mut cluster, "silent", 2).await?;
        support::delete_and_check_nothing_left(flow, &mut cluster, "silent").await
    })
    .await;
}
