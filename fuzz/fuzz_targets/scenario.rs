//! `Scenario::parse` (the scenario files of `capms-sim`, a YAML subset with its own parser) on
//! arbitrary UTF-8: it never panics, and a rejection names a place inside the text.

#![no_main]

use capms_sim_scenarios::scenario::Scenario;
use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    if let Err(error) = Scenario::parse("fuzz.yaml", text) {
        // Lines are 1-based and never past the end (one more for a problem at the very end).
        // YAML breaks lines at `\n`, `\r\n` and a lone `\r`.
        let breaks = text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
        let lines = u64::try_from(breaks).unwrap_or(u64::MAX).saturating_add(1);
        assert!(error.line <= lines.saturating_add(1), "line {} of {lines}: {error}", error.line);
        assert!(!error.message.is_empty());
        let _ = error.to_string();
    }
    Corpus::Keep
});
