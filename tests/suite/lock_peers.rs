//! The semantics table of `fscache-lock` and its peers
//! (`crates/fscache-lock/README.md`, "Among its peers"), proven cell by
//! cell: each row is a test that runs every peer through one scenario and
//! compares what the kernel did with [`TABLE`]; `readme_table_is_proven`
//! checks that the README's cells say what [`TABLE`] says.
//!
//! Scenarios that need another process run this test binary again as a
//! helper ([`peer_helper_entry`], driven by `FSCACHE_PEER_HELPER`), since the
//! peers are dev-dependencies and cannot be in `fscache-test-helper`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use fscache_lock::{conflicting_range_lock, LockKind, LockOwner};
use fscache_testkit::{open_rw as open, temp_file as temp, EVENTUALLY, QUIET};
use LockKind::{Exclusive, Shared};

#[path = "../../benches/peers/mod.rs"]
mod peers;

use peers::{Family, Peer, Wait, ALL};

/// The claims of the table: a row's label as the README spells it, and
/// the answer of each peer in the order of [`peers::ALL`] (`fscache-lock`,
/// `std`, `fd-lock`, `fs4`, `fs2`, `file-guard`, `rustix`). A README cell
/// starts with its answer.
pub const TABLE: [(&str, [&str; 7]); 11] = [
    (OPENS, ["yes", "yes", "yes", "yes", "yes", "no", "no"]),
    (THREADS, ["yes", "yes", "yes", "yes", "yes", "no", "no"]),
    (DUP, ["yes", "yes", "yes", "yes", "yes", "yes", "yes"]),
    (CLOSE, ["no", "no", "no", "no", "no", "yes", "yes"]),
    (FORK, ["yes", "yes", "yes", "yes", "yes", "no", "no"]),
    (KILL, ["yes", "yes", "yes", "yes", "yes", "yes", "yes"]),
    (
        OWNER,
        ["pid -1", "none", "none", "none", "none", "pid", "pid"],
    ),
    (RANGES, ["yes", "no", "no", "no", "no", "yes", "no"]),
    (UPGRADE, ["yes", "no", "no", "no", "no", "yes", "yes"]),
    (DEADLOCK, ["no", "no", "no", "no", "no", "yes", "yes"]),
    (PYTHON, ["yes", "no", "no", "no", "no", "yes", "yes"]),
];

const OPENS: &str = "Two opens of one file in one process exclude each other";
const THREADS: &str = "Threads of one process (each with its own open) exclude each other";
const DUP: &str = "A `dup` shares the lock";
const CLOSE: &str = "Closing an unrelated fd of the file drops the lock";
const FORK: &str = "A `fork`ed (and `exec`ed) child inherits it";
const KILL: &str = "Released when the process dies, even by `SIGKILL`";
const OWNER: &str = "Owner reported by `F_OFD_GETLK`";
const RANGES: &str = "Byte ranges";
const UPGRADE: &str = "A refused upgrade keeps the shared lock (no window)";
const DEADLOCK: &str = "Deadlock detection (`EDEADLK`)";
const PYTHON: &str = "Interop with osbuild's Python locks (`F_OFD_SETLK`)";

/// The environment variable that makes this binary a helper process.
const HELPER_ENV: &str = "FSCACHE_PEER_HELPER";

/// Compare one row's measured answers with [`TABLE`], naming every wrong
/// cell at once.
fn check_row(row: &str, measure: impl Fn(&dyn Peer) -> String) {
    let (_, expected) = TABLE.iter().find(|(r, _)| *r == row).expect("row in TABLE");
    let wrong: Vec<String> = ALL
        .iter()
        .zip(expected)
        .filter_map(|(peer, want)| {
            let got = measure(*peer);
            (got != *want)
                .then(|| format!("{}: measured {got:?}, table says {want:?}", peer.name()))
        })
        .collect();
    assert!(wrong.is_empty(), "row {row:?}:\n  {}", wrong.join("\n  "));
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// Whether another open file description could lock `kind` on `path`
/// now, asked from this process. For POSIX peers the peer itself cannot
/// tell (a process never conflicts with its own locks), so the kernel is
/// asked through `F_OFD_GETLK`, which sees POSIX locks of this very
/// process (fcntl(2): OFD and classic locks conflict even then).
fn free_here(peer: &dyn Peer, path: &Path, kind: LockKind) -> bool {
    let probe = open(path);
    match peer.family() {
        Family::Posix => conflicting_range_lock(probe.as_fd(), kind, 0, 0)
            .unwrap()
            .is_none(),
        Family::Ofd | Family::Flock => peer.with(&probe, kind, Wait::Try, &mut || {}).unwrap(),
    }
}

/// Whether this process could take `kind` on `path` through `peer` and a
/// new open (the question when the holder is another process).
fn free_for_us(peer: &dyn Peer, path: &Path, kind: LockKind) -> bool {
    peer.with(&open(path), kind, Wait::Try, &mut || {}).unwrap()
}

#[test]
fn row_two_opens_in_one_process() {
    check_row(OPENS, |peer| {
        let tmp = temp();
        let (a, b) = (open(tmp.path()), open(tmp.path()));
        let mut second = None;
        assert!(peer
            .with(&a, Exclusive, Wait::Block, &mut || {
                second = Some(peer.with(&b, Exclusive, Wait::Try, &mut || {}).unwrap());
            })
            .unwrap());
        yes(!second.expect("the body ran"))
    });
}

#[test]
fn row_threads() {
    check_row(THREADS, |peer| {
        let tmp = temp();
        let (a, b) = (open(tmp.path()), open(tmp.path()));
        let (got_tx, got) = mpsc::channel::<&str>();
        let (release_tx, release) = mpsc::channel::<()>();
        thread::scope(|s| {
            let got_a = got_tx.clone();
            s.spawn(move || {
                let mut body = || {
                    got_a.send("a").unwrap();
                    let _ = release.recv();
                };
                assert!(peer.with(&a, Exclusive, Wait::Block, &mut body).unwrap());
            });
            assert_eq!(got.recv_timeout(EVENTUALLY), Ok("a"));
            // The answer comes from a try in the other thread (no timing);
            // if it is refused, that thread then waits and must wake.
            s.spawn(move || {
                let free = peer.with(&b, Exclusive, Wait::Try, &mut || {}).unwrap();
                got_tx.send(if free { "free" } else { "refused" }).unwrap();
                if !free {
                    let mut body = || got_tx.send("b").unwrap();
                    assert!(peer.with(&b, Exclusive, Wait::Block, &mut body).unwrap());
                }
            });
            let excluded = got.recv_timeout(EVENTUALLY) == Ok("refused");
            if excluded {
                assert!(got.recv_timeout(QUIET).is_err(), "the waiter waits");
            }
            release_tx.send(()).unwrap();
            if excluded {
                assert_eq!(got.recv_timeout(EVENTUALLY), Ok("b"), "the waiter wakes");
            }
            yes(excluded)
        })
    });
}

#[test]
fn row_dup_shares() {
    check_row(DUP, |peer| {
        let tmp = temp();
        let a = open(tmp.path());
        let mut shared = None;
        assert!(peer
            .with(&a, Exclusive, Wait::Block, &mut || {
                assert!(!free_here(peer, tmp.path(), Shared), "held");
                let dup = a.try_clone().unwrap();
                shared = Some(peer.with(&dup, Exclusive, Wait::Try, &mut || {}).unwrap());
            })
            .unwrap());
        yes(shared.expect("the body ran"))
    });
}

#[test]
fn row_closing_an_unrelated_fd() {
    check_row(CLOSE, |peer| {
        let tmp = temp();
        let a = open(tmp.path());
        let mut dropped = None;
        assert!(peer
            .with(&a, Exclusive, Wait::Block, &mut || {
                assert!(!free_here(peer, tmp.path(), Exclusive), "held");
                drop(File::open(tmp.path()).unwrap());
                dropped = Some(free_here(peer, tmp.path(), Exclusive));
            })
            .unwrap());
        yes(dropped.expect("the body ran"))
    });
}

#[test]
fn row_fork_child_inherits() {
    check_row(FORK, |peer| {
        let tmp = temp();
        let path = tmp.path();
        let mut parent = Helper::spawn(&format!("fork {} {}", peer.name(), path.display()));
        let line = parent.line();
        let pid: i32 = line
            .strip_prefix("child ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected `child PID`, got {line:?}"));
        let child = KillOnDrop(pid);
        assert!(!free_for_us(peer, path, Exclusive), "the parent holds it");
        parent.kill();
        let inherited = !free_for_us(peer, path, Exclusive);
        drop(child);
        assert!(
            eventually(|| free_for_us(peer, path, Exclusive)),
            "free once both are gone"
        );
        yes(inherited)
    });
}

#[test]
fn row_released_on_sigkill() {
    check_row(KILL, |peer| {
        let tmp = temp();
        let mut holder = Helper::try_lock(peer, Exclusive, tmp.path());
        assert_eq!(holder.line(), "locked");
        assert!(!free_for_us(peer, tmp.path(), Shared), "held by the helper");
        holder.kill();
        yes(free_for_us(peer, tmp.path(), Exclusive))
    });
}

#[test]
fn row_reported_owner() {
    check_row(OWNER, |peer| {
        let tmp = temp();
        let mut holder = Helper::try_lock(peer, Exclusive, tmp.path());
        assert_eq!(holder.line(), "locked");
        let probe = open(tmp.path());
        let seen = conflicting_range_lock(probe.as_fd(), Shared, 0, 0).unwrap();
        holder.kill();
        match seen.map(|c| c.owner) {
            None => "none".to_owned(),
            Some(LockOwner::OpenFile) => "pid -1".to_owned(),
            Some(LockOwner::Process(pid)) => {
                assert_eq!(pid, holder.pid, "the holder's pid");
                "pid".to_owned()
            }
        }
    });
}

#[test]
fn row_byte_ranges() {
    check_row(RANGES, |peer| {
        let tmp = temp();
        let a = open(tmp.path());
        let far = 1 << 40;
        let mut body = || {
            // Asked through F_OFD_GETLK from another open, which sees OFD
            // and POSIX locks alike: byte `far` is taken, `far + 1` free.
            let probe = open(tmp.path());
            let at = |start| conflicting_range_lock(probe.as_fd(), Exclusive, start, 1).unwrap();
            assert!(at(far).is_some(), "the locked byte");
            assert!(at(far + 1).is_none(), "the next byte");
            assert!(at(0).is_none(), "the start of the file");
        };
        match peer.with_range(&a, Exclusive, far, 1, &mut body) {
            None => "no".to_owned(),
            Some(r) => yes(r.unwrap()),
        }
    });
}

#[test]
fn row_refused_upgrade_keeps_the_shared_lock() {
    check_row(UPGRADE, |peer| {
        let tmp = temp();
        let path = tmp.path();
        // Another process reads, so the upgrade must be refused.
        let mut reader = Helper::try_lock(peer, Shared, path);
        assert_eq!(reader.line(), "locked");
        let mut kept = None;
        peer.try_upgrade(&open(path), &mut |upgraded| {
            assert!(!upgraded, "refused beside another reader");
            reader.release();
            // Is anything still held through our open? A writer in another
            // open (another process for POSIX locks) tells.
            kept = Some(!free_here(peer, path, Exclusive));
        })
        .unwrap();
        yes(kept.expect("then ran"))
    });
}

#[test]
fn row_deadlock_detection() {
    check_row(DEADLOCK, |peer| {
        let dir = tempfile::tempdir().unwrap();
        let [x, y] = ["x", "y"].map(|n| {
            let p = dir.path().join(n);
            File::create(&p).unwrap();
            p
        });
        let cmd = |a: &PathBuf, b: &PathBuf| {
            format!("deadlock {} {} {}", peer.name(), a.display(), b.display())
        };
        let mut first = Helper::spawn(&cmd(&x, &y));
        let mut second = Helper::spawn(&cmd(&y, &x));
        assert_eq!(first.line(), "locked");
        assert_eq!(second.line(), "locked");
        first.send("go");
        assert_eq!(first.line(), "asking");
        assert_eq!(first.line_within(QUIET), None, "waits for the second");
        second.send("go");
        assert_eq!(second.line(), "asking");
        // The cycle is closed: a detecting kernel refuses the request that
        // closes it at once; otherwise both wait until killed.
        let answer = second.line_within(QUIET);
        first.kill();
        second.kill();
        match answer {
            None => "no".to_owned(),
            Some(line) => {
                assert_eq!(line, format!("error {}", libc::EDEADLK), "EDEADLK");
                "yes".to_owned()
            }
        }
    });
}

#[test]
fn row_python_interop() {
    if !crate::lock_processes::python_ready("row_python_interop") {
        return;
    }
    check_row(PYTHON, |peer| {
        let tmp = temp();
        let path = tmp.path();
        let mut python = crate::lock_processes::python_lock(path, "exclusive");
        python.expect_line("locked");
        let we_see_python = !free_for_us(peer, path, Shared);
        python.finish();
        let mut python_sees_us = None;
        assert!(peer
            .with(&open(path), Exclusive, Wait::Block, &mut || {
                let mut python = crate::lock_processes::python_lock(path, "shared");
                python_sees_us = Some(python.next_line() == "contended");
                python.finish();
            })
            .unwrap());
        assert_eq!(Some(we_see_python), python_sees_us, "symmetric");
        yes(we_see_python)
    });
}

/// The README's table of the crate says, cell by cell, what [`TABLE`] says
/// (and so what the row tests above prove).
#[test]
fn readme_table_is_proven() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/fscache-lock/README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let heads: Vec<&str> = ALL.iter().map(|p| p.name()).collect();
    let header = readme
        .lines()
        .find(|l| l.starts_with("| ") && heads.iter().all(|h| l.contains(h)))
        .expect("the README has the peers table");
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().replace('*', ""))
            .collect()
    };
    let columns = cells(header);
    for (i, head) in heads.iter().enumerate() {
        assert!(columns[i + 1].contains(head), "column {} is {head}", i + 1);
    }
    for (row, answers) in TABLE {
        let line = readme
            .lines()
            .find(|l| cells(l).first().is_some_and(|c| *c == row))
            .unwrap_or_else(|| panic!("the README table has no row {row:?}"));
        let got = cells(line);
        assert_eq!(got.len(), 8, "row {row:?} has a cell per peer");
        for ((peer, answer), cell) in heads.iter().zip(answers).zip(&got[1..]) {
            let first = cell.split([',', ':', ';', '(']).next().unwrap_or("").trim();
            assert_eq!(first, answer, "row {row:?}, column {peer}: {cell:?}");
        }
    }
}

/// `fscache-lock`'s helper process for the rows above, not a test of its
/// own: without `FSCACHE_PEER_HELPER` it returns at once. With it, the
/// variable is a command (see [`helper_main`]) and answers go to stdout
/// as lines starting with `@ ` (libtest prints its own lines around them).
#[test]
fn peer_helper_entry() {
    if let Ok(command) = std::env::var(HELPER_ENV) {
        helper_main(&command);
        std::process::exit(0);
    }
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "@ {line}")
        .and_then(|()| out.flush())
        .expect("stdout");
}

/// Wait for a line on stdin (or its end): the test's "release".
fn wait_for_stdin() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// The helper's commands:
/// * `try PEER KIND PATH`: `locked` and hold until a stdin line, then
///   `released`; or `contended`.
/// * `deadlock PEER A B`: lock A exclusive (`locked`), wait for a stdin
///   line, then (`asking`) wait for B: `locked2`, or `error ERRNO`.
/// * `fork PEER PATH`: lock PATH exclusive, start a child (`sleep`) whose
///   stdin is a dup of the locked file, say `child PID`, hold forever.
/// * `sleep`: sleep a minute at most (the test kills it sooner).
fn helper_main(command: &str) {
    say(&format!("pid {}", std::process::id()));
    let words: Vec<&str> = command.split(' ').collect();
    let peer = |name: &str| peers::by_name(name).unwrap_or_else(|| panic!("no peer {name}"));
    let kind = |k: &str| match k {
        "shared" => Shared,
        "exclusive" => Exclusive,
        other => panic!("no kind {other}"),
    };
    match words.as_slice() {
        ["try", name, k, path] => {
            let got = peer(name)
                .with(&open(Path::new(path)), kind(k), Wait::Try, &mut || {
                    say("locked");
                    wait_for_stdin();
                })
                .unwrap();
            say(if got { "released" } else { "contended" });
        }
        ["deadlock", name, a, b] => {
            let peer = peer(name);
            let (a, b) = (open(Path::new(a)), open(Path::new(b)));
            peer.with(&a, Exclusive, Wait::Block, &mut || {
                say("locked");
                wait_for_stdin();
                say("asking");
                match peer.with(&b, Exclusive, Wait::Block, &mut || say("locked2")) {
                    Ok(_) => wait_for_stdin(),
                    Err(e) => say(&format!("error {}", e.raw_os_error().unwrap_or(0))),
                }
            })
            .unwrap();
        }
        ["fork", name, path] => {
            let file = open(Path::new(path));
            peer(name)
                .with(&file, Exclusive, Wait::Block, &mut || {
                    // Keep the command (and the dup it owns for the child's
                    // stdin) until the end: closing that dup here would
                    // drop a POSIX lock, the trap of another row.
                    let mut sleeper = Command::new(std::env::current_exe().unwrap());
                    sleeper
                        .args(helper_args())
                        .env(HELPER_ENV, "sleep")
                        .stdin(Stdio::from(file.try_clone().unwrap()))
                        .stdout(Stdio::null());
                    // Not waited for: the test kills it by pid, and this
                    // helper dies first (its zombie goes to init).
                    #[allow(clippy::zombie_processes)]
                    let child = sleeper.spawn().unwrap();
                    say(&format!("child {}", child.id()));
                    wait_for_stdin();
                    drop(sleeper);
                })
                .unwrap();
        }
        ["sleep"] => thread::sleep(Duration::from_secs(60)),
        _ => panic!("unknown helper command {command:?}"),
    }
}

/// The arguments that run only [`peer_helper_entry`] of this binary.
fn helper_args() -> [&'static str; 3] {
    ["--exact", "lock_peers::peer_helper_entry", "--nocapture"]
}

/// A helper process: this test binary run as [`peer_helper_entry`].
struct Helper {
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Helper {
    fn spawn(command: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(helper_args())
            .env(HELPER_ENV, command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the helper");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(said) = line.strip_prefix("@ ") {
                    if tx.send(said.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        let mut helper = Self {
            child,
            pid: 0,
            stdin,
            lines,
        };
        let first = helper.line();
        helper.pid = first
            .strip_prefix("pid ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected `pid N`, got {first:?}"));
        helper
    }

    fn try_lock(peer: &dyn Peer, kind: LockKind, path: &Path) -> Self {
        Self::spawn(&format!("try {} {kind} {}", peer.name(), path.display()))
    }

    fn line(&mut self) -> String {
        self.line_within(EVENTUALLY)
            .unwrap_or_else(|| panic!("the helper said nothing within {EVENTUALLY:?}"))
    }

    fn line_within(&mut self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap();
    }

    /// Tell a `try` helper to release, and wait until it has.
    fn release(&mut self) {
        self.send("release");
        assert_eq!(self.line(), "released");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process that is not our child (a helper's), killed on drop.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Whether `cond` holds within [`EVENTUALLY`], polled every 10 ms.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < EVENTUALLY {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}
