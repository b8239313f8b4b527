//! The `batch/v1` Job one attempt runs as ([`job_manifest`]): the runner's environment, the
//! profile's limits, a locked-down pod, labels that find it again; and the attempt's
//! Secret ([`credential_secret`]), which holds its one-time credential so that reading the
//! Job does not reveal it.

use std::collections::BTreeMap;

use contract::{env, labels};
use k8s_openapi::api::batch::v1::{Job, JobSpec as K8sJobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::shape::{locked_down, PodShape, ENDED_FILE};
use super::{KubernetesSettings, BACKEND, CONTAINER, DEADLINE_MARGIN_SECS, RUNNER_MARGIN_SECS};
use crate::quantity::binary_size;
use crate::{Error, JobSpec, Result};

/// The label selector of an installation's workloads.
pub(super) fn selector(installation: &str) -> String {
    format!(
        "{}=agentsmith,{}={installation}",
        labels::MANAGED_BY,
        labels::INSTALLATION
    )
}

/// The volume of `spawner.kubernetes.ca_bundle`'s ConfigMap.
const CA_VOLUME: &str = "agentsmith-ca";

/// The key of the credential in the attempt's Secret.
const CREDENTIAL_KEY: &str = "credential";

/// The name of the Secret holding an attempt's one-time credential.
pub(super) fn credential_secret_name(workload: &str) -> String {
    format!("{workload}-credential")
}

/// The Secret holding the one-time credential of `job`'s attempt, labelled like its Job.
/// It is created before the Job and then handed to it ([`owned_by`]), so Kubernetes
/// removes it with the Job.
pub fn credential_secret(installation: &str, namespace: &str, job: &JobSpec) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(credential_secret_name(&job.workload_name())),
            namespace: Some(namespace.to_string()),
            labels: Some(job.labels(installation)),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            CREDENTIAL_KEY.to_string(),
            job.credential.clone(),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The metadata patch that makes the Job `name` (with `uid`) the owner of its Secret.
pub(super) fn owned_by(name: &str, uid: &str) -> serde_json::Value {
    let owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    serde_json::json!({ "metadata": { "ownerReferences": [owner] } })
}

/// The Job one attempt runs as, in `namespace`, labelled for `installation`.
pub fn job_manifest(
    settings: &KubernetesSettings,
    installation: &str,
    namespace: &str,
    job: &JobSpec,
) -> Result<Job> {
    let image = job
        .profile
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::Rejected {
            backend: BACKEND,
            message: format!(
                "agent profile {:?} has no image; the kubernetes backend needs one",
                job.profile.name
            ),
        })?;
    let no_shape = PodShape::default();
    let shape = settings
        .profiles
        .get(&job.profile.name)
        .unwrap_or(&no_shape);
    let mut all_labels = settings.labels.clone();
    all_labels.extend(shape.labels.clone());
    all_labels.extend(job.labels(installation));
    let mut annotations = settings.annotations.clone();
    annotations.extend(shape.annotations.clone());
    let annotations = Some(annotations).filter(|a| !a.is_empty());
    let mut env = env_vars(settings, job)?;
    if !shape.sidecars.is_empty() {
        env.push(env_var(env::ENDED_FILE, ENDED_FILE.into()));
    }
    let pod = pod_spec(settings, shape, job, &image, env);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job.workload_name()),
            namespace: Some(namespace.to_string()),
            labels: Some(all_labels.clone()),
            annotations: annotations.clone(),
            ..Default::default()
        },
        spec: Some(K8sJobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                (job.profile.timeout_secs + job.grace_secs + DEADLINE_MARGIN_SECS) as i64,
            ),
            ttl_seconds_after_finished: Some(
                i32::try_from(settings.ttl_seconds_after_finished).unwrap_or(i32::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(all_labels),
                    annotations,
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    })
}

fn env_var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    }
}

/// The agent container's environment: the settings' `env` (the profile's wins), the
/// profile's secrets as `secretKeyRef`s, then the runner's job variables.
fn env_vars(settings: &KubernetesSettings, job: &JobSpec) -> Result<Vec<EnvVar>> {
    let mut vars: Vec<EnvVar> = settings
        .env
        .iter()
        .filter(|(k, _)| !job.profile.env.contains_key(*k))
        .chain(job.profile.env.iter())
        .map(|(k, v)| env_var(k, v.clone()))
        .collect();
    if !job.profile.secret_env.is_empty() {
        if settings.secret_name.is_empty() {
            return Err(Error::Rejected {
                backend: BACKEND,
                message: format!(
                    "agent profile {:?} has secret_env but spawner.kubernetes.secret_name is not set",
                    job.profile.name
                ),
            });
        }
        for (var, key) in &job.profile.secret_env {
            vars.push(EnvVar {
                name: var.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: settings.secret_name.clone(),
                        key: key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            });
        }
    }
    let credential = EnvVar {
        name: env::JOB_CREDENTIAL.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: credential_secret_name(&job.workload_name()),
                key: CREDENTIAL_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    };
    vars.extend(job.runner_env().into_iter().map(|(k, v)| {
        if k == env::JOB_CREDENTIAL {
            credential.clone()
        } else {
            env_var(k, v)
        }
    }));
    vars.push(env_var(env::WORKDIR, settings.work_dir.clone()));
    if !settings.ca_bundle.config_map.is_empty() {
        vars.push(env_var(env::EXTRA_CA_FILE, crate::CA_MOUNT_FILE.into()));
    }
    Ok(vars)
}

/// Limits and requests: memory is requested as it is limited; the CPU request is the
/// settings' `cpu_request`, never above the limit.
fn resources(settings: &KubernetesSettings, job: &JobSpec) -> ResourceRequirements {
    let resources = job.profile.resources.or(settings.default_resources());
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if let Some(memory) = resources.memory_bytes {
        limits.insert("memory".to_string(), Quantity(binary_size(memory)));
        requests.insert("memory".to_string(), Quantity(binary_size(memory)));
    }
    let millis = |m: u64| Quantity(format!("{m}m"));
    if let Some(cpu) = resources.cpu_millis {
        limits.insert("cpu".to_string(), millis(cpu));
    }
    if let Some(disk) = resources.disk_bytes {
        limits.insert("ephemeral-storage".to_string(), Quantity(binary_size(disk)));
    }
    if let Some(request) = settings.cpu_request {
        let cpu = resources
            .cpu_millis
            .map_or(request.0, |limit| request.0.min(limit));
        requests.insert("cpu".to_string(), millis(cpu));
    }
    ResourceRequirements {
        limits: Some(limits).filter(|l| !l.is_empty()),
        requests: Some(requests).filter(|r| !r.is_empty()),
        ..Default::default()
    }
}

pub(super) fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The agent container: non-root, no privilege escalation, every capability dropped,
/// the runtime's seccomp profile, a read-only root unless the profile asks otherwise; the
/// work directory, `/tmp` and the shape's mounts.
fn container(
    settings: &KubernetesSettings,
    shape: &PodShape,
    job: &JobSpec,
    image: &str,
    env: Vec<EnvVar>,
) -> Container {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let mut mounts = vec![mount("work", &settings.work_dir), mount("tmp", "/tmp")];
    if !settings.ca_bundle.config_map.is_empty() {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(CA_VOLUME, crate::CA_MOUNT_DIR)
        });
    }
    mounts.extend(shape.agent_mounts());
    Container {
        name: CONTAINER.into(),
        image: Some(image.to_string()),
        image_pull_policy: Some(settings.image_pull_policy.as_str().into()),
        env: Some(env),
        working_dir: Some(settings.work_dir.clone()),
        resources: Some(resources(settings, job)),
        security_context: Some(locked_down(
            settings.run_as_user,
            settings.run_as_group,
            job.profile.writable_root,
        )),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The profile's shape adds its volumes, init containers and sidecars, its runtime and
/// priority class, and its placement (which replaces the spawner's).
fn pod_spec(
    settings: &KubernetesSettings,
    shape: &PodShape,
    job: &JobSpec,
    image: &str,
    env: Vec<EnvVar>,
) -> PodSpec {
    let disk = job
        .profile
        .resources
        .or(settings.default_resources())
        .disk_bytes;
    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: disk.map(|d| Quantity(binary_size(d))),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut volumes = vec![empty_dir("work"), empty_dir("tmp")];
    if !settings.ca_bundle.config_map.is_empty() {
        volumes.push(Volume {
            name: CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: settings.ca_bundle.config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: settings.ca_bundle.key.clone(),
                    path: "extra.crt".into(),
                    mode: None,
                }]),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    volumes.extend(shape.volumes(&settings.secret_name));
    let agent = container(settings, shape, job, image, env);
    let init_containers = shape.init_containers(&agent);
    let sidecars = shape.sidecars(&agent);
    let mut containers = vec![agent];
    containers.extend(sidecars);
    let pull_secrets: Vec<LocalObjectReference> = settings
        .image_pull_secrets
        .iter()
        .chain(&shape.image_pull_secrets)
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();
    let node_selector = shape
        .node_selector
        .as_ref()
        .unwrap_or(&settings.node_selector);
    let tolerations = shape.tolerations.as_ref().unwrap_or(&settings.tolerations);
    let text = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
    PodSpec {
        restart_policy: Some("Never".into()),
        init_containers: Some(init_containers).filter(|c| !c.is_empty()),
        containers,
        volumes: Some(volumes),
        runtime_class_name: text(&shape.runtime_class_name),
        priority_class_name: text(&shape.priority_class_name),
        service_account_name: settings.service_account(),
        automount_service_account_token: Some(job.profile.service_account_token),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some((job.grace_secs + RUNNER_MARGIN_SECS) as i64),
        image_pull_secrets: Some(pull_secrets).filter(|s| !s.is_empty()),
        node_selector: Some(node_selector.clone()).filter(|n| !n.is_empty()),
        tolerations: Some(tolerations.clone()).filter(|t| !t.is_empty()),
        affinity: shape.affinity.clone().or_else(|| settings.affinity.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_group),
            fs_group: Some(settings.run_as_group),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
