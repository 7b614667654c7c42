//! The simulated metal-api's authentication (`Authorization`, `X-Date`, `X-Data-Salt`) on
//! arbitrary header values, at a fixed wall-clock time. It never panics, and it agrees with
//! the client: a request that `capms-backend-metal` signs with the right key for a fresh
//! `X-Date` is accepted with the signing role, whatever the method and salt.
//!
//! Input: lines `METHOD`, `Authorization`, `X-Date`, `X-Data-Salt` (the salt may hold any byte
//! but a newline). A missing line leaves the header out.

#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use capms_backend_metal::hmac_authorization;
use capms_backend_sim::http::{ServerConfig, authenticate_for_fuzzing};
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;

/// The fixed "wall clock" of this target.
const NOW: &str = "2024-05-06T07:08:20Z";

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|byte| *byte == b'\n');
    let method = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let authorization = lines.next();
    let date = lines.next();
    let salt = lines.next();
    let config = ServerConfig::default();
    let now: Timestamp = NOW.parse().expect("a valid date");

    let mut headers = HeaderMap::new();
    for (name, value) in [("authorization", authorization), ("x-date", date), ("x-data-salt", salt)] {
        if let Some(value) = value.and_then(|value| HeaderValue::from_bytes(value).ok()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let outcome = authenticate_for_fuzzing(&config, &method, &headers, now);
    assert!(
        outcome == "Guest" || outcome.starts_with("User(") || outcome.starts_with("Rejected("),
        "{outcome}"
    );

    // The client's signature for this date, method and salt, with each role's key.
    let Some(date_text) = headers.get("x-date").and_then(|value| value.to_str().ok()).map(str::to_string)
    else {
        return;
    };
    let Ok(timestamp) = date_text.parse::<Timestamp>() else {
        return;
    };
    // The server signs the date as it re-formats it; the client sends exactly that form.
    if capms_backend_metal::x_date(timestamp) != date_text {
        return;
    }
    let salt = headers.get("x-data-salt").map(|value| value.as_bytes().to_vec()).unwrap_or_default();
    let roles = [
        ("Metal-View", &config.view_key, SignedDuration::from_secs(30)),
        ("Metal-Edit", &config.edit_key, SignedDuration::from_secs(30)),
        ("Metal-Admin", &config.admin_key, SignedDuration::from_secs(90)),
    ];
    for (auth_type, key, lifetime) in roles {
        let signed =
            hmac_authorization(key.as_bytes(), auth_type, &method, &date_text, &salt).expect("any key");
        headers.insert("authorization", HeaderValue::from_str(&signed).expect("ASCII"));
        let outcome = authenticate_for_fuzzing(&config, &method, &headers, now);
        if now.duration_since(timestamp) > lifetime {
            assert!(outcome.starts_with("Rejected(\"the timestamp in your header is too old"), "{outcome}");
        } else {
            let role = auth_type.trim_start_matches("Metal-");
            assert_eq!(outcome, format!("User({role})"), "{signed} for {method:?}");
        }
    }
});
