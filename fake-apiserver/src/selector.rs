//! Label and field selectors.
//!
//! Label selectors follow the apiserver's grammar: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a`, `!a`, joined by commas (an AND). `!=` and `notin` match objects without
//! the label, as in Kubernetes. Field selectors accept `=`, `==` and `!=` on any dotted path to a
//! string (`metadata.name`, `metadata.namespace`, `spec.x`...): the real apiserver only allows
//! a fixed set of fields per kind, the fake allows all (an approximation in the lenient direction).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let requirements = split_top_level(text)
            .into_iter()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.requirements.iter().all(|requirement| holds(requirement, labels))
    }
}

/// Splits at commas outside parentheses: `a in (x,y),b` has two requirements.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(text: &str) -> Result<Requirement, ApiError> {
    let invalid = || ApiError::bad_request(format!("unable to parse requirement: {text:?}"));
    if let Some(key) = text.strip_prefix('!') {
        return valid_key(key.trim()).map(Requirement::NotExists).ok_or_else(invalid);
    }
    if let Some((head, values)) = text.split_once('(') {
        let values = values.strip_suffix(')').ok_or_else(invalid)?;
        let values: BTreeSet<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
        return match head.split_whitespace().collect::<Vec<_>>().as_slice() {
            [key, "in"] => valid_key(key).map(|key| Requirement::In(key, values)).ok_or_else(invalid),
            [key, "notin"] => valid_key(key).map(|key| Requirement::NotIn(key, values)).ok_or_else(invalid),
            _ => Err(invalid()),
        };
    }
    if let Some((key, value)) = text.split_once("!=") {
        return valid_key(key.trim())
            .map(|key| Requirement::NotEquals(key, value.trim().to_owned()))
            .ok_or_else(invalid);
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return valid_key(key.trim())
            .map(|key| Requirement::Equals(key, value.trim().to_owned()))
            .ok_or_else(invalid);
    }
    valid_key(text).map(Requirement::Exists).ok_or_else(invalid)
}

fn valid_key(key: &str) -> Option<String> {
    let valid = !key.is_empty() && !key.contains(char::is_whitespace) && !key.contains(['=', '!', '(', ')']);
    valid.then(|| key.to_owned())
}

fn holds(requirement: &Requirement, labels: &Value) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    match requirement {
        Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
        Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
        Requirement::In(key, values) => label(key).is_some_and(|v| values.contains(v)),
        Requirement::NotIn(key, values) => label(key).is_none_or(|v| !values.contains(v)),
        Requirement::Exists(key) => label(key).is_some(),
        Requirement::NotExists(key) => label(key).is_none(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    path: Vec<String>,
    value: String,
    negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let requirements = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_field_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// Whether every field has (or, for `!=`, has not) the value; a missing field reads as `""`.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|requirement| {
            let found = requirement.path.iter().fold(object, |value, key| &value[key.as_str()]);
            let actual = match found {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == requirement.value) != requirement.negated
        })
    }
}

fn parse_field_requirement(text: &str) -> Result<FieldRequirement, ApiError> {
    let (path, value, negated) = if let Some((path, value)) = text.split_once("!=") {
        (path, value, true)
    } else if let Some((path, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        (path, value, false)
    } else {
        return Err(ApiError::bad_request(format!("invalid field selector: {text:?}")));
    };
    let path = path.trim().split('.').map(str::to_owned).collect();
    Ok(FieldRequirement { path, value: value.trim().to_owned(), negated })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on malformed fixtures")]

    use serde_json::json;

    use super::*;

    fn labelled(labels: Value) -> Value {
        json!({ "metadata": { "name": "x", "namespace": "n", "labels": labels } })
    }

    #[test]
    fn label_selectors_of_each_form() {
        let object = labelled(json!({ "a": "1", "b": "2" }));
        let cases = [
            ("a=1", true),
            ("a==1", true),
            ("a=2", false),
            ("a!=2", true),
            ("c!=2", true),
            ("a in (1,3)", true),
            ("a in (3)", false),
            ("a notin (3)", true),
            ("c notin (3)", true),
            ("a notin (1)", false),
            ("a", true),
            ("c", false),
            ("!c", true),
            ("!a", false),
            ("a=1,b in (2, 5),!c", true),
            ("a=1,b=3", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            assert_eq!(LabelSelector::parse(selector).unwrap().matches(&object), expected, "{selector}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for selector in ["a in 1,2)", "a foo (1)", "=1", "!"] {
            assert_eq!(LabelSelector::parse(selector).unwrap_err().code, 400, "{selector}");
        }
    }

    #[test]
    fn field_selectors() {
        let object = labelled(json!({}));
        assert!(FieldSelector::parse("metadata.name=x").unwrap().matches(&object));
        assert!(FieldSelector::parse("metadata.name==x,metadata.namespace=n").unwrap().matches(&object));
        assert!(!FieldSelector::parse("metadata.name!=x").unwrap().matches(&object));
        assert!(FieldSelector::parse("spec.missing=").unwrap().matches(&object));
    }
}
