//! The metal-stack domain as a provider sees it: machines and firewalls, networks, IPs, and the
//! catalog (partitions, sizes, images, projects).
//!
//! Names follow metal-api's v1 model; Rust names are whole words (`partition_id`, not
//! `partitionid`). Request and query types mirror metal-api's semantics exactly:
//! - a `None` filter does not filter; `Some(String::new())` filters for the empty string;
//! - tag filters are an AND of exact `key=value` strings;
//! - label filters (networks) are an AND of exact `labels[key] == value`.

mod catalog;
mod firewall;
mod ip;
mod machine;
mod network;

pub use catalog::{Image, ImageFeature, Partition, Project, Size, SizeConstraint};
pub use firewall::{EgressRule, FirewallRules, IngressRule, Protocol, RuleError};
pub use ip::{AddressFamily, Ip, IpAllocateRequest, IpQuery, IpType};
pub use machine::{
    FirewallAllocateRequest, Liveliness, Machine, MachineAllocateRequest, MachineAllocation, MachineNetwork,
    MachineQuery, MachineRole, MachineState, NetworkRequest, NetworkType, ProvisioningEvent,
    ProvisioningEventKind,
};
pub use network::{Network, NetworkAllocateRequest, NetworkQuery};

/// Whether every filter tag is among `tags` (metal-api's AND of exact string matches).
pub fn tags_match(tags: &[String], filter: &[String]) -> bool {
    filter.iter().all(|wanted| tags.iter().any(|tag| tag == wanted))
}

/// Whether an optional filter accepts a value. `None` accepts everything; `Some("")` only "".
pub fn filter_matches(filter: &Option<String>, value: &str) -> bool {
    filter.as_deref().is_none_or(|wanted| wanted == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filter_is_an_and_of_exact_strings() {
        let tags = vec!["a=1".to_string(), "b=2".to_string(), "plain".to_string()];
        assert!(tags_match(&tags, &[]));
        assert!(tags_match(&tags, &["a=1".into(), "plain".into()]));
        assert!(!tags_match(&tags, &["a=1".into(), "c=3".into()]));
        assert!(!tags_match(&tags, &["a".into()]), "no key-only match");
        assert!(!tags_match(&tags, &["a=".into()]), "no prefix match");
    }

    #[test]
    fn absent_filter_differs_from_empty_string() {
        assert!(filter_matches(&None, "fra-1"));
        assert!(filter_matches(&None, ""));
        assert!(filter_matches(&Some(String::new()), ""));
        assert!(!filter_matches(&Some(String::new()), "fra-1"));
    }
}
