//! metal-api's HMAC request signing (metal-stack/security `mac.go`) and bearer tokens.
//!
//! `Authorization: <type> <hex(HMAC-SHA256(key, X-Date ‖ METHOD ‖ X-Data-Salt))>`: path, query
//! and body are not signed (the spec's description saying so is outdated). The server parses
//! `X-Date`, re-formats it as second-precision RFC 3339 with `Z` and recomputes, so that exact
//! form is what gets sent and signed.

use crate::config::Auth;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use rand::TryRngCore;
use rand::rngs::OsRng;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// The header carrying the signed date.
pub const X_DATE: &str = "x-date";
/// The header carrying the per-request salt.
pub const X_DATA_SALT: &str = "x-data-salt";
/// Salt length metal-stack's own clients use.
pub const SALT_LENGTH: usize = 24;

const LETTERS: &[u8; 52] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The key could not be used. HMAC accepts keys of any length, so this does not happen; it
/// exists because the `hmac` crate's constructor is fallible in general.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the HMAC key cannot be used")]
pub struct SignError;

/// The `Authorization` value for one request: `"<auth_type> <lowercase hex mac>"`.
///
/// Pure, so that the reference vectors are tests: `date` is the exact `X-Date` string and
/// `salt` the exact `X-Data-Salt` bytes.
pub fn hmac_authorization(
    key: &[u8],
    auth_type: &str,
    method: &str,
    date: &str,
    salt: &[u8],
) -> Result<String, SignError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| SignError)?;
    mac.update(date.as_bytes());
    mac.update(method.as_bytes());
    mac.update(salt);
    Ok(format!("{auth_type} {}", hex::encode(mac.finalize().into_bytes())))
}

/// `X-Date`: UTC, second precision, literal `Z` (Go's `time.RFC3339` after `.UTC()`).
pub fn x_date(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Maps random bytes to letters by rejection sampling (208 = 4 × 52), so every letter is
/// equally likely. Returns how many letters were appended.
fn push_letters(random: &[u8], salt: &mut String) -> usize {
    let before = salt.len();
    for byte in random.iter().filter(|byte| **byte < 208) {
        if salt.len() == SALT_LENGTH {
            break;
        }
        salt.push(char::from(LETTERS[usize::from(*byte % 52)]));
    }
    salt.len() - before
}

/// A fresh salt of 24 ASCII letters from the OS generator.
pub fn random_salt() -> Result<String, rand::rand_core::OsError> {
    let mut salt = String::with_capacity(SALT_LENGTH);
    while salt.len() < SALT_LENGTH {
        let mut random = [0u8; 32];
        OsRng.try_fill_bytes(&mut random)?;
        push_letters(&random, &mut salt);
    }
    Ok(salt)
}

/// Why the auth headers of a request could not be made. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the OS random generator failed: {0}")]
    Random(String),
    #[error("{0}")]
    Sign(#[from] SignError),
    #[error("the credentials cannot be sent in an HTTP header")]
    Value,
}

fn sensitive(value: &str) -> Result<HeaderValue, HeaderError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| HeaderError::Value)?;
    // Keeps the value out of reqwest's and hyper's Debug output.
    value.set_sensitive(true);
    Ok(value)
}

/// The auth headers of one attempt. Called per attempt, never cached: the server rejects
/// dates older than the HMAC lifetime (30 s for view and edit), so a retry signs anew.
pub fn auth_headers(auth: &Auth, method: &str, now: Timestamp) -> Result<HeaderMap, HeaderError> {
    let mut headers = HeaderMap::new();
    match auth {
        Auth::None => {}
        Auth::Bearer(token) => {
            headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {}", token.expose()))?);
        }
        Auth::Hmac { key, auth_type } => {
            let date = x_date(now);
            let salt = random_salt().map_err(|error| HeaderError::Random(error.to_string()))?;
            let value = hmac_authorization(
                key.expose().as_bytes(),
                auth_type.as_str(),
                method,
                &date,
                salt.as_bytes(),
            )?;
            headers.insert(AUTHORIZATION, sensitive(&value)?);
            headers.insert(HeaderName::from_static(X_DATE), sensitive(&date)?);
            headers.insert(HeaderName::from_static(X_DATA_SALT), sensitive(&salt)?);
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HmacAuthType;
    use capms_core::secret::SecretString;

    fn sign(key: &[u8], auth_type: &str, method: &str, date: &str, salt: &[u8]) -> String {
        hmac_authorization(key, auth_type, method, date, salt).expect("HMAC takes any key")
    }

    #[test]
    fn vector_1_raw_bytes() {
        assert_eq!(
            sign(&[1, 2, 3], "mytype", "GET", "2019-01-16T14:44:45Z", &[1, 2, 3, 4, 5, 6]),
            "mytype f8d293a06bdde899a5bd1dd61b13842564650c717c742db02c4e1a888fc22501"
        );
    }

    #[test]
    fn vector_2_admin_post() {
        assert_eq!(
            sign(b"metal-admin", "Metal-Admin", "POST", "2024-05-06T07:08:09Z", b"abcdefghijklmnopqrstuvwx"),
            "Metal-Admin 4eaa449584cf2abde04951fc8ee41cc4ec028d20c1d61be671766de70dea849f"
        );
    }

    #[test]
    fn vector_3_admin_get() {
        assert_eq!(
            sign(b"metal-admin", "Metal-Admin", "GET", "2024-05-06T07:08:09Z", b"abcdefghijklmnopqrstuvwx"),
            "Metal-Admin 71d593f6aba3f899f2be634cab9399a569051f8e3ddd12dfc678af58e7792b6c"
        );
    }

    #[test]
    fn vector_4_edit_delete() {
        assert_eq!(
            sign(b"metal-edit", "Metal-Edit", "DELETE", "2024-05-06T07:08:09Z", b"QwErTyUiOpAsDfGhJkLzXcVb"),
            "Metal-Edit 33a61282ae6570869e20f63e07c32a586f828684ac35a5e3831e7512af7ad01a"
        );
    }

    #[test]
    fn vector_5_view_get() {
        assert_eq!(
            sign(b"metal-view", "Metal-View", "GET", "2024-05-06T07:08:09Z", b"QwErTyUiOpAsDfGhJkLzXcVb"),
            "Metal-View 75e440ef9b0deae9f45d5ec06d3e495aa4b204b9661988087f0154a1ab990867"
        );
    }

    #[test]
    fn vector_6_empty_salt() {
        assert_eq!(
            sign(b"metal-admin", "Metal-Admin", "GET", "2024-05-06T07:08:09Z", b""),
            "Metal-Admin dbb56d335efc3e1062ed78d35ec9feeabe6f9413e42584e5abfacaea77fca735"
        );
    }

    #[test]
    fn x_date_has_second_precision_and_z() {
        let now: Timestamp = "2024-05-06T07:08:09.987654321+02:00".parse().expect("valid timestamp");
        assert_eq!(x_date(now), "2024-05-06T05:08:09Z");
        assert_eq!(x_date(Timestamp::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn salts_are_24_letters_and_fresh() {
        let first = random_salt().expect("OS randomness");
        let second = random_salt().expect("OS randomness");
        assert_eq!(first.len(), SALT_LENGTH);
        assert!(first.bytes().all(|byte| byte.is_ascii_alphabetic()), "{first}");
        assert_ne!(first, second);
    }

    #[test]
    fn rejection_sampling_skips_biased_bytes() {
        let mut salt = String::new();
        assert_eq!(push_letters(&[0, 51, 52, 207, 208, 255], &mut salt), 4);
        assert_eq!(salt, "AzAz");
    }

    #[test]
    fn hmac_headers_verify_like_the_server() {
        let auth = Auth::Hmac { key: SecretString::new("metal-edit"), auth_type: HmacAuthType::Edit };
        let now: Timestamp = "2024-05-06T07:08:09.5Z".parse().expect("valid timestamp");
        let headers = auth_headers(&auth, "DELETE", now).expect("headers");
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default();
        assert_eq!(header(X_DATE), "2024-05-06T07:08:09Z");
        let salt = header(X_DATA_SALT);
        assert_eq!(salt.len(), SALT_LENGTH);
        let expected = sign(b"metal-edit", "Metal-Edit", "DELETE", "2024-05-06T07:08:09Z", salt.as_bytes());
        assert_eq!(header("authorization"), expected);
        assert!(!format!("{headers:?}").contains(salt), "header values are marked sensitive");
    }

    #[test]
    fn bearer_and_none() {
        let headers = auth_headers(&Auth::Bearer(SecretString::new("tok")), "GET", Timestamp::UNIX_EPOCH)
            .expect("headers");
        assert_eq!(headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()), Some("Bearer tok"));
        assert!(auth_headers(&Auth::None, "GET", Timestamp::UNIX_EPOCH).expect("headers").is_empty());
        let bad = auth_headers(&Auth::Bearer(SecretString::new("line\nbreak")), "GET", Timestamp::UNIX_EPOCH);
        assert_eq!(bad, Err(HeaderError::Value));
    }
}
