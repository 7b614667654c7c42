//! Real prefix and address allocation, like go-ipam does it for metal-api: child prefixes are
//! carved from a super network's prefixes, addresses are taken from a prefix, first free
//! first. Addresses are kept in canonical text form (IPv6 compressed).

use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Upper bound on the candidates examined for one child prefix or one address. Allocation is
/// first-free, so the search ends after at most "used + 1" candidates in practice; the bound
/// keeps a misconfigured huge search space from spinning.
const CANDIDATES_MAX: usize = 1 << 20;

/// Parses a prefix in text form.
pub(crate) fn parse_prefix(prefix: &str) -> Option<IpNet> {
    prefix.parse::<IpNet>().ok().map(|net| net.trunc())
}

/// The canonical text form of an address, or `None` if it is not an address.
pub(crate) fn canonical_address(address: &str) -> Option<String> {
    address.parse::<IpAddr>().ok().map(|address| address.to_string())
}

/// Whether `address` lies in `prefix`.
pub(crate) fn contains(prefix: &str, address: &str) -> bool {
    match (parse_prefix(prefix), address.parse::<IpAddr>()) {
        (Some(net), Ok(address)) => net.contains(&address),
        _ => false,
    }
}

/// Whether two prefixes overlap.
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first child prefix of length `length` inside `parent` that overlaps none of `used`.
pub(crate) fn first_free_child(parent: &str, length: u8, used: &[IpNet]) -> Option<String> {
    let parent = parse_prefix(parent)?;
    let mut children = parent.subnets(length).ok()?;
    children
        .by_ref()
        .take(CANDIDATES_MAX)
        .find(|child| !used.iter().any(|taken| overlaps(child, taken)))
        .map(|child| child.to_string())
}

/// The first address of `prefix` not in `used` (network and IPv4 broadcast addresses are never
/// handed out).
pub(crate) fn first_free_address(prefix: &str, used: &BTreeSet<String>) -> Option<String> {
    let net = parse_prefix(prefix)?;
    net.hosts()
        .take(CANDIDATES_MAX)
        .filter(|address| *address != net.network())
        .map(|address| address.to_string())
        .find(|address| !used.contains(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_carved_first_free_and_disjoint() {
        let mut used = Vec::new();
        for expected in ["10.0.0.0/22", "10.0.4.0/22", "10.0.8.0/22"] {
            let child = first_free_child("10.0.0.0/16", 22, &used).expect("room left");
            assert_eq!(child, expected);
            used.push(parse_prefix(&child).expect("valid"));
        }
        used.remove(0);
        assert_eq!(first_free_child("10.0.0.0/16", 22, &used).as_deref(), Some("10.0.0.0/22"));
        assert_eq!(first_free_child("10.0.0.0/16", 24, &used).as_deref(), Some("10.0.0.0/24"));
    }

    #[test]
    fn ipv6_children_and_exhaustion() {
        assert_eq!(first_free_child("2001:db8:0:10::/64", 96, &[]).as_deref(), Some("2001:db8:0:10::/96"));
        let whole = vec![parse_prefix("10.0.0.0/23").expect("valid")];
        assert_eq!(first_free_child("10.0.0.0/23", 24, &whole), None);
    }

    #[test]
    fn addresses_skip_network_and_broadcast_and_exhaust() {
        let mut used = BTreeSet::new();
        for expected in ["10.0.0.1", "10.0.0.2"] {
            let address = first_free_address("10.0.0.0/30", &used).expect("room left");
            assert_eq!(address, expected);
            used.insert(address);
        }
        assert_eq!(first_free_address("10.0.0.0/30", &used), None);
        assert_eq!(first_free_address("2001:db8::/126", &BTreeSet::new()).as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_address("2001:0db8::0001").as_deref(), Some("2001:db8::1"));
        assert_eq!(canonical_address("not an ip"), None);
        assert!(contains("203.0.113.128/25", "203.0.113.200"));
        assert!(!contains("203.0.113.128/25", "203.0.113.1"));
    }
}
