//! The kubernetes backend: one TTL-bounded `batch/v1` Job per attempt, through kube-rs.
//!
//! The Job is named after the attempt ([`contract::workload_name`]); a create that finds it
//! `AlreadyExists` adopts it. `backoffLimit: 0` (the dispatcher owns retries),
//! `restartPolicy: Never`, `activeDeadlineSeconds` a margin past the profile timeout (the
//! runner enforces the timeout itself and reports it; the deadline is the backstop),
//! `ttlSecondsAfterFinished`. The pod runs `agent-runner` (the image's entrypoint) as a
//! non-root user with no privilege escalation, every capability dropped, the runtime's
//! default seccomp profile and, unless the profile asks for a writable root, a read-only
//! root filesystem with `emptyDir` volumes for the work directory and `/tmp`, both bounded
//! by the profile's `disk` (also the pod's `ephemeral-storage` limit). Secrets reach
//! it as `secretKeyRef`s to the configured Secret: the dispatcher never reads their values.
//! The attempt's one-time credential reaches it the same way, from a Secret of its own
//! created before the Job and then owned by it (the dispatcher may create, patch and delete
//! Secrets, never read them).
//!
//! Status comes from watches (kube-runtime reflectors) of this installation's Jobs and
//! Pods, not from polling; logs from the Pod log API. Only fields that Kubernetes 1.20
//! already understands are set, so the manifests mean the same on every version.

mod client;
mod manifest;
mod settings;
mod shape;
mod status;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::{labels, OutputStream};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::OnceCell;

use client::{api_code, unavailable, RateLimit};
pub use manifest::{credential_secret, job_manifest};
use manifest::{credential_secret_name, owned_by, selector};
pub use settings::{CaBundle, KubernetesSettings};
pub use shape::{PodShape, ENDED_FILE, LIFECYCLE_DIR};
use status::{has_ended, workload_status};

use crate::{
    Error, Installation, JobHandle, JobSpawner, JobSpec, LogLine, LogStream, Result, WorkloadStatus,
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

struct Connected {
    client: Client,
    namespace: String,
    jobs: Store<Job>,
    pods: Store<Pod>,
}

/// The kubernetes backend.
pub struct KubernetesSpawner {
    settings: KubernetesSettings,
    installation: String,
    injected: Option<(Client, String)>,
    connected: OnceCell<Arc<Connected>>,
    limit: RateLimit,
}

impl KubernetesSpawner {
    /// A backend with the given settings; the API server is first contacted by
    /// [`JobSpawner::probe`] or the first spawn.
    pub fn new(settings: KubernetesSettings, installation: &Installation) -> Self {
        Self {
            limit: RateLimit::new(settings.api_qps),
            settings,
            installation: installation.name.clone(),
            injected: None,
            connected: OnceCell::new(),
        }
    }

    /// A backend speaking through a given client (tests use a mock API server).
    pub fn with_client(
        settings: KubernetesSettings,
        installation: &Installation,
        client: Client,
        namespace: &str,
    ) -> Self {
        Self {
            injected: Some((client, namespace.to_string())),
            ..Self::new(settings, installation)
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
                let namespace = Some(self.settings.namespace.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or(default_namespace);
                let watch = watcher::Config::default().labels(&selector(&self.installation));
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

    /// Creates the Secret holding the attempt's one-time credential (one that exists
    /// already holds the same credential: it is kept).
    async fn create_credential_secret(&self, c: &Connected, job: &JobSpec) -> Result<()> {
        let secret = credential_secret(&self.installation, &c.namespace, job);
        let api: Api<Secret> = Api::namespaced(c.client.clone(), &c.namespace);
        let post = PostParams::default();
        match self
            .call("creating a credential Secret", || {
                api.create(&post, &secret)
            })
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => {
                let name = credential_secret_name(&job.workload_name());
                Err(match api_code(&e) {
                    Some(400 | 403 | 404 | 422) => Error::Rejected {
                        backend: BACKEND,
                        message: format!(
                            "the API server refused Secret {name} (the dispatcher needs create, patch and delete on secrets): {e}"
                        ),
                    },
                    _ => unavailable(format!("creating Secret {name}"), e),
                })
            }
        }
    }

    /// Makes the Job the owner of its credential Secret, so Kubernetes removes the Secret
    /// with the Job. A failure leaves a spent credential behind (labelled with the job),
    /// which is untidy but harmless: it is logged, not fatal.
    async fn hand_secret_to_job(&self, c: &Connected, name: &str, uid: &str) {
        let api: Api<Secret> = Api::namespaced(c.client.clone(), &c.namespace);
        let secret = credential_secret_name(name);
        let patch = Patch::Merge(owned_by(name, uid));
        let params = PatchParams::default();
        let outcome = self
            .call("handing a credential Secret to its Job", || {
                api.patch(&secret, &params, &patch)
            })
            .await;
        if let Err(e) = outcome.and_then(|r| r.map_err(|e| unavailable("patching", e))) {
            tracing::warn!(%secret, error = %contract::ErrorChain(&e), "the credential Secret stays without an owner");
        }
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
        let manifest = job_manifest(&self.settings, &self.installation, &c.namespace, job)?;
        let name = job.workload_name();
        self.create_credential_secret(&c, job).await?;
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
        if let Some(uid) = &uid {
            self.hand_secret_to_job(&c, &name, uid).await;
        }
        Ok(JobHandle {
            backend: BACKEND.into(),
            name,
            job_id: job.job_id.clone(),
            attempt: job.attempt,
            id: uid,
            target: contract::DEFAULT_TARGET.into(),
        })
    }

    async fn status(&self, handle: &JobHandle) -> Result<WorkloadStatus> {
        let c = self.connected().await?;
        let Some(job) = self.get_job(&c, &handle.name).await? else {
            return Ok(WorkloadStatus::NotFound);
        };
        let pods = self.pods_of(&c, &handle.job_id, handle.attempt);
        let pod = pods.first().map(|p| p.as_ref());
        Ok(workload_status(
            &job,
            pod,
            self.settings.pending_timeout_secs,
        ))
    }

    async fn logs(&self, handle: &JobHandle, follow: bool) -> Result<LogStream> {
        let c = self.connected().await?;
        let pod_api: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
        let pod_name = match self.pods_of(&c, &handle.job_id, handle.attempt).first() {
            Some(pod) => pod.metadata.name.clone(),
            None => {
                let params = ListParams::default().labels(&format!(
                    "{},{}={},{}={}",
                    selector(&self.installation),
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
        // An attempt that ended by itself (evicted, say) is left to its TTL, so that its
        // pod, logs and credential Secret stay for `kubectl describe` until then.
        if let Some(job) = self.get_job(&c, &handle.name).await? {
            let pods = self.pods_of(&c, &handle.job_id, handle.attempt);
            if has_ended(&job, pods.first().map(|p| p.as_ref())) {
                return Ok(());
            }
        }
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
        let params = ListParams::default().labels(&selector(&self.installation));
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
                    target: contract::DEFAULT_TARGET.into(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
