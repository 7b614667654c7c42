//! A cluster whose metal-api credentials cannot be used, as its objects report it.
//!
//! # Expected flow
//! 1. The caller reads the MetalStackCluster's `spec.credentialsRef` Secret and builds a client
//!    from it; when that fails it has a [`CredentialsError`]: which Secret, which cluster, and
//!    what is wrong with it ([`CredentialsProblem`]).
//! 2. [`report`] plans the writes on the object that could not be reconciled (the cluster, one
//!    of its MetalStackMachines or its MetalStackFirewall): `Ready=False` with reason
//!    `CredentialsInvalid` and the error's message (and `Deleting=True` with the same reason
//!    while the object is being deleted: its deletion waits for the credentials), and a Warning
//!    event with the same message when the condition did not say so already.
//! 3. The pass fails with the error; its class ([`FailureClass::Auth`]) retries it slowly
//!    ([`super::retry::CONFIGURATION_RETRY`], doubling up to [`super::retry::DELAY_MAX`]).
//! 4. A change of a Secret that capms protects reconciles the clusters that name it
//!    ([`super::triggers::clusters_naming_secret`]), so a fixed Secret clears the condition at
//!    once; a cluster's changed status then reconciles its machines and firewall.
//!
//! # Guarantees
//! Messages name the Secret, the cluster and the keys, never a value. The event is recorded
//! once per change of the condition, not at every retry. Nothing but the status and the event
//! is written: no finalizer, no spec, no metal-api call.
//!
//! # Assumptions
//! A Secret that does not exist yet carries no label to watch: its creation is noticed at the
//! next retry, at most [`super::retry::DELAY_MAX`] later.

use super::plan::{ObjectPatch, Plan, Reconciled};
use super::retry::FailureClass;
use crate::Timestamp;
use crate::api::conditions::{ConditionStatus, ConditionType, Reason, get_condition, set_condition};
use crate::reconcile::{Event, EventReason, FirewallChild};
use std::fmt;

/// What is wrong with a credentials Secret: what the user has to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsProblem {
    /// The Secret does not exist.
    SecretMissing,
    /// Neither `url` nor `METAL_API_URL` is set.
    UrlMissing,
    /// None of `hmac`, `METAL_API_HMAC`, `token`, `METAL_API_TOKEN` is set.
    AuthenticationMissing,
    /// The key `key` is set but unusable; `problem` says why without quoting the value.
    KeyInvalid { key: &'static str, problem: String },
    /// No client can be built from the Secret for another reason (never quoting a value).
    Unusable { problem: String },
}

impl fmt::Display for CredentialsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsProblem::SecretMissing => {
                f.write_str("does not exist: create it with the key url and the key hmac or token")
            }
            CredentialsProblem::UrlMissing => {
                f.write_str("has no key url (or METAL_API_URL): add it with metal-api's URL")
            }
            CredentialsProblem::AuthenticationMissing => f.write_str(
                "has neither key hmac (or METAL_API_HMAC) nor key token (or METAL_API_TOKEN): add one",
            ),
            CredentialsProblem::KeyInvalid { key, problem } => {
                write!(f, "has an invalid key {key}: {problem}")
            }
            CredentialsProblem::Unusable { problem } => write!(f, "cannot be used: {problem}"),
        }
    }
}

/// A MetalStackCluster's credentials Secret that cannot be used. Never carries its values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credentials Secret {namespace}/{secret} of MetalStackCluster {cluster} {problem}")]
pub struct CredentialsError {
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The MetalStackCluster's name.
    pub cluster: String,
    pub problem: CredentialsProblem,
}

impl CredentialsError {
    /// A user has to act: retried slowly.
    pub fn class(&self) -> FailureClass {
        FailureClass::Auth
    }
}

/// The writes that report `error` on `object` at `now`: the conditions, and the Warning event
/// if the Ready condition does not carry this message yet.
pub fn report<K: Reconciled>(object: &K, error: &CredentialsError, now: Timestamp) -> Plan<K> {
    let meta = object.meta();
    let message = error.to_string();
    let mut status = object.status().cloned().unwrap_or_default();
    let conditions = K::conditions(&mut status);
    let reported = get_condition(conditions, ConditionType::Ready.as_str())
        .is_some_and(|ready| ready.reason == Reason::CredentialsInvalid.as_str() && ready.message == message);
    let mut failed = |type_, status| {
        let reason = Reason::CredentialsInvalid;
        set_condition(conditions, type_, status, reason, &message, meta.generation, now);
    };
    failed(ConditionType::Ready, ConditionStatus::False);
    if meta.deletion_timestamp.is_some() {
        failed(ConditionType::Deleting, ConditionStatus::True);
    }
    let events = if reported {
        Vec::new()
    } else {
        vec![Event::warning(EventReason::CredentialsInvalid, message.clone())]
    };
    Plan {
        events,
        patch: ObjectPatch::default(),
        child: FirewallChild::Keep,
        status: (object.status() != Some(&status)).then_some(status),
        requeue: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MetalStackCluster, MetalStackMachine};
    use crate::reconcile::EventType;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("in range")
    }

    fn error(problem: CredentialsProblem) -> CredentialsError {
        CredentialsError {
            namespace: "default".to_string(),
            secret: "metal-credentials".to_string(),
            cluster: "tau".to_string(),
            problem,
        }
    }

    fn ready(object: &MetalStackMachine) -> (String, String, String) {
        let conditions = object.status.as_ref().map(|status| status.conditions.clone()).unwrap_or_default();
        let ready = get_condition(&conditions, "Ready").expect("Ready is set");
        (ready.status.clone(), ready.reason.clone(), ready.message.clone())
    }

    /// Applies `plan` as the writer would.
    fn applied(mut object: MetalStackMachine, plan: &Plan<MetalStackMachine>) -> MetalStackMachine {
        if let Some(status) = &plan.status {
            object.set_status(status.clone());
        }
        object
    }

    #[test]
    fn the_message_names_the_secret_the_cluster_and_the_key() {
        let message = error(CredentialsProblem::UrlMissing).to_string();
        assert_eq!(
            message,
            "credentials Secret default/metal-credentials of MetalStackCluster tau has no key url (or \
             METAL_API_URL): add it with metal-api's URL"
        );
    }

    #[test]
    fn a_failure_sets_ready_false_and_warns_once_per_change_of_the_condition() {
        let object = MetalStackMachine::new("m", Default::default());
        let missing = error(CredentialsProblem::SecretMissing);
        let plan = report(&object, &missing, at(10));
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].type_, EventType::Warning);
        assert_eq!(plan.events[0].reason, EventReason::CredentialsInvalid);
        assert_eq!(plan.events[0].message, missing.to_string());
        assert!(plan.patch.is_empty() && plan.requeue.is_none());
        let object = applied(object, &plan);
        assert_eq!(
            ready(&object),
            ("False".to_string(), "CredentialsInvalid".to_string(), missing.to_string())
        );

        let again = report(&object, &missing, at(70));
        assert!(again.events.is_empty(), "a retry warns no more");
        assert!(again.status.is_none(), "a retry writes nothing");

        let other = error(CredentialsProblem::AuthenticationMissing);
        let changed = report(&object, &other, at(80));
        assert_eq!(changed.events.len(), 1, "another problem is a new warning");
        let object = applied(object, &changed);
        let conditions = object.status.as_ref().map(|status| status.conditions.clone()).unwrap_or_default();
        let since = get_condition(&conditions, "Ready").map(|ready| ready.last_transition_time.clone());
        assert_eq!(since, Some(Time(at(10))), "Ready has been False since the first failure");
    }

    #[test]
    fn a_deleting_object_says_its_deletion_waits_for_the_credentials() {
        let mut object = MetalStackCluster::new("tau", Default::default());
        object.metadata.deletion_timestamp = Some(Time(at(5)));
        let plan = report(&object, &error(CredentialsProblem::SecretMissing), at(10));
        let conditions = plan.status.map(|status| status.conditions).unwrap_or_default();
        let deleting = get_condition(&conditions, "Deleting").expect("Deleting is set");
        assert_eq!((deleting.status.as_str(), deleting.reason.as_str()), ("True", "CredentialsInvalid"));
    }
}
