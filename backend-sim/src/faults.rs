//! What can go wrong in the simulated datacenter, and how often.
//!
//! A [`FaultPlan`] holds rates; every decision is drawn from the datacenter's one seeded RNG
//! at the moment it is needed, so the same seed and the same calls give the same faults.

use capms_core::Operation;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;

/// Probabilities (0.0 to 1.0) of injected error answers, by class.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ErrorRates {
    /// 500 "Internal ..." or a proxy's 503: nothing happened.
    pub transient: f64,
    /// 409 optimistic-lock conflict: nothing happened.
    pub conflict: f64,
    /// 403: the credentials were rejected (key rotation, clock skew).
    pub auth: f64,
}

impl ErrorRates {
    pub fn is_zero(&self) -> bool {
        self.transient <= 0.0 && self.conflict <= 0.0 && self.auth <= 0.0
    }
}

/// An injected error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjectedError {
    Transient,
    Conflict,
    Auth,
}

/// Uniformly distributed extra latency of every answer, in virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyRange {
    pub min: Duration,
    pub max: Duration,
}

/// The faults a simulated datacenter injects.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    /// Error answers for every operation.
    pub error_rates: ErrorRates,
    /// Error answers for single operations, replacing `error_rates` for them.
    pub error_rates_by_operation: BTreeMap<Operation, ErrorRates>,
    /// Probability that a write takes effect but its answer is lost (the caller sees a
    /// transient error with `outcome_unknown`).
    pub lost_response_rate: f64,
    /// Extra latency of every answer.
    pub latency: Option<LatencyRange>,
    /// Probability that a machine or firewall allocation is refused with metal-api's
    /// "too many parallel machine allocations" (capacity).
    pub parallel_allocation_rate: f64,
    /// Probability that an allocated machine never reaches `Phoned Home` (crash loop).
    pub provisioning_failure_rate: f64,
    /// Probability that an allocated machine dies some time after it phoned home, within
    /// `death_window`: it goes silent for ever, so metal-api reports it `Unknown` while it is
    /// allocated and `Dead` once it is not (see [`MACHINE_DEAD_AFTER`]).
    pub death_rate: f64,
    /// Probability that an allocated machine is freed by someone else within `death_window`.
    pub external_free_rate: f64,
    /// When deaths and external frees happen, counted from `Phoned Home`.
    pub death_window: Duration,
    /// Probability that an allocated machine hangs in PXE boot or installation: it sends no
    /// event after the one it hangs at (no `Crashed` either, unlike a provisioning failure),
    /// so metal-api reports it `Unknown` [`MACHINE_DEAD_AFTER`] later.
    pub stuck_provisioning_rate: f64,
    /// How far finds lag behind writes: a find does not see a write younger than this
    /// (zero: finds are current). Gets are always current.
    pub stale_read_lag: Duration,
    /// Probability that a write's answer is lost and the write takes effect only after the
    /// client gave up: the caller sees a lost answer after [`CLIENT_TIMEOUT`], the write lands
    /// up to [`LATE_WRITE_SPREAD`] after that.
    pub late_write_rate: f64,
    /// Probability that a pinned allocation (by machine id) finds its machine allocated by
    /// someone else first; they keep it for [`STOLEN_MACHINE_HELD`].
    pub stolen_machine_rate: f64,
}

/// metal-api's `MachineDeadAfter`: a machine that sent no event for this long turns
/// `Unknown` while it is allocated and `Dead` while it is not.
pub const MACHINE_DEAD_AFTER: Duration = Duration::from_secs(5 * 60);
/// How long a client waits for an answer before it gives up (backend-metal's default request
/// timeout): a late write's caller sees its lost answer after this.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A late write takes effect within this after the client's timeout.
pub const LATE_WRITE_SPREAD: Duration = Duration::from_secs(30);
/// How long someone else who took a pinned machine keeps it before they free it.
pub const STOLEN_MACHINE_HELD: Duration = Duration::from_secs(20 * 60);

impl FaultPlan {
    /// A datacenter where nothing goes wrong.
    pub fn none() -> Self {
        FaultPlan { death_window: Duration::from_secs(3600), ..FaultPlan::default() }
    }

    /// A random fault mix for swarm testing: each kind of fault is switched on or off by the
    /// RNG, and the rates of those switched on are drawn too, so different seeds stress
    /// different combinations (some seeds have no faults at all).
    pub fn swarm(rng: &mut ChaCha8Rng) -> Self {
        let mut pick = |on: f64, max: f64| if rng.random_bool(on) { rng.random_range(0.0..max) } else { 0.0 };
        let error_rates =
            ErrorRates { transient: pick(0.5, 0.2), conflict: pick(0.3, 0.1), auth: pick(0.1, 0.05) };
        let lost_response_rate = pick(0.4, 0.15);
        let parallel_allocation_rate = pick(0.3, 0.3);
        let provisioning_failure_rate = pick(0.3, 0.15);
        let death_rate = pick(0.3, 0.1);
        let external_free_rate = pick(0.2, 0.05);
        let latency_max = pick(0.4, 5.0);
        let latency = (latency_max > 0.0)
            .then(|| LatencyRange { min: Duration::ZERO, max: Duration::from_secs_f64(latency_max) });
        FaultPlan {
            error_rates,
            error_rates_by_operation: BTreeMap::new(),
            lost_response_rate,
            latency,
            parallel_allocation_rate,
            provisioning_failure_rate,
            death_rate,
            external_free_rate,
            death_window: Duration::from_secs(3600),
            stuck_provisioning_rate: 0.0,
            stale_read_lag: Duration::ZERO,
            late_write_rate: 0.0,
            stolen_machine_rate: 0.0,
        }
    }

    /// The error rates that apply to `operation`.
    pub fn rates_for(&self, operation: Operation) -> ErrorRates {
        self.error_rates_by_operation.get(&operation).copied().unwrap_or(self.error_rates)
    }

    /// Draws whether `operation` fails before it takes effect.
    pub(crate) fn draw_error(&self, operation: Operation, rng: &mut ChaCha8Rng) -> Option<InjectedError> {
        let rates = self.rates_for(operation);
        if rates.is_zero() {
            return None;
        }
        let roll: f64 = rng.random();
        if roll < rates.transient {
            Some(InjectedError::Transient)
        } else if roll < rates.transient + rates.conflict {
            Some(InjectedError::Conflict)
        } else if roll < rates.transient + rates.conflict + rates.auth {
            Some(InjectedError::Auth)
        } else {
            None
        }
    }

    /// Draws the latency of one answer.
    pub(crate) fn draw_latency(&self, rng: &mut ChaCha8Rng) -> Duration {
        match self.latency {
            Some(range) if range.max > range.min => {
                let span = (range.max - range.min).as_millis() as u64;
                range.min + Duration::from_millis(rng.random_range(0..=span))
            }
            Some(range) => range.min,
            None => Duration::ZERO,
        }
    }
}

/// Draws `true` with probability `rate`, consuming randomness only when the rate is positive
/// (so switching a fault off does not shift every later random choice).
pub(crate) fn chance(rng: &mut ChaCha8Rng, rate: f64) -> bool {
    rate > 0.0 && rng.random_bool(rate.min(1.0))
}
