//! The binaries the harness runs: the real parts that `scripts/real-parts` builds from pinned Go
//! modules, and capms's own `capms-manager` and `capms-sim` from this workspace's build.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::process::output;

/// One binary the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    CapiManager,
    Clusterctl,
    KubeadmBootstrapManager,
    KubeadmControlPlaneManager,
    CapmsManager,
    CapmsSim,
}

impl Part {
    /// Every part, in the order they start.
    pub const ALL: [Part; 9] = [
        Part::Etcd,
        Part::KubeApiserver,
        Part::KubeControllerManager,
        Part::CapiManager,
        Part::Clusterctl,
        Part::KubeadmBootstrapManager,
        Part::KubeadmControlPlaneManager,
        Part::CapmsManager,
        Part::CapmsSim,
    ];

    /// The binary's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Part::Etcd => "etcd",
            Part::KubeApiserver => "kube-apiserver",
            Part::KubeControllerManager => "kube-controller-manager",
            Part::CapiManager => "capi-manager",
            Part::Clusterctl => "clusterctl",
            Part::KubeadmBootstrapManager => "kubeadm-bootstrap-manager",
            Part::KubeadmControlPlaneManager => "kubeadm-control-plane-manager",
            Part::CapmsManager => "capms-manager",
            Part::CapmsSim => "capms-sim",
        }
    }

    fn is_capms(self) -> bool {
        matches!(self, Part::CapmsManager | Part::CapmsSim)
    }
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    real: PathBuf,
    capms: PathBuf,
}

/// The repository's root (this crate is `realcluster/` in it).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Binaries {
    /// The real parts from `CAPMS_REAL_BIN`, else from `scripts/real-parts` (which builds them
    /// when its cache lacks them, with progress on stderr); capms's binaries from
    /// `CAPMS_BIN_DIR`, else from the build folder of the running executable. Every binary must
    /// exist: a missing part is an error, never a skipped flow.
    pub async fn locate() -> Result<Binaries> {
        let real = match std::env::var_os("CAPMS_REAL_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => real_parts().await?,
        };
        let capms = match std::env::var_os("CAPMS_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => build_folder()?,
        };
        let binaries = Binaries { real, capms };
        for part in Part::ALL {
            let path = binaries.path(part);
            if !path.is_file() {
                let hint = if part.is_capms() {
                    "build it: cargo build -p capms-operator -p capms-sim-scenarios --bins, or set CAPMS_BIN_DIR"
                } else {
                    "build it: scripts/real-parts, or set CAPMS_REAL_BIN"
                };
                return Err(Error::Invalid(format!("{} is missing ({hint})", path.display())));
            }
        }
        Ok(binaries)
    }

    /// The path of `part`'s binary.
    pub fn path(&self, part: Part) -> PathBuf {
        let dir = if part.is_capms() { &self.capms } else { &self.real };
        dir.join(part.file_name())
    }

    /// A command for `part`.
    pub fn command(&self, part: Part) -> Command {
        Command::new(self.path(part))
    }
}

/// Runs `scripts/real-parts` and returns the folder it prints last.
async fn real_parts() -> Result<PathBuf> {
    let mut command = Command::new(repository().join("scripts/real-parts"));
    command.stderr(Stdio::inherit());
    let printed = output(command).await?;
    printed
        .lines()
        .last()
        .map(PathBuf::from)
        .ok_or_else(|| Error::Invalid("scripts/real-parts printed no folder".to_string()))
}

/// `target/<profile>/`: the folder of the running binary, or its parent for a test binary
/// (which lives in `target/<profile>/deps/`).
fn build_folder() -> Result<PathBuf> {
    let exe = std::env::current_exe().io(|| "locate the running executable".to_string())?;
    let dir = exe.parent().ok_or_else(|| Error::Invalid(format!("{} has no folder", exe.display())))?;
    Ok(if dir.ends_with("deps") { dir.parent().unwrap_or(dir).to_path_buf() } else { dir.to_path_buf() })
}

/// The folder of the pinned Cluster API module in Go's module cache (its `config/` trees are
/// what `clusterctl init` would install). `scripts/real-parts` has downloaded it.
pub async fn cluster_api_module() -> Result<PathBuf> {
    let mut command = Command::new(go());
    command
        .args(["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/cluster-api"])
        .current_dir(repository().join("realcluster/go/cluster-api"))
        .env("GOFLAGS", "-mod=readonly")
        .env("GOWORK", "off");
    let dir = PathBuf::from(output(command).await?.trim());
    if !dir.join("core/config/default").is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not the Cluster API module (no core/config/default)",
            dir.display()
        )));
    }
    Ok(dir)
}

/// The `go` command: on PATH, else the default install location.
fn go() -> PathBuf {
    let default = PathBuf::from("/usr/local/go/bin/go");
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("go").is_file()));
    if on_path || !default.is_file() { PathBuf::from("go") } else { default }
}
