//! [`Problems`]: what every section's check reports into, with the checks several sections
//! share (reserved labels, environment variable names).

/// Collects problems under a key prefix: what every section's `problems` reports into.
pub(crate) struct Problems<'a> {
    prefix: String,
    report: &'a mut dyn FnMut(&str, String),
}

impl<'a> Problems<'a> {
    /// Reports `key` (relative to `prefix`, which ends without a dot) through `report`.
    pub(crate) fn new(prefix: &str, report: &'a mut dyn FnMut(&str, String)) -> Self {
        Self {
            prefix: prefix.to_string(),
            report,
        }
    }

    /// One problem with `key` (under the prefix).
    pub(crate) fn add(&mut self, key: &str, message: impl Into<String>) {
        let full = match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{key}", self.prefix),
        };
        (self.report)(&full, message.into());
    }

    /// The same collector one level deeper.
    #[cfg_attr(not(any(feature = "docker", feature = "kubernetes")), allow(dead_code))]
    pub(crate) fn nested(&mut self, key: &str) -> Problems<'_> {
        let prefix = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        };
        Problems {
            prefix,
            report: &mut *self.report,
        }
    }

    /// A problem unless `value` is above zero.
    pub(crate) fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.add(key, "must be greater than 0");
        }
    }
}

/// Extra labels must not be the ones agentsmith sets itself.
#[cfg(any(feature = "docker", feature = "kubernetes"))]
pub(crate) fn reserved_labels(
    labels: &std::collections::BTreeMap<String, String>,
    problems: &mut Problems<'_>,
) {
    for (label, value) in labels {
        if label.starts_with("agentsmith.io/") || label == contract::labels::MANAGED_BY {
            problems.add(
                label,
                format!("{value:?}: this label is set by agentsmith itself"),
            );
        }
    }
}

/// Environment variable names: not empty, no `=`, not `AGENTSMITH_*` (the runner's own).
#[cfg(feature = "kubernetes")]
pub(crate) fn env_names<'n>(names: impl Iterator<Item = &'n String>, problems: &mut Problems<'_>) {
    for name in names {
        if !crate::valid_env_name(name) {
            problems.add(name, "invalid name (AGENTSMITH_* is reserved)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_keyed_under_their_section() {
        let mut seen = Vec::new();
        let mut report = |key: &str, message: String| seen.push(format!("{key}: {message}"));
        let mut problems = Problems::new("spawner", &mut report);
        problems.positive("reconcile_secs", 0);
        problems.nested("docker").add("user", "no root");
        problems.nested("docker").nested("tls").add("", "all three");
        assert_eq!(
            seen,
            [
                "spawner.reconcile_secs: must be greater than 0",
                "spawner.docker.user: no root",
                "spawner.docker.tls: all three",
            ]
        );
    }
}
