//! `capms-realcluster bench`: capms-manager measured as its own process against a real
//! kube-apiserver, with Cluster API's real managers and `capms-sim serve` as metal-api.
//!
//! One cluster of the default flavor (a firewall, one control-plane machine and N workers) is
//! generated with `clusterctl` and applied, with the workers' `additionalNetworks` removed: the
//! templates give every machine an address on mini-lab's external network, a /25 that runs out
//! after 125 machines, while the node network behind the firewall is a /22; the harness plays the workload cluster (Nodes)
//! until every Machine runs. Then it reads capms-manager's peak resident memory (`VmHWM` of
//! `/proc/<pid>/status`), its own metrics (reconciles by kind, metal-api calls by operation), and
//! kube-apiserver's audit log of capms-manager's service account (completed requests by verb).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{ManagementCluster, Options};
use crate::error::{Error, IoContext, Result};
use crate::workload::{self, capi};
use crate::{Harness, wait};

/// The namespace and name of the benchmarked cluster.
const NAMESPACE: &str = "default";
const NAME: &str = "scale";
/// The manifest label of capms's provider (its process and metrics).
const CAPMS: &str = "infrastructure-metalstack";
/// capms-manager's service account, as the apiserver names the user.
const CAPMS_USER: &str = "system:serviceaccount:capms-system:capms-manager";
/// Machines in the datacenter beyond the cluster's Machines (one is the firewall).
const SPARE_MACHINES: usize = 8;
/// How often the bench looks at the Machines (each look lists all of them).
const POLL: Duration = Duration::from_secs(2);
/// How often it prints progress.
const PROGRESS: Duration = Duration::from_secs(15);
/// How long every Machine may take to run.
const TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What the bench measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Machines of the cluster (control plane and workers).
    pub machines: usize,
    /// From applying the manifest to every Machine running with a Node.
    pub until_running: Duration,
    /// capms-manager's peak resident set (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// capms's reconciles, by kind.
    pub reconciles: BTreeMap<String, u64>,
    /// capms's metal-api calls, by operation.
    pub metal_api_calls: BTreeMap<String, u64>,
    /// capms-manager's completed apiserver requests, by verb.
    pub apiserver_requests: BTreeMap<String, u64>,
}

/// Runs the bench with `workers` workers (files under `dir`, or a temporary folder).
pub async fn run(dir: Option<&Path>, workers: usize) -> Result<Report> {
    let mut harness = Harness::start_with(dir, workers + 1 + SPARE_MACHINES).await?;
    let mut cluster = harness.management_cluster_with("bench", Options { audit: true }).await?;
    let manifest = cluster.generate_cluster(harness.binaries(), NAMESPACE, NAME, None, workers).await?;
    let manifest = workers_on_the_node_network_only(&manifest)?;
    let machines = workers + 1;
    let started = Instant::now();
    cluster.apply_manifest(NAME, &manifest).await?;
    let mut shown = Instant::now();
    loop {
        harness.alive()?;
        cluster.alive()?;
        let state = workload::act(cluster.plane(), NAMESPACE, NAME).await?;
        let running = running(&cluster).await?;
        if running == machines {
            break;
        }
        if shown.elapsed() >= PROGRESS {
            eprintln!(
                "bench: {:>5.0} s: {running} of {machines} Machines run; {state}",
                started.elapsed().as_secs_f64()
            );
            shown = Instant::now();
        }
        if started.elapsed() >= TIMEOUT {
            let seconds = TIMEOUT.as_secs();
            return Err(Error::Timeout { what: format!("{machines} Machines to run"), seconds, state });
        }
        tokio::time::sleep(POLL).await;
    }
    let until_running = started.elapsed();
    let metrics = scrape(&cluster).await?;
    Ok(Report {
        machines,
        until_running,
        peak_rss_kib: peak_rss(&cluster)?,
        reconciles: sum_by(&metrics, "capms_reconciles_total", "kind"),
        metal_api_calls: sum_by(&metrics, "capms_metal_api_calls_total", "operation"),
        apiserver_requests: audited_requests(&cluster.plane().dir().join("audit.log"))?,
    })
}

/// The manifest as a JSON `List`, without `additionalNetworks` in the workers' machine template.
fn workers_on_the_node_network_only(manifest: &str) -> Result<String> {
    let mut documents: Vec<Value> = serde_saphyr::from_multiple(manifest)
        .map_err(|error| Error::Invalid(format!("manifest: {error}")))?;
    documents.retain(|document| !document.is_null());
    let workers = format!("{NAME}-md-0");
    for document in &mut documents {
        let template = document["kind"] == "MetalStackMachineTemplate"
            && document["metadata"]["name"] == workers.as_str();
        if let Some(spec) =
            document.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut).filter(|_| template)
        {
            spec.remove("additionalNetworks");
        }
    }
    Ok(serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": documents }).to_string())
}

async fn running(cluster: &ManagementCluster) -> Result<usize> {
    let machines = workload::list(cluster.plane(), &capi("Machine", "machines"), NAMESPACE, NAME).await?;
    Ok(machines
        .iter()
        .filter(|machine| {
            machine.data.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
                && machine.data.pointer("/status/nodeRef").is_some()
        })
        .count())
}

/// capms-manager's `VmHWM`, KiB.
fn peak_rss(cluster: &ManagementCluster) -> Result<u64> {
    let pid = cluster
        .manager(CAPMS)
        .and_then(|manager| manager.pid())
        .ok_or_else(|| Error::Invalid("capms-manager is not running".to_string()))?;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).io(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::Invalid(format!("no VmHWM in /proc/{pid}/status")))
}

async fn scrape(cluster: &ManagementCluster) -> Result<String> {
    let url = cluster
        .metrics_url(CAPMS)
        .ok_or_else(|| Error::Invalid("capms-manager has no metrics URL".to_string()))?;
    let text = wait::within("capms-manager's metrics", Duration::from_secs(30), async {
        let answer =
            reqwest::get(url).await.map_err(|error| Error::Invalid(format!("GET {url}: {error}")))?;
        answer.text().await.map_err(|error| Error::Invalid(format!("GET {url}: {error}")))
    })
    .await?;
    Ok(text)
}

/// Sums the samples of counter `name` by the value of its label `label` (Prometheus text).
fn sum_by(metrics: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for line in metrics.lines().filter(|line| line.starts_with(&format!("{name}{{"))) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let key = format!("{label}=\"");
        let Some(start) = labels.find(&key).map(|start| start + key.len()) else { continue };
        let group = labels[start..].split('"').next().unwrap_or_default().to_string();
        let value = value.parse::<f64>().unwrap_or(0.0);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "counters are whole and non-negative"
        )]
        let count = value as u64;
        *sums.entry(group).or_insert(0) += count;
    }
    sums
}

/// capms-manager's completed requests in the audit log, by verb.
fn audited_requests(log: &Path) -> Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(log).io(|| format!("read {}", log.display()))?;
    let mut requests = BTreeMap::new();
    for event in text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()) {
        if event.pointer("/user/username").and_then(Value::as_str) != Some(CAPMS_USER) {
            continue;
        }
        let verb = event.get("verb").and_then(Value::as_str).unwrap_or("?").to_string();
        *requests.entry(verb).or_insert(0) += 1;
    }
    Ok(requests)
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let per_machine = |total: u64| total as f64 / self.machines as f64;
        let reconciles: u64 = self.reconciles.values().sum();
        let calls: u64 = self.metal_api_calls.values().sum();
        let requests: u64 = self.apiserver_requests.values().sum();
        let seconds = self.until_running.as_secs_f64();
        writeln!(formatter, "| measure | value |")?;
        writeln!(formatter, "| --- | --- |")?;
        writeln!(formatter, "| Machines (1 control plane + workers) | {} |", self.machines)?;
        writeln!(formatter, "| apply → every Machine Running with a Node | {seconds:.0} s |")?;
        writeln!(
            formatter,
            "| capms-manager peak resident memory (VmHWM) | {:.1} MiB |",
            self.peak_rss_kib as f64 / 1024.0
        )?;
        writeln!(
            formatter,
            "| capms reconciles | {reconciles} ({:.1} per machine, {:.1} per second) |",
            per_machine(reconciles),
            reconciles as f64 / seconds
        )?;
        writeln!(formatter, "| capms reconciles by kind | {} |", join(&self.reconciles))?;
        writeln!(formatter, "| metal-api calls | {calls} ({:.1} per machine) |", per_machine(calls))?;
        writeln!(formatter, "| metal-api calls by operation | {} |", join(&self.metal_api_calls))?;
        writeln!(
            formatter,
            "| capms-manager apiserver requests (completed) | {requests} ({:.1} per machine) |",
            per_machine(requests)
        )?;
        writeln!(formatter, "| apiserver requests by verb | {} |", join(&self.apiserver_requests))
    }
}

fn join(counts: &BTreeMap<String, u64>) -> String {
    counts.iter().map(|(name, count)| format!("{name} {count}")).collect::<Vec<_>>().join(", ")
}
