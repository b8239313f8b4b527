//! Finding processes again by a marker in their argv (`sleep 1000.<digits>`), for the tests
//! that check nothing an agent started outlives its job.

/// A `sleep` argument no other process has (`1000.<digits>`).
pub fn marker() -> String {
    let digits: String = crate::temp::unique("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("1000.{digits}")
}

/// The live (not zombie) processes whose argv holds `marker`.
pub fn alive_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let argv = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let has = argv.split(|b| *b == 0).any(|arg| arg == marker.as_bytes());
        if has && !is_zombie(pid) {
            found.push(pid);
        }
    }
    found
}

/// Whether `pid` is a zombie (or gone): its stat's state, after the command's parenthesis.
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}
