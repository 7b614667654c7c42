//! Garbage collection through `metadata.ownerReferences`, simplified.
//!
//! Automatic and synchronous: when an object is removed from the store, its dependents are
//! handled in the same request (the real collector is a separate, eventually consistent
//! controller). A dependent with no other live owner is deleted (finalizers respected, so it may
//! only get a deletionTimestamp); one with another live owner loses the dangling reference.
//! `Orphan` propagation strips the references instead; `Foreground` is treated as `Background`.
//! Only dependents of the removed object are looked at; `collect_garbage` scans everything.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::object::{ObjectKey, is_deleting, metadata_mut, owner_uids};
use crate::state::State;

impl State {
    /// Handles the dependents of a removed owner.
    pub(crate) fn collect_dependents(&mut self, owner: &str) {
        if !self.garbage_collection {
            return;
        }
        let live = self.live_uids();
        for key in self.dependents(owner) {
            // An earlier step of this cascade may have removed or changed it.
            let Some(current) = self.objects.get(&key).cloned() else { continue };
            let other_owner_lives = owner_uids(&current).iter().any(|uid| uid != owner && live.contains(uid));
            if other_owner_lives {
                self.drop_owner(&key, current, owner);
            } else {
                self.delete_object(&key, current);
            }
        }
    }

    /// Removes references to `owner` from its dependents (`propagationPolicy=Orphan`).
    pub(crate) fn orphan_dependents(&mut self, owner: &str) {
        for key in self.dependents(owner) {
            if let Some(current) = self.objects.get(&key).cloned() {
                self.drop_owner(&key, current, owner);
            }
        }
    }

    /// Deletes every object all of whose owners are gone; returns how many deletions began.
    pub(crate) fn collect_garbage(&mut self) -> usize {
        let live = self.live_uids();
        let orphans: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(_, object)| !is_deleting(object))
            .filter(|(_, object)| {
                let owners = owner_uids(object);
                !owners.is_empty() && owners.iter().all(|uid| !live.contains(uid))
            })
            .map(|(key, _)| key.clone())
            .collect();
        let mut started = 0;
        for key in orphans {
            if let Some(current) = self.objects.get(&key).cloned() {
                self.delete_object(&key, current);
                started += 1;
            }
        }
        started
    }

    fn dependents(&self, owner: &str) -> Vec<ObjectKey> {
        self.objects
            .iter()
            .filter(|(_, object)| owner_uids(object).iter().any(|uid| uid == owner))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn live_uids(&self) -> BTreeSet<String> {
        self.objects
            .values()
            .filter_map(|object| object["metadata"]["uid"].as_str().map(str::to_owned))
            .collect()
    }

    fn drop_owner(&mut self, key: &ObjectKey, current: Value, owner: &str) {
        let mut updated = current.clone();
        if let Ok(metadata) = metadata_mut(&mut updated)
            && let Some(Value::Array(owners)) = metadata.get_mut("ownerReferences")
        {
            owners.retain(|reference| reference["uid"].as_str() != Some(owner));
            if owners.is_empty() {
                metadata.remove("ownerReferences");
            }
        }
        self.put(key.clone(), updated, Some(current));
    }
}
