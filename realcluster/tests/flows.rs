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

use support::Flow;

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
        support::apply_manifest(&cluster, "prod", &manifest).await?;
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
            support::apply_manifest(&cluster, name, &manifest).await?;
        }
        support::until_running(flow, &mut cluster, "plain", 2).await?;
        support::until_running(flow, &mut cluster, "classy", 2).await?;
        support::delete_cluster(flow, &mut cluster, "plain").await?;
        support::delete_cluster(flow, &mut cluster, "classy").await?;
        support::check_nothing_left(flow, &cluster).await
    })
    .await;
}
