//! The lab of the `process` backend: the runner built next to the test binaries, and a
//! work root of the lab's own, in which nothing outlives the lab.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::temp::TempDir;

use super::{installation_name, sh_profile, Capabilities, Lab};
use crate::backend::process::{ProcessSettings, ProcessSpawner};
use crate::secrets::SecretSource;
use crate::{AgentProfile, Installation, JobSpawner};

/// The `process` backend running `target/<profile>/agent-runner`.
pub struct ProcessLab {
    runner: PathBuf,
    work_root: TempDir,
    installation: String,
}

impl ProcessLab {
    /// A lab with the runner built next to the running test binary; panics naming the
    /// command that builds it when it is missing.
    pub fn new() -> Self {
        let exe = std::env::current_exe().expect("the test binary has a path");
        let runner = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binaries live in target/<profile>/deps")
            .join("agent-runner");
        assert!(
            runner.is_file(),
            "{} is missing: build it first with `cargo build -p agent-runner` (scripts/test does)",
            runner.display()
        );
        Self {
            runner,
            work_root: TempDir::new("conformance-process"),
            installation: installation_name(),
        }
    }

    /// The settings of the lab's spawners, keeping finished workloads `time_to_live`.
    pub fn settings(&self, time_to_live: Duration) -> ProcessSettings {
        ProcessSettings {
            runner_path: self.runner.clone(),
            work_root: self.work_root.path().to_path_buf(),
            keep_finished_secs: time_to_live.as_secs(),
            agent_user: None,
            ca_bundle: Default::default(),
        }
    }
}

impl Drop for ProcessLab {
    /// Kills whatever still runs in the lab's work directories: the runners and agents a
    /// failed scenario left behind (a runner keeps trying to deliver its final event for
    /// minutes after its stand-in dispatcher is gone). They are found by their working
    /// directory, so nothing of another lab or test is touched.
    fn drop(&mut self) {
        let root = self.work_root.path();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let in_lab =
                std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
            if in_lab {
                // ESRCH: it ended meanwhile, which is what we want.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Default for ProcessLab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab for ProcessLab {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            runs_agents: true,
            // Agents run as plain child processes: a profile's limits are not applied.
            enforces_memory: false,
            survives_restart: false,
            stop_margin: Duration::from_secs(5),
            patience: Duration::from_secs(30),
        }
    }

    fn installation(&self) -> &str {
        &self.installation
    }

    fn callback_host(&self) -> String {
        "127.0.0.1".into()
    }

    fn spawner(&self, installation: &str, time_to_live: Duration) -> Arc<dyn JobSpawner> {
        let installation = Installation {
            name: installation.to_string(),
            secrets: SecretSource::default(),
            grace: crate::conformance::GRACE,
        };
        Arc::new(ProcessSpawner::new(
            &self.settings(time_to_live),
            &installation,
        ))
    }

    fn profile(&self, script: &str) -> AgentProfile {
        sh_profile(script, None)
    }
}
