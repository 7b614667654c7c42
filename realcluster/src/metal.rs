//! metal-api for the management cluster: `capms-sim serve` as a process (mini-lab's partition,
//! size, images, networks, project and keys), and a client that looks into its datacenter.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use capms_backend_metal::{HmacAuthType, MetalClient, MetalConfig};
use capms_core::MetalBackend;
use capms_core::metal::{Ip, IpQuery, Machine, MachineQuery, Network, NetworkQuery};
use capms_core::secret::SecretString;

use crate::error::{Error, Result};
use crate::parts::{Binaries, Part};
use crate::process::{Process, free_ports};
use crate::wait::{Progress, until};

/// mini-lab's project, which the simulated metal-api serves.
pub const PROJECT: &str = "00000000-0000-0000-0000-000000000001";
/// The simulated metal-api's Metal-Edit key (its default, as mini-lab's).
pub const EDIT_KEY: &str = "metal-edit";
/// The machine image the flows install.
pub const IMAGE: &str = "ubuntu-26.4";
/// From allocation to Phoned Home in the served datacenter.
const PROVISIONING: &str = "3s";
/// Machines in the served partition for the flows: enough for a firewall, a control plane,
/// workers and their replacements.
pub const FLOW_MACHINES: usize = 16;
/// How long `capms-sim serve` may take to answer.
const READY: Duration = Duration::from_secs(30);

/// A running simulated metal-api.
pub struct MetalApi {
    process: Process,
    url: String,
    client: MetalClient,
}

impl fmt::Debug for MetalApi {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("MetalApi").field("url", &self.url).field("process", &self.process).finish()
    }
}

/// What capms left allocated in the project.
#[derive(Debug, Default)]
pub struct Allocated {
    pub machines: Vec<Machine>,
    pub networks: Vec<Network>,
    pub ips: Vec<Ip>,
}

impl Allocated {
    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty() && self.networks.is_empty() && self.ips.is_empty()
    }
}

impl fmt::Display for Allocated {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let machines: Vec<String> = self.machines.iter().map(|machine| machine.id.clone()).collect();
        let networks: Vec<String> = self.networks.iter().map(|network| network.id.clone()).collect();
        let ips: Vec<String> = self.ips.iter().map(|ip| ip.address.clone()).collect();
        write!(formatter, "machines {machines:?}, networks {networks:?}, IPs {ips:?}")
    }
}

impl MetalApi {
    /// Starts `capms-sim serve` with `machines` machines on a free loopback port, logging to
    /// `<logs>/capms-sim.log`.
    pub async fn start(binaries: &Binaries, logs: &Path, machines: usize) -> Result<MetalApi> {
        let port = free_ports(1)?[0];
        let mut command = binaries.command(Part::CapmsSim);
        command.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--provisioning",
            PROVISIONING,
            "--machines",
            &machines.to_string(),
            // The flows play machine deaths through its test-only control requests.
            "--control",
        ]);
        let mut process = Process::spawn("capms-sim", command, logs)?;
        let url = format!("http://127.0.0.1:{port}/metal");
        let config = MetalConfig::new(url.clone()).with_hmac(SecretString::new(EDIT_KEY), HmacAuthType::Edit);
        let client =
            MetalClient::new(config).map_err(|error| Error::Invalid(format!("metal-api client: {error}")))?;
        until("capms-sim serve to answer", READY, async || {
            process.alive()?;
            Ok(match client.list_partitions().await {
                Ok(_) => Progress::Done(()),
                Err(error) => Progress::Waiting(error.to_string()),
            })
        })
        .await?;
        Ok(MetalApi { process, url, client })
    }

    /// metal-api's URL with its path prefix, as `METAL_API_URL` takes it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fails if `capms-sim serve` has exited.
    pub fn alive(&mut self) -> Result<()> {
        self.process.alive()
    }

    /// Machines (and firewalls) allocated in the project.
    pub async fn machines(&self) -> Result<Vec<Machine>> {
        let query = MachineQuery { allocation_project: Some(PROJECT.to_string()), ..MachineQuery::default() };
        let mut machines = self.client.find_machines(&query).await.map_err(backend)?;
        machines.extend(self.client.find_firewalls(&query).await.map_err(backend)?);
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        machines.dedup_by(|a, b| a.id == b.id);
        Ok(machines)
    }

    /// Kills machine `id` as if it had gone silent `MACHINE_DEAD_AFTER` ago, through `capms-sim
    /// serve --control`: metal-api reports it `Unknown` at once while it is allocated.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let base = self.url.trim_end_matches("/metal");
        let seconds = capms_backend_sim::MACHINE_DEAD_AFTER.as_secs();
        let url = format!("{base}/capms-sim/v1/machine/{id}/kill?silent-for={seconds}");
        let answer = reqwest::Client::new()
            .post(&url)
            .send()
            .await
            .map_err(|error| Error::Invalid(format!("POST {url}: {error}")))?;
        if !answer.status().is_success() {
            return Err(Error::Invalid(format!("POST {url}: HTTP {}", answer.status())));
        }
        Ok(())
    }

    /// Everything allocated in the project: machines, networks, IPs.
    pub async fn allocated(&self) -> Result<Allocated> {
        let networks = NetworkQuery { project_id: Some(PROJECT.to_string()), ..NetworkQuery::default() };
        let ips = IpQuery { project_id: Some(PROJECT.to_string()), ..IpQuery::default() };
        Ok(Allocated {
            machines: self.machines().await?,
            networks: self.client.find_networks(&networks).await.map_err(backend)?,
            ips: self.client.find_ips(&ips).await.map_err(backend)?,
        })
    }

    /// Stops `capms-sim serve`.
    pub async fn stop(self) {
        self.process.stop().await;
    }
}

fn backend(error: capms_core::BackendError) -> Error {
    Error::Invalid(format!("metal-api: {error}"))
}
