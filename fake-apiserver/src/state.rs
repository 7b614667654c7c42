//! The store: objects, the global resourceVersion, the change history, open watches.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::faults::FaultPlan;
use crate::limits::Limits;
use crate::object::{ObjectKey, finalizers, is_deleting, metadata_mut, now};
use crate::registry::Registry;
use crate::selector::{FieldSelector, LabelSelector};
use crate::watch::{OpenedWatch, WatchFilter, WatchSender, WatchStart, bookmark_frame, frame};

/// One request as the fake saw it, for request-shape tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// The raw (still encoded) query string, `""` when absent.
    pub query: String,
    /// The `Content-Type` header, when sent.
    pub content_type: Option<String>,
    /// The `Accept` header, when sent (metadata-only requests ask for
    /// `as=PartialObjectMetadata`).
    pub accept: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, kept in the history for watches to resume from.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub resource_version: u64,
    pub kind: ChangeKind,
    pub key: ObjectKey,
    /// The object after the change (for a deletion: its last state, with the deletion's version).
    pub object: Value,
    /// The object before the change, so that selector watches can turn a label change into
    /// ADDED or DELETED as the apiserver does.
    pub previous: Option<Value>,
}

/// Which objects a list, watch or collection delete covers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub group: String,
    pub plural: String,
    /// `None` for all namespaces (or cluster-scoped).
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    pub(crate) fn contains(&self, key: &ObjectKey, object: &Value) -> bool {
        key.group == self.group
            && key.plural == self.plural
            && self.namespace.as_ref().is_none_or(|namespace| *namespace == key.namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// Everything behind the fake's one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub registry: Registry,
    pub objects: BTreeMap<ObjectKey, Value>,
    /// The last committed resourceVersion (a global counter, like etcd's revision).
    pub resource_version: u64,
    history: VecDeque<Change>,
    /// Every change after this version is in `history`; watches from before it get 410.
    compacted: u64,
    watches: Vec<WatchSender>,
    next_watch_id: u64,
    next_uid: u64,
    rng: ChaCha8Rng,
    pub faults: FaultPlan,
    pub request_log: VecDeque<RequestRecord>,
    pub limits: Limits,
    pub garbage_collection: bool,
    /// Ticks on every committed change; `FakeApiServer::wait_until` listens to it.
    pub changes: watch::Sender<u64>,
}

impl State {
    pub(crate) fn new(limits: Limits) -> Self {
        // Versions start at 1 so that no list ever reports "0", which means "any" to a watch.
        Self {
            registry: Registry::with_builtins(),
            objects: BTreeMap::new(),
            resource_version: 1,
            history: VecDeque::new(),
            compacted: 1,
            watches: Vec::new(),
            next_watch_id: 0,
            next_uid: 0,
            rng: ChaCha8Rng::seed_from_u64(0),
            faults: FaultPlan::default(),
            request_log: VecDeque::new(),
            limits,
            garbage_collection: true,
            changes: watch::Sender::new(1),
        }
    }

    /// A deterministic, UUID-shaped uid.
    pub(crate) fn next_uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_uid)
    }

    /// `generateName` plus five characters from the apiserver's alphabet (seeded, reproducible).
    pub(crate) fn generate_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let suffix: String =
            (0..5).map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())])).collect();
        format!("{prefix}{suffix}")
    }

    pub(crate) fn log(&mut self, record: RequestRecord) {
        if self.request_log.len() >= self.limits.max_request_log {
            self.request_log.pop_front();
        }
        self.request_log.push_back(record);
    }

    /// Stores an object under a new resourceVersion and tells the watches.
    pub(crate) fn put(&mut self, key: ObjectKey, mut object: Value, previous: Option<Value>) -> Value {
        self.resource_version += 1;
        stamp_version(&mut object, self.resource_version);
        self.objects.insert(key.clone(), object.clone());
        let kind = if previous.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.record(kind, key, object.clone(), previous);
        object
    }

    /// Removes an object (DELETED) and collects its dependents when garbage collection is on.
    pub(crate) fn remove(&mut self, key: &ObjectKey, mut object: Value) -> Value {
        self.resource_version += 1;
        stamp_version(&mut object, self.resource_version);
        let previous = self.objects.remove(key);
        self.record(ChangeKind::Deleted, key.clone(), object.clone(), previous);
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.collect_dependents(uid);
        }
        object
    }

    /// Deletes as the apiserver does: with finalizers, only marks the object (deletionTimestamp)
    /// and keeps it; without, removes it. Deleting an object already being deleted changes nothing.
    pub(crate) fn delete_object(&mut self, key: &ObjectKey, existing: Value) -> Value {
        if is_deleting(&existing) {
            return existing;
        }
        if finalizers(&existing).is_empty() {
            return self.remove(key, existing);
        }
        let mut marked = existing.clone();
        if let Ok(metadata) = metadata_mut(&mut marked) {
            metadata.insert("deletionTimestamp".to_owned(), Value::String(now()));
            metadata.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        }
        self.put(key.clone(), marked, Some(existing))
    }

    fn record(&mut self, kind: ChangeKind, key: ObjectKey, object: Value, previous: Option<Value>) {
        let change = Change { resource_version: self.resource_version, kind, key, object, previous };
        // A watch whose buffer is full (or whose client is gone) is closed, as the apiserver
        // closes slow watchers; the client resumes from the last version it saw.
        self.watches.retain(|watch| watch.offer(&change));
        self.history.push_back(change);
        while self.history.len() > self.limits.max_history {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.resource_version;
            }
        }
        self.changes.send_replace(self.resource_version);
    }

    /// The objects of a selection, in key order.
    pub(crate) fn select<'a>(
        &'a self,
        selection: &'a Selection,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> {
        let start = ObjectKey {
            group: selection.group.clone(),
            plural: selection.plural.clone(),
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(|(key, _)| key.group == selection.group && key.plural == selection.plural)
            .filter(|(key, object)| selection.contains(key, object))
    }

    /// Every change after this version is still in the history.
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets the history: the next watch from any earlier version gets 410 Expired.
    pub(crate) fn expire_history(&mut self) {
        self.history.clear();
        self.compacted = self.resource_version;
    }

    /// Ends every open watch stream (after the events already queued).
    pub(crate) fn drop_watches(&mut self) {
        self.watches.clear();
    }

    pub(crate) fn open_watches(&mut self) -> usize {
        self.watches.retain(|watch| !watch.is_closed());
        self.watches.len()
    }

    /// Sends a BOOKMARK with the current version to every watch that asked for bookmarks.
    pub(crate) fn send_bookmarks(&mut self) {
        let version = self.resource_version;
        self.watches.retain(|watch| watch.offer_bookmark(version));
    }

    /// Opens a watch: the events to replay first, and the live channel (`None` when the
    /// stream is only an ERROR event, e.g. 410 Expired).
    pub(crate) fn open_watch(
        &mut self,
        filter: WatchFilter,
        start: WatchStart,
    ) -> Result<OpenedWatch, ApiError> {
        let replay = match start {
            WatchStart::After(version) if version < self.compacted => {
                let status = ApiError::expired(version, self.compacted).to_status();
                return Ok(OpenedWatch { replay: VecDeque::from([frame("ERROR", &status)]), live: None });
            }
            WatchStart::After(version) => self
                .history
                .iter()
                .filter(|change| change.resource_version > version)
                .filter_map(|change| filter.event(change))
                .collect(),
            WatchStart::Current => self.current_as_added(&filter),
            WatchStart::InitialEvents => {
                let mut replay = self.current_as_added(&filter);
                replay.push_back(bookmark_frame(&filter, self.resource_version, true));
                replay
            }
        };
        if self.open_watches() >= self.limits.max_watches {
            return Err(ApiError::new(429, "TooManyRequests", "too many open watches (limits.max_watches)"));
        }
        let (sender, receiver) = mpsc::channel(self.limits.watch_buffer.max(1));
        self.next_watch_id += 1;
        self.watches.push(WatchSender::new(self.next_watch_id, filter, sender));
        Ok(OpenedWatch { replay, live: Some((self.next_watch_id, receiver)) })
    }

    /// Closes one watch (on its timeout) and returns the version its bookmark may claim.
    pub(crate) fn close_watch(&mut self, id: u64) -> u64 {
        self.watches.retain(|watch| watch.id() != id);
        self.resource_version
    }

    fn current_as_added(&self, filter: &WatchFilter) -> VecDeque<Bytes> {
        self.select(filter.selection()).map(|(_, object)| filter.added(object)).collect()
    }
}

fn stamp_version(object: &mut Value, version: u64) {
    if let Ok(metadata) = metadata_mut(object) {
        metadata.insert("resourceVersion".to_owned(), Value::String(version.to_string()));
    }
}
