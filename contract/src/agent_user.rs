//! [`AgentUser`]: the user an agent runs as, as the process backend's settings name it and
//! as the runner reads it ([`crate::env::AGENT_USER`]).

use std::fmt;
use std::str::FromStr;

/// A user agents run as: numeric ids, so nothing depends on a machine's user database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentUser {
    /// The user id.
    pub uid: u32,
    /// The group id (the only group the agent gets).
    pub gid: u32,
}

impl FromStr for AgentUser {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let numeric = || format!("{text:?} is not a numeric uid:gid (such as 65534:65534)");
        let (uid, gid) = text.trim().split_once(':').ok_or_else(numeric)?;
        Ok(Self {
            uid: uid.trim().parse().map_err(|_| numeric())?,
            gid: gid.trim().parse().map_err(|_| numeric())?,
        })
    }
}

impl fmt::Display for AgentUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_user_is_two_numbers_and_prints_as_it_was_written() {
        let user: AgentUser = "65534:65534".parse().unwrap();
        assert_eq!(
            user,
            AgentUser {
                uid: 65534,
                gid: 65534
            }
        );
        assert_eq!(user.to_string(), "65534:65534");
        for bad in [
            "",
            "nobody",
            "nobody:nogroup",
            "1000",
            "1000:",
            ":1000",
            "a:1",
            "-1:0",
        ] {
            assert!(bad.parse::<AgentUser>().is_err(), "{bad}");
        }
    }
}
