//! Cheap and quick refresh of provisioning machines.
//!
//! Polling every machine with a GET (what the Go provider does every 30 s) makes metal-api
//! read calls scale with machines and still sees `Phoned Home` up to 30 s late. capms instead
//! reads a whole cluster with one tag-filtered find, shares the answer among the cluster's
//! machines, and decides when to look again from the machines' own provisioning events:
//! - a machine close to `Phoned Home` (its newest event is `Booting New Kernel`) is looked at
//!   every few seconds, so Ready is seen within seconds;
//! - once one machine has phoned home, the cache knows how long allocation → `Booting New
//!   Kernel` → `Phoned Home` took, and sleeps other machines until shortly before they are due
//!   (the shortest durations seen, so a faster machine is never missed);
//! - a cached answer stays good until the machine's next look was due anyway, so reconciles
//!   triggered by watch events in between cost no metal-api call.

use crate::backend::MetalBackend;
use crate::error::BackendError;
use crate::metal::{Machine, MachineQuery, ProvisioningEventKind};
use crate::tags::{self, ObjectRef};
use crate::{ErrorKind, Timestamp};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// How machine state is refreshed while machines provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshPolicy {
    /// One find per cluster, shared by its machines. A machine near `Phoned Home` looks again
    /// after `near`, one far from it after at most `far` (less once durations are learned),
    /// a ready machine after `steady`. No answer is shared for less than `shared_for`.
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
    /// When a machine with this state should be looked at again, without learned durations.
    pub fn next_look(&self, machine: &Machine) -> Duration {
        self.next_look_learned(machine, Learned::default(), None)
    }

    fn next_look_learned(&self, machine: &Machine, learned: Learned, now: Option<Timestamp>) -> Duration {
        let RefreshPolicy::PerCluster { near, far, steady, .. } = *self else {
            let RefreshPolicy::PerMachine { interval } = *self else { return Duration::ZERO };
            return interval;
        };
        if machine.is_phoned_home() || machine.crash_loop {
            return steady;
        }
        let booting = event_time(machine, &ProvisioningEventKind::BootingNewKernel);
        let latest = machine.last_event().map(|event| &event.event);
        // Past the predicted time of the next step, look every `near` for `Phoned Home` (its
        // moment matters), and every third of `far` for `Booting New Kernel` (which is followed
        // by at least half a minute before `Phoned Home`).
        let (due, fallback, overdue) = if latest == Some(&ProvisioningEventKind::BootingNewKernel) {
            (
                booting.zip(learned.booting_to_phoned_home).and_then(|(at, took)| at.checked_add(took).ok()),
                near,
                near,
            )
        } else {
            let created = machine.allocation.as_ref().map(|a| a.created);
            let due =
                created.zip(learned.allocation_to_booting).and_then(|(at, took)| at.checked_add(took).ok());
            (due, far, (far / 3).max(near))
        };
        match (due, now) {
            (Some(due), Some(now)) => {
                let left = until(now, due);
                if left > near { (left - near).min(far.max(near)) } else { overdue }
            }
            _ => fallback,
        }
    }
}

/// The shortest durations seen between provisioning steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Learned {
    allocation_to_booting: Option<Duration>,
    booting_to_phoned_home: Option<Duration>,
}

impl Learned {
    /// Learns from a machine that phoned home.
    fn observe(&mut self, machine: &Machine) {
        if !machine.is_phoned_home() {
            return;
        }
        let phoned = event_time(machine, &ProvisioningEventKind::PhonedHome);
        let booting = event_time(machine, &ProvisioningEventKind::BootingNewKernel);
        let created = machine.allocation.as_ref().map(|a| a.created);
        if let (Some(booting), Some(phoned)) = (booting, phoned) {
            self.booting_to_phoned_home = shortest(self.booting_to_phoned_home, until(booting, phoned));
        }
        if let (Some(created), Some(booting)) = (created, booting) {
            self.allocation_to_booting = shortest(self.allocation_to_booting, until(created, booting));
        }
    }
}

fn shortest(known: Option<Duration>, seen: Duration) -> Option<Duration> {
    Some(known.map_or(seen, |known| known.min(seen)))
}

/// The time of the newest event of `kind` (events are newest first).
fn event_time(machine: &Machine, kind: &ProvisioningEventKind) -> Option<Timestamp> {
    machine.events.iter().find(|event| &event.event == kind).map(|event| event.time)
}

/// `to - from`, zero if `to` is earlier.
fn until(from: Timestamp, to: Timestamp) -> Duration {
    to.duration_since(from).try_into().unwrap_or(Duration::ZERO)
}

/// A cluster whose machines were not fetched for this long is forgotten (at the next store).
pub const ENTRY_AGE_MAX: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone)]
struct Entry {
    fetched: Timestamp,
    /// Each machine with the time until which its cached state is good enough.
    machines: BTreeMap<String, (Machine, Timestamp)>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    learned: Learned,
}

/// Machines of each cluster as last read, shared by the reconciles of the cluster's machines.
/// Holds no lock across a backend call.
#[derive(Debug, Default)]
pub struct MachineCache {
    policy: RefreshPolicy,
    state: Mutex<State>,
}

impl MachineCache {
    pub fn new(policy: RefreshPolicy) -> Self {
        MachineCache { policy, state: Mutex::new(State::default()) }
    }

    pub fn policy(&self) -> RefreshPolicy {
        self.policy
    }

    /// When to look at this machine again, using what the cache learned: never later than
    /// the moment its cached state stops being good enough, so samples stay evenly spaced even
    /// when a watch event made the reconcile read a cached answer.
    pub fn next_look(&self, machine: &Machine, now: Timestamp) -> Duration {
        let state = self.lock();
        let look = self.policy.next_look_learned(machine, state.learned, Some(now));
        let expires = state
            .entries
            .values()
            .find_map(|entry| entry.machines.get(&machine.id))
            .map(|(_, at)| until(now, *at));
        match expires {
            Some(expires) if !expires.is_zero() && expires < look => expires,
            _ => look,
        }
    }

    /// The machine as metal-api reported it recently enough, or `None` if it does not exist.
    ///
    /// With [`RefreshPolicy::PerCluster`] the answer comes from one find of all machines
    /// tagged with the cluster id. A machine missing from that find (freed machines lose their
    /// tags) is looked up by id, so a freed or vanished machine is always recognised.
    pub async fn machine(
        &self,
        backend: &dyn MetalBackend,
        cluster: &ObjectRef,
        project_id: &str,
        machine_id: &str,
        now: Timestamp,
    ) -> Result<Option<Machine>, BackendError> {
        if let Some(found) = self.cached(cluster, machine_id, now) {
            return Ok(Some(found));
        }
        self.fetch(backend, cluster, project_id, machine_id, now).await
    }

    /// The machine's cached state, if it is still good enough at `now` (no metal-api call).
    /// Always `None` with [`RefreshPolicy::PerMachine`].
    pub fn cached(&self, cluster: &ObjectRef, machine_id: &str, now: Timestamp) -> Option<Machine> {
        match self.policy {
            RefreshPolicy::PerCluster { .. } => self.lookup(&cluster.key(), machine_id, now),
            RefreshPolicy::PerMachine { .. } => None,
        }
    }

    /// [`MachineCache::machine`] after a miss: reads metal-api and remembers the answer.
    pub async fn fetch(
        &self,
        backend: &dyn MetalBackend,
        cluster: &ObjectRef,
        project_id: &str,
        machine_id: &str,
        now: Timestamp,
    ) -> Result<Option<Machine>, BackendError> {
        let RefreshPolicy::PerCluster { shared_for, steady, .. } = self.policy else {
            return get(backend, machine_id).await;
        };
        let key = cluster.key();
        let query = MachineQuery {
            tags: vec![tags::cluster_id_tag(cluster)],
            allocation_project: Some(project_id.to_string()),
            ..MachineQuery::default()
        };
        let machines = backend.find_machines(&query).await?;
        let found = machines.iter().find(|m| m.id == machine_id).cloned();
        self.store(key, machines, now, shared_for, steady);
        match found {
            Some(machine) => Ok(Some(machine)),
            None => get(backend, machine_id).await,
        }
    }

    fn store(
        &self,
        key: String,
        machines: Vec<Machine>,
        now: Timestamp,
        shared_for: Duration,
        steady: Duration,
    ) {
        let mut state = self.lock();
        for machine in &machines {
            state.learned.observe(machine);
        }
        let learned = state.learned;
        let valid = |machine: &Machine| {
            let good_for =
                self.policy.next_look_learned(machine, learned, Some(now)).clamp(shared_for, steady);
            now.checked_add(good_for).unwrap_or(now)
        };
        let machines = machines.into_iter().map(|m| (m.id.clone(), (m.clone(), valid(&m)))).collect();
        state.entries.insert(key, Entry { fetched: now, machines });
        // Deleted clusters are never read again: forget every cluster whose machines were not
        // fetched for a while.
        // A live cluster that is dropped costs one find at its next read, nothing more.
        state.entries.retain(|_, entry| until(entry.fetched, now) < ENTRY_AGE_MAX);
    }

    /// How many clusters' machines are cached now.
    pub fn clusters_cached(&self) -> usize {
        self.lock().entries.len()
    }

    /// Machines of the cluster carrying all `tags`, as last read (no metal-api call). The
    /// answer may be stale: re-read a machine before acting on it.
    pub fn tagged(&self, cluster: &ObjectRef, tags: &[String]) -> Vec<Machine> {
        let state = self.lock();
        let Some(entry) = state.entries.get(&cluster.key()) else { return Vec::new() };
        entry
            .machines
            .values()
            .map(|(m, _)| m)
            .filter(|m| crate::metal::tags_match(&m.tags, tags))
            .cloned()
            .collect()
    }

    /// Forgets what is known about a cluster (after an allocation or a free changed it).
    pub fn invalidate(&self, cluster: &ObjectRef) {
        self.lock().entries.remove(&cluster.key());
    }

    /// The cached machine, if its cached state is still good enough at `now`: before its own
    /// expiry, or (unless `Phoned Home` is imminent) when the cluster was read less than half
    /// of `far` ago, so machines whose looks fall close together share one read.
    fn lookup(&self, key: &str, machine_id: &str, now: Timestamp) -> Option<Machine> {
        let state = self.lock();
        let entry = state.entries.get(key)?;
        let (machine, valid_until) = entry.machines.get(machine_id)?;
        let near = machine.last_event().is_some_and(|e| e.event == ProvisioningEventKind::BootingNewKernel);
        let recent = match self.policy {
            RefreshPolicy::PerCluster { far, .. } => until(entry.fetched, now) < far / 2,
            RefreshPolicy::PerMachine { .. } => false,
        };
        (now < *valid_until || (recent && !near)).then(|| machine.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned cache only held stale reads; continuing with it is safe.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a machine reconcile asks of the shared [`MachineCache`]. The reconcilers take it as a
/// trait object so that a trace can record the cache's answers and a replay can serve them
/// (see [`crate::trace`]): concurrent reconciles share the cache, so its answers are inputs of
/// a reconcile just like metal-api's.
#[async_trait]
pub trait CacheAccess: Send + Sync {
    /// See [`MachineCache::machine`].
    async fn machine(
        &self,
        backend: &dyn MetalBackend,
        cluster: &ObjectRef,
        project_id: &str,
        machine_id: &str,
        now: Timestamp,
    ) -> Result<Option<Machine>, BackendError>;
    /// See [`MachineCache::tagged`].
    fn tagged(&self, cluster: &ObjectRef, tags: &[String]) -> Vec<Machine>;
    /// See [`MachineCache::invalidate`].
    fn invalidate(&self, cluster: &ObjectRef);
    /// See [`MachineCache::next_look`].
    fn next_look(&self, machine: &Machine, now: Timestamp) -> Duration;
}

#[async_trait]
impl CacheAccess for MachineCache {
    async fn machine(
        &self,
        backend: &dyn MetalBackend,
        cluster: &ObjectRef,
        project_id: &str,
        machine_id: &str,
        now: Timestamp,
    ) -> Result<Option<Machine>, BackendError> {
        MachineCache::machine(self, backend, cluster, project_id, machine_id, now).await
    }

    fn tagged(&self, cluster: &ObjectRef, tags: &[String]) -> Vec<Machine> {
        MachineCache::tagged(self, cluster, tags)
    }

    fn invalidate(&self, cluster: &ObjectRef) {
        MachineCache::invalidate(self, cluster);
    }

    fn next_look(&self, machine: &Machine, now: Timestamp) -> Duration {
        MachineCache::next_look(self, machine, now)
    }
}

async fn get(backend: &dyn MetalBackend, machine_id: &str) -> Result<Option<Machine>, BackendError> {
    match backend.get_machine(machine_id).await {
        Ok(machine) => Ok(Some(machine)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
