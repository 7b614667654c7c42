//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events.
//!
//! A watch first replays what it missed (history after its resourceVersion, or the current
//! objects as ADDED), then forwards live changes from a bounded channel. It ends when
//! `timeoutSeconds` pass (with a final BOOKMARK when bookmarks were allowed, as the apiserver
//! sends before closing), when `drop_watches` is called, or when it falls `watch_buffer` events
//! behind. A resourceVersion older than the retained history gets one ERROR event with a 410
//! Expired Status and the stream ends: kube-runtime's watcher then re-lists.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::object::present;
use crate::server::ResponseBody;
use crate::state::{Change, ChangeKind, Selection, State};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Changes after this resourceVersion.
    After(u64),
    /// `resourceVersion` unset or "0": the current objects as ADDED, then changes.
    Current,
    /// `sendInitialEvents=true`: the current objects as ADDED, then a BOOKMARK annotated
    /// `k8s.io/initial-events-end` (kube's streaming-list strategy), then changes.
    InitialEvents,
}

/// What one watch sees and how it is shown.
#[derive(Debug, Clone)]
pub(crate) struct WatchFilter {
    pub selection: Selection,
    pub api_version: String,
    pub kind: String,
    pub bookmarks: bool,
    pub metadata_only: bool,
}

impl WatchFilter {
    pub(crate) fn selection(&self) -> &Selection {
        &self.selection
    }

    pub(crate) fn added(&self, object: &Value) -> Bytes {
        frame("ADDED", &present(object, &self.api_version, self.metadata_only))
    }

    /// The event this watch gets for a change, if any. With selectors, an object that starts
    /// matching is ADDED and one that stops matching is DELETED, as the apiserver reports them.
    pub(crate) fn event(&self, change: &Change) -> Option<Bytes> {
        let sees = |object: &Value| self.selection.contains(&change.key, object);
        let now = sees(&change.object);
        let before = change.previous.as_ref().is_some_and(sees);
        let kind = match (change.kind, before, now) {
            (ChangeKind::Deleted, _, true) => ChangeKind::Deleted,
            (ChangeKind::Deleted, _, false) => return None,
            (_, false, true) => ChangeKind::Added,
            (_, true, true) => ChangeKind::Modified,
            (_, true, false) => ChangeKind::Deleted,
            (_, false, false) => return None,
        };
        Some(frame(kind.as_str(), &present(&change.object, &self.api_version, self.metadata_only)))
    }
}

/// One event line.
pub(crate) fn frame(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event_type, "object": object }).to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

/// A BOOKMARK: apiVersion, kind and a metadata with only the resourceVersion.
pub(crate) fn bookmark_frame(filter: &WatchFilter, version: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": version.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    frame("BOOKMARK", &json!({ "apiVersion": filter.api_version, "kind": filter.kind, "metadata": metadata }))
}

/// The server's end of one open watch.
#[derive(Debug)]
pub(crate) struct WatchSender {
    id: u64,
    filter: WatchFilter,
    sender: mpsc::Sender<Bytes>,
}

impl WatchSender {
    pub(crate) fn new(id: u64, filter: WatchFilter, sender: mpsc::Sender<Bytes>) -> Self {
        Self { id, filter, sender }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Queues the change's event; false when the watch must be closed (full or gone).
    pub(crate) fn offer(&self, change: &Change) -> bool {
        match self.filter.event(change) {
            Some(event) => self.sender.try_send(event).is_ok(),
            None => !self.sender.is_closed(),
        }
    }

    pub(crate) fn offer_bookmark(&self, version: u64) -> bool {
        if !self.filter.bookmarks {
            return !self.sender.is_closed();
        }
        self.sender.try_send(bookmark_frame(&self.filter, version, false)).is_ok()
    }
}

/// A watch just opened: the events to replay first, and the live channel with the watch's
/// id (`None` when the stream is only an ERROR event, e.g. 410 Expired).
#[derive(Debug)]
pub(crate) struct OpenedWatch {
    pub replay: VecDeque<Bytes>,
    pub live: Option<(u64, mpsc::Receiver<Bytes>)>,
}

/// The client's end: replay first, then live events until the deadline.
#[derive(Debug)]
pub(crate) struct WatchStream {
    replay: VecDeque<Bytes>,
    live: Option<(u64, mpsc::Receiver<Bytes>)>,
    deadline: Pin<Box<Sleep>>,
    state: Arc<Mutex<State>>,
    bookmark: Option<WatchFilter>,
}

impl WatchStream {
    pub(crate) fn new(
        opened: OpenedWatch,
        timeout: Duration,
        state: Arc<Mutex<State>>,
        filter: WatchFilter,
    ) -> Self {
        let bookmark = filter.bookmarks.then_some(filter);
        let OpenedWatch { replay, live } = opened;
        Self { replay, live, deadline: Box::pin(tokio::time::sleep(timeout)), state, bookmark }
    }

    pub(crate) fn into_body(self) -> ResponseBody {
        let frames = futures::stream::unfold(self, |mut watch| async move {
            let line = watch.next_line().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), watch))
        });
        StreamBody::new(frames).boxed_unsync()
    }

    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some(line) = self.replay.pop_front() {
            return Some(line);
        }
        let (_, receiver) = self.live.as_mut()?;
        tokio::select! {
            line = receiver.recv() => {
                if line.is_none() {
                    self.live = None;
                }
                line
            }
            () = &mut self.deadline => {
                self.finish();
                self.replay.pop_front()
            }
        }
    }

    /// On timeout: unregister, deliver what is queued, then the closing bookmark. The version
    /// is read under the lock that unregisters, so every change up to it is already queued.
    fn finish(&mut self) {
        let Some((id, mut receiver)) = self.live.take() else { return };
        let version = self.state.lock().unwrap_or_else(PoisonError::into_inner).close_watch(id);
        receiver.close();
        while let Ok(line) = receiver.try_recv() {
            self.replay.push_back(line);
        }
        if let Some(filter) = &self.bookmark {
            self.replay.push_back(bookmark_frame(filter, version, false));
        }
    }
}
