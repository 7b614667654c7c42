//! How the datacenter's virtual clock relates to the wall clock while it is served.
//!
//! In [`ServerClock::Virtual`] mode (tests, the contract suite over HTTP) time only moves with
//! the calls, as in the simulator. In [`ServerClock::WallClock`] mode (`capms-sim serve`) the
//! virtual clock follows the wall clock, `speedup` times faster, so a real operator that polls
//! sees machines provision in real time. The clock is brought forward lazily, at the start of
//! every request: between two requests nobody can observe the datacenter, so this is the same as
//! a clock that ticks continuously, and it needs no background task.

use crate::sim::Sim;
use jiff::{SignedDuration, Timestamp};
use std::time::{Duration, Instant};

/// Which clock drives the served datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerClock {
    /// Time moves only with the calls (each call advances it by its latency).
    #[default]
    Virtual,
    /// Time follows the wall clock, `speedup` virtual seconds per wall second (at least 1).
    WallClock {
        /// How much faster than real time the datacenter runs.
        speedup: u32,
    },
}

/// The anchor of a wall-clock-driven datacenter: the virtual time at the moment serving began.
#[derive(Debug)]
pub(super) struct WallAnchor {
    started: Instant,
    virtual_start: Timestamp,
    speedup: u32,
}

impl WallAnchor {
    /// Anchors `sim`'s current virtual time to this instant; `None` for a virtual clock.
    pub(super) fn new(clock: ServerClock, sim: &Sim) -> Option<WallAnchor> {
        match clock {
            ServerClock::Virtual => None,
            ServerClock::WallClock { speedup } => Some(WallAnchor {
                started: monotonic_now(),
                virtual_start: sim.now(),
                speedup: speedup.max(1),
            }),
        }
    }

    /// Moves `sim`'s clock to where the wall clock says it should be. Never moves it back: a
    /// call's own latency may have pushed it a little ahead.
    pub(super) fn catch_up(&self, sim: &Sim) {
        let target = self.virtual_at(monotonic_now().saturating_duration_since(self.started));
        if target > sim.now() {
            sim.advance_to(target);
        }
    }

    fn virtual_at(&self, wall_elapsed: Duration) -> Timestamp {
        let elapsed = wall_elapsed.saturating_mul(self.speedup);
        let elapsed = SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::MAX);
        self.virtual_start.saturating_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the served datacenter follows the wall clock by design (ServerClock::WallClock)"
)]
fn monotonic_now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::SimBuilder;

    #[test]
    fn the_virtual_clock_runs_speedup_times_faster_than_the_wall() {
        let sim = SimBuilder::new().build();
        let Some(anchor) = WallAnchor::new(ServerClock::WallClock { speedup: 60 }, &sim) else {
            panic!("a wall clock anchors");
        };
        let later = anchor.virtual_at(Duration::from_secs(2));
        assert_eq!(later.duration_since(sim.now()), SignedDuration::from_secs(120));
    }

    #[test]
    fn a_virtual_clock_has_no_anchor() {
        let sim = SimBuilder::new().build();
        assert!(WallAnchor::new(ServerClock::Virtual, &sim).is_none());
    }

    #[test]
    fn catching_up_never_moves_the_clock_back() {
        let sim = SimBuilder::new().build();
        let Some(anchor) = WallAnchor::new(ServerClock::WallClock { speedup: 1 }, &sim) else {
            panic!("a wall clock anchors");
        };
        sim.advance(Duration::from_secs(3600));
        let ahead = sim.now();
        anchor.catch_up(&sim);
        assert_eq!(sim.now(), ahead);
    }
}
