use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Transport protocol of a firewall rule. metal-api parses it case-insensitively and defaults
/// to TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// Parses metal-api's protocol field: case-insensitive, empty means TCP.
    pub fn parse(value: &str) -> Option<Protocol> {
        match value.to_ascii_lowercase().as_str() {
            "" | "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// Allow traffic from the firewall's networks to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    pub protocol: Protocol,
    pub ports: Vec<i64>,
    pub to: Vec<String>,
    pub comment: String,
}

/// Allow traffic from `from` to `to` (or to every network behind the firewall when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    pub protocol: Protocol,
    pub ports: Vec<i64>,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub comment: String,
}

/// The initial rule set of a firewall, installed by metal-api at allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FirewallRules {
    pub egress: Vec<EgressRule>,
    pub ingress: Vec<IngressRule>,
}

/// Why metal-api would reject a firewall rule (it answers 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{direction} rule {index}: comment can only contain letters, spaces, '_' and '-': {comment:?}")]
    CommentCharacters { direction: &'static str, index: usize, comment: String },
    #[error("{direction} rule {index}: comment can not exceed {max} characters", max = COMMENT_LENGTH_MAX)]
    CommentLength { direction: &'static str, index: usize },
    #[error("{direction} rule {index}: port {port} is out of range 0-65535")]
    Port { direction: &'static str, index: usize, port: i64 },
    #[error("{direction} rule {index}: {cidr:?} is not a valid CIDR")]
    Cidr { direction: &'static str, index: usize, cidr: String },
    #[error("{direction} rule {index}: mixes IPv4 and IPv6 addresses")]
    MixedFamilies { direction: &'static str, index: usize },
}

/// metal-api's limit on rule comments.
pub const COMMENT_LENGTH_MAX: usize = 100;

impl FirewallRules {
    /// Checks every rule the way metal-api does before it allocates a firewall.
    pub fn validate(&self) -> Result<(), RuleError> {
        for (index, rule) in self.egress.iter().enumerate() {
            validate_rule("egress", index, &rule.comment, &rule.ports, [&rule.to[..], &[]])?;
        }
        for (index, rule) in self.ingress.iter().enumerate() {
            validate_rule("ingress", index, &rule.comment, &rule.ports, [&rule.from[..], &rule.to[..]])?;
        }
        Ok(())
    }
}

fn validate_rule(
    direction: &'static str,
    index: usize,
    comment: &str,
    ports: &[i64],
    cidr_lists: [&[String]; 2],
) -> Result<(), RuleError> {
    if comment.chars().count() > COMMENT_LENGTH_MAX {
        return Err(RuleError::CommentLength { direction, index });
    }
    let allowed = |c: char| c.is_alphabetic() || c == ' ' || c == '_' || c == '-';
    if !comment.chars().all(allowed) {
        return Err(RuleError::CommentCharacters { direction, index, comment: comment.to_string() });
    }
    if let Some(&port) = ports.iter().find(|port| !(0..=65535).contains(*port)) {
        return Err(RuleError::Port { direction, index, port });
    }
    let mut ipv4 = false;
    let mut ipv6 = false;
    for cidr in cidr_lists.iter().flat_map(|list| list.iter()) {
        match cidr.parse::<IpNet>() {
            Ok(IpNet::V4(_)) => ipv4 = true,
            Ok(IpNet::V6(_)) => ipv6 = true,
            Err(_) => return Err(RuleError::Cidr { direction, index, cidr: cidr.clone() }),
        }
    }
    if ipv4 && ipv6 {
        return Err(RuleError::MixedFamilies { direction, index });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(comment: &str, ports: Vec<i64>, to: &[&str]) -> FirewallRules {
        FirewallRules {
            egress: vec![EgressRule {
                protocol: Protocol::Tcp,
                ports,
                to: to.iter().map(|s| s.to_string()).collect(),
                comment: comment.to_string(),
            }],
            ingress: vec![],
        }
    }

    #[test]
    fn valid_rules_pass() {
        assert_eq!(egress("allow web_out-bound", vec![80, 443], &["0.0.0.0/0"]).validate(), Ok(()));
        assert_eq!(egress("", vec![0, 65535], &["2001:db8::/32"]).validate(), Ok(()));
    }

    #[test]
    fn comments_are_restricted() {
        assert!(matches!(
            egress("dns; drop table", vec![53], &["0.0.0.0/0"]).validate(),
            Err(RuleError::CommentCharacters { .. })
        ));
        let long = "a".repeat(101);
        assert!(matches!(
            egress(&long, vec![53], &["0.0.0.0/0"]).validate(),
            Err(RuleError::CommentLength { .. })
        ));
        assert_eq!(egress(&"a".repeat(100), vec![53], &["0.0.0.0/0"]).validate(), Ok(()));
    }

    #[test]
    fn ports_and_cidrs_are_checked() {
        assert!(matches!(
            egress("x", vec![65536], &["0.0.0.0/0"]).validate(),
            Err(RuleError::Port { port: 65536, .. })
        ));
        assert!(matches!(egress("x", vec![-1], &["0.0.0.0/0"]).validate(), Err(RuleError::Port { .. })));
        assert!(matches!(egress("x", vec![1], &["300.0.0.0/8"]).validate(), Err(RuleError::Cidr { .. })));
    }

    #[test]
    fn one_address_family_per_rule() {
        let rules = FirewallRules {
            egress: vec![],
            ingress: vec![IngressRule {
                protocol: Protocol::Udp,
                ports: vec![53],
                from: vec!["10.0.0.0/8".into()],
                to: vec!["2001:db8::/64".into()],
                comment: "mixed".into(),
            }],
        };
        assert!(matches!(rules.validate(), Err(RuleError::MixedFamilies { index: 0, .. })));
    }

    #[test]
    fn protocol_parses_case_insensitively() {
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("udp"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse(""), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("icmp"), None);
    }
}
