//! The operator glue: everything capms-manager does around a core reconcile that is not I/O,
//! written once and run by both capms-manager and the world simulator (`capms-sim`), so that
//! what the simulator explores is the code that ships.
//!
//! One pass over an object, as both run it:
//! 1. [`gather`]: the facts about the object's owners, read through [`Objects`] (a synchronous
//!    read interface over caches: kube-runtime reflector stores in capms-manager, the
//!    simulator's informer view of its object store).
//! 2. [`reconcile`]: core's reconciler for the kind, recorded into a trace when asked; its
//!    metal-api writes pass the block-move handshake first ([`gate`]).
//! 3. [`plan`]: what the outcome asks to write (only what changed).
//! 4. [`execute`]: the writes in their one order, through a [`Writer`] (a kube client, or the
//!    simulator's store).
//! 5. [`retry`]: when to run again: the reconciler's requeue, the resync, or the retry of a
//!    failed pass with per-object exponential backoff.
//!
//! [`triggers`] maps a watched object's change to the reconciles it triggers; [`credentials`]
//! reports a cluster's unusable credentials Secret on the objects that need it.
//!
//! What stays outside: the transport (watches, reflectors, the kube client, the simulator's
//! store and its faults), the choice of metal-api credentials, and the clock and jitter, which
//! enter as values.

pub mod credentials;
pub mod execute;
pub mod gate;
pub mod gather;
pub mod objects;
pub mod plan;
pub mod retry;
pub mod triggers;

pub use credentials::{CredentialsError, CredentialsProblem};
pub use execute::{Writer, execute};
pub use gate::{Apiserver, Gate, Settled};
pub use objects::{Kind, ObjectKey, Objects, Target};
pub use plan::{ObjectPatch, Plan, Reconciled};
pub use retry::{Backoff, FailureClass, WriteError};
pub use triggers::{Changed, triggered, triggered_all};

/// Runs the reconcilers behind the pass's [`Gate`], recording each pass into a trace when a
/// sink is given.
pub mod reconcile {
    use super::gate::{Gate, Gated};
    use crate::MetalBackend;
    use crate::reconcile::machine::{Variant, reconcile_machine_variant};
    use crate::reconcile::{
        ClusterInput, ClusterOutcome, FirewallInput, FirewallOutcome, MachineCache, MachineInput,
        MachineOutcome, reconcile_cluster, reconcile_firewall,
    };
    use crate::trace::{TraceSink, record_cluster, record_firewall, record_machine};

    /// One MetalStackMachine pass (`variant`: the correct reconciler, or a canary in tests).
    pub async fn machine(
        input: &MachineInput<'_>,
        backend: &dyn MetalBackend,
        gate: &Gate,
        cache: &MachineCache,
        variant: Variant,
        trace: Option<&dyn TraceSink>,
    ) -> MachineOutcome {
        let gated = Gated::new(backend, gate);
        // The canary of the handshake writes to metal-api without it.
        let backend: &dyn MetalBackend = if variant == Variant::CanaryUngated { backend } else { &gated };
        match trace {
            Some(sink) => record_machine(input, backend, cache, variant, sink).await,
            None => reconcile_machine_variant(input, backend, cache, variant).await,
        }
    }

    /// One MetalStackCluster pass.
    pub async fn cluster(
        input: &ClusterInput<'_>,
        backend: &dyn MetalBackend,
        gate: &Gate,
        trace: Option<&dyn TraceSink>,
    ) -> ClusterOutcome {
        let backend = &Gated::new(backend, gate);
        match trace {
            Some(sink) => record_cluster(input, backend, sink).await,
            None => reconcile_cluster(input, backend).await,
        }
    }

    /// One MetalStackFirewall pass.
    pub async fn firewall(
        input: &FirewallInput<'_>,
        backend: &dyn MetalBackend,
        gate: &Gate,
        trace: Option<&dyn TraceSink>,
    ) -> FirewallOutcome {
        let backend = &Gated::new(backend, gate);
        match trace {
            Some(sink) => record_firewall(input, backend, sink).await,
            None => reconcile_firewall(input, backend).await,
        }
    }
}
