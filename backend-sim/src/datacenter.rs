//! The state of the simulated datacenter and the machinery every operation shares: the
//! virtual clock and timeline, fault injection around each call, the event log and the
//! invariant checks. The operations themselves live in `machines.rs`, `networks.rs` and
//! `catalog.rs`.

use crate::builder::{PartitionSpec, ProvisioningTimes, SimBuilder};
use crate::faults::{CLIENT_TIMEOUT, FaultPlan, InjectedError, LATE_WRITE_SPREAD, chance};
use crate::lag::{Histories, Write};
use crate::log::EventLog;
use capms_core::metal::{
    Image, Ip, Machine, MachineState, Network, Partition, Project, ProvisioningEvent, ProvisioningEventKind,
    Size,
};
use capms_core::{BackendError, Operation, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Free and waiting in metal-hammer for an allocation.
    Waiting,
    /// Allocated; installing.
    Provisioning,
    /// Allocated and phoned home.
    Running,
    /// Allocated; provisioning failed and it keeps crashing.
    CrashLoop,
    /// Freed; being wiped before it waits again.
    Reclaiming,
}

/// A machine and the simulator's private knowledge about it.
#[derive(Debug, Clone)]
pub(crate) struct SimMachine {
    pub(crate) machine: Machine,
    pub(crate) phase: Phase,
    /// Incremented by every allocation and free; scheduled events of an older generation are
    /// dropped, so a re-allocated machine never receives its predecessor's events.
    pub(crate) generation: u64,
    pub(crate) chassis: String,
    /// Since when the machine sends no events (it died or hangs); silence is for ever.
    pub(crate) silent_since: Option<Timestamp>,
}

/// Something that happens later in virtual time.
#[derive(Debug, Clone)]
pub(crate) enum Scheduled {
    /// A provisioning event; optionally the machine enters a new phase with it.
    Event { machine_id: String, generation: u64, event: ProvisioningEventKind, phase: Option<Phase> },
    /// metal-api releases the IPs of a freed machine asynchronously.
    ReleaseIps { machine_id: String, addresses: Vec<String> },
    /// The machine dies: it goes silent for ever (cancelled by healing, like every fault
    /// still to come).
    Die { machine_id: String, generation: u64 },
    /// The machine hangs at the provisioning event it just sent: it goes silent for ever (not
    /// cancelled by healing: the hang was decided when it was allocated).
    Hang { machine_id: String, generation: u64 },
    /// A silent machine has sent nothing for [`crate::MACHINE_DEAD_AFTER`]: metal-api turns
    /// its liveliness `Unknown` (allocated) or `Dead` (not allocated).
    LivelinessTimeout { machine_id: String },
    /// Someone else frees the machine.
    ExternalFree { machine_id: String, generation: u64 },
    /// Someone else who took a pinned machine frees it again (not cancelled by healing).
    ReturnStolen { machine_id: String, generation: u64 },
    /// A write whose client gave up takes effect.
    LateWrite { operation: Operation, describe: String, write: Box<Write> },
}

/// The whole simulated datacenter. Deterministic: every random choice comes from `rng`, every
/// collection is ordered, time only moves through [`Datacenter::advance_to`].
#[derive(Debug)]
pub(crate) struct Datacenter {
    pub(crate) seed: u64,
    pub(crate) now: Timestamp,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) times: ProvisioningTimes,
    pub(crate) faults: FaultPlan,
    pub(crate) partitions: BTreeMap<String, Partition>,
    pub(crate) sizes: BTreeMap<String, Size>,
    pub(crate) images: BTreeMap<String, Image>,
    pub(crate) projects: BTreeMap<String, Project>,
    pub(crate) machines: BTreeMap<String, SimMachine>,
    pub(crate) networks: BTreeMap<String, Network>,
    /// By canonical address.
    pub(crate) ips: BTreeMap<String, Ip>,
    pub(crate) timeline: BTreeMap<(Timestamp, u64), Scheduled>,
    sequence: u64,
    /// Machine tag → ids of the machines carrying it (kept in step with machine tags).
    pub(crate) tag_index: BTreeMap<String, BTreeSet<String>>,
    /// Allocations still allowed per (partition, size), when capacity is limited.
    pub(crate) capacity_budget: BTreeMap<(String, String), usize>,
    pub(crate) next_asn: i64,
    pub(crate) log: EventLog,
    pub(crate) calls: BTreeMap<Operation, u64>,
    pub(crate) check_invariants: bool,
    /// Versions before recent writes, for finds that lag (stale reads).
    pub(crate) histories: Histories,
}

/// The result of one operation plus the virtual latency of its answer.
pub(crate) type Answer<T> = (Result<T, BackendError>, Duration);

impl Datacenter {
    pub(crate) fn new(builder: &SimBuilder) -> Self {
        let mut datacenter = Datacenter {
            seed: builder.seed,
            now: builder.start,
            rng: ChaCha8Rng::seed_from_u64(builder.seed),
            times: builder.times,
            faults: builder.faults.clone(),
            partitions: BTreeMap::new(),
            sizes: BTreeMap::new(),
            images: BTreeMap::new(),
            projects: BTreeMap::new(),
            machines: BTreeMap::new(),
            networks: BTreeMap::new(),
            ips: BTreeMap::new(),
            timeline: BTreeMap::new(),
            sequence: 0,
            tag_index: BTreeMap::new(),
            capacity_budget: BTreeMap::new(),
            next_asn: 4_200_000_001,
            log: EventLog::new(builder.keep_log),
            calls: BTreeMap::new(),
            check_invariants: builder.check_invariants,
            histories: Histories::default(),
        };
        datacenter.seed_catalog(builder);
        for partition in &builder.partitions {
            datacenter.seed_partition(partition);
        }
        datacenter.record(format!(
            "datacenter seeded: seed {}, {} machines",
            builder.seed,
            datacenter.machines.len()
        ));
        datacenter
    }

    fn seed_catalog(&mut self, builder: &SimBuilder) {
        for (id, features) in &builder.images {
            let image = crate::catalog::image(id, features);
            self.images.insert(id.clone(), image);
        }
        for (project_id, tenant_id) in &builder.projects {
            let project = crate::catalog::project(project_id, tenant_id);
            self.projects.insert(project_id.clone(), project);
        }
    }

    fn seed_partition(&mut self, spec: &PartitionSpec) {
        self.partitions.insert(spec.id.clone(), crate::catalog::partition(&spec.id));
        for network in crate::catalog::partition_networks(spec) {
            self.networks.insert(network.id.clone(), network);
        }
        for (size_id, count) in &spec.machines {
            self.sizes.entry(size_id.clone()).or_insert_with(|| crate::catalog::size(size_id));
            for _ in 0..*count {
                self.seed_machine(spec, size_id);
            }
        }
    }

    fn seed_machine(&mut self, spec: &PartitionSpec, size_id: &str) {
        let index = self.machines.len() + 1;
        let id = machine_id(index);
        let rack = format!("{}-rack-{}", spec.id, (index - 1) % spec.racks.max(1) + 1);
        let machine = Machine {
            id: id.clone(),
            partition_id: spec.id.clone(),
            size_id: size_id.to_string(),
            rack_id: rack,
            liveliness: capms_core::metal::Liveliness::Alive,
            state: MachineState::Available,
            events: vec![ProvisioningEvent {
                event: ProvisioningEventKind::Waiting,
                message: String::new(),
                time: self.now,
            }],
            crash_loop: false,
            failed_machine_reclaim: false,
            allocation: None,
            tags: Vec::new(),
        };
        let chassis = format!("chassis-{}", (index - 1) / 4 + 1);
        let sim = SimMachine { machine, phase: Phase::Waiting, generation: 0, chassis, silent_since: None };
        self.machines.insert(id, sim);
    }

    /// Moves virtual time forward to `time`, applying every scheduled event that is due, in
    /// time order. Time never moves backwards.
    pub(crate) fn advance_to(&mut self, time: Timestamp) {
        while let Some(entry) = self.timeline.first_entry() {
            let (at, _) = *entry.key();
            if at > time {
                break;
            }
            let scheduled = entry.remove();
            self.now = self.now.max(at);
            self.apply(scheduled);
            self.verify();
        }
        self.now = self.now.max(time);
    }

    /// When the next scheduled event is due, if any.
    pub(crate) fn next_event_at(&self) -> Option<Timestamp> {
        self.timeline.keys().next().map(|(at, _)| *at)
    }

    pub(crate) fn schedule(&mut self, after: Duration, scheduled: Scheduled) {
        let at = self.later(after);
        self.sequence += 1;
        self.timeline.insert((at, self.sequence), scheduled);
    }

    /// `now + after`, saturating at the end of representable time.
    pub(crate) fn later(&self, after: Duration) -> Timestamp {
        self.now.checked_add(after).unwrap_or(self.now)
    }

    fn apply(&mut self, scheduled: Scheduled) {
        match scheduled {
            Scheduled::Event { machine_id, generation, event, phase } => {
                self.apply_event(&machine_id, generation, event, phase)
            }
            Scheduled::ReleaseIps { machine_id, addresses } => self.release_ips(&machine_id, &addresses),
            Scheduled::Die { machine_id, generation } | Scheduled::Hang { machine_id, generation } => {
                if self.generation_of(&machine_id) == Some(generation) {
                    self.silence(&machine_id);
                }
            }
            Scheduled::LivelinessTimeout { machine_id } => self.liveliness_timeout(&machine_id),
            Scheduled::ExternalFree { machine_id, generation } => {
                let line = format!("external free of machine {machine_id}");
                self.free_if_allocated_in(&machine_id, generation, line);
            }
            Scheduled::ReturnStolen { machine_id, generation } => {
                let line = format!("someone else frees machine {machine_id} again");
                self.free_if_allocated_in(&machine_id, generation, line);
            }
            Scheduled::LateWrite { operation, describe, write } => {
                let answer = write.apply(self).unwrap_or_else(|error| error.to_string());
                self.record(format!("late write {operation} {describe} takes effect -> {answer}"));
            }
        }
    }

    /// Someone else frees the machine, if it is still in allocation `generation`.
    fn free_if_allocated_in(&mut self, machine_id: &str, generation: u64, line: String) {
        let allocated = self
            .machines
            .get(machine_id)
            .is_some_and(|m| m.machine.allocation.is_some() && m.generation == generation);
        if allocated {
            self.record(line);
            self.free_unchecked(machine_id);
        }
    }

    pub(crate) fn generation_of(&self, machine_id: &str) -> Option<u64> {
        self.machines.get(machine_id).map(|machine| machine.generation)
    }

    /// Draws a duration within ±jitter of `typical`.
    pub(crate) fn jittered(&mut self, typical: Duration) -> Duration {
        let jitter = u64::from(self.times.jitter_percent.min(100));
        if jitter == 0 {
            return typical;
        }
        let percent = self.rng.random_range(100 - jitter..=100 + jitter);
        typical.mul_f64(percent as f64 / 100.0)
    }

    /// A fresh UUID (version 4 layout) drawn from the seeded RNG.
    pub(crate) fn uuid(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }

    /// Appends a line to the event log, stamped with the virtual time.
    pub(crate) fn record(&mut self, line: String) {
        let stamped = format!("{} {line}", self.now);
        self.log.push(stamped);
    }

    /// Runs one operation the way metal-api would answer it, with faults: an injected error
    /// before it takes effect, a write (`late`, its owned form) that takes effect only after
    /// the client gave up, a lost answer after it took effect, and latency.
    pub(crate) fn call<T>(
        &mut self,
        operation: Operation,
        describe: &str,
        late: Option<Write>,
        run: impl FnOnce(&mut Self) -> Result<T, BackendError>,
        summarize: impl FnOnce(&T) -> String,
    ) -> Answer<T> {
        *self.calls.entry(operation).or_default() += 1;
        let latency = self.faults.draw_latency(&mut self.rng);
        if let Some(injected) = self.faults.draw_error(operation, &mut self.rng) {
            let error = injected_error(operation, injected);
            self.record(format!("{operation} {describe} -> injected {error}"));
            return (Err(error), latency);
        }
        if let Some(write) = late.filter(|_| chance(&mut self.rng, self.faults.late_write_rate)) {
            return self.defer(operation, describe, write, latency);
        }
        let result = run(self);
        self.verify();
        match &result {
            Ok(value) => {
                let summary = summarize(value);
                self.record(format!("{operation} {describe} -> {summary}"));
            }
            Err(error) => self.record(format!("{operation} {describe} -> {error}")),
        }
        if result.is_ok() && chance(&mut self.rng, self.faults.lost_response_rate) {
            self.record(format!("{operation} {describe} -> answer lost"));
            let lost =
                BackendError::transport(operation, "timed out waiting for the answer", !operation.is_read());
            return (Err(lost), latency);
        }
        (result, latency)
    }

    /// A late write: the client waits for its timeout and sees a lost answer; the write takes
    /// effect up to [`LATE_WRITE_SPREAD`] after that.
    fn defer<T>(
        &mut self,
        operation: Operation,
        describe: &str,
        write: Write,
        latency: Duration,
    ) -> Answer<T> {
        let spread = LATE_WRITE_SPREAD.as_millis().max(1) as u64;
        let lands_after = CLIENT_TIMEOUT + Duration::from_millis(self.rng.random_range(1..=spread));
        self.record(format!("{operation} {describe} -> answer lost, the write takes effect late"));
        let describe = describe.to_string();
        self.schedule(lands_after, Scheduled::LateWrite { operation, describe, write: Box::new(write) });
        let lost = BackendError::transport(operation, "timed out waiting for the answer", true);
        (Err(lost), latency.max(CLIENT_TIMEOUT))
    }

    /// Checks every datacenter invariant; a violation is a bug in the simulator.
    pub(crate) fn verify(&self) {
        if !self.check_invariants {
            return;
        }
        if let Err(violation) = crate::invariants::check(self) {
            panic!("datacenter invariant violated at {} (seed {}): {violation}", self.now, self.seed);
        }
    }

    /// Adds or removes a machine's tags from the tag index.
    pub(crate) fn index_tags(&mut self, machine_id: &str, tags: &[String], present: bool) {
        for tag in tags {
            if present {
                self.tag_index.entry(tag.clone()).or_default().insert(machine_id.to_string());
            } else if let Some(ids) = self.tag_index.get_mut(tag) {
                ids.remove(machine_id);
                if ids.is_empty() {
                    self.tag_index.remove(tag);
                }
            }
        }
    }
}

fn injected_error(operation: Operation, injected: InjectedError) -> BackendError {
    match injected {
        InjectedError::Transient => BackendError::from_response(
            operation,
            500,
            "Internal simulated failure: the datastore did not answer in time",
        ),
        InjectedError::Conflict => BackendError::from_response(
            operation,
            409,
            "Conflict the entity was changed from another, please retry",
        ),
        InjectedError::Auth => BackendError::from_response(operation, 403, "Wrong HMAC found"),
    }
}

/// The id of the `number`-th machine a datacenter seeds (from 1): partitions in the order
/// they were added, sizes in alphabetical order within a partition.
pub fn machine_id(number: usize) -> String {
    format!("00000000-0000-0000-0000-{number:012x}")
}

/// metal-api's typed not-found answer.
pub(crate) fn not_found(operation: Operation, kind: &str, id: &str) -> BackendError {
    BackendError::from_response(operation, 404, format!("NotFound no {kind} with id {id:?} found"))
}
