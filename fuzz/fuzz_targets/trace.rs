//! `capms_core::trace::parse_trace` (reconcile traces, JSON lines; `docs/traces.md`) on
//! arbitrary UTF-8: traces are external input, so damage is an error, never a panic. An error
//! names a line of the text, and a trace that parses is written back (`header_line`,
//! `Record::to_line`) as text that parses again to as many records.

#![no_main]

use capms_core::trace::{Trace, header_line, parse_trace};
use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    match parse_trace(text) {
        Ok(trace) => {
            let again = parse_trace(&write(&trace)).expect("a written trace parses");
            assert_eq!(again.header, trace.header);
            assert_eq!(again.records.len(), trace.records.len());
        }
        Err(error) => {
            let lines = text.lines().count().max(1);
            assert!(error.line <= lines, "line {} of {lines}: {error}", error.line);
        }
    }
    Corpus::Keep
});

fn write(trace: &Trace) -> String {
    let mut text = header_line(&trace.header).expect("a header serializes");
    for record in &trace.records {
        text.push('\n');
        text.push_str(&record.to_line().expect("a parsed record serializes"));
    }
    text
}
