//! Finding, adopting and freeing what capms allocated for one object. Shared by the machine
//! and the firewall reconciler: a firewall is a machine with role firewall.

use crate::backend::MetalBackend;
use crate::error::{BackendError, ErrorKind};
use crate::metal::{Machine, MachineQuery, MachineRole, tags_match};
use crate::reconcile::events::{Event, EventReason};
use crate::tags::{self, ObjectRef};

/// The object an allocation belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) cluster: ObjectRef,
    pub(crate) object: ObjectRef,
    /// `tags::MACHINE_RESOURCE` or `tags::FIREWALL_RESOURCE`.
    pub(crate) resource_key: &'static str,
    pub(crate) project_id: String,
    pub(crate) role: MachineRole,
}

impl Owner {
    /// Whether a machine is still ours: allocated to our project with our role, carrying the
    /// cluster's and the object's ownership tags. Checked right before every free, because
    /// metal-api's free is unconditional.
    pub(crate) fn owns(&self, machine: &Machine) -> bool {
        let ownership = tags::ownership_tags(&self.cluster, &self.object, self.resource_key);
        machine.project_id() == Some(self.project_id.as_str())
            && machine.role() == Some(self.role)
            && tags_match(&machine.tags, &ownership)
    }

    async fn find(
        &self,
        backend: &dyn MetalBackend,
        tags: Vec<String>,
    ) -> Result<Vec<Machine>, BackendError> {
        let query = MachineQuery {
            tags,
            allocation_project: Some(self.project_id.clone()),
            allocation_role: Some(self.role),
            ..MachineQuery::default()
        };
        match self.role {
            MachineRole::Machine => backend.find_machines(&query).await,
            MachineRole::Firewall => backend.find_firewalls(&query).await,
        }
    }

    /// Allocations made for exactly this object (this UID), sorted by machine id.
    pub(crate) async fn find_identity(
        &self,
        backend: &dyn MetalBackend,
    ) -> Result<Vec<Machine>, BackendError> {
        let mut found = self.find(backend, tags::identity_tags(&self.object, self.resource_key)).await?;
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// Keeps the first of several allocations for this object and frees the others: a second
    /// allocation can only come from two operator replicas racing, and must not leak.
    pub(crate) async fn free_duplicates(
        &self,
        backend: &dyn MetalBackend,
        keep: &str,
        found: &[Machine],
        events: &mut Vec<Event>,
    ) -> Result<(), BackendError> {
        for duplicate in found.iter().filter(|machine| machine.id != keep && self.owns(machine)) {
            backend.free_machine(&duplicate.id).await?;
            let message = format!("freed duplicate allocation {} of {}", duplicate.id, self.object);
            events.push(Event::warning(EventReason::DuplicateFreed, message));
        }
        Ok(())
    }

    /// Frees machines that the cache saw carrying this object's identity tags besides `keep`
    /// (two replicas raced an allocation). Each is re-read right before the free, because the
    /// cached answer may be stale and metal-api's free is unconditional.
    pub(crate) async fn free_cached_duplicates(
        &self,
        backend: &dyn MetalBackend,
        keep: &str,
        cached: Vec<Machine>,
        events: &mut Vec<Event>,
    ) -> Result<bool, BackendError> {
        let identity = tags::identity_tags(&self.object, self.resource_key);
        let mut freed = false;
        for candidate in cached.into_iter().filter(|machine| machine.id != keep) {
            let fresh = match backend.get_machine(&candidate.id).await {
                Ok(fresh) => fresh,
                Err(error) if error.kind() == ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if self.owns(&fresh) && tags_match(&fresh.tags, &identity) {
                backend.free_machine(&fresh.id).await?;
                let message = format!("freed duplicate allocation {} of {}", fresh.id, self.object);
                events.push(Event::warning(EventReason::DuplicateFreed, message));
                freed = true;
            }
        }
        Ok(freed)
    }

    /// Frees every machine of this object: the one behind the providerID (if it is still
    /// ours) and any other carrying the object's ownership tags. Returns the freed ids.
    pub(crate) async fn free_all(
        &self,
        backend: &dyn MetalBackend,
        provider_machine_id: Option<&str>,
        events: &mut Vec<Event>,
    ) -> Result<Vec<String>, BackendError> {
        let mut candidates =
            self.find(backend, tags::ownership_tags(&self.cluster, &self.object, self.resource_key)).await?;
        if let Some(id) = provider_machine_id.filter(|id| !candidates.iter().any(|m| &m.id == id)) {
            match backend.get_machine(id).await {
                Ok(machine) => candidates.push(machine),
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        let mut freed = Vec::new();
        for machine in candidates {
            if !self.owns(&machine) {
                if machine.allocation.is_some() {
                    let message = format!("machine {} is allocated to someone else; left alone", machine.id);
                    events.push(Event::warning(EventReason::NotOurs, message));
                }
                continue;
            }
            backend.free_machine(&machine.id).await?;
            events.push(Event::normal(
                EventReason::Freed,
                format!("freed {} {}", self.role.as_str(), machine.id),
            ));
            freed.push(machine.id);
        }
        Ok(freed)
    }
}
