//! Traces of reconciles: recorded against the simulated datacenter, replayed without it.
//!
//! A machine lifecycle (allocate, provision, delete) is recorded with bootstrap data that
//! carries a marker; the trace must not contain the marker, must parse back, and must replay
//! with no divergence. The canary reconciler replayed on the same trace diverges at the call
//! where it skips adoption. Damaged traces are errors, never panics.

mod support;

use capms_core::api::MACHINE_FINALIZER;
use capms_core::metal::MachineAllocateRequest;
use capms_core::reconcile::machine::Variant;
use capms_core::reconcile::{BootstrapData, MachineCache, MachineInput, MachineOutcome};
use capms_core::secret::SecretString;
use capms_core::trace::{self, Header, Record, TraceSink};
use capms_core::{UserData, metal::NetworkRequest};
use std::sync::Mutex;
use std::time::Duration;
use support::*;

const MARKER: &str = "MARKER-JOIN-TOKEN-5f1e2d";

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<Record>>);

impl TraceSink for Collect {
    fn write(&self, mut record: Record) {
        let mut records = self.0.lock().expect("not poisoned");
        record.sequence = records.len() as u64 + 1;
        records.push(record);
    }
}

/// Records one machine from allocation to deletion; returns the trace text.
fn recorded_lifecycle() -> String {
    let world = World::new();
    let cache = MachineCache::default();
    let sink = Collect::default();
    let mut object = our_machine("worker-0", "uid-worker-0");
    let bootstrap = BootstrapData::Present(UserData::new(format!("#cloud-config\ntoken: {MARKER}\n")));
    let metal_cluster = world.metal_cluster();
    let capi = capi_machine("worker-0");
    let cluster = cluster_facts();
    let pass = |object: &mut capms_core::api::MetalStackMachine| -> MachineOutcome {
        let input = MachineInput {
            metal_machine: object,
            capi_machine: Some(&capi),
            cluster: Some(&cluster),
            metal_cluster: Some(&metal_cluster),
            bootstrap: &bootstrap,
            now: world.now(),
            jitter: 20,
        };
        let outcome =
            block_on(trace::record_machine(&input, &world.backend, &cache, Variant::Correct, &sink));
        apply_machine(object, &outcome);
        outcome
    };
    pass(&mut object);
    for _ in 0..8 {
        world.sim.advance(Duration::from_secs(61));
        pass(&mut object);
        // A watch event right after: answered from the machine cache.
        pass(&mut object);
    }
    let now = world.now();
    object = object.deleting(now);
    pass(&mut object);
    let mut text = trace::header_line(&Header::new("core/tests/trace.rs")).expect("header serializes");
    text.push('\n');
    for record in sink.0.lock().expect("not poisoned").iter() {
        text.push_str(&record.to_line().expect("record serializes"));
        text.push('\n');
    }
    assert!(!object.metadata.finalizers.unwrap_or_default().iter().any(|f| f == MACHINE_FINALIZER));
    text
}

#[test]
fn a_trace_never_holds_user_data_or_keys() {
    let text = recorded_lifecycle();
    assert!(text.contains("fnv1a64:"), "the allocation keeps a digest of the user data");
    assert!(!text.contains(MARKER), "user data leaked into the trace");
    assert!(!text.contains("cloud-config"), "user data leaked into the trace");
    // The trace types hold payloads only as serialized values; secrets serialize as a marker.
    let request = MachineAllocateRequest {
        user_data: Some(UserData::new(MARKER)),
        networks: vec![NetworkRequest::auto("n")],
        ..Default::default()
    };
    let redacted = trace::Redaction::default().machine(&request);
    assert!(!redacted.json().to_string().contains(MARKER));
    let key = trace::Redacted::of(&SecretString::new(MARKER));
    assert!(!key.json().to_string().contains(MARKER));
}

#[test]
fn a_recorded_lifecycle_replays_without_divergence() {
    let parsed = trace::parse_trace(&recorded_lifecycle()).expect("the trace parses");
    assert!(parsed.records.len() >= 10);
    let mut calls = 0;
    for record in &parsed.records {
        match block_on(trace::replay(record, Variant::Correct)) {
            Ok(replayed) => calls += replayed.backend_calls,
            Err(divergence) => panic!("{divergence}"),
        }
    }
    assert!(calls > 0);
    let cache_answers = parsed
        .records
        .iter()
        .flat_map(|r| &r.calls)
        .filter(|c| matches!(c, trace::Call::CacheMachine { hit: Some(_), .. }));
    assert!(cache_answers.count() > 0, "some reconciles were answered from the cache");
}

#[test]
fn the_canary_diverges_where_it_skips_adoption() {
    let parsed = trace::parse_trace(&recorded_lifecycle()).expect("the trace parses");
    let divergence = parsed
        .records
        .iter()
        .find_map(|record| block_on(trace::replay(record, Variant::CanaryWithoutAdoption)).err())
        .expect("the canary diverges");
    assert_eq!(divergence.sequence, 1, "{divergence}");
    assert_eq!(divergence.call, Some(1), "{divergence}");
    assert!(divergence.what.contains("allocateMachine instead of findMachines"), "{divergence}");
    assert!(divergence.to_string().contains("default/worker-0"), "{divergence}");
}

#[test]
fn a_changed_input_diverges_in_the_outcome_or_a_request() {
    let parsed = trace::parse_trace(&recorded_lifecycle()).expect("the trace parses");
    let mut record = parsed.records[0].clone();
    let trace::Input::Machine(input) = &mut record.input else { panic!("a machine record") };
    input.metal_machine.spec.image = "ubuntu-26.4".to_string();
    let divergence = block_on(trace::replay(&record, Variant::Correct)).expect_err("diverges");
    assert!(divergence.what.contains("request.image_id"), "{divergence}");
}

#[test]
fn damaged_traces_are_errors_not_panics() {
    let text = recorded_lifecycle();
    assert!(trace::parse_trace("").is_err());
    assert!(trace::parse_trace("not json").is_err());
    assert!(trace::parse_trace("{\"format\":\"capms-trace\",\"version\":2}").is_err());
    assert!(trace::parse_trace("{\"format\":\"other\",\"version\":1}").is_err());
    // Every cut through the second line leaves a line that is not a record.
    let second = text.find('\n').expect("a header line") + 1;
    let end = text[second..].find('\n').expect("a record line") + second;
    for cut in (second + 1..end).step_by(97) {
        if !text.is_char_boundary(cut) {
            continue;
        }
        let error = trace::parse_trace(&text[..cut]).expect_err("a cut record is an error");
        assert_eq!(error.line, 2, "{error}");
    }
    let garbage = text.replace("\"call\":\"backend\"", "\"call\":\"teleport\"");
    assert!(trace::parse_trace(&garbage).is_err());
}
