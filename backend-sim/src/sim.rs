//! [`Sim`]: the handle on a simulated datacenter, with the clock, the fault verbs and the views
//! that tests and the world simulator need.

use crate::backend::SimBackend;
use crate::datacenter::{Datacenter, Phase, Scheduled};
use crate::faults::FaultPlan;
use capms_core::metal::{Ip, Machine, MachineState, Network};
use capms_core::{Operation, Timestamp};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A simulated metal-stack datacenter. Cheap to clone; clones share the datacenter.
///
/// Time is virtual: it moves only when [`Sim::advance`] (or a latency fault) moves it, and
/// everything scheduled up to then happens in time order at that moment.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Mutex<Datacenter>>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with(|datacenter| {
            f.debug_struct("Sim")
                .field("seed", &datacenter.seed)
                .field("now", &datacenter.now)
                .field("machines", &datacenter.machines.len())
                .finish()
        })
    }
}

impl Sim {
    pub(crate) fn new(datacenter: Datacenter) -> Self {
        Sim { inner: Arc::new(Mutex::new(datacenter)) }
    }

    /// Runs `f` on the datacenter. A panic elsewhere (an invariant violation) poisons the
    /// lock; the state is still consistent enough to inspect, so the poison is ignored.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Datacenter) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// A `MetalBackend` on this datacenter. Latency faults advance the virtual clock.
    pub fn backend(&self) -> SimBackend {
        SimBackend::new(self.clone())
    }

    /// The seed of the datacenter's RNG.
    pub fn seed(&self) -> u64 {
        self.with(|datacenter| datacenter.seed)
    }

    /// The current virtual time.
    pub fn now(&self) -> Timestamp {
        self.with(|datacenter| datacenter.now)
    }

    /// Moves virtual time forward, applying every event that becomes due.
    pub fn advance(&self, by: Duration) {
        self.with(|datacenter| {
            let until = datacenter.later(by);
            datacenter.advance_to(until);
        });
    }

    /// Moves virtual time forward to `time` (never backwards).
    pub fn advance_to(&self, time: Timestamp) {
        self.with(|datacenter| datacenter.advance_to(time));
    }

    /// When the next scheduled event (provisioning step, IP release, fault) is due.
    pub fn next_event_at(&self) -> Option<Timestamp> {
        self.with(|datacenter| datacenter.next_event_at())
    }

    /// Replaces the fault plan.
    pub fn set_fault_plan(&self, faults: FaultPlan) {
        self.with(|datacenter| {
            datacenter.record(format!("fault plan replaced: {faults:?}"));
            if faults.stale_read_lag.is_zero() {
                datacenter.histories.clear();
            }
            datacenter.faults = faults;
        });
    }

    /// The fault plan in force.
    pub fn fault_plan(&self) -> FaultPlan {
        self.with(|datacenter| datacenter.faults.clone())
    }

    /// Ends all faults: no more injected errors, lost answers, late writes, stale finds or
    /// latency, no scheduled deaths or external frees, no capacity limits. What already
    /// happened stays: silent machines stay silent (and turn `Unknown` or `Dead` in time),
    /// machines that hang in provisioning hang, writes sent late still land, machines someone
    /// else took are returned when planned.
    pub fn heal(&self) {
        self.with(|datacenter| {
            datacenter.faults = FaultPlan::none();
            datacenter.capacity_budget.clear();
            datacenter.histories.clear();
            datacenter.timeline.retain(|_, scheduled| {
                !matches!(scheduled, Scheduled::Die { .. } | Scheduled::ExternalFree { .. })
            });
            datacenter.record("healed: all faults off".to_string());
        });
    }

    /// Limits how many more machines of `size_id` in `partition_id` can be allocated
    /// (`None` lifts the limit). metal-api answers "no machine available" beyond it.
    pub fn set_capacity(&self, partition_id: &str, size_id: &str, available: Option<usize>) {
        self.with(|datacenter| {
            let key = (partition_id.to_string(), size_id.to_string());
            match available {
                Some(available) => datacenter.capacity_budget.insert(key, available),
                None => datacenter.capacity_budget.remove(&key),
            };
            datacenter.record(format!("capacity of {partition_id}/{size_id} set to {available:?}"));
        });
    }

    /// Kills a machine the way metal-api sees a death: it goes silent for ever. Its
    /// liveliness stays `Alive` for [`crate::MACHINE_DEAD_AFTER`], then turns `Unknown` while
    /// it is allocated and `Dead` once it is not (never `Dead` while allocated). It is never
    /// reclaimed. Returns whether it exists.
    pub fn kill_machine(&self, machine_id: &str) -> bool {
        self.with(|datacenter| datacenter.silence(machine_id))
    }

    /// [`Sim::kill_machine`] as if the machine had died at `since`: a machine killed
    /// [`crate::MACHINE_DEAD_AFTER`] ago is `Unknown` (allocated) or `Dead` at once. For
    /// `capms-sim serve --control`, whose clock is the wall clock. Returns whether it exists.
    pub fn kill_machine_since(&self, machine_id: &str, since: Timestamp) -> bool {
        self.with(|datacenter| datacenter.silence_since(machine_id, since))
    }

    /// Since when a machine is silent (killed, or hung while provisioning), if it is.
    pub fn silent_since(&self, machine_id: &str) -> Option<Timestamp> {
        self.with(|datacenter| datacenter.machines.get(machine_id).and_then(|sim| sim.silent_since))
    }

    /// Frees a machine as someone else would (an admin with metalctl). Returns whether it
    /// existed.
    pub fn free_machine_externally(&self, machine_id: &str) -> bool {
        self.with(|datacenter| {
            if !datacenter.machines.contains_key(machine_id) {
                return false;
            }
            datacenter.record(format!("external free of machine {machine_id}"));
            datacenter.free_unchecked(machine_id);
            true
        })
    }

    /// Sets a machine's operator state (`Locked` machines cannot be freed). Returns whether it
    /// exists.
    pub fn set_machine_state(&self, machine_id: &str, state: MachineState) -> bool {
        self.with(|datacenter| {
            let Some(sim) = datacenter.machines.get_mut(machine_id) else {
                return false;
            };
            sim.machine.state = state;
            datacenter.record(format!("machine {machine_id}: state {state:?}"));
            true
        })
    }

    /// Every machine, in id order.
    pub fn machines(&self) -> Vec<Machine> {
        self.with(|datacenter| datacenter.machines.values().map(|sim| sim.machine.clone()).collect())
    }

    /// Where a machine is in its life.
    pub fn machine_phase(&self, machine_id: &str) -> Option<Phase> {
        self.with(|datacenter| datacenter.machines.get(machine_id).map(|sim| sim.phase))
    }

    /// Every network, in id order.
    pub fn networks(&self) -> Vec<Network> {
        self.with(|datacenter| datacenter.networks.values().cloned().collect())
    }

    /// Every allocated IP, in address order.
    pub fn ips(&self) -> Vec<Ip> {
        self.with(|datacenter| datacenter.ips.values().cloned().collect())
    }

    /// The SHA-256 of the event log so far: equal for equal seeds and calls.
    pub fn event_log_hash(&self) -> String {
        self.with(|datacenter| datacenter.log.hash_hex())
    }

    /// The event log lines, if the builder kept them.
    pub fn event_log(&self) -> Vec<String> {
        self.with(|datacenter| datacenter.log.lines().map(<[String]>::to_vec).unwrap_or_default())
    }

    /// The event log lines from index `from` on, if the builder kept them.
    pub fn event_log_since(&self, from: usize) -> Vec<String> {
        self.with(|datacenter| {
            datacenter
                .log
                .lines()
                .map(|lines| lines.get(from..).unwrap_or_default().to_vec())
                .unwrap_or_default()
        })
    }

    /// How many lines the event log has.
    pub fn event_count(&self) -> u64 {
        self.with(|datacenter| datacenter.log.len())
    }

    /// How often each operation was called.
    pub fn calls(&self) -> BTreeMap<Operation, u64> {
        self.with(|datacenter| datacenter.calls.clone())
    }

    /// Checks the datacenter invariants now, whether or not they are checked after every call.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.with(|datacenter| crate::invariants::check(datacenter))
    }

    /// Adds a line to the event log (for drivers that want their steps in the same log).
    pub fn note(&self, line: &str) {
        self.with(|datacenter| datacenter.record(format!("note: {line}")));
    }
}
