//! `ProviderId::parse` on arbitrary UTF-8: it never panics, and whatever it accepts prints back
//! exactly as it was written (Cluster API matches providerIDs by string equality).

#![no_main]

use capms_core::ProviderId;
use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(input) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    if let Ok(id) = ProviderId::parse(input) {
        assert_eq!(id.to_string(), input, "a parsed providerID prints back to its input");
        assert_eq!(ProviderId::new(id.partition_id(), id.machine_id()).as_ref(), Ok(&id));
    }
    Corpus::Keep
});
