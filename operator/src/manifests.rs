//! The clusterctl provider artifacts of capms, generated from code.
//!
//! clusterctl installs an infrastructure provider from a *provider repository*: a folder
//! `infrastructure-metalstack/<version>/` with `metadata.yaml` (release series → CAPI contract),
//! `infrastructure-components.yaml` (namespace, CRDs, RBAC, credentials Secret, Deployment) and
//! the cluster templates `cluster-template*.yaml` and `clusterclass-*.yaml`
//! (`reference/capi-contract.md`, section 10).
//!
//! Everything is built as typed objects (k8s-openapi, capms-core's CRD types) or JSON values
//! and serialized by one YAML writer ([`yaml`]), so the output is deterministic: the committed
//! copies under `config/` are compared byte for byte by `operator/tests/artifacts.rs`, and
//! `cargo run -p capms-operator --example regenerate` rewrites them.
//!
//! Variables (`${NAME}`, `${NAME:=default}`) are substituted by clusterctl (drone/envsubst)
//! before the YAML is parsed; every variable is documented in the README's "Installing with
//! clusterctl" table, and a test keeps that table complete.

mod class;
mod components;
mod repository;
mod templates;
mod yaml;

use std::path::PathBuf;

pub use repository::{config_files, write_config, write_repository};

/// clusterctl's name of the provider: `clusterctl init --infrastructure metalstack`.
pub const PROVIDER_NAME: &str = "metalstack";
/// The provider label value and the name of the provider repository folder.
pub const PROVIDER_LABEL: &str = capms_core::api::PROVIDER_LABEL_VALUE;
/// The namespace the components install into (exactly one Namespace object, as clusterctl wants).
pub const NAMESPACE: &str = "capms-system";
/// The version of this build, as clusterctl spells versions (`v` + semver).
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// The image the Deployment runs unless `CAPMS_IMAGE` overrides it (the tag is the version).
pub const IMAGE_REPOSITORY: &str = "ghcr.io/capms/capms-manager";
/// The CAPI contract the CRDs implement; `metadata.yaml` maps every release series to it.
pub const CONTRACT: &str = "v1beta2";

/// One file of the provider repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// File name (or, from [`config_files`], a path relative to `config/`).
    pub file_name: String,
    /// The whole file.
    pub contents: String,
}

/// Why manifests could not be generated or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// An object did not convert to JSON (a bug in the object model).
    #[error("cannot convert an object to JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The YAML writer refused a value.
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    /// clusterctl needs `vMAJOR.MINOR.PATCH` (Go semver with the `v` prefix).
    #[error("version {0:?} is not of the form vMAJOR.MINOR.PATCH")]
    Version(String),
    /// clusterctl's `file://` URLs need a UTF-8 path.
    #[error("path {0:?} is not UTF-8")]
    Path(PathBuf),
    /// A file or folder could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The five CRDs as one multi-document YAML (what `capms-manager crds` prints).
pub fn crds_yaml() -> Result<String, ManifestError> {
    let documents = capms_core::api::crds::all().iter().map(yaml::document).collect::<Result<Vec<_>, _>>()?;
    yaml::to_yaml(&documents)
}

/// Every file of the provider repository for `version`, in a stable order.
pub fn artifacts(version: &str) -> Result<Vec<Artifact>, ManifestError> {
    let series = ReleaseSeries::parse(version)?;
    let files = [
        ("metadata.yaml", yaml::to_yaml(&[metadata(series)?])?),
        ("infrastructure-components.yaml", yaml::to_yaml(&components::all(version)?)?),
        ("cluster-template.yaml", yaml::to_yaml(&templates::default_flavor()?)?),
        ("cluster-template-no-firewall.yaml", yaml::to_yaml(&templates::no_firewall_flavor()?)?),
        ("cluster-template-topology.yaml", yaml::to_yaml(&class::topology_flavor())?),
        (class::FILE_NAME, yaml::to_yaml(&class::all()?)?),
    ];
    Ok(files
        .into_iter()
        .map(|(file_name, contents)| Artifact { file_name: file_name.to_string(), contents })
        .collect())
}

/// `major.minor` of a release, the key of clusterctl's release series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReleaseSeries {
    major: u32,
    minor: u32,
}

impl ReleaseSeries {
    /// The first series; it always stays listed so that older releases keep resolving.
    const FIRST: ReleaseSeries = ReleaseSeries { major: 0, minor: 1 };

    fn parse(version: &str) -> Result<ReleaseSeries, ManifestError> {
        let invalid = || ManifestError::Version(version.to_string());
        let core = version.strip_prefix('v').ok_or_else(invalid)?;
        // Pre-release and build suffixes (`-rc.1`, `+meta`) belong to the same series.
        let core = core.split(['-', '+']).next().unwrap_or_default();
        let numbers = core.split('.').map(str::parse::<u32>).collect::<Result<Vec<_>, _>>();
        match numbers.as_deref() {
            Ok([major, minor, _patch]) => Ok(ReleaseSeries { major: *major, minor: *minor }),
            _ => Err(invalid()),
        }
    }
}

/// `metadata.yaml`: every series up to `series` implements the v1beta2 contract. clusterctl
/// refuses a version whose series is missing, so the current one is always listed.
fn metadata(series: ReleaseSeries) -> Result<serde_json::Value, ManifestError> {
    let mut releases = vec![ReleaseSeries::FIRST];
    if series != ReleaseSeries::FIRST {
        releases.push(series);
    }
    let releases: Vec<_> = releases
        .into_iter()
        .map(|s| serde_json::json!({"major": s.major, "minor": s.minor, "contract": CONTRACT}))
        .collect();
    Ok(serde_json::json!({
        "apiVersion": "clusterctl.cluster.x-k8s.io/v1alpha3",
        "kind": "Metadata",
        "releaseSeries": releases,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_into_series() {
        assert_eq!(ReleaseSeries::parse("v0.1.0").ok(), Some(ReleaseSeries { major: 0, minor: 1 }));
        assert_eq!(ReleaseSeries::parse("v1.2.3-rc.1").ok(), Some(ReleaseSeries { major: 1, minor: 2 }));
        for bad in ["0.1.0", "v0.1", "v0.x.1", "", "v1.2.3.4"] {
            assert!(matches!(ReleaseSeries::parse(bad), Err(ManifestError::Version(_))), "{bad}");
        }
    }

    #[test]
    fn a_new_series_is_added_to_metadata() {
        let metadata = metadata(ReleaseSeries { major: 0, minor: 2 }).expect("metadata");
        assert_eq!(metadata["releaseSeries"].as_array().map(Vec::len), Some(2));
        assert_eq!(metadata["releaseSeries"][1]["minor"], 2);
    }

    #[test]
    fn artifacts_refuse_a_bad_version() {
        assert!(matches!(artifacts("latest"), Err(ManifestError::Version(_))));
    }
}
