//! Server-side authentication as metal-api does it (metal-stack/security `mac.go`, metal-lib
//! `rest.UserAuth` and the `TenantEnsurer`): HMAC of `X-Date ‖ METHOD ‖ X-Data-Salt` with one
//! key per auth type, and bearer tokens.

use super::ServerConfig;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;

/// The header carrying the signed date.
pub(crate) const X_DATE: &str = "x-date";
/// The header carrying the per-request salt.
pub(crate) const X_DATA_SALT: &str = "x-data-salt";

/// The built-in users of metal-api, ordered by what they may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// `Metal-View`: GET and find.
    View,
    /// `Metal-Edit`: also allocate and free.
    Edit,
    /// `Metal-Admin` (and a configured bearer token): everything.
    Admin,
}

impl Role {
    /// The groups a route wrapper requires for this role, as metal-api prints them
    /// (Go's `%v` of a slice) in "you are not member in one of [...]".
    pub(crate) fn groups(self) -> &'static str {
        match self {
            Role::View => {
                "[maas-all-all-view k8s_kaas-view maas-all-all-edit k8s_kaas-edit maas-all-all-admin k8s_kaas-admin]"
            }
            Role::Edit => "[maas-all-all-edit k8s_kaas-edit maas-all-all-admin k8s_kaas-admin]",
            Role::Admin => "[maas-all-all-admin k8s_kaas-admin]",
        }
    }

    /// `--hmac-{view,edit,admin}-lifetime` defaults.
    fn lifetime(self) -> SignedDuration {
        match self {
            Role::View | Role::Edit => SignedDuration::from_secs(30),
            Role::Admin => SignedDuration::from_secs(90),
        }
    }
}

/// What the auth filters make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Authenticated {
    /// A provider-tenant user with this role.
    User(Role),
    /// No or unknown credentials: the guest user of tenant "", which the `TenantEnsurer`
    /// rejects with the bare string `"tenant  not allowed"`.
    Guest,
    /// Credentials of a known type that do not verify: 403 with this message. Never contains
    /// a key, token or MAC.
    Rejected(String),
}

/// `lowercase_hex(HMAC-SHA256(key, date ‖ method ‖ salt))`.
fn mac(key: &[u8], date: &str, method: &str, salt: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(date.as_bytes());
    mac.update(method.as_bytes());
    mac.update(salt);
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Compares without an early exit, so that the time taken says nothing about the MAC.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Authenticates one request at wall-clock time `now` (passed in, so this is testable).
pub(crate) fn authenticate(
    config: &ServerConfig,
    method: &str,
    headers: &HeaderMap,
    now: Timestamp,
) -> Authenticated {
    let Some(authorization) = headers.get(AUTHORIZATION).and_then(|value| value.to_str().ok()) else {
        return Authenticated::Guest;
    };
    if authorization.is_empty() {
        return Authenticated::Guest;
    }
    if let Some(prefix) = authorization.get(..7)
        && prefix.eq_ignore_ascii_case("bearer ")
    {
        let token = authorization.get(7..).unwrap_or_default().trim();
        return match &config.token {
            Some(expected)
                if !expected.is_empty() && constant_time_eq(expected.as_bytes(), token.as_bytes()) =>
            {
                Authenticated::User(Role::Admin)
            }
            _ => Authenticated::Rejected("invalid token".to_string()),
        };
    }
    // "illegal auth" (not exactly two tokens) and an unknown type fall through to the guest.
    let parts: Vec<&str> = authorization.split(' ').collect();
    let [auth_type, given] = parts.as_slice() else {
        return Authenticated::Guest;
    };
    let (role, key) = match auth_type.trim() {
        "Metal-View" => (Role::View, &config.view_key),
        "Metal-Edit" => (Role::Edit, &config.edit_key),
        "Metal-Admin" => (Role::Admin, &config.admin_key),
        _ => return Authenticated::Guest,
    };
    let date = headers.get(X_DATE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let Ok(timestamp) = date.parse::<Timestamp>() else {
        return Authenticated::Rejected(format!(
            "unknown timestamp {date:?} in \"X-Date\" header, use RFC3339"
        ));
    };
    if now.duration_since(timestamp) > role.lifetime() {
        return Authenticated::Rejected(format!("the timestamp in your header is too old: {date:?}"));
    }
    // The server re-formats the parsed date (Go's `ts.UTC().Format(time.RFC3339)`).
    let signed_date = timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let salt = headers.get(X_DATA_SALT).map(|value| value.as_bytes()).unwrap_or_default();
    match mac(key.as_bytes(), &signed_date, method, salt) {
        Some(expected) if constant_time_eq(expected.as_bytes(), given.trim().as_bytes()) => {
            Authenticated::User(role)
        }
        _ => Authenticated::Rejected("Wrong HMAC found".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn at(date: &str) -> Timestamp {
        date.parse().expect("valid test date")
    }

    fn headers(authorization: &str, date: &str, salt: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).expect("ascii"));
        headers.insert(X_DATE, HeaderValue::from_str(date).expect("ascii"));
        headers.insert(X_DATA_SALT, HeaderValue::from_str(salt).expect("ascii"));
        headers
    }

    #[test]
    fn reference_vectors_verify() {
        let config = ServerConfig::default();
        let date = "2024-05-06T07:08:09Z";
        let now = at("2024-05-06T07:08:20Z");
        let cases = [
            (
                "Metal-Admin 4eaa449584cf2abde04951fc8ee41cc4ec028d20c1d61be671766de70dea849f",
                "POST",
                "abcdefghijklmnopqrstuvwx",
                Role::Admin,
            ),
            (
                "Metal-Admin 71d593f6aba3f899f2be634cab9399a569051f8e3ddd12dfc678af58e7792b6c",
                "GET",
                "abcdefghijklmnopqrstuvwx",
                Role::Admin,
            ),
            (
                "Metal-Edit 33a61282ae6570869e20f63e07c32a586f828684ac35a5e3831e7512af7ad01a",
                "DELETE",
                "QwErTyUiOpAsDfGhJkLzXcVb",
                Role::Edit,
            ),
            (
                "Metal-View 75e440ef9b0deae9f45d5ec06d3e495aa4b204b9661988087f0154a1ab990867",
                "GET",
                "QwErTyUiOpAsDfGhJkLzXcVb",
                Role::View,
            ),
            (
                "Metal-Admin dbb56d335efc3e1062ed78d35ec9feeabe6f9413e42584e5abfacaea77fca735",
                "GET",
                "",
                Role::Admin,
            ),
        ];
        for (authorization, method, salt, role) in cases {
            let result = authenticate(&config, method, &headers(authorization, date, salt), now);
            assert_eq!(result, Authenticated::User(role), "{authorization}");
        }
    }

    #[test]
    fn wrong_method_stale_date_and_unknown_type_are_rejected() {
        let config = ServerConfig::default();
        let date = "2024-05-06T07:08:09Z";
        let authorization = "Metal-View 75e440ef9b0deae9f45d5ec06d3e495aa4b204b9661988087f0154a1ab990867";
        let salt = "QwErTyUiOpAsDfGhJkLzXcVb";
        let fresh = at("2024-05-06T07:08:39Z");
        assert_eq!(
            authenticate(&config, "POST", &headers(authorization, date, salt), fresh),
            Authenticated::Rejected("Wrong HMAC found".to_string())
        );
        let stale = at("2024-05-06T07:08:40Z");
        let Authenticated::Rejected(message) =
            authenticate(&config, "GET", &headers(authorization, date, salt), stale)
        else {
            panic!("stale date accepted");
        };
        assert!(message.contains("timestamp in your header is too old"), "{message}");
        // Future dates are accepted, as by metal-api.
        let past = at("2024-05-06T06:00:00Z");
        assert_eq!(
            authenticate(&config, "GET", &headers(authorization, date, salt), past),
            Authenticated::User(Role::View)
        );
        assert_eq!(
            authenticate(&config, "GET", &headers("metal-view abc", date, salt), fresh),
            Authenticated::Guest
        );
        assert_eq!(
            authenticate(&config, "GET", &headers("Metal-View a b", date, salt), fresh),
            Authenticated::Guest
        );
    }

    #[test]
    fn bearer_tokens_need_the_configured_token() {
        let mut config = ServerConfig::default();
        let now = at("2024-05-06T07:08:09Z");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer s3cret"));
        assert_eq!(
            authenticate(&config, "GET", &headers, now),
            Authenticated::Rejected("invalid token".to_string())
        );
        config.token = Some("s3cret".to_string());
        assert_eq!(authenticate(&config, "GET", &headers, now), Authenticated::User(Role::Admin));
    }
}
