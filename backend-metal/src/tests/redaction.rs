//! Keys, tokens and user data never show up in `Debug`, errors or logs.

use super::server::{Reply, TestServer};
use super::*;
use crate::{Auth, CaBundle};
use capms_core::metal::MachineAllocateRequest;
use capms_core::{MetalBackend, UserData};
use std::io::Write;
use std::sync::{Arc, Mutex};

const HMAC_KEY: &str = "hmac-key-that-must-not-leak";
const TOKEN: &str = "bearer-token-that-must-not-leak";
const USER_DATA: &str = "#cloud-config join-token-that-must-not-leak";

/// Collects everything the tracing subscriber writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).to_string()
    }

    /// Captures every level on this thread (tests run on a current-thread runtime, so the
    /// client's tasks log here too).
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

fn assert_clean(text: &str) {
    for secret in [HMAC_KEY, TOKEN, USER_DATA, "join-token"] {
        assert!(!text.contains(secret), "{secret} leaked into: {text}");
    }
}

fn allocate_request() -> MachineAllocateRequest {
    MachineAllocateRequest { user_data: Some(UserData::new(USER_DATA)), ..MachineAllocateRequest::default() }
}

#[test]
fn config_and_client_debug_show_no_secrets() {
    let hmac = config("https://metal.example/metal")
        .with_hmac(SecretString::new(HMAC_KEY), HmacAuthType::Admin)
        .with_ca_bundle(CaBundle::Pem(b"-----BEGIN CERTIFICATE-----".to_vec()));
    let bearer = config("https://metal.example").with_bearer(SecretString::new(TOKEN));
    assert_clean(&format!("{hmac:?} {bearer:?}"));
    let hmac_client = MetalClient::new(
        config("https://metal.example").with_hmac(SecretString::new(HMAC_KEY), HmacAuthType::Admin),
    );
    let bearer_client = MetalClient::new(bearer).expect("client");
    assert_clean(&format!("{:?} {bearer_client:?}", hmac_client.expect("client")));
    let wire = capms_core::wire::MachineAllocateRequest::from(&allocate_request());
    assert_clean(&format!("{wire:?} {:?}", allocate_request()));
}

#[test]
fn invalid_credentials_are_reported_without_them() {
    let config = config("https://metal.example").with_bearer(SecretString::new(format!("{TOKEN}\n")));
    let error = MetalClient::new(config).expect_err("newline in token");
    assert_clean(&format!("{error} {error:?}"));
    let empty = MetalClient::new(
        super::config("https://metal.example").with_hmac(SecretString::default(), HmacAuthType::Edit),
    );
    assert!(empty.is_err(), "an empty HMAC key is a configuration error");
}

#[tokio::test]
async fn errors_and_logs_show_no_secrets() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let replies = vec![
        Reply::error(422, "invalid public SSH key"),
        Reply::Drop,
        Reply::json(403, json!("tenant  not allowed")),
        Reply::Drop,
        Reply::Drop,
        Reply::Drop,
    ];
    let server = TestServer::start("/metal", replies).await;
    let hmac =
        MetalClient::new(config(&server.base_url).with_hmac(SecretString::new(HMAC_KEY), HmacAuthType::Edit))
            .expect("client");
    let bearer =
        MetalClient::new(config(&server.base_url).with_bearer(SecretString::new(TOKEN))).expect("client");
    let mut errors = Vec::new();
    errors.push(hmac.allocate_machine(&allocate_request()).await.expect_err("422"));
    errors.push(bearer.allocate_machine(&allocate_request()).await.expect_err("dropped"));
    errors.push(bearer.get_machine("m1").await.expect_err("403"));
    errors.push(hmac.get_machine("m1").await.expect_err("dropped three times"));
    assert_eq!(server.requests().len(), 6);
    assert_eq!(server.requests()[0].json().map(|body| body["user_data"].clone()), Some(json!(USER_DATA)));
    assert_clean(&format!("{errors:?}"));
    for error in &errors {
        assert_clean(&error.to_string());
    }
    let text = logs.text();
    assert!(text.contains("metal-api call"), "the client logs its calls: {text}");
    assert_clean(&text);
}

#[test]
fn insecure_mode_warns_once_at_creation() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let client = MetalClient::new(config("https://metal.example").with_insecure_skip_tls_verify(true));
    assert!(client.is_ok());
    let text = logs.text();
    assert_eq!(text.matches("verification of metal-api is DISABLED").count(), 1, "{text}");
    assert!(text.contains("WARN"), "{text}");
}

#[test]
fn auth_debug_is_redacted() {
    let auth = Auth::Hmac { key: SecretString::new(HMAC_KEY), auth_type: HmacAuthType::View };
    assert_clean(&format!("{auth:?} {:?}", Auth::Bearer(SecretString::new(TOKEN))));
}
