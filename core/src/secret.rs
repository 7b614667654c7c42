//! Values that must never be printed: bootstrap user data, HMAC keys, tokens.
//!
//! These wrappers have no `Display`, a `Debug` that shows only the length, and a `Serialize`
//! that writes a redaction marker. Code that needs the value calls `expose()`, which makes every
//! place that handles the secret easy to find.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What a serialized secret looks like in traces and logs.
pub const REDACTED: &str = "<redacted>";

/// A secret string (HMAC key, bearer token).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself. Only for signing, sending or comparing; never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString({REDACTED}, {} bytes)", self.0.len())
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

/// Bootstrap data for a machine (cloud-init or Ignition), as CAPI's bootstrap provider wrote it.
///
/// It often carries cluster secrets (join tokens, certificates). metal-api stores it in the
/// machine allocation; capms passes it through and never logs, traces or reports it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UserData(String);

impl UserData {
    pub fn new(value: impl Into<String>) -> Self {
        UserData(value.into())
    }

    /// The bootstrap data itself, for the allocation request only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserData({REDACTED}, {} bytes)", self.0.len())
    }
}

impl Serialize for UserData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for UserData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(UserData)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_never_show_the_value() {
        let data = UserData::new("#cloud-config\njoin-token: abcdef.0123456789abcdef");
        let key = SecretString::new("metal-edit-secret-key");
        let shown = format!("{data:?} {key:?}");
        assert!(!shown.contains("abcdef"), "{shown}");
        assert!(!shown.contains("metal-edit-secret-key"), "{shown}");
        let json = serde_json::to_string(&(data.clone(), key.clone())).expect("serializes");
        assert!(!json.contains("abcdef"), "{json}");
        assert!(!json.contains("metal-edit"), "{json}");
        assert_eq!(data.expose(), "#cloud-config\njoin-token: abcdef.0123456789abcdef");
    }
}
