//! The container definition of one attempt: environment, labels, limits and the
//! locked-down host configuration.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::Docker;
use contract::env;

use super::{DockerSettings, DockerSpawner, WorkMedium, BACKEND, RUNNER_MARGIN};
use crate::{JobSpec, Result};

impl DockerSpawner {
    /// The container definition of one attempt.
    pub(super) async fn container_body(
        &self,
        docker: &Docker,
        job: &JobSpec,
        image: &str,
    ) -> Result<ContainerCreateBody> {
        let settings = &self.settings;
        let mut env_vars: Vec<String> = job
            .profile
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (name, value) in self.secrets.resolve_env(BACKEND, &job.profile.secret_env)? {
            env_vars.push(format!("{name}={value}"));
        }
        env_vars.extend(
            job.runner_env()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        env_vars.push(format!("{}={}", env::WORKDIR, settings.work_dir));
        let mut mounts = work_volume(settings.work_medium, &settings.work_dir);
        if !settings.ca_bundle.is_empty() {
            env_vars.push(format!("{}={}", env::EXTRA_CA_FILE, crate::CA_MOUNT_FILE));
            mounts.push(Mount {
                typ: Some(MountType::BIND),
                source: Some(settings.ca_bundle.clone()),
                target: Some(crate::CA_MOUNT_FILE.into()),
                read_only: Some(true),
                ..Default::default()
            });
        }

        let mut container_labels: HashMap<String, String> = settings
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        container_labels.extend(job.labels(&self.installation));

        let resources = job.profile.resources.or(settings.default_resources());
        let memory = resources.memory_bytes.map(|m| m as i64);
        let network = self.network(docker).await;
        let host_network = network.as_deref() == Some("host");
        let host_config = HostConfig {
            init: Some(true),
            memory,
            // Swap equal to the limit: no swap, so the limit is the limit.
            memory_swap: memory,
            nano_cpus: resources.cpu_millis.map(|c| (c * 1_000_000) as i64),
            pids_limit: resources.pids.map(i64::from),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            readonly_rootfs: Some(!job.profile.writable_root),
            mounts: Some(mounts),
            tmpfs: Some(tmpfs(settings, resources.disk_bytes)),
            network_mode: network,
            extra_hosts: Some(settings.extra_hosts.clone())
                .filter(|h| !h.is_empty() && !host_network),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            user: Some(settings.user.clone()),
            env: Some(env_vars),
            labels: Some(container_labels),
            working_dir: Some(settings.work_dir.clone()),
            stop_signal: Some("SIGTERM".into()),
            stop_timeout: Some((job.grace_secs + RUNNER_MARGIN.as_secs()) as i64),
            host_config: Some(host_config),
            ..Default::default()
        })
    }
}

/// The work directory as a volume, when it is one (an anonymous volume takes the image's
/// ownership of the directory, and goes with the container).
fn work_volume(medium: WorkMedium, target: &str) -> Vec<Mount> {
    match medium {
        WorkMedium::Volume => vec![Mount {
            target: Some(target.to_string()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }],
        WorkMedium::Tmpfs => Vec::new(),
    }
}

/// The tmpfs mounts: `/tmp` (256 MiB), and the work directory when it is one, of `disk`
/// bytes and owned by the container's user (or open to all, for a user given by name).
fn tmpfs(settings: &DockerSettings, disk: Option<u64>) -> HashMap<String, String> {
    let mut mounts = HashMap::from([(
        "/tmp".to_string(),
        "rw,nosuid,nodev,size=268435456".to_string(),
    )]);
    if settings.work_medium == WorkMedium::Tmpfs {
        let mut options = "rw,nosuid,nodev".to_string();
        if let Some(disk) = disk {
            options.push_str(&format!(",size={disk}"));
        }
        match settings.user.split_once(':') {
            Some((uid, gid)) if uid.parse::<u32>().is_ok() && gid.parse::<u32>().is_ok() => {
                options.push_str(&format!(",uid={uid},gid={gid},mode=0700"));
            }
            _ => options.push_str(",mode=1777"),
        }
        mounts.insert(settings.work_dir.clone(), options);
    }
    mounts
}
