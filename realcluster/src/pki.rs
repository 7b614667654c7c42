//! The harness's certificates: one CA per management cluster, which signs the apiserver's and
//! the webhooks' serving certificates and the clients' certificates, and the service-account
//! signing key. Files are PEM in the cluster's `pki/` folder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{IoContext, Result};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA and the folder its files go to.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// Names a serving certificate is valid for: loopback, and the names kube-apiserver's own
/// clients (kube-controller-manager, in-cluster defaults) may use.
pub const SERVING_NAMES: [&str; 7] = [
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

impl Pki {
    /// Makes a CA named `name` and writes `ca.crt` into `dir`.
    pub fn create(dir: &Path, name: &str) -> Result<Pki> {
        std::fs::create_dir_all(dir).io(|| format!("create {}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name}-ca"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let pki = Pki { dir: dir.to_path_buf(), ca };
        write(&pki.ca_file(), &pki.ca_pem())?;
        Ok(pki)
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A serving certificate for [`SERVING_NAMES`], as `<name>.crt` and `<name>.key`.
    pub fn server(&self, name: &str) -> Result<KeyFiles> {
        let mut params = CertificateParams::new(SERVING_NAMES.map(String::from).to_vec())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(name, params)
    }

    /// A client certificate for user `user` in group `group` (Kubernetes reads CN and O).
    pub fn client(&self, name: &str, user: &str, group: &str) -> Result<KeyFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        params.distinguished_name.push(DnType::OrganizationName, group);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(name, params)
    }

    /// A signing key (`<name>.key`) and its public key (`<name>.pub`, in `cert`), for
    /// service-account tokens.
    pub fn signing_key(&self, name: &str) -> Result<KeyFiles> {
        let key = KeyPair::generate()?;
        let files = KeyFiles {
            cert: self.dir.join(format!("{name}.pub")),
            key: self.dir.join(format!("{name}.key")),
        };
        write(&files.key, &key.serialize_pem())?;
        write(&files.cert, &key.public_key_pem())?;
        Ok(files)
    }

    fn sign(&self, name: &str, params: CertificateParams) -> Result<KeyFiles> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let files = KeyFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).io(|| format!("write {}", path.display()))
}
