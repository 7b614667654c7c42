//! Bounds on everything the fake keeps or accepts, so that a runaway test fails instead of
//! eating memory.

/// The fake's limits; `Limits::default()` fits a benchmark of a few thousand objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Stored objects; a create beyond it answers 403 Forbidden (like an exceeded quota).
    pub max_objects: usize,
    /// Changes retained for watches to resume from; older resourceVersions get 410 Expired.
    pub max_history: usize,
    /// Open watch streams; one more answers 429 TooManyRequests.
    pub max_watches: usize,
    /// Events queued per watch; a watch that falls this far behind is closed (the apiserver
    /// closes slow watchers too), and the client resumes from its last resourceVersion.
    pub watch_buffer: usize,
    /// Entries of the request log; the oldest are dropped.
    pub max_request_log: usize,
    /// Request body size (the apiserver's limit is 3 MiB); beyond it, 413.
    pub max_body_bytes: usize,
    /// Longest watch: `timeoutSeconds` is capped to this, and it is the default when absent.
    pub max_watch_seconds: u64,
    /// Operations in one JSON patch (the apiserver's limit).
    pub max_json_patch_operations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_objects: 10_000,
            max_history: 10_000,
            max_watches: 256,
            watch_buffer: 1_000,
            max_request_log: 10_000,
            max_body_bytes: 3 * 1024 * 1024,
            max_watch_seconds: 1_800,
            max_json_patch_operations: 10_000,
        }
    }
}
