//! Cheap and quick refresh of provisioning machines.
//!
//! Polling every machine with a GET (what the Go provider does every 30 s) makes metal-api
//! read calls scale with machines. capms reads a whole cluster with one tag-filtered find and
//! shares the answer among the cluster's machines for a short while, so read calls scale with
//! clusters. Machines look often only when their newest event says `Phoned Home` is near
//! (`Booting New Kernel`), so Ready is seen within seconds without polling everything fast.

use crate::backend::MetalBackend;
use crate::error::BackendError;
use crate::metal::{Machine, MachineQuery, ProvisioningEventKind};
use crate::tags::{self, ObjectRef};
use crate::{ErrorKind, Timestamp};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// How machine state is refreshed while machines provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshPolicy {
    /// One find per cluster, shared by its machines for up to `shared_for`; machines close to
    /// `Phoned Home` look again after `near`, others after `far`; ready machines after `steady`.
    PerCluster { shared_for: Duration, near: Duration, far: Duration, steady: Duration },
    /// The Go provider's way, kept as a baseline for benchmarks: one GET per machine, every
    /// `interval`.
    PerMachine { interval: Duration },
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy::PerCluster {
            shared_for: Duration::from_secs(4),
            near: Duration::from_secs(5),
            far: Duration::from_secs(30),
            steady: Duration::from_secs(60),
        }
    }
}

impl RefreshPolicy {
    /// When a machine with this state should be looked at again.
    pub fn next_look(&self, machine: &Machine) -> Duration {
        match *self {
            RefreshPolicy::PerMachine { interval } => interval,
            RefreshPolicy::PerCluster { near, far, steady, .. } => {
                let latest = machine.last_event().map(|event| &event.event);
                if machine.is_phoned_home() {
                    steady
                } else if latest == Some(&ProvisioningEventKind::BootingNewKernel) {
                    near
                } else {
                    far
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    fetched: Timestamp,
    machines: BTreeMap<String, Machine>,
}

/// Machines of each cluster as last read, shared by the reconciles of the cluster's machines.
/// Holds no lock across a backend call.
#[derive(Debug, Default)]
pub struct MachineCache {
    policy: RefreshPolicy,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl MachineCache {
    pub fn new(policy: RefreshPolicy) -> Self {
        MachineCache { policy, entries: Mutex::new(BTreeMap::new()) }
    }

    pub fn policy(&self) -> RefreshPolicy {
        self.policy
    }

    /// The machine as metal-api reported it recently, or `None` if it does not exist.
    ///
    /// With [`RefreshPolicy::PerCluster`] the answer comes from one find of all machines
    /// tagged with the cluster id, at most `shared_for` old. A machine missing from that find
    /// (freed machines lose their tags) is looked up by id, so a freed or vanished machine is
    /// always recognised.
    pub async fn machine(
        &self,
        backend: &dyn MetalBackend,
        cluster: &ObjectRef,
        project_id: &str,
        machine_id: &str,
        now: Timestamp,
    ) -> Result<Option<Machine>, BackendError> {
        let RefreshPolicy::PerCluster { shared_for, .. } = self.policy else {
            return get(backend, machine_id).await;
        };
        let key = cluster.key();
        match self.lookup(&key, machine_id, now, shared_for) {
            Some(Some(machine)) => return Ok(Some(machine)),
            Some(None) => return get(backend, machine_id).await,
            None => {}
        }
        let query = MachineQuery {
            tags: vec![tags::cluster_id_tag(cluster)],
            allocation_project: Some(project_id.to_string()),
            ..MachineQuery::default()
        };
        let machines = backend.find_machines(&query).await?;
        let entry =
            Entry { fetched: now, machines: machines.into_iter().map(|m| (m.id.clone(), m)).collect() };
        let found = entry.machines.get(machine_id).cloned();
        self.lock().insert(key, entry);
        match found {
            Some(machine) => Ok(Some(machine)),
            None => get(backend, machine_id).await,
        }
    }

    /// Forgets what is known about a cluster (after an allocation or a free changed it).
    pub fn invalidate(&self, cluster: &ObjectRef) {
        self.lock().remove(&cluster.key());
    }

    /// `Some(Some(machine))` when fresh and present, `Some(None)` when fresh and absent,
    /// `None` when stale or unknown.
    fn lookup(
        &self,
        key: &str,
        machine_id: &str,
        now: Timestamp,
        shared_for: Duration,
    ) -> Option<Option<Machine>> {
        let entries = self.lock();
        let entry = entries.get(key)?;
        let age = now.duration_since(entry.fetched);
        let fresh = age >= jiff::SignedDuration::ZERO && age.unsigned_abs() <= shared_for;
        fresh.then(|| entry.machines.get(machine_id).cloned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A poisoned cache only held stale reads; continuing with it is safe.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn get(backend: &dyn MetalBackend, machine_id: &str) -> Result<Option<Machine>, BackendError> {
    match backend.get_machine(machine_id).await {
        Ok(machine) => Ok(Some(machine)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
