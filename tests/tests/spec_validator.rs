//! The spec validator itself: it must reject what metal-api's spec rejects, or the zero
//! violations of the contract suite over HTTP would mean nothing.

use capms_tests::spec::{Exchange, Spec};

fn exchange(method: &str, path: &str, request: &str, status: u16, response: &str) -> Exchange {
    Exchange {
        method: method.to_string(),
        path: path.to_string(),
        request_body: request.as_bytes().to_vec(),
        status,
        response_body: response.as_bytes().to_vec(),
    }
}

const IP: &str = r#"{"allocationuuid":"a","ipaddress":"10.0.0.1","networkid":"n","projectid":"p","type":"ephemeral","tags":[]}"#;
const IP_REQUEST: &str = r#"{"networkid":"n","projectid":"p","type":"ephemeral"}"#;

#[test]
fn a_conforming_ip_allocation_has_no_violations() {
    let found = Spec::shared().violations(&exchange("POST", "/v1/ip/allocate", IP_REQUEST, 201, IP));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn an_ip_allocation_answered_200_instead_of_201_is_a_violation() {
    let found = Spec::shared().violations(&exchange("POST", "/v1/ip/allocate", IP_REQUEST, 200, IP));
    assert!(found.iter().any(|violation| violation.contains("status 200 is not declared")), "{found:?}");
}

#[test]
fn a_misspelt_request_field_is_a_violation() {
    let request = r#"{"networkid":"n","projectid":"p","type":"ephemeral","projectId":"p"}"#;
    let found = Spec::shared().violations(&exchange("POST", "/v1/ip/allocate", request, 201, IP));
    assert!(found.iter().any(|violation| violation.contains("projectId")), "{found:?}");
}

#[test]
fn a_missing_required_request_field_is_a_violation() {
    let request = r#"{"networkid":"n","type":"ephemeral"}"#;
    let found = Spec::shared().violations(&exchange("POST", "/v1/ip/allocate", request, 201, IP));
    assert!(found.iter().any(|violation| violation.contains("projectid")), "{found:?}");
}

#[test]
fn a_response_missing_a_required_field_is_a_violation() {
    let image = r#"{"id":"debian-13.0","features":["machine"]}"#;
    let found = Spec::shared().violations(&exchange("GET", "/v1/image/debian-13.0", "", 200, image));
    assert!(found.iter().any(|violation| violation.contains("expirationDate")), "{found:?}");
}

#[test]
fn an_error_must_have_metal_api_error_shape() {
    let found = Spec::shared().violations(&exchange("GET", "/v1/machine/x", "", 404, r#"{"error":"nope"}"#));
    assert!(!found.is_empty());
    let conforming = r#"{"statuscode":404,"message":"no machine with id \"x\" found"}"#;
    let found = Spec::shared().violations(&exchange("GET", "/v1/machine/x", "", 404, conforming));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn a_path_outside_the_spec_is_a_violation() {
    let found = Spec::shared().violations(&exchange("GET", "/v1/machines", "", 200, "[]"));
    assert!(found.iter().any(|violation| violation.contains("no such operation")), "{found:?}");
}

#[test]
fn literal_segments_win_over_parameters() {
    // `POST /v1/machine/find` is findMachines, not a machine with id "find".
    let found = Spec::shared().violations(&exchange("POST", "/v1/machine/find", "{}", 200, "[]"));
    assert!(found.is_empty(), "{found:?}");
}
