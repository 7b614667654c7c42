//! HTTPS against a local rustls server whose certificate (for 127.0.0.1, valid until 2126) is
//! signed by a test-only CA: the fixtures in `tls/` exist for nothing else.

use super::server::{Reply, TestServer};
use super::*;
use crate::{CaBundle, ConfigError};
use capms_core::{ErrorKind, MetalBackend};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA_PEM: &[u8] = include_bytes!("tls/ca.pem");
const SERVER_PEM: &[u8] = include_bytes!("tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("tls/server.key");

fn acceptor() -> TlsAcceptor {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(SERVER_PEM).collect::<Result<_, _>>().expect("server certificate");
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).expect("server key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .expect("certificate and key match");
    TlsAcceptor::from(Arc::new(config))
}

async fn tls_server() -> TestServer {
    TestServer::start_tls(vec![Reply::json(200, partition_json())], acceptor()).await
}

#[tokio::test]
async fn https_with_the_custom_ca_works() {
    let server = tls_server().await;
    let config = config(&server.base_url).with_ca_bundle(CaBundle::Pem(CA_PEM.to_vec()));
    let partition =
        MetalClient::new(config).expect("client").get_partition("mini-lab").await.expect("verified");
    assert_eq!(partition.id, "mini-lab");
    verify_hmac(&server.requests()[0]);
}

#[tokio::test]
async fn https_with_the_ca_from_a_file_works() {
    let path = std::env::temp_dir().join(format!("capms-backend-metal-test-ca-{}.pem", std::process::id()));
    std::fs::write(&path, CA_PEM).expect("writes the CA");
    let server = tls_server().await;
    let config = config(&server.base_url).with_ca_bundle(CaBundle::Path(path.clone()));
    let result = MetalClient::new(config).expect("client").get_partition("mini-lab").await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(result.expect("verified").id, "mini-lab");
}

#[tokio::test]
async fn https_without_the_ca_is_refused() {
    let server = tls_server().await;
    let config = config(&server.base_url).with_retry(RetryPolicy::none());
    let error =
        MetalClient::new(config).expect("client").get_partition("mini-lab").await.expect_err("unknown CA");
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(error.status(), None);
    assert!(server.requests().is_empty(), "no request went over an unverified connection");
    assert!(error.message().contains("certificate"), "{error}");
}

#[tokio::test]
async fn insecure_mode_accepts_any_certificate() {
    let server = tls_server().await;
    let config = config(&server.base_url).with_insecure_skip_tls_verify(true);
    let partition =
        MetalClient::new(config).expect("client").get_partition("mini-lab").await.expect("accepted");
    assert_eq!(partition.id, "mini-lab");
}

#[test]
fn client_creation_with_defaults_does_not_panic() {
    for url in ["https://metal.example/metal", "http://metal.example"] {
        assert!(MetalClient::new(MetalConfig::new(url)).is_ok(), "{url}");
    }
}

#[test]
fn bad_ca_bundles_are_configuration_errors() {
    let garbage = MetalConfig::new("https://h").with_ca_bundle(CaBundle::Pem(b"not a certificate".to_vec()));
    assert!(matches!(MetalClient::new(garbage), Err(ConfigError::CaBundle(_))));
    let missing = MetalConfig::new("https://h").with_ca_bundle(CaBundle::Path("/nonexistent/ca.pem".into()));
    assert!(matches!(MetalClient::new(missing), Err(ConfigError::CaBundleRead { .. })));
}
