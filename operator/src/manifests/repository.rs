//! Writing the artifacts: a local clusterctl provider repository, and the committed `config/`
//! tree.
//!
//! clusterctl's local repository layout is `<dir>/<provider label>/<version>/<files>`, and a
//! `clusterctl.yaml` whose `providers` entry points at the components file by `file://` URL;
//! the other files are found beside it.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Artifact, ManifestError, PROVIDER_LABEL, PROVIDER_NAME, VERSION, artifacts, yaml};

/// Folders of `config/` that hold only generated files (stale files in them are removed).
const GENERATED_FOLDERS: [&str; 2] = ["crd/bases", "clusterctl"];

/// The committed `config/` tree, paths relative to `config/`: one YAML per CRD under
/// `crd/bases/` with a kustomization (`kubectl kustomize config/crd`), and the clusterctl
/// artifacts of this version under `clusterctl/`.
pub fn config_files() -> Result<Vec<Artifact>, ManifestError> {
    let mut files = Vec::new();
    let mut bases = Vec::new();
    for crd in capms_core::api::crds::all() {
        // controller-gen's file naming, which kubebuilder users expect.
        let base = format!("bases/{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
        let contents = yaml::to_yaml(&[yaml::document(&crd)?])?;
        files.push(Artifact { file_name: format!("crd/{base}"), contents });
        bases.push(base);
    }
    bases.sort();
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": bases,
    });
    files.push(Artifact {
        file_name: "crd/kustomization.yaml".to_string(),
        contents: yaml::to_yaml(&[kustomization])?,
    });
    for artifact in artifacts(VERSION)? {
        files.push(Artifact {
            file_name: format!("clusterctl/{}", artifact.file_name),
            contents: artifact.contents,
        });
    }
    Ok(files)
}

/// Writes [`config_files`] under `dir` (the repository's `config/`) and removes stale files
/// from the generated folders.
pub fn write_config(dir: &Path) -> Result<(), ManifestError> {
    let files = config_files()?;
    for folder in GENERATED_FOLDERS {
        remove_stale(&dir.join(folder), folder, &files)?;
    }
    for file in &files {
        write(&dir.join(&file.file_name), &file.contents)?;
    }
    Ok(())
}

fn remove_stale(folder: &Path, prefix: &str, files: &[Artifact]) -> Result<(), ManifestError> {
    let Ok(entries) = fs::read_dir(folder) else {
        return Ok(()); // nothing generated yet
    };
    for entry in entries {
        let path = entry.map_err(|source| io(folder, source))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let relative = format!("{prefix}/{name}");
        if path.is_file() && !files.iter().any(|file| file.file_name == relative) {
            fs::remove_file(&path).map_err(|source| io(&path, source))?;
        }
    }
    Ok(())
}

/// Writes a local clusterctl repository for `version` under `dir`:
/// `infrastructure-metalstack/<version>/…` and `clusterctl.yaml`. Returns the path of
/// `clusterctl.yaml`, for `clusterctl init --config <it> --infrastructure metalstack`.
pub fn write_repository(dir: &Path, version: &str) -> Result<PathBuf, ManifestError> {
    let files = artifacts(version)?;
    let release = dir.join(PROVIDER_LABEL).join(version);
    for file in &files {
        write(&release.join(&file.file_name), &file.contents)?;
    }
    // clusterctl needs an absolute file URL; the folder exists now, so it canonicalizes.
    let release = release.canonicalize().map_err(|source| io(&release, source))?;
    let components = release.join("infrastructure-components.yaml");
    let path = components.to_str().ok_or_else(|| ManifestError::Path(components.clone()))?;
    let config = json!({
        "providers": [{
            "name": PROVIDER_NAME,
            "url": format!("file://{path}"),
            "type": "InfrastructureProvider",
        }],
        // The cluster templates bootstrap with Ignition, which CABPK serves only with this
        // feature gate; clusterctl reads variables from this file too.
        "EXP_KUBEADM_BOOTSTRAP_FORMAT_IGNITION": "true",
    });
    let config_path = dir.join("clusterctl.yaml");
    write(&config_path, &yaml::to_yaml(&[config])?)?;
    Ok(config_path)
}

fn write(path: &Path, contents: &str) -> Result<(), ManifestError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| io(parent, source))?;
    }
    fs::write(path, contents).map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> ManifestError {
    ManifestError::Io { path: path.to_path_buf(), source }
}
