//! A process the harness started: its output goes to a log file, and it is killed when dropped,
//! so a failing or interrupted test never leaves etcd or an apiserver behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::error::{Error, IoContext, Result, tail};

/// Lines of a process's log quoted in an error.
pub const LOG_TAIL_LINES: usize = 40;

/// A running child process.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `<logs>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, logs: &Path) -> Result<Process> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .io(|| format!("open {}", log.display()))?;
        let stderr = file.try_clone().io(|| format!("open {}", log.display()))?;
        command.stdin(Stdio::null()).stdout(file).stderr(stderr).kill_on_drop(true);
        let program = command.as_std().get_program().to_string_lossy().into_owned();
        let child = command.spawn().io(|| format!("start {name} ({program})"))?;
        Ok(Process { name: name.to_string(), child, log })
    }

    /// The process's name in logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file its output goes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The operating system's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails with the end of its log if the process has exited.
    pub fn alive(&mut self) -> Result<()> {
        match self.child.try_wait().io(|| format!("check {}", self.name))? {
            None => Ok(()),
            Some(status) => Err(self.exited(status.to_string())),
        }
    }

    /// Kills the process and waits for it to end.
    pub async fn stop(mut self) {
        // An already exited process cannot be killed; that is what stop wants anyway.
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    fn exited(&self, status: String) -> Error {
        Error::Exited {
            name: self.name.clone(),
            status,
            log: self.log.display().to_string(),
            tail: tail(&self.log, LOG_TAIL_LINES),
        }
    }
}

/// Runs `command` to completion and returns its stdout; a non-zero exit is an error quoting its
/// output.
pub async fn output(mut command: Command) -> Result<String> {
    let shown = format!("{:?}", command.as_std()).replace('"', "");
    let output = command.stdin(Stdio::null()).output().await.io(|| format!("run {shown}"))?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        let lines: Vec<&str> = text.lines().collect();
        return Err(Error::Command {
            command: shown,
            status: output.status.to_string(),
            output: lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"),
        });
    }
    String::from_utf8(output.stdout).map_err(|_| Error::Invalid(format!("{shown} printed non-UTF-8 output")))
}

/// `count` free TCP ports on 127.0.0.1, from the kernel. They are free when this returns; the
/// processes that get them bind them moments later.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").io(|| "bind a free port".to_string()))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr().io(|| "read a port".to_string())?.port()))
        .collect()
}
