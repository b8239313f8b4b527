//! The API server: the client configuration, a client-side rate limit, and requests
//! retried on 429, 5xx and transport errors.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Config;
use tokio::sync::Mutex;

use super::{KubernetesSpawner, API_ATTEMPTS, BACKEND};
use crate::{Error, Result};

/// A client-side token bucket: `qps` requests per second, bursts up to `2 * qps`.
pub(super) struct RateLimit {
    qps: f64,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    pub(super) fn new(qps: u32) -> Self {
        let qps = f64::from(qps.max(1));
        Self {
            qps,
            state: Mutex::new((qps * 2.0, tokio::time::Instant::now())),
        }
    }

    pub(super) async fn acquire(&self) {
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
pub(super) fn api_code(e: &kube::Error) -> Option<u16> {
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

pub(super) fn unavailable(message: impl Into<String>, source: kube::Error) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

impl KubernetesSpawner {
    /// The client configuration: the named kubeconfig (and context), else in-cluster or
    /// `KUBECONFIG`.
    pub(super) async fn config(&self) -> Result<Config> {
        let options = KubeConfigOptions {
            context: Some(self.settings.context.clone()).filter(|c| !c.is_empty()),
            ..Default::default()
        };
        let bad = |what: String, e: String| Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {e}"),
            source: None,
        };
        let path = &self.settings.kubeconfig;
        match path.as_os_str().is_empty() {
            false => {
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
            true if options.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| bad("loading the kubeconfig".into(), e.to_string())),
            true => Config::infer().await.map_err(|e| {
                bad(
                    "finding a cluster (in-cluster or kubeconfig)".into(),
                    e.to_string(),
                )
            }),
        }
    }

    /// Sends a request through the rate limit, retrying 429, 5xx and transport errors.
    pub(super) async fn call<T, F, Fut>(
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
                    tracing::warn!(error = %contract::ErrorChain(&e), attempt, "{what} failed; retrying");
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
}
