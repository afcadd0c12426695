//! Why the tool stops: an exit code and one line for stderr.

use std::process::ExitCode;

/// Why the tool stops: exit code and the one line to print on stderr.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Fail {
    pub(crate) fn error(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: format!("error: {}", one_line(&message.into())),
        }
    }

    /// Stop with success and say nothing: stdout's reader went away
    /// (`fscache ls | head`), which is not our failure.
    pub(crate) fn quiet() -> Self {
        Self {
            code: 0,
            message: String::new(),
        }
    }

    /// Stopped by signal `sig`: exit 128 + `sig`, as a shell reports it.
    pub(crate) fn signal(sig: i32, message: impl Into<String>) -> Self {
        Self {
            code: u8::try_from(128 + sig).unwrap_or(1),
            message: one_line(&message.into()),
        }
    }

    /// A command that could not be run: 127 when it was not found, 126
    /// when it could not be executed, as shells and `env(1)` exit.
    pub(crate) fn not_run(e: &std::io::Error, message: impl Into<String>) -> Self {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        };
        Self {
            code,
            message: format!("error: {}", one_line(&message.into())),
        }
    }

    pub(crate) fn miss(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: format!("miss: {}", one_line(&message.into())),
        }
    }
}

impl From<fscache::Error> for Fail {
    fn from(e: fscache::Error) -> Self {
        Fail::error(chain(&e))
    }
}

pub(crate) type Outcome = Result<ExitCode, Fail>;

/// An error and its sources, one line: "failed to lock `x`: Permission
/// denied (os error 13)".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn errors_are_one_line_with_their_sources() {
        let inner = io::Error::new(io::ErrorKind::NotFound, "gone\nreally");
        let outer = io::Error::other(OuterError(inner));
        let f = Fail::error(chain(&outer));
        assert_eq!(f.code, 1);
        assert_eq!(f.message, "error: failed to x: gone really");
        assert!(!f.message.contains('\n'));
        assert_eq!(Fail::miss("no `a`").message, "miss: no `a`");
    }

    #[derive(Debug)]
    struct OuterError(io::Error);

    impl std::fmt::Display for OuterError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failed to x")
        }
    }

    impl std::error::Error for OuterError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
