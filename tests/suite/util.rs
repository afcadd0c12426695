//! Helpers shared by the test modules: child processes that report on
//! stdout line by line, with generous timeouts instead of hangs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

/// A very generous bound for "it happened": tests never assert on speed.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// How long to watch for something that must *not* happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// The helper binary of this package.
pub const HELPER: &str = env!("CARGO_BIN_EXE_fscache-test-helper");

/// A running child process whose stdout is read line by line in the
/// background; closing its stdin tells it to finish.
///
/// Dropping it kills the child, so a failing test leaves no process behind.
pub struct Reporter {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Reporter {
    /// Spawn `command` with piped stdin and stdout.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {command:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Run `fscache-test-helper lock PATH KIND MODE`.
    pub fn helper_lock(path: &Path, kind: &str, mode: &str) -> Self {
        let mut command = Command::new(HELPER);
        command.arg("lock").arg(path).arg(kind).arg(mode);
        Self::spawn(command)
    }

    /// The next line of output, waiting [`EVENTUALLY`] at most.
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(EVENTUALLY) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no output within {EVENTUALLY:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("child ended its output early: {status:?}")
            }
        }
    }

    /// Assert the next line is `expected`.
    pub fn expect_line(&mut self, expected: &str) {
        assert_eq!(self.next_line(), expected);
    }

    /// Assert the child prints nothing for [`QUIET`] (it is blocked).
    pub fn expect_silence(&mut self) {
        match self.lines.recv_timeout(QUIET) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("expected the child to be blocked, got {other:?}"),
        }
    }

    /// Close the child's stdin (it releases what it holds) and wait for it
    /// to exit successfully.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for child");
        assert!(status.success(), "child failed: {status}");
    }

    /// Kill the child without letting it clean up, and reap it.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("kill child");
        self.child.wait().expect("wait for child")
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `python3` can be run; prints why a test skips when not.
pub fn have_python3(test: &str) -> bool {
    match Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("skipping {test}: `python3 --version` failed: {status}");
            false
        }
        Err(e) => {
            eprintln!("skipping {test}: python3 is not available: {e}");
            false
        }
    }
}
