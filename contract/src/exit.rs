//! Exit codes of `agent-runner` (the workload's main process), so backends can say what a
//! runner's exit means.

/// The agent's run was reported (whatever its outcome).
pub const OK: u8 = 0;
/// The runner failed in a way not listed here.
pub const FAILED: u8 = 1;
/// The job environment was missing or invalid.
pub const BAD_JOB: u8 = 2;
/// The dispatcher refused the job token.
pub const TOKEN_REFUSED: u8 = 3;
/// The final event could not be delivered before the runner gave up.
pub const UNDELIVERED: u8 = 4;
/// This attempt had already run in this work directory (its container was started
/// again): the agent was not run a second time and nothing was reported.
pub const ALREADY_RAN: u8 = 5;

/// What a runner exit code means, for people.
pub fn meaning(code: i32) -> Option<&'static str> {
    match u8::try_from(code).ok()? {
        OK => Some("the run was reported"),
        FAILED => Some("the runner failed"),
        BAD_JOB => Some("the runner's job environment was missing or invalid"),
        TOKEN_REFUSED => Some("the dispatcher refused the runner's token"),
        UNDELIVERED => Some("the runner could not deliver its final report"),
        ALREADY_RAN => Some("this attempt had already run; it was not run again"),
        _ => None,
    }
}
