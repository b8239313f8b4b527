//! The kubernetes backend: one TTL-bounded `batch/v1` Job per attempt, through kube-rs.
//!
//! The Job is named after the attempt ([`crate::workload_name`]); a create that finds it
//! `AlreadyExists` adopts it. `backoffLimit: 0` (the dispatcher owns retries),
//! `restartPolicy: Never`, `activeDeadlineSeconds` a margin past the profile timeout (the
//! runner enforces the timeout itself and reports it; the deadline is the backstop),
//! `ttlSecondsAfterFinished`. The pod runs `agent-runner` (the image's entrypoint) as a
//! non-root user with no privilege escalation, every capability dropped, the runtime's
//! default seccomp profile and, unless the profile asks for a writable root, a read-only
//! root filesystem with `emptyDir` volumes for the work directory and `/tmp`. Secrets reach
//! it as `secretKeyRef`s to the configured Secret: the dispatcher never reads their values.
//!
//! Status comes from watches (kube-runtime reflectors) of this installation's Jobs and
//! Pods, not from polling; logs from the Pod log API. Only fields that Kubernetes 1.20
//! already understands are set, so the manifests mean the same on every version.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{Job, JobSpec as K8sJobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    LocalObjectReference, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config};
use tokio::sync::{Mutex, OnceCell};

use crate::contract::{env, labels, OutputStream};
use crate::{
    Error, JobHandle, JobSpawner, JobSpec, LogLine, LogStream, Resources, Result, WorkloadStatus,
};

const BACKEND: &str = "kubernetes";

/// Time the runner gets beyond the agent's grace period to report before the pod is killed.
const RUNNER_MARGIN_SECS: u64 = 5;
/// How far past the profile timeout the Job's deadline lies: the runner stops the agent at
/// the timeout and reports; the deadline catches a runner that could not.
const DEADLINE_MARGIN_SECS: u64 = 60;
/// The agent container's name.
const CONTAINER: &str = "agent";
/// Requests retried on 429, 5xx and transport errors before giving up.
const API_ATTEMPTS: u32 = 5;

/// Waiting reasons of a container that will not resolve by waiting longer.
const HOPELESS_WAITING: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "InvalidImageName",
    "CreateContainerError",
];

/// Settings of the kubernetes backend.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// Kubeconfig file; `None`: in-cluster config, else `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; `None`: the current one.
    pub context: Option<String>,
    /// Namespace of agent Jobs; `None`: the config's default namespace.
    pub namespace: Option<String>,
    /// Service account of agent pods.
    pub service_account: Option<String>,
    /// Seconds a finished Job is kept.
    pub ttl_seconds_after_finished: u64,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// Secrets for pulling images.
    pub image_pull_secrets: Vec<String>,
    /// The Secret whose keys `secret_env` names.
    pub secret_name: Option<String>,
    /// Limits for profiles that set none.
    pub default_resources: Resources,
    /// CPU request of every pod, in thousandths of a CPU.
    pub cpu_request_millis: Option<u64>,
    /// Node selector.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Affinity.
    pub affinity: Option<Affinity>,
    /// The user agent pods run as.
    pub run_as_user: i64,
    /// The group agent pods run as (also `fsGroup`).
    pub run_as_group: i64,
    /// Extra labels on Jobs and pods.
    pub extra_labels: BTreeMap<String, String>,
    /// Annotations on Jobs and pods.
    pub annotations: BTreeMap<String, String>,
    /// Environment of every agent container; the profile's env wins over it.
    pub extra_env: BTreeMap<String, String>,
    /// The installation name, in every label set.
    pub installation: String,
    /// How long a pod may stay unscheduled or waiting.
    pub pending_timeout: Duration,
    /// The work directory inside the container.
    pub work_dir: String,
    /// API requests per second (bursts up to twice this).
    pub api_qps: u32,
}

/// Parses tolerations given as JSON/YAML values; the error names the bad entry.
pub fn parse_tolerations(
    values: &[serde_json::Value],
) -> std::result::Result<Vec<Toleration>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v.clone())
                .map_err(|e| format!("entry {i}: not a Toleration: {e}"))
        })
        .collect()
}

/// Parses an affinity given as a JSON/YAML value (`{}` or null: none).
pub fn parse_affinity(value: &serde_json::Value) -> std::result::Result<Option<Affinity>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Object(map) if map.is_empty() => Ok(None),
        other => serde_json::from_value(other.clone())
            .map(Some)
            .map_err(|e| format!("not an Affinity: {e}")),
    }
}

fn quantity_bytes(bytes: u64) -> Quantity {
    Quantity(crate::contract::binary_size(bytes))
}

fn quantity_millis(millis: u64) -> Quantity {
    Quantity(format!("{millis}m"))
}

fn env_var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    }
}

/// The label selector of this installation's workloads.
fn selector(installation: &str) -> String {
    format!(
        "{}=agentsmith,{}={installation}",
        labels::MANAGED_BY,
        labels::INSTALLATION
    )
}

/// The Job one attempt runs as; `namespace` is where it goes.
pub fn job_manifest(settings: &KubernetesSettings, namespace: &str, job: &JobSpec) -> Result<Job> {
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
    let name = job.workload_name();
    let mut all_labels = settings.extra_labels.clone();
    all_labels.extend(job.labels(&settings.installation));
    let annotations = Some(settings.annotations.clone()).filter(|a| !a.is_empty());

    let mut env_vars: Vec<EnvVar> = settings
        .extra_env
        .iter()
        .filter(|(k, _)| !job.profile.env.contains_key(*k))
        .chain(job.profile.env.iter())
        .map(|(k, v)| env_var(k, v.clone()))
        .collect();
    if !job.profile.secret_env.is_empty() {
        let secret = settings
            .secret_name
            .clone()
            .ok_or_else(|| Error::Rejected {
                backend: BACKEND,
                message: format!(
                "agent profile {:?} has secret_env but spawner.kubernetes.secret_name is not set",
                job.profile.name
            ),
            })?;
        for (var, key) in &job.profile.secret_env {
            env_vars.push(EnvVar {
                name: var.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            });
        }
    }
    env_vars.extend(job.runner_env().into_iter().map(|(k, v)| env_var(k, v)));
    env_vars.push(env_var(env::WORKDIR, settings.work_dir.clone()));

    // (Kubernetes has no per-pod process limit to set.)
    let resources = job.profile.resources.or(settings.default_resources);
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if let Some(memory) = resources.memory_bytes {
        limits.insert("memory".to_string(), quantity_bytes(memory));
        requests.insert("memory".to_string(), quantity_bytes(memory));
    }
    if let Some(cpu) = resources.cpu_millis {
        limits.insert("cpu".to_string(), quantity_millis(cpu));
    }
    if let Some(cpu) = settings.cpu_request_millis {
        let cpu = resources.cpu_millis.map_or(cpu, |limit| cpu.min(limit));
        requests.insert("cpu".to_string(), quantity_millis(cpu));
    }
    let runtime_default = || SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        env: Some(env_vars),
        working_dir: Some(settings.work_dir.clone()),
        resources: Some(ResourceRequirements {
            limits: Some(limits).filter(|l| !l.is_empty()),
            requests: Some(requests).filter(|r| !r.is_empty()),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            read_only_root_filesystem: Some(!job.profile.writable_root),
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_group),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "work".into(),
                mount_path: settings.work_dir.clone(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![container],
        volumes: Some(vec![empty_dir("work"), empty_dir("tmp")]),
        service_account_name: settings.service_account.clone(),
        automount_service_account_token: Some(job.profile.service_account_token),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some((job.grace_secs + RUNNER_MARGIN_SECS) as i64),
        image_pull_secrets: Some(
            settings
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect::<Vec<_>>(),
        )
        .filter(|s| !s.is_empty()),
        node_selector: Some(settings.node_selector.clone()).filter(|n| !n.is_empty()),
        tolerations: Some(settings.tolerations.clone()).filter(|t| !t.is_empty()),
        affinity: settings.affinity.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_group),
            fs_group: Some(settings.run_as_group),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
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

/// A client-side token bucket: `qps` requests per second, bursts up to `2 * qps`.
struct RateLimit {
    qps: f64,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    fn new(qps: u32) -> Self {
        let qps = f64::from(qps.max(1));
        Self {
            qps,
            state: Mutex::new((qps * 2.0, tokio::time::Instant::now())),
        }
    }

    async fn acquire(&self) {
        let mut state = self.state.lock().await;
        let (tokens, last) = &mut *state;
        let now = tokio::time::Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.qps).min(self.qps * 2.0);
        *last = now;
        if *tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - *tokens) / self.qps);
            tokio::time::sleep(wait).await;
            *tokens = 1.0;
            *last = tokio::time::Instant::now();
        }
        *tokens -= 1.0;
    }
}

/// The status code of an API error answer.
fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether a failed request may succeed if sent again.
fn transient(e: &kube::Error) -> bool {
    match api_code(e) {
        Some(code) => code == 429 || code >= 500,
        None => !matches!(e, kube::Error::SerdeError(_)),
    }
}

fn unavailable(message: impl Into<String>, source: kube::Error) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

struct Connected {
    client: Client,
    namespace: String,
    jobs: Store<Job>,
    pods: Store<Pod>,
}

/// The kubernetes backend.
pub struct KubernetesSpawner {
    settings: KubernetesSettings,
    injected: Option<(Client, String)>,
    connected: OnceCell<Arc<Connected>>,
    limit: RateLimit,
}

impl KubernetesSpawner {
    /// A backend with the given settings; the API server is first contacted by
    /// [`JobSpawner::probe`] or the first spawn.
    pub fn new(settings: KubernetesSettings) -> Self {
        let limit = RateLimit::new(settings.api_qps);
        Self {
            settings,
            injected: None,
            connected: OnceCell::new(),
            limit,
        }
    }

    /// A backend speaking through a given client (tests use a mock API server).
    pub fn with_client(settings: KubernetesSettings, client: Client, namespace: &str) -> Self {
        let limit = RateLimit::new(settings.api_qps);
        Self {
            settings,
            injected: Some((client, namespace.to_string())),
            connected: OnceCell::new(),
            limit,
        }
    }

    async fn config(&self) -> Result<Config> {
        let options = KubeConfigOptions {
            context: self.settings.context.clone(),
            ..Default::default()
        };
        let bad = |what: String, e: String| Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {e}"),
            source: None,
        };
        match &self.settings.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    bad(
                        format!("reading kubeconfig {}", path.display()),
                        e.to_string(),
                    )
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| {
                        bad(
                            format!("using kubeconfig {}", path.display()),
                            e.to_string(),
                        )
                    })
            }
            None if self.settings.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| bad("loading the kubeconfig".into(), e.to_string())),
            None => Config::infer().await.map_err(|e| {
                bad(
                    "finding a cluster (in-cluster or kubeconfig)".into(),
                    e.to_string(),
                )
            }),
        }
    }

    /// The client, the namespace and the watches, set up on first use.
    async fn connected(&self) -> Result<Arc<Connected>> {
        self.connected
            .get_or_try_init(|| async {
                let (client, default_namespace) = match &self.injected {
                    Some((client, namespace)) => (client.clone(), namespace.clone()),
                    None => {
                        let config = self.config().await?;
                        let namespace = config.default_namespace.clone();
                        let client = Client::try_from(config)
                            .map_err(|e| unavailable("creating the Kubernetes client", e))?;
                        (client, namespace)
                    }
                };
                let namespace = self.settings.namespace.clone().unwrap_or(default_namespace);
                let watch =
                    watcher::Config::default().labels(&selector(&self.settings.installation));
                let (jobs, job_writer) = reflector::store();
                let job_api: Api<Job> = Api::namespaced(client.clone(), &namespace);
                tokio::spawn(
                    watcher(job_api, watch.clone())
                        .default_backoff()
                        .reflect(job_writer)
                        .for_each(|_| futures::future::ready(())),
                );
                let (pods, pod_writer) = reflector::store();
                let pod_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                tokio::spawn(
                    watcher(pod_api, watch)
                        .default_backoff()
                        .reflect(pod_writer)
                        .for_each(|_| futures::future::ready(())),
                );
                Ok(Arc::new(Connected {
                    client,
                    namespace,
                    jobs,
                    pods,
                }))
            })
            .await
            .cloned()
    }

    /// Sends a request through the rate limit, retrying 429, 5xx and transport errors.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        mut request: F,
    ) -> Result<std::result::Result<T, kube::Error>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, kube::Error>>,
    {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=API_ATTEMPTS {
            self.limit.acquire().await;
            match request().await {
                Err(e) if transient(&e) && attempt < API_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) if transient(&e) => {
                    return Err(unavailable(
                        format!("{what} failed {API_ATTEMPTS} times"),
                        e,
                    ))
                }
                other => return Ok(other),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn get_job(&self, c: &Connected, name: &str) -> Result<Option<Job>> {
        if let Some(job) = c.jobs.get(&ObjectRef::new(name).within(&c.namespace)) {
            return Ok(Some((*job).clone()));
        }
        // The watch may not have seen a Job created a moment ago: ask the API server.
        let api: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
        self.call("reading a Job", || api.get_opt(name))
            .await?
            .map_err(|e| unavailable(format!("reading Job {name}"), e))
    }

    /// The pods of one attempt, newest first.
    fn pods_of(&self, c: &Connected, job_id: &str, attempt: u32) -> Vec<Arc<Pod>> {
        let attempt = attempt.to_string();
        let mut pods: Vec<Arc<Pod>> = c
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                let l = p.metadata.labels.as_ref();
                l.and_then(|l| l.get(labels::JOB_ID)).map(String::as_str) == Some(job_id)
                    && l.and_then(|l| l.get(labels::ATTEMPT)) == Some(&attempt)
            })
            .collect();
        pods.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
        });
        pods
    }

    fn overdue(&self, since: Option<&Time>) -> bool {
        since.is_some_and(|t| {
            let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
            age.as_secs() >= self.settings.pending_timeout.as_secs() as i64
        })
    }

    /// Why a pod that has not started is waiting, and whether that is hopeless.
    fn pending_status(&self, job: &Job, pod: Option<&Pod>) -> WorkloadStatus {
        let created = job.metadata.creation_timestamp.as_ref();
        let Some(pod) = pod else {
            return if self.overdue(created) {
                WorkloadStatus::Failed {
                    reason: format!(
                        "no pod was created within {}s",
                        self.settings.pending_timeout.as_secs()
                    ),
                    retryable: true,
                }
            } else {
                WorkloadStatus::Pending {
                    reason: Some("waiting for a pod".into()),
                }
            };
        };
        let status = pod.status.as_ref();
        if let Some(waiting) = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find_map(|c| c.state.as_ref()?.waiting.clone()))
        {
            let reason = waiting.reason.unwrap_or_default();
            let message = waiting.message.unwrap_or_default();
            if HOPELESS_WAITING.contains(&reason.as_str()) {
                return WorkloadStatus::Failed {
                    reason: format!("{reason}: {message}")
                        .trim_end_matches(": ")
                        .to_string(),
                    retryable: false,
                };
            }
        }
        let unschedulable = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| {
                c.iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
            .map(|c| format!("unschedulable: {}", c.message.clone().unwrap_or_default()));
        let reason = unschedulable.unwrap_or_else(|| "pod pending".into());
        if self.overdue(pod.metadata.creation_timestamp.as_ref().or(created)) {
            WorkloadStatus::Failed {
                reason: format!(
                    "{reason} (did not start within {}s)",
                    self.settings.pending_timeout.as_secs()
                ),
                retryable: false,
            }
        } else {
            WorkloadStatus::Pending {
                reason: Some(reason),
            }
        }
    }
}

/// How a finished agent container ended.
fn terminated_status(pod: &Pod) -> Option<WorkloadStatus> {
    let status = pod.status.as_ref()?;
    if status.reason.as_deref() == Some("Evicted") {
        return Some(WorkloadStatus::Failed {
            reason: format!("evicted: {}", status.message.clone().unwrap_or_default()),
            retryable: true,
        });
    }
    let terminated = status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .clone()?;
    Some(match terminated.reason.as_deref() {
        Some("OOMKilled") => WorkloadStatus::Failed {
            reason: "OOM-killed: the pod went over its memory limit".into(),
            retryable: false,
        },
        _ => match terminated.exit_code {
            code @ 129..=159 => WorkloadStatus::Killed { signal: code - 128 },
            code => WorkloadStatus::Exited { code },
        },
    })
}

/// A workload's status from its Job and newest pod.
fn job_condition(job: &Job) -> Option<(String, Option<String>, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone(), c.message.clone()))
}

#[async_trait]
impl JobSpawner for KubernetesSpawner {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn survives_restart(&self) -> bool {
        true
    }

    async fn probe(&self) -> Result<()> {
        let c = self.connected().await?;
        let api: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
        let params = ListParams::default().limit(1);
        self.call("listing Jobs", || api.list(&params))
            .await?
            .map_err(|e| unavailable(format!("listing Jobs in namespace {}", c.namespace), e))?;
        Ok(())
    }

    async fn spawn(&self, job: &JobSpec) -> Result<JobHandle> {
        let c = self.connected().await?;
        let manifest = job_manifest(&self.settings, &c.namespace, job)?;
        let name = job.workload_name();
        let api: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
        let post = PostParams::default();
        let created = self
            .call("creating a Job", || api.create(&post, &manifest))
            .await?;
        let uid = match created {
            Ok(created) => created.metadata.uid,
            Err(e) if api_code(&e) == Some(409) => {
                tracing::info!(workload = %name, "the Job of this attempt exists already; adopting it");
                self.get_job(&c, &name).await?.and_then(|j| j.metadata.uid)
            }
            Err(e) => {
                let message = match &e {
                    kube::Error::Api(status) => status.message.clone(),
                    other => other.to_string(),
                };
                return Err(match api_code(&e) {
                    Some(400 | 403 | 404 | 422) => Error::Rejected {
                        backend: BACKEND,
                        message: format!("the API server refused Job {name}: {message}"),
                    },
                    _ => unavailable(format!("creating Job {name}"), e),
                });
            }
        };
        Ok(JobHandle {
            backend: BACKEND.into(),
            name,
            job_id: job.job_id.clone(),
            attempt: job.attempt,
            id: uid,
        })
    }

    async fn status(&self, handle: &JobHandle) -> Result<WorkloadStatus> {
        let c = self.connected().await?;
        let Some(job) = self.get_job(&c, &handle.name).await? else {
            return Ok(WorkloadStatus::NotFound);
        };
        let pods = self.pods_of(&c, &handle.job_id, handle.attempt);
        let pod = pods.first().map(|p| p.as_ref());
        if let Some((kind, reason, message)) = job_condition(&job) {
            if kind == "Complete" {
                return Ok(WorkloadStatus::Exited { code: 0 });
            }
            if reason.as_deref() == Some("DeadlineExceeded") {
                return Ok(WorkloadStatus::Failed {
                    reason: format!(
                        "deadline exceeded: the Job ran past its activeDeadlineSeconds{}",
                        message.map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                    retryable: false,
                });
            }
            if let Some(status) = pod.and_then(terminated_status) {
                return Ok(status);
            }
            return Ok(WorkloadStatus::Failed {
                reason: format!(
                    "Job failed: {}",
                    reason.unwrap_or_else(|| "no reason given".into())
                ),
                retryable: true,
            });
        }
        if let Some(status) = pod.and_then(terminated_status) {
            return Ok(status);
        }
        let running = pod
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some("Running");
        if running {
            return Ok(WorkloadStatus::Running);
        }
        Ok(self.pending_status(&job, pod))
    }

    async fn logs(&self, handle: &JobHandle, follow: bool) -> Result<LogStream> {
        let c = self.connected().await?;
        let pod_api: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
        let pod_name = match self.pods_of(&c, &handle.job_id, handle.attempt).first() {
            Some(pod) => pod.metadata.name.clone(),
            None => {
                let params = ListParams::default().labels(&format!(
                    "{},{}={},{}={}",
                    selector(&self.settings.installation),
                    labels::JOB_ID,
                    handle.job_id,
                    labels::ATTEMPT,
                    handle.attempt
                ));
                self.call("listing pods", || pod_api.list(&params))
                    .await?
                    .map_err(|e| unavailable("listing pods", e))?
                    .items
                    .into_iter()
                    .next()
                    .and_then(|p| p.metadata.name)
            }
        };
        let pod_name = pod_name.ok_or_else(|| Error::NotFound {
            name: handle.name.clone(),
        })?;
        let params = LogParams {
            follow,
            container: Some(CONTAINER.into()),
            ..Default::default()
        };
        let reader = self
            .call("reading pod logs", || {
                pod_api.log_stream(&pod_name, &params)
            })
            .await?
            .map_err(|e| match api_code(&e) {
                Some(404) => Error::NotFound {
                    name: handle.name.clone(),
                },
                _ => unavailable(format!("reading the logs of pod {pod_name}"), e),
            })?;
        let name = handle.name.clone();
        Ok(reader
            .lines()
            .map_ok(|line| LogLine {
                stream: OutputStream::Stdout,
                line,
            })
            .map_err(move |e| Error::Unavailable {
                backend: BACKEND,
                message: format!("reading the logs of {name}"),
                source: Some(Box::new(e)),
            })
            .boxed())
    }

    async fn cancel(&self, handle: &JobHandle, _grace: Duration) -> Result<()> {
        // The pod's terminationGracePeriodSeconds (the job's grace plus the runner's
        // margin) is its grace: deleting the Job sends SIGTERM, then SIGKILL after it.
        let c = self.connected().await?;
        let api: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
        let params = DeleteParams::background();
        match self
            .call("deleting a Job", || api.delete(&handle.name, &params))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(unavailable(format!("deleting Job {}", handle.name), e)),
        }
    }

    async fn list(&self) -> Result<Vec<JobHandle>> {
        let c = self.connected().await?;
        let api: Api<Job> = Api::namespaced(c.client.clone(), &c.namespace);
        let params = ListParams::default().labels(&selector(&self.settings.installation));
        let jobs = self
            .call("listing Jobs", || api.list(&params))
            .await?
            .map_err(|e| unavailable("listing Jobs", e))?;
        Ok(jobs
            .items
            .into_iter()
            .filter_map(|job| {
                let l = job.metadata.labels.as_ref()?;
                Some(JobHandle {
                    backend: BACKEND.into(),
                    name: job.metadata.name.clone()?,
                    job_id: l.get(labels::JOB_ID)?.clone(),
                    attempt: l.get(labels::ATTEMPT)?.parse().ok()?,
                    id: job.metadata.uid.clone(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    //! Request shapes and error handling against a mock API server, for what a real
    //! cluster cannot be made to do on demand (429 and 5xx answers).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Request, Response, StatusCode};
    use kube::client::Body;

    use super::*;
    use crate::contract::{AgentProfile, Intent};

    fn settings() -> KubernetesSettings {
        KubernetesSettings {
            kubeconfig: None,
            context: None,
            namespace: Some("agents".into()),
            service_account: Some("agent-runner".into()),
            ttl_seconds_after_finished: 300,
            image_pull_policy: "IfNotPresent".into(),
            image_pull_secrets: vec![],
            secret_name: Some("agent-secrets".into()),
            default_resources: Resources {
                memory_bytes: Some(1 << 30),
                cpu_millis: Some(2000),
                pids: None,
            },
            cpu_request_millis: Some(100),
            node_selector: BTreeMap::new(),
            tolerations: vec![],
            affinity: None,
            run_as_user: 10001,
            run_as_group: 10001,
            extra_labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            extra_env: BTreeMap::new(),
            installation: "test".into(),
            pending_timeout: Duration::from_secs(600),
            work_dir: "/work".into(),
            api_qps: 1000,
        }
    }

    fn spec() -> JobSpec {
        JobSpec {
            job_id: "abc123".into(),
            attempt: 2,
            intent: Intent {
                task: "fix PROJ-1".into(),
                ..Intent::default()
            },
            profile: AgentProfile {
                name: "claude".into(),
                image: Some("agent:1".into()),
                command: vec!["sh".into(), "-c".into(), "true".into()],
                secret_env: BTreeMap::from([("GITHUB_TOKEN".into(), "github_token".into())]),
                timeout_secs: 600,
                ..AgentProfile::default()
            },
            callback_url: "http://dispatcher/internal/jobs/abc123/events".into(),
            token: "tok".into(),
            heartbeat_secs: 5,
            grace_secs: 10,
        }
    }

    fn status(code: u16, reason: &str) -> Response<Body> {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": format!("mock says {reason}"), "reason": reason, "code": code
        });
        Response::builder()
            .status(code)
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap()
    }

    /// The answer of the mock API server to a Job create with this status code.
    fn create_answer(code: u16) -> Response<Body> {
        match code {
            201 => created(),
            409 => status(409, "AlreadyExists"),
            422 => status(422, "Invalid"),
            429 => status(429, "TooManyRequests"),
            503 => status(503, "ServiceUnavailable"),
            other => status(other, "InternalError"),
        }
    }

    type Bodies = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

    /// A mock API server: list and watch requests get empty answers; each Job create gets
    /// the answer for the next of `creates` (the last one repeats).
    fn mock(creates: Vec<u16>) -> (Client, Arc<AtomicUsize>, Bodies) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let posts = Arc::new(AtomicUsize::new(0));
        let bodies = Bodies::default();
        let (counter, seen) = (Arc::clone(&posts), Arc::clone(&bodies));
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let path = request.uri().path().to_string();
                let response = if request.method() == http::Method::POST {
                    assert_eq!(path, "/apis/batch/v1/namespaces/agents/jobs");
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let bytes = request.into_body().collect_bytes().await.unwrap();
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&bytes).unwrap());
                    create_answer(creates[n.min(creates.len() - 1)])
                } else if request
                    .uri()
                    .query()
                    .is_some_and(|q| q.contains("watch=true"))
                {
                    Response::builder().status(200).body(Body::empty()).unwrap()
                } else if path.ends_with("/jobs/agentsmith-abc123-2") {
                    let job = serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
                        "metadata": {"name": "agentsmith-abc123-2", "namespace": "agents", "uid": "uid-existing"}});
                    Response::builder()
                        .status(200)
                        .body(Body::from(job.to_string().into_bytes()))
                        .unwrap()
                } else {
                    let kind = if path.contains("/pods") {
                        "PodList"
                    } else {
                        "JobList"
                    };
                    let list = serde_json::json!({"apiVersion": "v1", "kind": kind,
                        "metadata": {"resourceVersion": "1"}, "items": []});
                    Response::builder()
                        .status(200)
                        .body(Body::from(list.to_string().into_bytes()))
                        .unwrap()
                };
                send.send_response(response);
            }
        });
        (Client::new(service, "agents"), posts, bodies)
    }

    fn created() -> Response<Body> {
        let job = serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "agentsmith-abc123-2", "namespace": "agents", "uid": "uid-new"}});
        Response::builder()
            .status(StatusCode::CREATED)
            .body(Body::from(job.to_string().into_bytes()))
            .unwrap()
    }

    #[tokio::test]
    async fn throttled_and_failing_creates_are_retried_and_the_request_has_its_shape() {
        let (client, posts, bodies) = mock(vec![429, 500, 503, 201]);
        let backend = KubernetesSpawner::with_client(settings(), client, "agents");
        let handle = backend.spawn(&spec()).await.unwrap();
        assert_eq!(handle.name, "agentsmith-abc123-2");
        assert_eq!(handle.id.as_deref(), Some("uid-new"));
        assert_eq!(posts.load(Ordering::SeqCst), 4);
        let body = bodies.lock().unwrap()[0].clone();
        assert_eq!(body["spec"]["backoffLimit"], 0);
        assert_eq!(body["spec"]["ttlSecondsAfterFinished"], 300);
        assert_eq!(body["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(
            body["spec"]["template"]["spec"]["serviceAccountName"],
            "agent-runner"
        );
        assert_eq!(
            body["spec"]["template"]["spec"]["automountServiceAccountToken"],
            false
        );
        let container = &body["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
        let secret = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "GITHUB_TOKEN")
            .unwrap();
        assert_eq!(secret["valueFrom"]["secretKeyRef"]["name"], "agent-secrets");
        assert_eq!(secret["valueFrom"]["secretKeyRef"]["key"], "github_token");
        assert!(secret.get("value").is_none());
    }

    #[tokio::test]
    async fn an_api_server_that_keeps_failing_is_unavailable_and_retryable() {
        let (client, posts, _) = mock(vec![503]);
        let backend = KubernetesSpawner::with_client(settings(), client, "agents");
        let err = backend.spawn(&spec()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(posts.load(Ordering::SeqCst), API_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn an_existing_job_is_adopted_and_an_invalid_one_rejected() {
        let (client, posts, _) = mock(vec![409]);
        let backend = KubernetesSpawner::with_client(settings(), client, "agents");
        let handle = backend.spawn(&spec()).await.unwrap();
        assert_eq!(handle.id.as_deref(), Some("uid-existing"));
        assert_eq!(posts.load(Ordering::SeqCst), 1, "a conflict is not retried");

        let (client, _, _) = mock(vec![422]);
        let backend = KubernetesSpawner::with_client(settings(), client, "agents");
        let err = backend.spawn(&spec()).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("mock says Invalid"), "{err}");
    }

    #[test]
    fn secret_env_without_a_secret_name_is_rejected() {
        let mut s = settings();
        s.secret_name = None;
        let err = job_manifest(&s, "agents", &spec()).unwrap_err();
        assert!(err.to_string().contains("secret_name"), "{err}");
    }
}
