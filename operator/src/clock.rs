//! The time the manager hands to the core reconcilers. Production reads the wall clock; tests
//! use tokio's clock (which they may pause and advance), so that a whole lifecycle with
//! minutes of provisioning runs in milliseconds without touching a timing assertion.

use capms_core::Timestamp;
use std::fmt;
use std::sync::Arc;

/// A source of "now".
#[derive(Clone)]
pub struct Clock {
    now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock").field("now", &self.now()).finish()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::wall()
    }
}

impl Clock {
    /// The real time.
    pub fn wall() -> Self {
        Clock { now: Arc::new(Timestamp::now) }
    }

    /// `start` plus the time tokio's clock has moved since this call (paused time included).
    pub fn tokio(start: Timestamp) -> Self {
        let origin = tokio::time::Instant::now();
        Clock {
            now: Arc::new(move || {
                let elapsed =
                    jiff::SignedDuration::try_from(origin.elapsed()).unwrap_or(jiff::SignedDuration::MAX);
                start.saturating_add(elapsed).unwrap_or(Timestamp::MAX)
            }),
        }
    }

    pub fn now(&self) -> Timestamp {
        (self.now)()
    }
}

/// Moves a simulated datacenter's clock along with `clock`, every 100 ms of tokio time, for
/// `--backend sim` and tests.
pub fn drive_sim(sim: capms_backend_sim::Sim, clock: Clock) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            ticks.tick().await;
            let now = clock.now();
            if now > sim.now() {
                sim.advance_to(now);
            }
        }
    })
}
