//! capms-backend-sim: a deterministic, in-memory metal-stack datacenter.
//!
//! It behaves like metal-api (the same rules, the same error statuses and messages, the same
//! asynchrony) and is bit-for-bit reproducible for a seed:
//! - machines live through metal-stack's lifecycle on a virtual clock: `Waiting` → allocated →
//!   `PXE Booting`, `Preparing`, `Installing`, `Booting New Kernel`, `Phoned Home` → on free
//!   `Machine Reclaim`, wiped, `Waiting` again; they can crash-loop, hang, die or be freed by
//!   others; a machine that sends no events (dead or hung) turns `Unknown` 5 minutes later
//!   while it is allocated and `Dead` while it is not, as metal-api reports it;
//! - child networks are carved for real from the partition's super network and IPs are taken
//!   from real prefixes; IPs of a freed machine are released later, so a network free right
//!   after the last machine free fails until they are gone;
//! - a [`FaultPlan`] injects error answers by class, lost answers (the write happened, the
//!   caller sees a timeout), late writes (the caller sees a timeout, the write happens
//!   later), finds that lag behind writes, latency, capacity exhaustion, provisioning
//!   failures and hangs, deaths, external frees and pinned machines taken by someone else;
//!   [`Sim::heal`] ends them;
//! - every operation and event goes to an event log with a running SHA-256
//!   ([`Sim::event_log_hash`]); the datacenter's invariants are checked after every step in
//!   debug builds.
//!
//! ```
//! use capms_backend_sim::SimBuilder;
//! use capms_core::MetalBackend;
//! # futures::executor::block_on(async {
//! let sim = SimBuilder::new().seed(42).build();
//! let backend = sim.backend();
//! let partitions = backend.list_partitions().await.expect("no faults configured");
//! assert_eq!(partitions[0].id, "mini-lab");
//! # });
//! ```
//!
//! Determinism rules: every random choice comes from the one `ChaCha8Rng` seeded by the
//! builder; all collections are ordered; time is the virtual clock only.

mod backend;
mod builder;
mod catalog;
mod datacenter;
mod faults;
mod invariants;
mod ipam;
mod lag;
mod log;
mod machines;
mod networks;
mod sim;

pub mod http;

pub use backend::{AdvanceClock, Immediate, LatencyModel, SimBackend};
pub use builder::{
    ExternalNetworkSpec, MINI_LAB_FIREWALL_IMAGE, MINI_LAB_IMAGES, MINI_LAB_PARTITION, MINI_LAB_PROJECT,
    MINI_LAB_SIZE, MINI_LAB_TENANT, PartitionSpec, ProvisioningTimes, SimBuilder, SuperNetworkSpec,
};
pub use datacenter::{Phase, machine_id};
pub use faults::{
    CLIENT_TIMEOUT, ErrorRates, FaultPlan, LATE_WRITE_SPREAD, LatencyRange, MACHINE_DEAD_AFTER,
    STOLEN_MACHINE_HELD,
};
pub use log::EventLog;
pub use sim::Sim;
