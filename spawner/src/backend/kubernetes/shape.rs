//! `spawner.kubernetes.profiles.<profile>`: how this cluster shapes the pods of one agent
//! profile — extra volumes and mounts, files from the agents' Secret, init containers and
//! sidecars, a runtime class, a priority class, placement, labels and annotations, pull
//! secrets. Volumes, mounts, containers, tolerations and affinity are written as in a pod
//! spec, and read strictly: a key Kubernetes does not know is an error naming it, not a
//! field silently dropped.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, KeyToPath, SecretVolumeSource,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::CONTAINER;
use crate::settings::problems::{reserved_labels, Problems};

/// The directory, in the agent container and every sidecar, where the runner leaves
/// [`ENDED_FILE`] as it exits.
pub const LIFECYCLE_DIR: &str = "/var/run/agentsmith";
/// The file whose appearance tells sidecars the agent's work is over: a sidecar must exit
/// when it appears, or it keeps its pod (and so the Job) running until the Job's deadline.
pub const ENDED_FILE: &str = "/var/run/agentsmith/ended";

/// The names of the volumes the backend adds itself.
const RESERVED_VOLUMES: [&str; 2] = ["work", "tmp"];
/// The prefix of the backend's own volumes (secret files, the lifecycle directory).
const OWN_PREFIX: &str = "agentsmith-";
pub(super) const SECRET_FILES_VOLUME: &str = "agentsmith-secret-files";
pub(super) const LIFECYCLE_VOLUME: &str = "agentsmith-lifecycle";

/// The shape of one profile's pods on this cluster; everything unset leaves the
/// spawner's own settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodShape {
    /// Volumes added to the pod (Secrets, ConfigMaps, PersistentVolumeClaims, ...).
    #[serde(deserialize_with = "strict")]
    pub volumes: Vec<Volume>,
    /// Where the agent container mounts them.
    #[serde(deserialize_with = "strict")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Files from the agents' Secret (`secret_name`): absolute path to secret key. Each is
    /// mounted read-only, readable by the agent's user only.
    pub secret_files: BTreeMap<String, String>,
    /// Containers run to completion, in order, before the agent starts; one without an image
    /// runs the profile's.
    #[serde(deserialize_with = "strict")]
    pub init_containers: Vec<Container>,
    /// Containers beside the agent for its whole run (a proxy, a database); one without an
    /// image runs the profile's. Each must exit once [`ENDED_FILE`] appears.
    #[serde(deserialize_with = "strict")]
    pub sidecars: Vec<Container>,
    /// The pod's RuntimeClass (gVisor or Kata for stronger isolation); empty: the node's
    /// default runtime.
    pub runtime_class_name: String,
    /// The pod's PriorityClass; empty: the cluster's default priority.
    pub priority_class_name: String,
    /// Node selector; set, it replaces the spawner's.
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations; set, they replace the spawner's.
    #[serde(deserialize_with = "strict_option")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity; set, it replaces the spawner's.
    #[serde(deserialize_with = "strict_option")]
    pub affinity: Option<Affinity>,
    /// Labels on the profile's Jobs and pods, over the spawner's.
    pub labels: BTreeMap<String, String>,
    /// Annotations on the profile's Jobs and pods, over the spawner's.
    pub annotations: BTreeMap<String, String>,
    /// Pull secrets, beside the spawner's.
    pub image_pull_secrets: Vec<String>,
}

/// A Kubernetes object read strictly: it must come back the same from its own type, so a
/// misspelt or misplaced key (which the type would otherwise ignore) is an error naming it.
fn strict<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Serialize,
{
    let given = serde_json::Value::deserialize(deserializer)?;
    let typed: T = serde_json::from_value(given.clone()).map_err(serde::de::Error::custom)?;
    let read = serde_json::to_value(&typed).map_err(serde::de::Error::custom)?;
    match unknown_key(&given, &read, "") {
        Some(path) => Err(serde::de::Error::custom(format!(
            "unknown field `{path}`: Kubernetes has no such key there"
        ))),
        None => Ok(typed),
    }
}

fn strict_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Serialize,
{
    strict(deserializer)
}

/// The first key of `given` that `read` (the same value through its type) lacks.
fn unknown_key(given: &serde_json::Value, read: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (given, read) {
        (Value::Object(given), Value::Object(read)) => given.iter().find_map(|(key, value)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match read.get(key) {
                Some(inner) => unknown_key(value, inner, &path),
                None if value.is_null() => None,
                None => Some(path),
            }
        }),
        (Value::Array(given), Value::Array(read)) => given
            .iter()
            .zip(read)
            .enumerate()
            .find_map(|(i, (g, r))| unknown_key(g, r, &format!("{at}[{i}]"))),
        _ => None,
    }
}

impl PodShape {
    /// Every value that parses but cannot work; `work_dir` is the agent's work directory,
    /// `secret_name` the agents' Secret.
    pub(crate) fn problems(&self, work_dir: &str, secret_name: &str, problems: &mut Problems<'_>) {
        let mut volumes = BTreeSet::new();
        for volume in &self.volumes {
            let name = volume.name.as_str();
            if RESERVED_VOLUMES.contains(&name) || name.starts_with(OWN_PREFIX) {
                problems.add(
                    "volumes",
                    format!("{name:?}: the names work, tmp and agentsmith-* are the backend's own"),
                );
            } else if !volumes.insert(name) {
                problems.add("volumes", format!("{name:?} is declared twice"));
            }
        }
        let mut paths = BTreeSet::new();
        for mount in &self.volume_mounts {
            if !volumes.contains(mount.name.as_str()) {
                problems.add(
                    "volume_mounts",
                    format!("{:?} names no volume of this profile", mount.name),
                );
            }
            self.mount_path(
                &mount.mount_path,
                work_dir,
                &mut paths,
                "volume_mounts",
                problems,
            );
        }
        if !self.secret_files.is_empty() && secret_name.is_empty() {
            problems.add(
                "secret_files",
                "needs spawner.kubernetes.secret_name, the Secret the files come from",
            );
        }
        for (path, key) in &self.secret_files {
            if !crate::secrets::valid_key(key) {
                problems.add(
                    "secret_files",
                    format!("{path}: {key:?} is not a valid secret key"),
                );
            }
            self.mount_path(path, work_dir, &mut paths, "secret_files", problems);
        }
        let mut names = BTreeSet::from([CONTAINER]);
        for (key, containers) in [
            ("init_containers", &self.init_containers),
            ("sidecars", &self.sidecars),
        ] {
            for container in containers {
                let name = container.name.as_str();
                if name.is_empty() {
                    problems.add(key, "every container needs a name");
                } else if !names.insert(name) {
                    problems.add(
                        key,
                        format!("{name:?}: container names are unique, and `agent` is the agent's"),
                    );
                }
            }
        }
        for name in &self.image_pull_secrets {
            if name.is_empty() {
                problems.add("image_pull_secrets", "an empty Secret name");
            }
        }
        reserved_labels(&self.labels, &mut problems.nested("labels"));
    }

    /// A mount path must be absolute, unique, and leave the work directory and `/tmp` to the
    /// agent (the checkout fills the one; both are the agent's emptyDirs).
    fn mount_path<'p>(
        &self,
        path: &'p str,
        work_dir: &str,
        seen: &mut BTreeSet<&'p str>,
        key: &str,
        problems: &mut Problems<'_>,
    ) {
        let inside = |dir: &str| path == dir || path.starts_with(&format!("{dir}/"));
        if !path.starts_with('/') || path == "/" {
            problems.add(key, format!("{path:?}: not an absolute path below /"));
        } else if inside(work_dir) || path == "/tmp" || inside(LIFECYCLE_DIR) {
            problems.add(
                key,
                format!(
                    "{path}: the work directory, /tmp and {LIFECYCLE_DIR} are the backend's own"
                ),
            );
        } else if !seen.insert(path) {
            problems.add(key, format!("{path}: mounted twice"));
        }
    }

    /// The pod's volumes beyond `work` and `tmp`: the profile's, its secret files from
    /// `secret_name`, the lifecycle directory when it has sidecars.
    pub(super) fn volumes(&self, secret_name: &str) -> Vec<Volume> {
        let mut volumes = self.volumes.clone();
        if !self.secret_files.is_empty() {
            volumes.push(Volume {
                name: SECRET_FILES_VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret_name.to_string()),
                    items: Some(
                        self.secret_files
                            .values()
                            .enumerate()
                            .map(|(i, key)| KeyToPath {
                                key: key.clone(),
                                path: format!("file-{i}"),
                                mode: None,
                            })
                            .collect(),
                    ),
                    // 0400: the agent's user reads its files (fsGroup makes that 0440).
                    default_mode: Some(0o400),
                    optional: Some(false),
                }),
                ..Default::default()
            });
        }
        if !self.sidecars.is_empty() {
            volumes.push(Volume {
                name: LIFECYCLE_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity("1Mi".into())),
                }),
                ..Default::default()
            });
        }
        volumes
    }

    /// The agent container's mounts beyond `work` and `tmp`.
    pub(super) fn agent_mounts(&self) -> Vec<VolumeMount> {
        let mut mounts = self.volume_mounts.clone();
        mounts.extend(
            self.secret_files
                .keys()
                .enumerate()
                .map(|(i, path)| VolumeMount {
                    name: SECRET_FILES_VOLUME.into(),
                    mount_path: path.clone(),
                    sub_path: Some(format!("file-{i}")),
                    read_only: Some(true),
                    ..Default::default()
                }),
        );
        if !self.sidecars.is_empty() {
            mounts.push(lifecycle_mount());
        }
        mounts
    }

    /// The init containers, with the profile's image (and the spawner's pull policy) where
    /// they name none and the agent's locked-down security context where they set none.
    pub(super) fn init_containers(&self, agent: &Container) -> Vec<Container> {
        self.init_containers
            .iter()
            .map(|c| completed(c.clone(), agent))
            .collect()
    }

    /// The sidecars, completed as the init containers are, each with the lifecycle
    /// directory mounted.
    pub(super) fn sidecars(&self, agent: &Container) -> Vec<Container> {
        self.sidecars
            .iter()
            .map(|c| {
                let mut c = completed(c.clone(), agent);
                c.volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(lifecycle_mount());
                c
            })
            .collect()
    }
}

fn lifecycle_mount() -> VolumeMount {
    VolumeMount {
        name: LIFECYCLE_VOLUME.into(),
        mount_path: LIFECYCLE_DIR.into(),
        ..Default::default()
    }
}

/// A container of the profile's, with the agent container's image, pull policy and
/// security context where it sets none.
fn completed(mut container: Container, agent: &Container) -> Container {
    if container.image.as_deref().is_none_or(str::is_empty) {
        container.image = agent.image.clone();
        container.image_pull_policy = agent.image_pull_policy.clone();
    }
    if container.security_context.is_none() {
        container.security_context = agent.security_context.clone();
    }
    container
}

/// The security context of the agent container, and of the profile's containers that set
/// none: no privilege escalation, every capability dropped, the runtime's seccomp profile,
/// non-root, a read-only root unless `writable_root`.
pub(super) fn locked_down(
    run_as_user: i64,
    run_as_group: i64,
    writable_root: bool,
) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(!writable_root),
        run_as_non_root: Some(true),
        run_as_user: Some(run_as_user),
        run_as_group: Some(run_as_group),
        seccomp_profile: Some(super::manifest::runtime_default()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(yaml: serde_json::Value) -> Result<PodShape, String> {
        serde_json::from_value(yaml).map_err(|e| e.to_string())
    }

    fn problems_of(shape: &PodShape, secret_name: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut report = |key: &str, message: String| seen.push(format!("{key}: {message}"));
        shape.problems("/work", secret_name, &mut Problems::new("p", &mut report));
        seen
    }

    #[test]
    fn a_misspelt_kubernetes_key_is_an_error_naming_it() {
        let err = shape(serde_json::json!({
            "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c", "readonly": true}}]
        }))
        .unwrap_err();
        assert!(err.contains("persistentVolumeClaim.readonly"), "{err}");
        let err =
            shape(serde_json::json!({"tolerations": [{"key": "gpu", "efect": "NoSchedule"}]}))
                .unwrap_err();
        assert!(err.contains("[0].efect"), "{err}");
        // The same, spelt right, reads.
        let read = shape(serde_json::json!({
            "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c", "readOnly": true}}],
            "tolerations": [{"key": "gpu", "effect": "NoSchedule"}]
        }))
        .unwrap();
        assert_eq!(read.volumes[0].name, "cache");
        assert_eq!(
            read.tolerations.unwrap()[0].effect.as_deref(),
            Some("NoSchedule")
        );
    }

    #[test]
    fn the_backends_own_names_and_paths_are_refused() {
        let s = shape(serde_json::json!({
            "volumes": [{"name": "work", "emptyDir": {}}, {"name": "cache", "emptyDir": {}},
                        {"name": "cache", "emptyDir": {}}],
            "volume_mounts": [{"name": "cache", "mountPath": "/work/cache"},
                              {"name": "nope", "mountPath": "/opt/nope"},
                              {"name": "cache", "mountPath": "relative"}],
            "secret_files": {"/home/agent/.netrc": "netrc", "/opt/nope": "../x"},
            "sidecars": [{"name": "agent"}, {"name": ""}],
            "labels": {"agentsmith.io/job-id": "x"}
        }))
        .unwrap();
        let found = problems_of(&s, "");
        let has = |text: &str| found.iter().any(|p| p.contains(text));
        assert!(has("p.volumes: \"work\": the names work"), "{found:?}");
        assert!(has("\"cache\" is declared twice"), "{found:?}");
        assert!(has("/work/cache: the work directory"), "{found:?}");
        assert!(has("\"nope\" names no volume"), "{found:?}");
        assert!(has("\"relative\": not an absolute path"), "{found:?}");
        assert!(
            has("p.secret_files: needs spawner.kubernetes.secret_name"),
            "{found:?}"
        );
        assert!(has("/opt/nope: mounted twice"), "{found:?}");
        assert!(has("\"../x\" is not a valid secret key"), "{found:?}");
        assert!(has("\"agent\": container names are unique"), "{found:?}");
        assert!(has("every container needs a name"), "{found:?}");
        assert!(has("p.labels.agentsmith.io/job-id"), "{found:?}");
        assert_eq!(found.len(), 11, "{found:?}");
        assert!(problems_of(&PodShape::default(), "").is_empty());
    }
}
