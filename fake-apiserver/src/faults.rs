//! Fault injection: queued or random error answers, off by default.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which requests a fault may hit. Discovery (`/version`, `/api`, `/apis`) is never hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// Every resource request, watches included.
    All,
    /// get, list and watch.
    Reads,
    /// create, replace, patch, delete.
    Writes,
}

impl FaultTarget {
    fn hits(self, write: bool) -> bool {
        match self {
            Self::All => true,
            Self::Reads => !write,
            Self::Writes => write,
        }
    }
}

#[derive(Debug, Clone)]
struct RandomFaults {
    target: FaultTarget,
    probability: f64,
    code: u16,
    rng: ChaCha8Rng,
}

/// The fault plan: queued faults first, then random ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultPlan {
    queued: VecDeque<(FaultTarget, u16)>,
    random: Option<RandomFaults>,
}

impl FaultPlan {
    pub(crate) fn queue(&mut self, target: FaultTarget, count: usize, code: u16) {
        self.queued.extend(std::iter::repeat_n((target, code), count));
    }

    /// Seeded, so a failing run reproduces; no randomness is drawn while it is off.
    pub(crate) fn randomly(&mut self, target: FaultTarget, probability: f64, code: u16, seed: u64) {
        let rng = ChaCha8Rng::seed_from_u64(seed);
        self.random = Some(RandomFaults { target, probability: probability.clamp(0.0, 1.0), code, rng });
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// The code to fail this request with, if any.
    pub(crate) fn next(&mut self, write: bool) -> Option<u16> {
        if let Some(index) = self.queued.iter().position(|(target, _)| target.hits(write)) {
            return self.queued.remove(index).map(|(_, code)| code);
        }
        let random = self.random.as_mut().filter(|random| random.target.hits(write))?;
        random.rng.random_bool(random.probability).then_some(random.code)
    }
}
