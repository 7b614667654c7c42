//! A model-based property test of the machine reconciler.
//!
//! One MetalStackMachine lives in a simulated datacenter while random things happen: the
//! operator reconciles (and applies the outcome like the real operator would), time passes, the
//! next answer of an operation is lost (it took effect, the operator sees a timeout), a call
//! fails, the machine dies or is freed by an admin, the operator crashes between reconcile and
//! status write (the outcome is dropped, the cache is lost), the object is deleted. After every
//! step the invariants of PRODUCT.md §3 are checked against the datacenter:
//!
//! - never more than one allocated machine carries the object's identity tags;
//! - the providerID never changes once written;
//! - `Ready=True` only if the machine behind the providerID is ours, `Phoned Home` and `Alive`
//!   (allowing the per-cluster read cache its documented staleness after a world change);
//! - while any machine carries the object's identity tags, the object keeps its finalizer;
//! - once the object is gone, no allocated machine carries its ownership tags; and a deleted
//!   object is gone after a bounded number of reconciles.

mod support;

use capms_backend_sim::{PartitionSpec, Sim, SimBuilder};
use capms_core::api::MetalStackMachine;
use capms_core::metal::{Liveliness, Machine, MachineRole};
use capms_core::reconcile::{MachineCache, MachineInput, MachineOutcome, RefreshPolicy, reconcile_machine};
use capms_core::tags;
use capms_core::{Operation, Timestamp};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::time::Duration;
use support::*;

#[derive(Debug, Clone)]
enum Op {
    /// The operator reconciles and applies the outcome.
    Reconcile,
    /// Virtual time passes.
    Advance(u64),
    /// The next successful call of this operation takes effect but its answer is lost.
    LoseNext(Operation),
    /// The next call fails with a 500 before it takes effect.
    InjectTransient,
    /// The object's machine dies.
    Kill,
    /// An admin frees the object's machine.
    FreeExternally,
    /// The operator reconciles, then crashes before writing anything (and loses its cache).
    CrashOperator,
    /// Someone deletes the object.
    Delete,
}

fn op() -> impl Strategy<Value = Op> {
    let lost = prop_oneof![
        Just(Operation::AllocateMachine),
        Just(Operation::FreeMachine),
        Just(Operation::FindMachines),
        Just(Operation::FindMachine),
    ];
    prop_oneof![
        6 => Just(Op::Reconcile),
        3 => (1u64..=400).prop_map(Op::Advance),
        1 => lost.prop_map(Op::LoseNext),
        1 => Just(Op::InjectTransient),
        1 => Just(Op::Kill),
        1 => Just(Op::FreeExternally),
        2 => Just(Op::CrashOperator),
        1 => Just(Op::Delete),
    ]
}

/// How stale the shared machine reads may be: a cached answer is good until the machine's next
/// look, at most the default policy's `steady`.
fn cache_staleness() -> Duration {
    match RefreshPolicy::default() {
        RefreshPolicy::PerCluster { steady, .. } => steady,
        RefreshPolicy::PerMachine { .. } => Duration::ZERO,
    }
}

struct Model {
    world: World,
    cache: MachineCache,
    /// `None` once Kubernetes removed the object.
    object: Option<MetalStackMachine>,
    /// The providerID as first written.
    provider_id: Option<String>,
    /// When the last kill or external free happened (the cache may not have seen it yet).
    last_world_change: Option<Timestamp>,
    steps: u64,
}

impl Model {
    fn new(seed: u64) -> Self {
        let sim: Sim = SimBuilder::new()
            .seed(seed)
            .partition(PartitionSpec::mini_lab(PARTITION, 6))
            .project(OTHER_PROJECT, "other-tenant")
            .build();
        Model {
            world: World::with_sim(sim),
            cache: MachineCache::default(),
            object: Some(metal_machine("worker-0", "uid-worker-0")),
            provider_id: None,
            last_world_change: None,
            steps: 0,
        }
    }

    fn identity_tags() -> Vec<String> {
        tags::identity_tags(
            &ObjectExt::object_ref(&metal_machine("worker-0", "uid-worker-0")),
            tags::MACHINE_RESOURCE,
        )
    }

    fn ownership_tags() -> Vec<String> {
        let object = ObjectExt::object_ref(&metal_machine("worker-0", "uid-worker-0"));
        tags::ownership_tags(&cluster_identity(), &object, tags::MACHINE_RESOURCE)
    }

    fn reconcile(&self, object: &MetalStackMachine) -> MachineOutcome {
        let capi = capi_machine("worker-0");
        let cluster = cluster_facts();
        let metal_cluster = self.world.metal_cluster();
        let bootstrap = bootstrap();
        let input = MachineInput {
            metal_machine: object,
            capi_machine: Some(&capi),
            cluster: Some(&cluster),
            metal_cluster: Some(&metal_cluster),
            bootstrap: &bootstrap,
            now: self.world.now(),
            jitter: self.steps % 41,
        };
        block_on(reconcile_machine(&input, &self.world.backend, &self.cache))
    }

    /// The machine the world's verbs act on: the one behind the providerID, else any machine
    /// carrying the object's identity tags.
    fn target(&self) -> Option<String> {
        let behind_provider_id = self
            .object
            .as_ref()
            .and_then(|o| o.spec.provider_id.as_deref())
            .and_then(|p| p.rsplit('/').next())
            .map(str::to_string);
        behind_provider_id
            .or_else(|| self.world.allocated_with(&Self::identity_tags()).first().map(|m| m.id.clone()))
    }

    fn world_changed(&mut self) {
        self.last_world_change = Some(self.world.now());
    }

    /// Kubernetes removes a deleted object once it has no finalizer left.
    fn collect_garbage(&mut self) {
        let gone = self.object.as_ref().is_some_and(|o| {
            o.metadata.deletion_timestamp.is_some()
                && o.metadata.finalizers.as_ref().is_none_or(Vec::is_empty)
        });
        if gone {
            self.object = None;
        }
    }

    /// One reconcile whose outcome is applied. Returns the requeue.
    fn reconcile_and_apply(&mut self) -> Result<Option<Duration>, TestCaseError> {
        let Some(object) = self.object.clone() else {
            return Ok(None);
        };
        let outcome = self.reconcile(&object);
        let mut object = object;
        apply_machine(&mut object, &outcome);
        self.check_provider_id(&object)?;
        self.check_ready(&object)?;
        self.object = Some(object);
        self.collect_garbage();
        Ok(outcome.requeue)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.steps += 1;
        match op {
            Op::Reconcile => {
                self.reconcile_and_apply()?;
            }
            Op::Advance(seconds) => self.world.sim.advance(Duration::from_secs(*seconds)),
            Op::LoseNext(operation) => self.world.backend.lose_next(*operation),
            Op::InjectTransient => self.world.backend.fail_next_call(transient(Operation::FindMachines)),
            Op::Kill => {
                if let Some(id) = self.target() {
                    self.world.sim.kill_machine(&id);
                    self.world_changed();
                }
            }
            Op::FreeExternally => {
                if let Some(id) = self.target() {
                    self.world.sim.free_machine_externally(&id);
                    self.world_changed();
                }
            }
            Op::CrashOperator => {
                if let Some(object) = self.object.clone() {
                    let _dropped = self.reconcile(&object);
                    self.cache = MachineCache::default();
                }
            }
            Op::Delete => {
                if let Some(object) = self.object.take() {
                    let now = self.world.now();
                    let deleting = if object.metadata.deletion_timestamp.is_some() {
                        object
                    } else {
                        object.deleting(now)
                    };
                    self.object = Some(deleting);
                    self.collect_garbage();
                }
            }
        }
        self.check_world()
    }

    fn check_provider_id(&mut self, object: &MetalStackMachine) -> Result<(), TestCaseError> {
        match (&self.provider_id, &object.spec.provider_id) {
            (Some(first), now) => {
                prop_assert_eq!(Some(first), now.as_ref(), "the providerID changed once written")
            }
            (None, Some(now)) => self.provider_id = Some(now.clone()),
            (None, None) => {}
        }
        Ok(())
    }

    fn check_ready(&self, object: &MetalStackMachine) -> Result<(), TestCaseError> {
        let conditions = object.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        if !ready_is_true(conditions) {
            return Ok(());
        }
        let may_be_stale = self
            .last_world_change
            .is_some_and(|at| self.world.now().duration_since(at).unsigned_abs() <= cache_staleness());
        if may_be_stale {
            return Ok(());
        }
        let machine_id = object.spec.provider_id.as_deref().and_then(|p| p.rsplit('/').next());
        prop_assert!(machine_id.is_some(), "Ready=True without a providerID");
        let machine: Machine = self.world.machine(machine_id.unwrap_or_default());
        let ours = machine.project_id() == Some(PROJECT)
            && machine.role() == Some(MachineRole::Machine)
            && Self::ownership_tags().iter().all(|tag| machine.tags.contains(tag));
        prop_assert!(ours, "Ready=True for a machine that is not ours: {:?}", machine);
        prop_assert!(machine.is_phoned_home(), "Ready=True before Phoned Home: {:?}", machine.events.first());
        prop_assert_eq!(machine.liveliness, Liveliness::Alive, "Ready=True for a machine that is not alive");
        Ok(())
    }

    fn check_world(&self) -> Result<(), TestCaseError> {
        let identity = self.world.allocated_with(&Self::identity_tags());
        prop_assert!(identity.len() <= 1, "{} machines carry the object's identity tags", identity.len());
        match &self.object {
            Some(object) => {
                if !identity.is_empty() {
                    prop_assert!(
                        object.has_finalizer(capms_core::api::MACHINE_FINALIZER),
                        "a machine is allocated for an object without finalizer"
                    );
                }
            }
            None => {
                let leaked = self.world.allocated_with(&Self::ownership_tags());
                prop_assert!(
                    leaked.is_empty(),
                    "the object is gone but its machine is allocated: {:?}",
                    leaked
                );
            }
        }
        Ok(())
    }

    /// Deletes the object (if it still exists) and reconciles until Kubernetes removed it.
    fn delete_and_drain(&mut self) -> Result<(), TestCaseError> {
        self.apply(&Op::Delete)?;
        for _ in 0..20 {
            if self.object.is_none() {
                return self.check_world();
            }
            let requeue = self.reconcile_and_apply()?;
            self.check_world()?;
            self.world.sim.advance(requeue.unwrap_or(Duration::from_secs(10)).max(Duration::from_secs(1)));
        }
        prop_assert!(
            self.object.is_none(),
            "the deleted object still exists after 20 reconciles: {:#?}",
            self.object
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn one_machine_per_object_through_crashes_lost_answers_and_a_hostile_world(
        seed in 0u64..1_000,
        ops in vec(op(), 1..=30),
    ) {
        let mut model = Model::new(seed);
        for op in &ops {
            model.apply(op)?;
        }
        model.delete_and_drain()?;
        prop_assert!(model.world.allocated_with(&Model::ownership_tags()).is_empty());
    }
}

#[test]
fn the_model_reaches_ready_without_faults() {
    let mut model = Model::new(1);
    let mut ready = false;
    for _ in 0..40 {
        let requeue = model.reconcile_and_apply().expect("invariants hold");
        let object = model.object.as_ref().expect("not deleted");
        if ready_is_true(object.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()) {
            ready = true;
            break;
        }
        model.world.sim.advance(requeue.unwrap_or(Duration::from_secs(10)));
    }
    assert!(ready, "a healthy machine becomes Ready");
    model.delete_and_drain().expect("deletion completes");
}
