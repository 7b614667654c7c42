//! The providerID of a metal-stack machine: `metal://<partition>/<machine-id>`.
//!
//! metal-ccm sets exactly this string on each Node, and Cluster API matches Machines to Nodes
//! by string equality, so capms writes the same format and never rewrites it once set.

use std::fmt;
use std::str::FromStr;

/// The scheme of metal-stack providerIDs.
pub const SCHEME: &str = "metal://";
/// Cluster API recommends at most 512 characters for a providerID.
pub const LENGTH_MAX: usize = 512;

/// A parsed providerID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderId {
    partition_id: String,
    machine_id: String,
}

/// Why a string is not a metal-stack providerID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderIdError {
    #[error("providerID is empty")]
    Empty,
    #[error("providerID is longer than {LENGTH_MAX} characters")]
    TooLong,
    #[error("providerID {0:?} does not start with \"metal://\"")]
    Scheme(String),
    #[error("providerID {0:?} is not of the form metal://<partition>/<machine-id>")]
    Shape(String),
    #[error("providerID {value:?} contains the invalid character {character:?}")]
    Character { value: String, character: char },
}

impl ProviderId {
    /// Builds a providerID from its parts, checking them like [`ProviderId::parse`] does.
    pub fn new(partition_id: &str, machine_id: &str) -> Result<Self, ProviderIdError> {
        ProviderId::parse(&format!("{SCHEME}{partition_id}/{machine_id}"))
    }

    /// Parses `metal://<partition>/<machine-id>`. Both parts must be non-empty and consist of
    /// ASCII letters, digits, '-', '_' and '.'; nothing may follow the machine id.
    pub fn parse(value: &str) -> Result<Self, ProviderIdError> {
        if value.is_empty() {
            return Err(ProviderIdError::Empty);
        }
        if value.len() > LENGTH_MAX {
            return Err(ProviderIdError::TooLong);
        }
        let rest = value.strip_prefix(SCHEME).ok_or_else(|| ProviderIdError::Scheme(value.to_string()))?;
        let (partition_id, machine_id) =
            rest.split_once('/').ok_or_else(|| ProviderIdError::Shape(value.to_string()))?;
        if partition_id.is_empty() || machine_id.is_empty() || machine_id.contains('/') {
            return Err(ProviderIdError::Shape(value.to_string()));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if let Some(character) = rest.chars().find(|&c| c != '/' && !valid(c)) {
            return Err(ProviderIdError::Character { value: value.to_string(), character });
        }
        Ok(ProviderId { partition_id: partition_id.to_string(), machine_id: machine_id.to_string() })
    }

    pub fn partition_id(&self) -> &str {
        &self.partition_id
    }

    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }
}

impl FromStr for ProviderId {
    type Err = ProviderIdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ProviderId::parse(value)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.partition_id, self.machine_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_metal_ccm_format() {
        let id = ProviderId::parse("metal://mini-lab/00000000-0000-0000-0000-000000000001").expect("valid");
        assert_eq!(id.partition_id(), "mini-lab");
        assert_eq!(id.machine_id(), "00000000-0000-0000-0000-000000000001");
        assert_eq!(id.to_string(), "metal://mini-lab/00000000-0000-0000-0000-000000000001");
    }

    #[test]
    fn rejects_bad_input_with_an_error() {
        assert_eq!(ProviderId::parse(""), Err(ProviderIdError::Empty));
        assert!(matches!(ProviderId::parse("metalstack://abc"), Err(ProviderIdError::Scheme(_))));
        assert!(matches!(ProviderId::parse("metal://abc"), Err(ProviderIdError::Shape(_))));
        assert!(matches!(ProviderId::parse("metal:///abc"), Err(ProviderIdError::Shape(_))));
        assert!(matches!(ProviderId::parse("metal://p/"), Err(ProviderIdError::Shape(_))));
        assert!(matches!(ProviderId::parse("metal://p/a/b"), Err(ProviderIdError::Shape(_))));
        assert!(matches!(
            ProviderId::parse("metal://p/a b"),
            Err(ProviderIdError::Character { character: ' ', .. })
        ));
        assert!(matches!(ProviderId::parse("metal://p/ä"), Err(ProviderIdError::Character { .. })));
        let long = format!("metal://p/{}", "a".repeat(600));
        assert_eq!(ProviderId::parse(&long), Err(ProviderIdError::TooLong));
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(input in ".{0,80}") {
            if let Ok(id) = ProviderId::parse(&input) {
                prop_assert_eq!(id.to_string(), input);
            }
        }

        #[test]
        fn valid_parts_round_trip(partition in "[a-z0-9][a-z0-9._-]{0,20}", machine in "[a-f0-9-]{1,36}") {
            let id = ProviderId::new(&partition, &machine).expect("valid parts");
            prop_assert_eq!(ProviderId::parse(&id.to_string()), Ok(id.clone()));
            prop_assert_eq!(id.partition_id(), partition.as_str());
        }
    }
}
