//! A real management cluster for capms's tests (issue 11): etcd, kube-apiserver and
//! kube-controller-manager on loopback, Cluster API's managers and `clusterctl` from the pinned
//! release, capms installed from `capms-manager manifests` with `capms-manager` running as its
//! own process under its ServiceAccount, and `capms-sim serve` as metal-api. Everything is a real
//! process; nothing of Cluster API or Kubernetes is modelled here.
//!
//! [`Harness::start`] brings one up; the flows in `tests/flows.rs` and `capms-realcluster up`
//! use it. See `docs/real-cluster.md`.

pub mod bench;
pub mod cluster;
pub mod components;
pub mod control_plane;
pub mod error;
pub mod kubeconfig;
pub mod metal;
pub mod parts;
pub mod pki;
pub mod process;
pub mod wait;
pub mod workload;

use std::path::{Path, PathBuf};

pub use cluster::{ManagementCluster, Options};
pub use error::{Error, Result};
pub use metal::MetalApi;
pub use parts::Binaries;

use error::IoContext;

/// A metal-api and management clusters, with their files in one folder that is removed when
/// the harness is dropped (unless it was kept, see [`Harness::keep`]).
#[derive(Debug)]
pub struct Harness {
    folder: Folder,
    binaries: Binaries,
    metal: MetalApi,
}

#[derive(Debug)]
enum Folder {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl Harness {
    /// Locates the binaries, makes a folder (under `dir`, or a temporary one) and starts
    /// `capms-sim serve` with [`metal::FLOW_MACHINES`] machines.
    pub async fn start(dir: Option<&Path>) -> Result<Harness> {
        Harness::start_with(dir, metal::FLOW_MACHINES).await
    }

    /// [`Harness::start`] with `machines` machines in the datacenter.
    pub async fn start_with(dir: Option<&Path>, machines: usize) -> Result<Harness> {
        let binaries = Binaries::locate().await?;
        let folder = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).io(|| format!("create {}", dir.display()))?;
                Folder::Kept(dir.to_path_buf())
            }
            None => Folder::Temporary(
                tempfile::Builder::new()
                    .prefix("capms-realcluster.")
                    .tempdir()
                    .io(|| "create a temporary folder".to_string())?,
            ),
        };
        let path = folder.path().to_path_buf();
        let metal = MetalApi::start(&binaries, &path, machines).await?;
        Ok(Harness { folder, binaries, metal })
    }

    /// Starts a management cluster named `name` in `<folder>/<name>`.
    pub async fn management_cluster(&self, name: &str) -> Result<ManagementCluster> {
        self.management_cluster_with(name, Options::default()).await
    }

    /// [`Harness::management_cluster`] with `options`.
    pub async fn management_cluster_with(&self, name: &str, options: Options) -> Result<ManagementCluster> {
        ManagementCluster::start(&self.binaries, &self.dir().join(name), name, &self.metal, options).await
    }

    /// The harness's folder.
    pub fn dir(&self) -> &Path {
        self.folder.path()
    }

    /// The binaries.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The simulated metal-api.
    pub fn metal(&self) -> &MetalApi {
        &self.metal
    }

    /// Fails if `capms-sim serve` has exited.
    pub fn alive(&mut self) -> Result<()> {
        self.metal.alive()
    }

    /// Keeps the folder after the harness ends (for a failing flow's logs); returns its path.
    pub fn keep(&mut self) -> PathBuf {
        let path = self.dir().to_path_buf();
        if let Folder::Temporary(dir) = std::mem::replace(&mut self.folder, Folder::Kept(path.clone())) {
            let _kept = dir.keep();
        }
        path
    }
}

impl Folder {
    fn path(&self) -> &Path {
        match self {
            Folder::Temporary(dir) => dir.path(),
            Folder::Kept(path) => path,
        }
    }
}
