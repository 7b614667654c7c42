//! A validator built on metal-api's real Swagger 2.0 spec (`vendor/metal-api/metal-api.json`):
//! every exchange between `backend-metal` and the simulated server is checked against it.
//!
//! What is checked, per exchange:
//! - the method and path are an operation of the spec (paths below the base path; literal
//!   segments win over `{parameters}`, as in go-restful);
//! - a request body is JSON that validates against the operation's `body` parameter schema,
//!   *strictly*: objects of the spec's definitions may not carry properties the spec does not
//!   name (a misspelt field would be silently ignored by metal-api, so we treat it as an error);
//! - a 2xx status is one the operation declares (201 where metal-api answers 201);
//! - a response body validates against the schema of its status, or of `default` (metal-api's
//!   `httperrors.HTTPErrorResponse`) for declared-by-default error statuses.
//!
//! Swagger 2.0 schemas are JSON Schema draft 4 with `$ref`s into `#/definitions`; they are
//! compiled with the `jsonschema` crate, each schema rooted in a document that carries all
//! definitions, and cached per operation and status.

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Where the spec lives: the copy vendored in the repository (`vendor/metal-api/metal-api.json`,
/// see `vendor/README.md`), unless `CAPMS_METAL_API_SPEC` names another file.
pub fn spec_path() -> PathBuf {
    match std::env::var_os("CAPMS_METAL_API_SPEC") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vendor/metal-api/metal-api.json"),
    }
}

/// One request and its answer, as seen on the wire.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The path below the server's base path, starting with `/v1/`.
    pub path: String,
    pub request_body: Vec<u8>,
    pub status: u16,
    pub response_body: Vec<u8>,
}

impl Exchange {
    fn describe(&self) -> String {
        format!("{} {} → {}", self.method, self.path, self.status)
    }
}

/// An operation of the spec.
#[derive(Debug)]
struct Route {
    method: String,
    segments: Vec<String>,
    operation_id: String,
    body: Option<Value>,
    responses: BTreeMap<String, Option<Value>>,
}

impl Route {
    /// `Some(number of literal segments)` when `segments` match this route's path.
    fn matches(&self, segments: &[&str]) -> Option<usize> {
        if self.segments.len() != segments.len() {
            return None;
        }
        let mut literals = 0;
        for (pattern, segment) in self.segments.iter().zip(segments) {
            if pattern.starts_with('{') {
                continue;
            }
            if pattern != segment {
                return None;
            }
            literals += 1;
        }
        Some(literals)
    }
}

/// The loaded spec and its compiled schemas.
#[derive(Debug)]
pub struct Spec {
    routes: Vec<Route>,
    definitions: Value,
    strict_definitions: Value,
    validators: Mutex<BTreeMap<String, Arc<Validator>>>,
}

impl Spec {
    /// The spec at [`spec_path`], loaded once per process.
    pub fn shared() -> &'static Spec {
        static SPEC: OnceLock<Spec> = OnceLock::new();
        SPEC.get_or_init(|| match Spec::load() {
            Ok(spec) => spec,
            Err(error) => panic!("{error}"),
        })
    }

    /// Loads and indexes the spec file.
    pub fn load() -> Result<Spec, String> {
        let path = spec_path();
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read metal-api's spec at {}: {error}", path.display()))?;
        let document: Value = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not JSON: {error}", path.display()))?;
        Spec::from_document(&document)
    }

    /// Indexes a parsed Swagger 2.0 document.
    pub fn from_document(document: &Value) -> Result<Spec, String> {
        let definitions = document.get("definitions").cloned().unwrap_or(Value::Object(Map::new()));
        let paths = document.get("paths").and_then(Value::as_object).ok_or("the spec has no paths")?;
        let mut routes = Vec::new();
        for (path, operations) in paths {
            let Some(operations) = operations.as_object() else { continue };
            for (method, operation) in operations {
                routes.push(route(path, method, operation));
            }
        }
        let strict_definitions = strict(&definitions);
        Ok(Spec { routes, definitions, strict_definitions, validators: Mutex::new(BTreeMap::new()) })
    }

    /// Every way `exchange` deviates from the spec; empty when it conforms.
    pub fn violations(&self, exchange: &Exchange) -> Vec<String> {
        let Some(route) = self.route(&exchange.method, &exchange.path) else {
            return vec![format!("{}: no such operation in the spec", exchange.describe())];
        };
        let mut found = Vec::new();
        self.check_request(route, exchange, &mut found);
        self.check_response(route, exchange, &mut found);
        found
            .into_iter()
            .map(|violation| format!("{} ({}): {violation}", exchange.describe(), route.operation_id))
            .collect()
    }

    fn route(&self, method: &str, path: &str) -> Option<&Route> {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = method.to_ascii_lowercase();
        self.routes
            .iter()
            .filter(|route| route.method == method)
            .filter_map(|route| route.matches(&segments).map(|literals| (literals, route)))
            .max_by_key(|(literals, _)| *literals)
            .map(|(_, route)| route)
    }

    fn check_request(&self, route: &Route, exchange: &Exchange, found: &mut Vec<String>) {
        let Some(schema) = &route.body else {
            if !exchange.request_body.is_empty() {
                found.push("a request body where the operation takes none".to_string());
            }
            return;
        };
        let body: Value = match serde_json::from_slice(&exchange.request_body) {
            Ok(body) => body,
            Err(error) => return found.push(format!("the request body is not JSON: {error}")),
        };
        let key = format!("request {} {}", route.method, route.operation_id);
        self.validate(&key, schema, &self.strict_definitions, &body, "request", found);
    }

    fn check_response(&self, route: &Route, exchange: &Exchange, found: &mut Vec<String>) {
        let status = exchange.status.to_string();
        let declared = route.responses.get(&status);
        if (200..300).contains(&exchange.status) && declared.is_none() {
            let statuses: Vec<&String> = route.responses.keys().collect();
            return found.push(format!("status {status} is not declared (declared: {statuses:?})"));
        }
        let Some(schema) = declared.or_else(|| route.responses.get("default")) else {
            return found.push(format!("status {status} is not declared and there is no default"));
        };
        let Some(schema) = schema else { return };
        let body: Value = match serde_json::from_slice(&exchange.response_body) {
            Ok(body) => body,
            Err(error) => return found.push(format!("the response body is not JSON: {error}")),
        };
        let key = format!("response {} {} {status}", route.method, route.operation_id);
        self.validate(&key, schema, &self.definitions, &body, "response", found);
    }

    fn validate(
        &self,
        key: &str,
        schema: &Value,
        definitions: &Value,
        body: &Value,
        what: &str,
        found: &mut Vec<String>,
    ) {
        let validator = match self.validator(key, schema, definitions) {
            Ok(validator) => validator,
            Err(error) => return found.push(format!("the spec's {what} schema does not compile: {error}")),
        };
        for error in validator.iter_errors(body) {
            found.push(format!("{what} {}: {error}", error.instance_path()));
        }
    }

    fn validator(&self, key: &str, schema: &Value, definitions: &Value) -> Result<Arc<Validator>, String> {
        let mut cache = self.validators.lock().map_err(|_| "the schema cache is poisoned".to_string())?;
        if let Some(validator) = cache.get(key) {
            return Ok(validator.clone());
        }
        let mut root = schema.clone();
        if let Value::Object(object) = &mut root {
            object.insert("definitions".to_string(), definitions.clone());
        }
        let validator = jsonschema::options()
            .with_draft(Draft::Draft4)
            .build(&root)
            .map_err(|error| error.to_string())?;
        let validator = Arc::new(validator);
        cache.insert(key.to_string(), validator.clone());
        Ok(validator)
    }
}

fn route(path: &str, method: &str, operation: &Value) -> Route {
    let parameters = operation.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let body = parameters
        .iter()
        .find(|parameter| parameter.get("in").and_then(Value::as_str) == Some("body"))
        .and_then(|parameter| parameter.get("schema").cloned());
    let responses = operation
        .get("responses")
        .and_then(Value::as_object)
        .map(|responses| {
            responses
                .iter()
                .map(|(status, response)| (status.clone(), response.get("schema").cloned()))
                .collect()
        })
        .unwrap_or_default();
    Route {
        method: method.to_ascii_lowercase(),
        segments: path.trim_start_matches('/').split('/').map(str::to_string).collect(),
        operation_id: operation.get("operationId").and_then(Value::as_str).unwrap_or("?").to_string(),
        body,
        responses,
    }
}

/// The definitions with `additionalProperties: false` on every object schema that lists its
/// properties and says nothing about others.
fn strict(definitions: &Value) -> Value {
    match definitions {
        Value::Object(object) => {
            let mut strict_object: Map<String, Value> =
                object.iter().map(|(key, value)| (key.clone(), strict(value))).collect();
            if strict_object.contains_key("properties") && !strict_object.contains_key("additionalProperties")
            {
                strict_object.insert("additionalProperties".to_string(), Value::Bool(false));
            }
            Value::Object(strict_object)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict).collect()),
        other => other.clone(),
    }
}

/// Collects exchanges as a server sees them and checks each against the spec.
#[derive(Debug, Default)]
pub struct SpecRecorder {
    exchanges: Mutex<Vec<Exchange>>,
    problems: Mutex<Vec<String>>,
}

impl SpecRecorder {
    /// Notes an exchange that could not be recorded faithfully; it counts as a violation.
    pub fn problem(&self, problem: String) {
        if let Ok(mut problems) = self.problems.lock() {
            problems.push(problem);
        }
    }

    pub fn record(&self, exchange: Exchange) {
        if let Ok(mut exchanges) = self.exchanges.lock() {
            exchanges.push(exchange);
        }
    }

    /// How many exchanges were recorded.
    pub fn len(&self) -> usize {
        self.exchanges.lock().map(|exchanges| exchanges.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every violation of every recorded exchange, and every exchange that could not be recorded.
    pub fn violations(&self, spec: &Spec) -> Vec<String> {
        let exchanges = self.exchanges.lock().map(|exchanges| exchanges.clone()).unwrap_or_default();
        let mut found: Vec<String> =
            exchanges.iter().flat_map(|exchange| spec.violations(exchange)).collect();
        found.extend(self.problems.lock().map(|problems| problems.clone()).unwrap_or_default());
        found
    }
}
