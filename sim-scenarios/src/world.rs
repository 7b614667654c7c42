//! The world: a simulated datacenter, management clusters (object store, CAPI model, capms
//! replicas), one seeded RNG, virtual time advanced by the scheduler, safety checkers after
//! every step, and a trace whose hash is identical for identical seeds.

use crate::capi::{CapiModel, ClusterPlan, infrastructure_ready, machines_of, metal_machine_of};
use crate::checks::{Checker, View, leaks};
use crate::operator::{Operator, OperatorConfig, OperatorStats};
use crate::store::{Store, Stored, key_of};
use capms_backend_sim::{ErrorRates, EventLog, FaultPlan, LatencyRange, Sim, SimBuilder};
use capms_core::api::capi::{self, Cluster, Machine};
use capms_core::api::conditions::{ConditionType, is_true};
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use capms_core::{MetalBackend, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long `clusterctl move` waits for block-move to be gone before it gives up.
pub const BLOCK_MOVE_WAIT_MAX: Duration = Duration::from_secs(2 * 60);
/// The longest the scheduler lets virtual time jump when nothing is due, so that periodic
/// controllers (the MachineHealthCheck) get their turn.
pub const TICK_MAX: Duration = Duration::from_secs(10);
/// Steps the world may take without virtual time passing: more is a livelock, not progress.
pub const STEPS_AT_ONE_TIME_MAX: u64 = 100_000;

/// What a `run_until` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Every Machine of the cluster and its firewall are Ready, at the planned counts and images.
    Ready,
    /// The MetalStackCluster is provisioned.
    Provisioned,
    /// The Cluster and everything of it is gone from the management cluster.
    Gone,
}

/// Operator-level faults in force.
#[derive(Debug, Clone, Default)]
pub struct OperatorFaults {
    /// When the operator crashes (and restarts at once).
    pub crashes: Vec<Timestamp>,
    /// Until when the informer cache lags (it refreshes on a fifth of the steps only).
    pub stale_reads_until: Option<Timestamp>,
    /// Probability that a status write is lost, and until when.
    pub lost_status_writes: Option<(f64, Timestamp)>,
    /// Until when a second replica runs (as if leader election failed).
    pub second_replica_until: Option<Timestamp>,
}

/// One management cluster.
#[derive(Debug)]
pub struct Management {
    pub store: Store,
    pub capi: CapiModel,
    pub operators: Vec<Operator>,
    last_revision: u64,
    last_time: Timestamp,
}

/// Everything that happens, in one place.
pub struct World {
    pub sim: Sim,
    rng: ChaCha8Rng,
    seed: u64,
    operator_config: OperatorConfig,
    backend: Arc<dyn MetalBackend>,
    pub managements: Vec<Management>,
    /// Cluster name → (namespace, management index).
    clusters: BTreeMap<String, (String, usize)>,
    pub faults: OperatorFaults,
    /// Datacenter faults that end by themselves (see [`World::add_timed_fault_plan`]).
    timed: TimedFaults,
    pub checker: Checker,
    trace: EventLog,
    pub steps: u64,
    steps_at_one_time: u64,
    /// Report hook (`report.rs`): what `--report` draws, while recording.
    recorder: Option<Box<crate::report::Recorder>>,
    /// Trace hook (`replay.rs`): where the operators record their reconciles.
    trace_sink: Option<Arc<dyn capms_core::trace::TraceSink>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.seed)
            .field("now", &self.sim.now())
            .field("steps", &self.steps)
            .finish()
    }
}

impl World {
    /// A world on `datacenter`, seeded with `seed` (the datacenter keeps its own seed).
    pub fn new(seed: u64, datacenter: SimBuilder, operator_config: OperatorConfig) -> Self {
        let sim = datacenter.build();
        let backend: Arc<dyn MetalBackend> = Arc::new(sim.backend());
        let mut world = World {
            sim,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            operator_config,
            backend,
            managements: Vec::new(),
            clusters: BTreeMap::new(),
            faults: OperatorFaults::default(),
            timed: TimedFaults::default(),
            checker: Checker::default(),
            trace: EventLog::new(false),
            steps: 0,
            steps_at_one_time: 0,
            recorder: None,
            trace_sink: None,
        };
        world.add_management();
        world
    }

    /// Trace hook (`capms-sim run --record`): every operator replica, present and future,
    /// records its reconciles into `sink`.
    pub fn record_trace(&mut self, sink: Arc<dyn capms_core::trace::TraceSink>) {
        for management in &mut self.managements {
            for operator in &mut management.operators {
                operator.set_trace(Some(sink.clone()));
            }
        }
        self.trace_sink = Some(sink);
    }

    fn add_management(&mut self) -> usize {
        let operator = Operator::new(self.operator_config, self.backend.clone(), "replica-1")
            .recording(self.trace_sink.clone());
        let now = self.sim.now();
        let id = self.managements.len() as u64;
        self.managements.push(Management {
            store: Store::new(id),
            capi: CapiModel::default(),
            operators: vec![operator],
            last_revision: u64::MAX,
            last_time: now,
        });
        self.managements.len() - 1
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> Timestamp {
        self.sim.now()
    }

    /// Appends a line to the world's trace, stamped with the virtual time.
    pub fn note(&mut self, line: &str) {
        self.trace.push(format!("{} {line}", self.sim.now()));
    }

    /// The hash of the world's trace and the datacenter's event log: equal for equal seeds.
    pub fn trace_hash(&self) -> String {
        format!("{}-{}", self.trace.hash_hex(), self.sim.event_log_hash())
    }

    fn cluster(&self, name: &str) -> Result<(String, usize), String> {
        self.clusters.get(name).cloned().ok_or_else(|| format!("there is no cluster {name:?}"))
    }

    pub fn create_cluster(&mut self, plan: ClusterPlan) -> Result<(), String> {
        if self.clusters.contains_key(&plan.name) {
            return Err(format!("cluster {:?} exists already", plan.name));
        }
        let now = self.now();
        self.note(&format!("create cluster {}/{}", plan.namespace, plan.name));
        self.checker.user_networks.extend(plan.node_network_id.clone());
        self.checker.user_ips.extend(plan.control_plane_ip.clone());
        let management = &mut self.managements[0];
        management.capi.create_cluster(&mut management.store, plan.clone(), now)?;
        self.clusters.insert(plan.name.clone(), (plan.namespace, 0));
        Ok(())
    }

    pub fn delete_cluster(&mut self, name: &str) -> Result<(), String> {
        let (namespace, index) = self.cluster(name)?;
        let now = self.now();
        self.note(&format!("delete cluster {namespace}/{name}"));
        CapiModel::delete_cluster_object(&mut self.managements[index].store, &namespace, name, now)
    }

    fn plan_mut(&mut self, name: &str) -> Result<&mut ClusterPlan, String> {
        let (namespace, index) = self.cluster(name)?;
        self.managements[index]
            .capi
            .plan_mut(&namespace, name)
            .ok_or_else(|| format!("cluster {name:?} is being deleted"))
    }

    pub fn scale_workers(&mut self, name: &str, to: usize) -> Result<(), String> {
        self.plan_mut(name)?.workers = to;
        self.note(&format!("scale workers of {name} to {to}"));
        Ok(())
    }

    pub fn scale_control_plane(&mut self, name: &str, to: usize) -> Result<(), String> {
        if to == 0 {
            return Err("a control plane needs at least one machine".to_string());
        }
        self.plan_mut(name)?.control_plane = to;
        self.note(&format!("scale control plane of {name} to {to}"));
        Ok(())
    }

    pub fn roll_workers(&mut self, name: &str, image: &str) -> Result<(), String> {
        self.plan_mut(name)?.worker_image = image.to_string();
        self.note(&format!("roll workers of {name} to {image}"));
        Ok(())
    }

    pub fn set_paused(&mut self, name: &str, paused: bool) -> Result<(), String> {
        let (namespace, index) = self.cluster(name)?;
        self.note(&format!("{} cluster {name}", if paused { "pause" } else { "unpause" }));
        CapiModel::set_paused(&mut self.managements[index].store, &namespace, name, paused)
    }

    /// The machines of a cluster in the datacenter, by providerID of its MetalStackMachines.
    pub fn machine_ids(&self, name: &str) -> Vec<String> {
        let Ok((namespace, index)) = self.cluster(name) else { return Vec::new() };
        let store = &self.managements[index].store;
        let mut ids: Vec<String> = store
            .metal_machines
            .values()
            .filter(|mm| mm.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|mm| capi::label(&mm.metadata, capi::CLUSTER_NAME_LABEL) == Some(name))
            .filter_map(|mm| mm.spec.provider_id.as_deref())
            .filter_map(|p| capms_core::ProviderId::parse(p).ok())
            .map(|p| p.machine_id().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Kills `count` machines of a cluster, chosen by the world's RNG.
    pub fn kill_machines(&mut self, name: &str, count: usize) -> Result<usize, String> {
        let victims = self.pick_machines(name, count)?;
        for id in &victims {
            self.sim.kill_machine(id);
            self.note(&format!("machine {id} of {name} dies"));
        }
        Ok(victims.len())
    }

    /// Frees `count` machines of a cluster behind capms's back.
    pub fn free_machines_externally(&mut self, name: &str, count: usize) -> Result<usize, String> {
        let victims = self.pick_machines(name, count)?;
        for id in &victims {
            self.sim.free_machine_externally(id);
            self.note(&format!("machine {id} of {name} freed externally"));
        }
        Ok(victims.len())
    }

    fn pick_machines(&mut self, name: &str, count: usize) -> Result<Vec<String>, String> {
        self.cluster(name)?;
        let mut candidates = self.machine_ids(name);
        let mut victims = Vec::new();
        while victims.len() < count && !candidates.is_empty() {
            let index = self.rng.random_range(0..candidates.len());
            victims.push(candidates.swap_remove(index));
        }
        Ok(victims)
    }

    /// `clusterctl move` of one cluster to the second management cluster: pause, wait until no
    /// object of the cluster holds block-move (at most [`BLOCK_MOVE_WAIT_MAX`], then the move
    /// fails), copy without status, delete the source objects for move (finalizers
    /// force-removed), unpause.
    pub fn move_cluster(&mut self, name: &str) -> Result<(), String> {
        let (namespace, from) = self.cluster(name)?;
        let to = if from == 0 {
            self.managements.get(1).map(|_| 1).unwrap_or_else(|| self.add_management())
        } else {
            0
        };
        self.note(&format!("move cluster {name} from management {from} to {to}"));
        self.set_paused(name, true)?;
        self.wait_for_block_move(&namespace, name, from)?;
        let now = self.now();
        let source = self.managements[from].store.clone();
        copy_cluster(&source, &mut self.managements[to].store, &namespace, name, now)?;
        if let Some(plan) = self.managements[from].capi.plans.remove(&(namespace.clone(), name.to_string())) {
            self.managements[to].capi.plans.insert((namespace.clone(), name.to_string()), plan);
        }
        delete_for_move(&mut self.managements[from].store, &namespace, name, now);
        self.run_for(Duration::from_secs(30))?;
        force_remove(&mut self.managements[from].store, &namespace, name);
        self.clusters.insert(name.to_string(), (namespace, to));
        self.set_paused(name, false)
    }

    /// clusterctl's wait after the pause: until no object of the cluster holds block-move.
    fn wait_for_block_move(&mut self, namespace: &str, name: &str, from: usize) -> Result<(), String> {
        let start = self.now();
        let deadline = start.checked_add(BLOCK_MOVE_WAIT_MAX).unwrap_or(start);
        while crate::checks::holds_block_move(&self.managements[from].store, namespace, name) {
            if self.now() >= deadline {
                return Err(format!(
                    "clusterctl move of {name}: an object still holds block-move after {BLOCK_MOVE_WAIT_MAX:?}"
                ));
            }
            self.step_checked()?;
        }
        self.note(&format!("no object of {name} holds block-move"));
        Ok(())
    }

    /// Schedules `count` operator crashes at times drawn from the world's RNG within the next
    /// `within` of virtual time (each at least a millisecond from now).
    pub fn schedule_operator_crashes(&mut self, count: usize, within: Duration) {
        let now = self.now();
        let span = u64::try_from(within.as_millis()).unwrap_or(u64::MAX).max(1);
        for _ in 0..count {
            let offset = Duration::from_millis(self.rng.random_range(1..=span));
            self.faults.crashes.push(now.checked_add(offset).unwrap_or(now));
        }
        self.note(&format!("{count} operator crashes scheduled within {within:?}"));
    }

    /// Adds a layer of datacenter faults that ends by itself after `duration`.
    ///
    /// While layers are in force, the datacenter's fault plan is the plan it had before the
    /// first layer combined with every layer still in force (rates and latencies: the largest
    /// wins); when the last layer ends, the plan from before comes back. The step loop ends
    /// layers when virtual time reaches their end (and wakes up for it). [`World::heal`] ends
    /// them all.
    pub fn add_timed_fault_plan(&mut self, layer: FaultPlan, duration: Duration) {
        let now = self.now();
        if self.timed.layers.is_empty() {
            self.timed.base = Some(self.sim.fault_plan());
        }
        self.timed.layers.push((now.checked_add(duration).unwrap_or(now), layer));
        self.apply_timed_layers();
    }

    /// Limits the machines of `size` that can still be allocated in `partition` to
    /// `available`, for `duration`; then the limit is lifted.
    pub fn add_timed_capacity(&mut self, partition: &str, size: &str, available: usize, duration: Duration) {
        let now = self.now();
        self.sim.set_capacity(partition, size, Some(available));
        self.timed.capacity.push((
            now.checked_add(duration).unwrap_or(now),
            partition.to_string(),
            size.to_string(),
        ));
    }

    /// Ends every fault now: the datacenter's ([`Sim::heal`]: injected errors, lost answers,
    /// latency, scheduled deaths and external frees, capacity limits), timed layers, and the
    /// operator's (crashes not yet happened, stale reads, lost status writes, a second
    /// replica). What already happened (dead machines) stays.
    pub fn heal(&mut self) {
        self.note("heal: all faults off");
        self.sim.heal();
        self.timed = TimedFaults::default();
        self.faults = OperatorFaults::default();
    }

    /// Ends the timed faults whose time has come.
    fn end_timed_faults(&mut self, now: Timestamp) {
        let before = self.timed.layers.len();
        self.timed.layers.retain(|(until, _)| *until > now);
        if self.timed.layers.len() != before {
            self.apply_timed_layers();
        }
        let (ended, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.timed.capacity).into_iter().partition(|(until, _, _)| *until <= now);
        self.timed.capacity = kept;
        for (_, partition, size) in ended {
            self.sim.set_capacity(&partition, &size, None);
        }
    }

    /// Sets the datacenter's fault plan from the base plan and the layers in force.
    fn apply_timed_layers(&mut self) {
        let base = self.timed.base.clone().unwrap_or_else(FaultPlan::none);
        if self.timed.layers.is_empty() {
            self.timed.base = None;
            self.sim.set_fault_plan(base);
            return;
        }
        let plan = self.timed.layers.iter().fold(base, |plan, (_, layer)| combine_fault_plans(&plan, layer));
        self.sim.set_fault_plan(plan);
    }

    // ---- Report hook (`report.rs`, `capms-sim ... --report`): recording is off unless
    // `start_recording` is called; it only reads the world.

    /// Starts recording machine phases, faults, step marks and metal-api calls for the HTML
    /// report ([`crate::report`]).
    pub fn start_recording(&mut self) {
        self.recorder = Some(Box::new(crate::report::Recorder::new(self.now())));
        self.observe_for_report();
    }

    /// Marks the start of a step of the story (a vertical line in the report). A no-op unless
    /// recording.
    pub fn mark(&mut self, label: &str) {
        self.observe_for_report();
        let now = self.now();
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.mark(now, label);
        }
    }

    /// Stops recording and hands over what was recorded.
    pub fn take_recording(&mut self) -> Option<crate::report::Recorder> {
        self.observe_for_report();
        self.recorder.take().map(|recorder| *recorder)
    }

    fn observe_for_report(&mut self) {
        if let Some(mut recorder) = self.recorder.take() {
            recorder.observe(self);
            self.recorder = Some(recorder);
        }
    }

    /// The capacity limits in force: partition and size.
    pub fn capacity_limits(&self) -> Vec<(String, String)> {
        self.timed.capacity.iter().map(|(_, partition, size)| (partition.clone(), size.clone())).collect()
    }

    // ---- End of the report hook.

    /// The earliest end of a timed fault, for the scheduler.
    fn next_timed_fault_end(&self) -> Option<Timestamp> {
        let layers = self.timed.layers.iter().map(|(until, _)| *until);
        let capacity = self.timed.capacity.iter().map(|(until, _, _)| *until);
        layers.chain(capacity).min()
    }

    /// The namespace and object store of a cluster's current management cluster.
    pub fn store_of(&self, cluster: &str) -> Option<(String, &Store)> {
        let (namespace, index) = self.cluster(cluster).ok()?;
        Some((namespace, &self.managements[index].store))
    }

    /// Crashes every replica now (they restart at once with empty memory).
    pub fn crash_operators(&mut self) {
        self.note("operator crash");
        for management in &mut self.managements {
            for operator in &mut management.operators {
                operator.crash();
            }
        }
    }

    fn apply_operator_faults(&mut self, now: Timestamp) {
        let due = self.faults.crashes.iter().filter(|at| **at <= now).count();
        if due > 0 {
            self.faults.crashes.retain(|at| *at > now);
            self.crash_operators();
        }
        let second_replica = self.faults.second_replica_until.is_some_and(|until| now < until);
        for management in &mut self.managements {
            match (second_replica, management.operators.len()) {
                (true, 1) => {
                    let operator = Operator::new(self.operator_config, self.backend.clone(), "replica-2");
                    management.operators.push(operator.recording(self.trace_sink.clone()))
                }
                (false, n) if n > 1 => management.operators.truncate(1),
                _ => {}
            }
        }
    }

    /// One step: CAPI's controllers, watches, one slice of one reconcile, or a jump of
    /// virtual time; then the safety checks.
    pub fn step(&mut self) {
        self.steps += 1;
        let now = self.now();
        self.end_timed_faults(now);
        self.apply_operator_faults(now);
        self.observe_for_report(); // report hook: faults that ended or crashes that happened now
        self.run_capi(now);
        self.sync_operators(now);
        if !self.poll_one_reconcile(now) {
            self.advance_time(now);
        }
        let views: Vec<View<'_>> = self.managements.iter().map(|m| View { store: &m.store }).collect();
        self.checker.check(&self.sim, &views, self.sim.now());
        self.observe_for_report();
    }

    fn run_capi(&mut self, now: Timestamp) {
        for management in &mut self.managements {
            if management.last_revision == management.store.revision && management.last_time == now {
                continue;
            }
            management.capi.reconcile(&mut management.store, now);
            management.last_revision = management.store.revision;
            management.last_time = now;
        }
    }

    fn sync_operators(&mut self, now: Timestamp) {
        let stale = self.faults.stale_reads_until.is_some_and(|until| now < until);
        for management in &mut self.managements {
            for operator in &mut management.operators {
                if !stale || !operator.listed() || self.rng.random_bool(0.2) {
                    operator.sync(&management.store, now);
                }
                let rng = &mut self.rng;
                operator.start_due(now, &mut || rng.random());
            }
        }
    }

    /// Advances one in-flight reconcile picked by the RNG. Returns whether any was in flight.
    fn poll_one_reconcile(&mut self, now: Timestamp) -> bool {
        let busy: Vec<(usize, usize)> = self
            .managements
            .iter()
            .enumerate()
            .flat_map(|(m, management)| {
                management
                    .operators
                    .iter()
                    .enumerate()
                    .filter(|(_, op)| op.in_flight() > 0)
                    .map(move |(o, _)| (m, o))
            })
            .collect();
        if busy.is_empty() {
            return false;
        }
        let (m, o) = busy[self.rng.random_range(0..busy.len())];
        let index = self.rng.random_range(0..usize::MAX);
        let lose = match self.faults.lost_status_writes {
            Some((rate, until)) if now < until => self.rng.random_bool(rate.clamp(0.0, 1.0)),
            _ => false,
        };
        let management = &mut self.managements[m];
        if let Some(finished) = management.operators[o].poll(index, &mut management.store) {
            let notes = management.operators[o].apply(&mut management.store, finished, self.sim.now(), lose);
            for line in notes {
                self.note(&line);
            }
        }
        true
    }

    fn advance_time(&mut self, now: Timestamp) {
        let ceiling = now.checked_add(TICK_MAX).unwrap_or(now);
        let mut next = ceiling;
        for management in &self.managements {
            for operator in &management.operators {
                next = next.min(operator.next_due().unwrap_or(ceiling));
            }
        }
        next = next.min(self.sim.next_event_at().unwrap_or(ceiling));
        next = next.min(self.faults.crashes.iter().min().copied().unwrap_or(ceiling));
        next = next.min(self.next_timed_fault_end().unwrap_or(ceiling));
        if next <= now {
            next = now.checked_add(Duration::from_millis(1)).unwrap_or(now);
        }
        self.sim.advance_to(next);
    }

    /// Runs for a stretch of virtual time.
    pub fn run_for(&mut self, duration: Duration) -> Result<(), String> {
        let until = self.now().checked_add(duration).unwrap_or(self.now());
        while self.now() < until {
            self.step_checked()?;
        }
        Ok(())
    }

    /// One step, refusing to go on when virtual time has stood still for
    /// [`STEPS_AT_ONE_TIME_MAX`] steps: reconciles that keep triggering each other without
    /// time passing are a livelock, and the run says so instead of hanging.
    fn step_checked(&mut self) -> Result<(), String> {
        let before = self.now();
        self.step();
        if self.now() == before {
            self.steps_at_one_time += 1;
        } else {
            self.steps_at_one_time = 0;
        }
        if self.steps_at_one_time > STEPS_AT_ONE_TIME_MAX {
            let queued: Vec<String> = self
                .managements
                .iter()
                .flat_map(|m| m.operators.iter())
                .map(|op| format!("{op:?}"))
                .collect();
            return Err(format!(
                "livelock at {before}: {STEPS_AT_ONE_TIME_MAX} steps without time passing ({})",
                queued.join(", ")
            ));
        }
        Ok(())
    }

    /// Runs until `what` holds for `cluster`, or fails after `within` of virtual time with
    /// what is still pending.
    pub fn run_until(&mut self, cluster: &str, what: Until, within: Duration) -> Result<Duration, String> {
        let start = self.now();
        let deadline = start.checked_add(within).unwrap_or(start);
        while !self.holds(cluster, what) {
            if self.now() >= deadline {
                let pending = self.pending(cluster, what).join("; ");
                return Err(format!("{cluster} not {what:?} within {within:?}: {pending}"));
            }
            self.step_checked()?;
        }
        Ok(self.now().duration_since(start).unsigned_abs())
    }

    /// Whether `what` holds for `cluster` now.
    pub fn holds(&self, cluster: &str, what: Until) -> bool {
        self.pending(cluster, what).is_empty()
    }

    /// What is not yet as `what` requires, in words.
    pub fn pending(&self, cluster: &str, what: Until) -> Vec<String> {
        let Ok((namespace, index)) = self.cluster(cluster) else {
            return vec![format!("no cluster {cluster}")];
        };
        let management = &self.managements[index];
        match what {
            Until::Gone => gone_pending(&management.store, &namespace, cluster),
            Until::Provisioned => provisioned_pending(&management.store, &namespace, cluster),
            Until::Ready => {
                let plan = management.capi.plans.get(&(namespace.clone(), cluster.to_string()));
                ready_pending(&management.store, plan, &namespace, cluster)
            }
        }
    }

    /// What of a cluster is left in the datacenter.
    pub fn leaks(&self, cluster: &str) -> Vec<String> {
        let namespace =
            self.clusters.get(cluster).map(|(ns, _)| ns.clone()).unwrap_or_else(|| "default".to_string());
        leaks(&self.sim, &namespace, cluster)
    }

    /// Counters of every replica, summed.
    pub fn operator_stats(&self) -> OperatorStats {
        let mut total = OperatorStats::default();
        for operator in self.managements.iter().flat_map(|m| m.operators.iter()) {
            total.reconciles += operator.stats.reconciles;
            total.conflicts += operator.stats.conflicts;
            total.lost_status_writes += operator.stats.lost_status_writes;
            total.crashes += operator.stats.crashes;
            total.events += operator.stats.events;
        }
        total
    }

    /// The cluster names the world knows.
    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters.keys().cloned().collect()
    }

    /// The phases of a cluster's MetalStackMachines, for progress output.
    pub fn machine_phases(&self, cluster: &str) -> Vec<(String, String)> {
        let Ok((namespace, index)) = self.cluster(cluster) else { return Vec::new() };
        let store = &self.managements[index].store;
        machines_of(store, &namespace, cluster)
            .iter()
            .map(|m| {
                let phase = metal_machine_of(store, m)
                    .and_then(|mm| mm.status.as_ref())
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "-".to_string());
                (m.metadata.name.clone().unwrap_or_default(), phase)
            })
            .collect()
    }
}

/// Datacenter faults with an end: fault-plan layers and capacity limits.
#[derive(Debug, Clone, Default)]
struct TimedFaults {
    /// The datacenter's plan before the first layer.
    base: Option<FaultPlan>,
    layers: Vec<(Timestamp, FaultPlan)>,
    /// Capacity limits: until, partition, size.
    capacity: Vec<(Timestamp, String, String)>,
}

/// Two fault plans in force at once: every rate and latency is the larger of the two; error
/// rates for single operations are combined with the other plan's rates for that operation.
fn combine_fault_plans(a: &FaultPlan, b: &FaultPlan) -> FaultPlan {
    let max_rates = |x: ErrorRates, y: ErrorRates| ErrorRates {
        transient: x.transient.max(y.transient),
        conflict: x.conflict.max(y.conflict),
        auth: x.auth.max(y.auth),
    };
    let operations: Vec<_> =
        a.error_rates_by_operation.keys().chain(b.error_rates_by_operation.keys()).copied().collect();
    let error_rates_by_operation =
        operations.into_iter().map(|op| (op, max_rates(a.rates_for(op), b.rates_for(op)))).collect();
    let latency = match (a.latency, b.latency) {
        (Some(x), Some(y)) => Some(LatencyRange { min: x.min.max(y.min), max: x.max.max(y.max) }),
        (x, y) => x.or(y),
    };
    FaultPlan {
        error_rates: max_rates(a.error_rates, b.error_rates),
        error_rates_by_operation,
        lost_response_rate: a.lost_response_rate.max(b.lost_response_rate),
        latency,
        parallel_allocation_rate: a.parallel_allocation_rate.max(b.parallel_allocation_rate),
        provisioning_failure_rate: a.provisioning_failure_rate.max(b.provisioning_failure_rate),
        death_rate: a.death_rate.max(b.death_rate),
        external_free_rate: a.external_free_rate.max(b.external_free_rate),
        death_window: a.death_window.max(b.death_window),
        stuck_provisioning_rate: a.stuck_provisioning_rate.max(b.stuck_provisioning_rate),
        stale_read_lag: a.stale_read_lag.max(b.stale_read_lag),
        late_write_rate: a.late_write_rate.max(b.late_write_rate),
        stolen_machine_rate: a.stolen_machine_rate.max(b.stolen_machine_rate),
    }
}

fn gone_pending(store: &Store, namespace: &str, cluster: &str) -> Vec<String> {
    let mut pending = Vec::new();
    if store.get::<Cluster>(namespace, cluster).is_some() {
        pending.push(format!("Cluster {cluster} still exists"));
    }
    if let Some(mc) = store.get::<MetalStackCluster>(namespace, cluster) {
        let reason = mc
            .status
            .as_ref()
            .and_then(|s| capms_core::api::conditions::get_condition(&s.conditions, "Deleting"))
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default();
        pending.push(format!("MetalStackCluster {cluster} still exists{reason}"));
    }
    let machines = machines_of(store, namespace, cluster);
    if !machines.is_empty() {
        pending.push(format!("{} Machines left", machines.len()));
    }
    pending
}

fn provisioned_pending(store: &Store, namespace: &str, cluster: &str) -> Vec<String> {
    let Some(mc) = store.get::<MetalStackCluster>(namespace, cluster) else {
        return vec![format!("MetalStackCluster {cluster} does not exist")];
    };
    let status = mc.status.as_ref();
    let provisioned =
        status.and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned).unwrap_or(false);
    if provisioned {
        return Vec::new();
    }
    let ready = status.and_then(|s| capms_core::api::conditions::get_condition(&s.conditions, "Ready"));
    vec![format!(
        "MetalStackCluster {cluster} not provisioned{}",
        ready.map(|c| format!(" ({}: {})", c.reason, c.message)).unwrap_or_default()
    )]
}

/// Whether a Machine's infrastructure is ready as of now: Ready, and not a status written while
/// the cluster was paused (a paused object is not reconciled, so its Ready predates the pause and
/// the first pass after the unpause may still take it back).
fn ready_now(store: &Store, machine: &Machine) -> bool {
    let reports_paused =
        metal_machine_of(store, machine).and_then(|mm| mm.status.as_ref()).is_some_and(|status| {
            capms_core::api::conditions::is_true(
                &status.conditions,
                capms_core::api::conditions::ConditionType::Paused.as_str(),
            )
        });
    infrastructure_ready(store, machine) && !reports_paused
}

fn ready_pending(store: &Store, plan: Option<&ClusterPlan>, namespace: &str, cluster: &str) -> Vec<String> {
    let Some(plan) = plan else { return vec![format!("cluster {cluster} has no plan (deleted?)")] };
    let mut pending = provisioned_pending(store, namespace, cluster);
    let machines: Vec<Machine> = machines_of(store, namespace, cluster);
    let count = |control_plane: bool, image: &str| {
        machines
            .iter()
            .filter(|m| m.is_control_plane() == control_plane && m.metadata.deletion_timestamp.is_none())
            .filter(|m| metal_machine_of(store, m).is_some_and(|mm| mm.spec.image == image))
            .filter(|m| ready_now(store, m))
            .count()
    };
    let control_plane = count(true, &plan.control_plane_image);
    let workers = count(false, &plan.worker_image);
    if control_plane != plan.control_plane {
        pending.push(format!("{control_plane}/{} control-plane machines ready", plan.control_plane));
    }
    if workers != plan.workers {
        pending.push(format!("{workers}/{} workers ready", plan.workers));
    }
    if machines.len() != plan.control_plane + plan.workers {
        pending.push(format!(
            "{} machines exist, {} planned",
            machines.len(),
            plan.control_plane + plan.workers
        ));
    }
    for machine in machines.iter().filter(|m| !ready_now(store, m)) {
        let reason = metal_machine_of(store, machine)
            .and_then(|mm| mm.status.as_ref())
            .and_then(|s| capms_core::api::conditions::get_condition(&s.conditions, "Ready"))
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "not reconciled yet".to_string());
        pending.push(format!("{} not ready ({reason})", machine.metadata.name.clone().unwrap_or_default()));
    }
    if plan.firewall.is_some() {
        let firewall_ready = store
            .get::<MetalStackFirewall>(namespace, &format!("{cluster}-firewall"))
            .and_then(|fw| fw.status.as_ref())
            .is_some_and(|s| is_true(&s.conditions, ConditionType::Ready.as_str()));
        if !firewall_ready {
            pending.push("firewall not ready".to_string());
        }
    }
    pending
}

/// Copies a cluster's objects to another store as clusterctl does: same names, specs,
/// labels, annotations and finalizers; new UIDs; owner references re-pointed; no status.
fn copy_cluster(
    source: &Store,
    target: &mut Store,
    namespace: &str,
    name: &str,
    now: Timestamp,
) -> Result<(), String> {
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    let in_cluster = |meta: &ObjectMeta| {
        meta.namespace.as_deref() == Some(namespace)
            && (meta.name.as_deref() == Some(name)
                || capi::label(meta, capi::CLUSTER_NAME_LABEL) == Some(name))
    };
    let clusters: Vec<Cluster> = source
        .clusters
        .values()
        .filter(|c| {
            c.metadata.name.as_deref() == Some(name) && c.metadata.namespace.as_deref() == Some(namespace)
        })
        .cloned()
        .collect();
    copy_all(target, clusters, &mut uids, now, |c| c.status = None)?;
    let metal_clusters: Vec<MetalStackCluster> =
        source.metal_clusters.values().filter(|o| in_cluster(&o.metadata)).cloned().collect();
    copy_all(target, metal_clusters, &mut uids, now, |o| o.status = None)?;
    let machines: Vec<Machine> = source
        .machines
        .values()
        .filter(|m| m.spec.cluster_name == name && m.metadata.namespace.as_deref() == Some(namespace))
        .cloned()
        .collect();
    let machine_names: Vec<String> = machines.iter().filter_map(|m| m.metadata.name.clone()).collect();
    copy_all(target, machines, &mut uids, now, |m| m.status = None)?;
    let metal_machines: Vec<MetalStackMachine> =
        source.metal_machines.values().filter(|o| in_cluster(&o.metadata)).cloned().collect();
    copy_all(target, metal_machines, &mut uids, now, |o| o.status = None)?;
    let secrets: Vec<Secret> = source
        .secrets
        .values()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .filter(|s| {
            s.metadata
                .owner_references
                .as_ref()
                .is_some_and(|refs| refs.iter().any(|r| machine_names.contains(&r.name)))
        })
        .cloned()
        .collect();
    copy_all(target, secrets, &mut uids, now, |_| {})?;
    let firewalls: Vec<MetalStackFirewall> =
        source.firewalls.values().filter(|o| in_cluster(&o.metadata)).cloned().collect();
    copy_all(target, firewalls, &mut uids, now, |o| o.status = None)
}

fn copy_all<T: Stored>(
    target: &mut Store,
    objects: Vec<T>,
    uids: &mut BTreeMap<String, String>,
    now: Timestamp,
    strip: impl Fn(&mut T),
) -> Result<(), String> {
    for mut object in objects {
        let old_uid = object.meta().uid.clone().unwrap_or_default();
        strip(&mut object);
        let meta = object.meta_mut();
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        if let Some(refs) = meta.owner_references.as_mut() {
            for reference in refs.iter_mut() {
                if let Some(new_uid) = uids.get(&reference.uid) {
                    reference.uid = new_uid.clone();
                }
            }
        }
        let created = target.create(object, now).map_err(|e| format!("move: {e}"))?;
        uids.insert(old_uid, created.meta().uid.clone().unwrap_or_default());
    }
    Ok(())
}

fn annotate_for_move<T: Stored>(store: &mut Store, key: &(String, String), now: Timestamp) {
    if let Some(mut object) = store.get::<T>(&key.0, &key.1).cloned() {
        object
            .meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(capi::DELETE_FOR_MOVE_ANNOTATION.to_string(), String::new());
        let _ = store.update(object, false);
        let _ = store.delete::<T>(&key.0, &key.1, now);
    }
}

fn cluster_keys<T: Stored>(store: &Store, namespace: &str, name: &str) -> Vec<(String, String)> {
    T::collection(store)
        .values()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .filter(|o| {
            o.meta().name.as_deref() == Some(name)
                || capi::label(o.meta(), capi::CLUSTER_NAME_LABEL) == Some(name)
        })
        .map(|o| key_of(o.meta()))
        .collect()
}

/// Annotates every object of the cluster with delete-for-move and deletes it.
fn delete_for_move(store: &mut Store, namespace: &str, name: &str, now: Timestamp) {
    for key in cluster_keys::<MetalStackMachine>(store, namespace, name) {
        annotate_for_move::<MetalStackMachine>(store, &key, now);
    }
    for key in cluster_keys::<MetalStackFirewall>(store, namespace, name) {
        annotate_for_move::<MetalStackFirewall>(store, &key, now);
    }
    for key in cluster_keys::<MetalStackCluster>(store, namespace, name) {
        annotate_for_move::<MetalStackCluster>(store, &key, now);
    }
    for key in cluster_keys::<Machine>(store, namespace, name) {
        annotate_for_move::<Machine>(store, &key, now);
    }
    annotate_for_move::<Cluster>(store, &(namespace.to_string(), name.to_string()), now);
}

/// clusterctl force-removes the finalizers of the source objects.
fn force_remove(store: &mut Store, namespace: &str, name: &str) {
    for key in cluster_keys::<MetalStackMachine>(store, namespace, name) {
        store.force_remove_finalizers::<MetalStackMachine>(&key.0, &key.1);
    }
    for key in cluster_keys::<MetalStackFirewall>(store, namespace, name) {
        store.force_remove_finalizers::<MetalStackFirewall>(&key.0, &key.1);
    }
    for key in cluster_keys::<MetalStackCluster>(store, namespace, name) {
        store.force_remove_finalizers::<MetalStackCluster>(&key.0, &key.1);
    }
    for key in cluster_keys::<Machine>(store, namespace, name) {
        store.force_remove_finalizers::<Machine>(&key.0, &key.1);
    }
    store.force_remove_finalizers::<Cluster>(namespace, name);
}
