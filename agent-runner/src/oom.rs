//! Telling an OOM kill from any other SIGKILL: the kernel counts the OOM kills of a memory
//! cgroup, and a container's cgroup is the runner's own. The count is read before the
//! agent starts and again after it is killed; if it grew, the agent went over its limit.

/// Where the kernel counts OOM kills: cgroup v2, then cgroup v1.
const COUNTERS: [(&str, &str); 2] = [
    ("/sys/fs/cgroup/memory.events", "oom_kill"),
    ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),
];

/// The OOM kills counted so far in the runner's memory cgroup, if the kernel says.
pub fn oom_kills() -> Option<u64> {
    COUNTERS
        .iter()
        .find_map(|(path, key)| parse_counter(&std::fs::read_to_string(path).ok()?, key))
}

/// The value of `key` in a `key value` per line file.
fn parse_counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_both_cgroup_versions_formats() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_counter(v1, "oom_kill"), Some(2));
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_counter(v2, "oom_kill"), Some(1));
        assert_eq!(parse_counter("oom 3\n", "oom_kill"), None);
    }
}
