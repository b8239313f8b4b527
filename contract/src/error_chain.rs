//! [`ErrorChain`]: how every part of agentsmith writes an error in a log line, with every
//! cause under it, so an engine's or an API server's own words reach the log once.

use std::error::Error;
use std::fmt;

/// An error and every cause under it, on one line: `top: cause: deeper cause`. A cause whose
/// words the line already ends with is not repeated (some errors quote their source).
///
/// ```
/// let io = std::io::Error::other("connection refused");
/// assert_eq!(contract::ErrorChain(&io).to_string(), "connection refused");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let said = cause.to_string();
            if !text.ends_with(&said) {
                text.push_str(": ");
                text.push_str(&said);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper {
        message: &'static str,
        source: std::io::Error,
    }

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.message)
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_chain_names_every_cause_once() {
        let chained = Wrapper {
            message: "creating container agentsmith-x-1",
            source: std::io::Error::other("connection refused"),
        };
        assert_eq!(
            ErrorChain(&chained).to_string(),
            "creating container agentsmith-x-1: connection refused"
        );
        let quoting = Wrapper {
            message: "request failed: connection refused",
            source: std::io::Error::other("connection refused"),
        };
        assert_eq!(
            ErrorChain(&quoting).to_string(),
            "request failed: connection refused"
        );
    }
}
