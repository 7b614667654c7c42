//! The YAML of a scenario file as a tree with a line and column on every node, read with
//! serde-saphyr, and the helpers that turn it into typed values with precise messages.
//!
//! The scenario format is checked by hand on this tree rather than by `#[derive(Deserialize)]`
//! so that every message can name the line and column of the offending key or value, suggest
//! the closest known key or verb, and say what was expected in the words of the format.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};
use std::fmt;
use std::time::Duration;

/// A problem in a scenario file, at a line and column (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Problem {
    pub fn at(node: &Node, message: impl Into<String>) -> Self {
        Problem { line: node.line, column: node.column, message: message.into() }
    }

    pub fn at_key(key: &Key, message: impl Into<String>) -> Self {
        Problem { line: key.line, column: key.column, message: message.into() }
    }
}

pub type Parsed<T> = Result<T, Problem>;

/// A YAML node with where it starts and, for scalars, its text as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u64,
    pub column: u64,
    /// The scalar as written in the file (quotes included), if it is a scalar.
    pub raw: Option<String>,
}

/// A mapping key (always a string: scenario files have no other keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// The tree serde-saphyr builds, before the scalars' text is looked up.
#[derive(Debug)]
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
                Raw::deserialize(deserializer)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Raw>>()?;
                    entries.push((key, value));
                }
                Ok(Raw::Map(entries))
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

/// Reads YAML text into a [`Node`] tree. Booleans are only `true`/`false` (so `on`, `yes`
/// and `n` stay strings); duplicate keys are an error.
pub fn parse(text: &str) -> Parsed<Node> {
    let options = serde_saphyr::options! { strict_booleans: true };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(convert(text, raw)),
        Err(error) => {
            let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            let message = UserMessageFormatter.format_message(error.without_snippet());
            let message: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            Err(Problem { line, column, message: format!("not valid YAML: {message}") })
        }
    }
}

fn convert(text: &str, raw: Spanned<Raw>) -> Node {
    let line = raw.referenced.line();
    let column = raw.referenced.column();
    let span = raw.referenced.span();
    let written = || {
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        text.get(start..start.checked_add(len)?).map(str::to_string)
    };
    let (value, raw_text) = match raw.value {
        Raw::Null => (Value::Null, written()),
        Raw::Bool(v) => (Value::Bool(v), written()),
        Raw::Int(v) => (Value::Int(v), written()),
        Raw::Float(v) => (Value::Float(v), written()),
        Raw::Str(v) => (Value::Str(v), written()),
        Raw::Seq(items) => (Value::Seq(items.into_iter().map(|item| convert(text, item)).collect()), None),
        Raw::Map(entries) => (
            Value::Map(
                entries
                    .into_iter()
                    .map(|(key, value)| {
                        let key = Key {
                            name: key.value,
                            line: key.referenced.line(),
                            column: key.referenced.column(),
                        };
                        (key, convert(text, value))
                    })
                    .collect(),
            ),
            None,
        ),
    };
    Node { value, line, column, raw: raw_text }
}

impl Node {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> String {
        match &self.value {
            Value::Null => "nothing".to_string(),
            Value::Bool(v) => format!("the boolean {v}"),
            Value::Int(v) => format!("the number {v}"),
            Value::Float(v) => format!("the number {v}"),
            Value::Str(v) => format!("the text {v:?}"),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
        }
    }

    /// The node in YAML flow style, scalars as written: `{ name: prod, workers: 2 }`.
    pub fn flow(&self) -> String {
        match &self.value {
            Value::Seq(items) => format!("[{}]", items.iter().map(Node::flow).collect::<Vec<_>>().join(", ")),
            Value::Map(entries) if entries.is_empty() => "{}".to_string(),
            Value::Map(entries) => format!(
                "{{ {} }}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", k.name, v.flow()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Null => self.raw.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| "~".to_string()),
            _ => self.raw.clone().unwrap_or_else(|| self.scalar_text()),
        }
    }

    fn scalar_text(&self) -> String {
        match &self.value {
            Value::Null => "~".to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Str(v) => v.clone(),
            Value::Seq(_) | Value::Map(_) => self.flow(),
        }
    }

    /// A string; a number written where text is expected (`image: 24.04`) counts as its text.
    pub fn string(&self, what: &str) -> Parsed<String> {
        match &self.value {
            Value::Str(v) if v.is_empty() => Err(Problem::at(self, format!("{what} must not be empty"))),
            Value::Str(v) => Ok(v.clone()),
            Value::Int(_) | Value::Float(_) => Ok(self.raw.clone().unwrap_or_else(|| self.scalar_text())),
            _ => Err(Problem::at(self, format!("{what} must be text, found {}", self.kind()))),
        }
    }

    /// A non-negative whole number.
    pub fn count(&self, what: &str) -> Parsed<u64> {
        match &self.value {
            Value::Int(v) => u64::try_from(*v).map_err(|_| {
                Problem::at(self, format!("{what} must be a whole number of 0 or more, found {v}"))
            }),
            _ => Err(Problem::at(self, format!("{what} must be a whole number, found {}", self.kind()))),
        }
    }

    /// A non-negative whole number that fits in `usize`.
    pub fn usize(&self, what: &str) -> Parsed<usize> {
        let count = self.count(what)?;
        usize::try_from(count).map_err(|_| Problem::at(self, format!("{what} is too large: {count}")))
    }

    /// `true` or `false`.
    pub fn boolean(&self, what: &str) -> Parsed<bool> {
        match &self.value {
            Value::Bool(v) => Ok(*v),
            _ => Err(Problem::at(self, format!("{what} must be true or false, found {}", self.kind()))),
        }
    }

    /// A probability from 0 to 1 (`0.2`, `1`, or a percentage like `20%`).
    pub fn rate(&self, what: &str) -> Parsed<f64> {
        let bad = || {
            Problem::at(
                self,
                format!(
                    "{what} must be a probability from 0 to 1 (like 0.2) or a percentage (like 20%), found {}",
                    self.kind()
                ),
            )
        };
        let rate = match &self.value {
            Value::Int(v) => *v as f64,
            Value::Float(v) => *v,
            Value::Str(v) => {
                let percent: f64 = v.strip_suffix('%').ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
                percent / 100.0
            }
            _ => return Err(bad()),
        };
        if (0.0..=1.0).contains(&rate) { Ok(rate) } else { Err(bad()) }
    }

    /// A duration like `90s`, `5m`, `2h`, `1h30m` or `500ms`.
    pub fn duration(&self, what: &str) -> Parsed<Duration> {
        let text = match &self.value {
            Value::Str(v) => v.clone(),
            Value::Int(v) => {
                return Err(Problem::at(
                    self,
                    format!(
                        "{what} needs a unit: write {v}s, {v}m or {v}h (durations look like 90s, 5m, 2h, 1h30m)"
                    ),
                ));
            }
            _ => {
                return Err(Problem::at(
                    self,
                    format!("{what} must be a duration like 90s, 5m, 2h or 1h30m, found {}", self.kind()),
                ));
            }
        };
        parse_duration(&text).map_err(|reason| {
            Problem::at(
                self,
                format!("{what}: bad duration {text:?}: {reason} (durations look like 90s, 5m, 2h, 1h30m)"),
            )
        })
    }

    /// The entries of a mapping, checked against the keys allowed there.
    pub fn fields<'a>(&'a self, what: &str, allowed: &[&str]) -> Parsed<Fields<'a>> {
        let Value::Map(entries) = &self.value else {
            let example = allowed.iter().map(|k| format!("{k}: ...")).collect::<Vec<_>>().join(", ");
            return Err(Problem::at(
                self,
                format!("{what} must be a mapping like {{ {example} }}, found {}", self.kind()),
            ));
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                return Err(Problem::at_key(key, unknown("key", &key.name, what, allowed)));
            }
        }
        Ok(Fields { node: self, entries, what: what.to_string() })
    }

    /// The items of a list.
    pub fn items(&self, what: &str) -> Parsed<&[Node]> {
        match &self.value {
            Value::Seq(items) => Ok(items),
            _ => Err(Problem::at(self, format!("{what} must be a list, found {}", self.kind()))),
        }
    }
}

/// The checked entries of a mapping.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    pub node: &'a Node,
    entries: &'a [(Key, Node)],
    what: String,
}

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    pub fn required(&self, key: &str) -> Parsed<&'a Node> {
        self.get(key).ok_or_else(|| Problem::at(self.node, format!("{} needs {key:?}", self.what)))
    }

    pub fn entries(&self) -> &'a [(Key, Node)] {
        self.entries
    }

    /// `<what>: <key>` for messages about one value.
    pub fn name(&self, key: &str) -> String {
        format!("{key:?} of {}", self.what)
    }
}

/// `unknown <kind> "x" in <where> (did you mean "y"?); expected one of: ...`
pub fn unknown(kind: &str, found: &str, place: &str, known: &[&str]) -> String {
    let hint = match did_you_mean(found, known) {
        Some(best) => format!(" (did you mean {best:?}?)"),
        None => format!("; expected one of: {}", known.join(", ")),
    };
    format!("unknown {kind} {found:?} in {place}{hint}")
}

/// The known word closest to `found`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(found: &str, known: &[&'a str]) -> Option<&'a str> {
    let found_lower = found.to_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (edit_distance(&found_lower, k), *k))
        .filter(|(distance, k)| {
            *distance <= (k.len() / 3).max(1) || (found_lower.len() >= 4 && k.starts_with(&found_lower))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// The optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbouring characters (`prdo` is one edit from `prod`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Parses `90s`, `5m`, `2h`, `1d`, `500ms` and sums of them like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| format!("{number} is too large"))?;
        let unit_len = after.chars().take_while(char::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ms" => {
                total = total.saturating_add(Duration::from_millis(number));
                rest = after;
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" => return Err(format!("{number} has no unit (s, m, h)")),
            other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
        };
        total = total.saturating_add(Duration::from_secs(number.saturating_mul(seconds)));
        rest = after;
    }
    Ok(total)
}

/// A duration the way scenario files write it: `1h30m`, `90s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    let millis = duration.subsec_millis();
    if seconds == 0 && millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 min").is_err());
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn suggestions() {
        let verbs = ["scale_workers", "scale_control_plane", "run_for", "run_until"];
        assert_eq!(did_you_mean("scale_worker", &verbs), Some("scale_workers"));
        assert_eq!(did_you_mean("run-for", &verbs), Some("run_for"));
        assert_eq!(did_you_mean("explode", &verbs), None);
    }

    #[test]
    fn locations_and_text_as_written() {
        let node = parse("a:\n  b: [1, 24.10, \"x\"]\n").unwrap_or_else(|p| panic!("{p:?}"));
        let Value::Map(entries) = &node.value else { panic!("not a map") };
        let (key, value) = &entries[0];
        assert_eq!((key.line, key.column), (1, 1));
        let Value::Map(inner) = &value.value else { panic!("not a map") };
        assert_eq!((inner[0].0.line, inner[0].0.column), (2, 3));
        assert_eq!(inner[0].1.flow(), "[1, 24.10, \"x\"]");
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let problem = parse("a: [1, 2\nb: 3\n").err().unwrap_or_else(|| panic!("parsed"));
        assert_eq!(problem.line, 2);
        assert!(problem.message.starts_with("not valid YAML"), "{}", problem.message);
    }
}
