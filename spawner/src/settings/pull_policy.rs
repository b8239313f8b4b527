//! [`PullPolicy`]: when images are pulled, a value the docker and kubernetes sections share.

use serde::Deserialize;

/// When images are pulled (docker) or what the kubelet is told (kubernetes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum PullPolicy {
    /// Pull only when the image is missing.
    #[default]
    IfNotPresent,
    /// Pull before every attempt.
    Always,
    /// Never pull: the image must be there already.
    Never,
}

impl PullPolicy {
    /// The name Kubernetes and the configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
        }
    }
}
