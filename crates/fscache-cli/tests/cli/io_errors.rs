//! Every I/O error survived: each command runs with one system call failing
//! (`strace -e inject=SYSCALL:error=ERRNO:when=K`), each occurrence in turn,
//! as SQLite's I/O-error tests do. After every run:
//!
//! * the command exits 0, 1 or 2, never panics, and a failure is one
//!   `error:` line on stderr;
//! * no false success: a command that exits 0 did its job (`rm` removed,
//!   `store` stored, `prune --to 0` and `clear` left no idle entry,
//!   `repair` left exact books);
//! * an interrupted call (`EINTR`) is retried: the run ends as a clean
//!   one does;
//! * after the next sweep (any `ls`) no `uuid-*` debris and no invalid
//!   entry is left;
//! * the books are never under-counted, every entry that loads is
//!   complete (its content is what was stored), and after one clean
//!   `prune --to 0` (live: no `repair`), `cache.size` is exactly the sum
//!   of the recorded sizes: books a failure left over heal.
//!
//! A run that hangs after a failed `close` (strace does not make the call,
//! so a lock on the descriptor stays held; Linux never does that) is
//! killed and checked as a crash: what it left must heal all the same.
//!
//! The default run takes a fast subset: per command and call, one of the
//! first, middle and last occurrences, with the errnos in turn (each class
//! of call and errno is met), and a run per class of failure a full sweep
//! found (`MUST`). `FSCACHE_IOERR_FULL=1` sweeps every occurrence with
//! every errno (`cargo xtask ioerr`); `FSCACHE_IOERR_JOBS=N` makes N runs at
//! a time, `FSCACHE_IOERR_ONLY=COMMAND[:CALL[:ERRNO]],…` narrows either
//! (`FSCACHE_IOERR_CALLS=openat2,fcntl`, what `cargo xtask ioerr --calls
//! openat2,fcntl` sets, keeps only those calls), `FSCACHE_IOERR_BIN` names
//! the binary to sweep. Needs `strace`, which
//! `cargo xtask ci` installs when it is missing; without it the test says
//! so and skips.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::{expect_code, new_cache, size_file, stderr, store, strace_works, tree, BIN};

/// The binary under test: `FSCACHE_IOERR_BIN` when set (`cargo xtask
/// ioerr` sweeps a copy, so a rebuild during the long run changes nothing),
/// else the one cargo built for this test.
fn bin() -> PathBuf {
    std::env::var_os("FSCACHE_IOERR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// The system calls to fail, as strace names them on x86_64 and aarch64.
const SYSCALLS: &[&str] = &[
    "openat",
    "openat2",
    "close",
    "wait4",
    "read",
    "write",
    "renameat2",
    "renameat",
    "unlinkat",
    "mkdirat",
    "linkat",
    "fcntl",
    "newfstatat",
    "statx",
    "fstat",
    "getdents64",
    "utimensat",
    "copy_file_range",
    "ioctl",
    "fsync",
];

/// A source tree to store: a few files whose content names them.
fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..3 {
        std::fs::write(
            src.join(format!("f{i}")),
            format!("file {i}\n").repeat(2000),
        )
        .unwrap();
    }
    std::fs::write(src.join("sub/deep"), b"deep\n").unwrap();
    src
}

/// Run the binary under test (see [`bin`]) with `args`.
fn fscache(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A cache near its limit with entries `a`, `b`, `c` (each a copy of
/// `src`), `b` the least recently used.
fn template(dir: &Path, src: &Path) -> PathBuf {
    let cache = dir.join("template");
    let c = cache.to_str().unwrap();
    assert!(fscache(&["set", c, "--max-size", "200K"]).status.success());
    for name in ["b", "a", "c"] {
        let o = fscache(&["store", c, name, src.to_str().unwrap()]);
        assert!(o.status.success(), "{o:?}");
    }
    cache
}

fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let s = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(s.success());
}

/// The commands under test, with `C` for the cache and `S` for the source.
fn commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["store", "C", "n", "S"],
        vec!["load", "C", "a", "--", "true"],
        vec!["cat", "C", "a", "f0"],
        vec!["rm", "C", "b"],
        vec!["prune", "C", "--to", "0"],
        vec!["ls", "C"],
        vec!["info", "C"],
        vec!["set", "C", "--max-size", "100K"],
        vec!["stage", "C", "--", "sh", "-c", "echo x > out"],
        vec!["clear", "C"],
        vec!["verify", "C", "--remove-bad"],
        vec!["repair", "C"],
    ]
}

/// Which occurrence of a call a [`MUST`] run fails.
#[derive(Clone, Copy)]
enum Pick {
    First,
    Last,
    /// The first whose strace line (in a clean run) contains this text,
    /// counted as strace's `when=` counts: per thread.
    Matching(&'static str),
}

/// Runs the subset always makes: (command, call, errno, which
/// occurrence), one per class of failure a sweep found. The counter's
/// update failing after a prune's or rm's removals, a removal's unlink
/// failing, the counter's lock and `fstat`, `openat2`, an interrupted wait
/// for a child; and interrupted calls (`EINTR`, found by the full sweep)
/// in the copy (its descriptor `dup`, a source file's `open` and `fstat`,
/// a `mkdir`), in a listing that must start over (the `F_GETFL` of the
/// eviction scan's rustix `Dir`), in a lock query (`F_OFD_GETLK`), and in
/// the open of a file in an entry.
const MUST: &[(&str, &str, &str, Pick)] = &[
    ("prune", "write", "ENOSPC", Pick::First),
    ("prune", "unlinkat", "EIO", Pick::First),
    ("prune", "renameat", "EIO", Pick::First),
    ("prune", "fcntl", "ENOLCK", Pick::Last),
    ("prune", "fstat", "EIO", Pick::Last),
    ("rm", "openat2", "EIO", Pick::Last),
    ("rm", "write", "ENOSPC", Pick::Last),
    ("store", "write", "EIO", Pick::Last),
    ("store", "renameat", "EIO", Pick::Last),
    ("clear", "unlinkat", "EIO", Pick::First),
    ("stage", "wait4", "EINTR", Pick::First),
    ("store", "fcntl", "EINTR", Pick::Matching("F_DUPFD")),
    ("store", "openat", "EINTR", Pick::Matching("\"f0\"")),
    ("store", "fstat", "EINTR", Pick::Matching("st_size=14000")),
    ("store", "mkdirat", "EINTR", Pick::Matching("\"sub\"")),
    (
        "store",
        "fcntl",
        "EINTR",
        Pick::Matching("O_NOFOLLOW|O_DIRECTORY"),
    ),
    ("prune", "fcntl", "EINTR", Pick::Matching("F_OFD_GETLK")),
    ("cat", "openat2", "EINTR", Pick::Matching("\"f0\"")),
];

/// The job a command that exits 0 must have done, checked on `cache`;
/// `stdout` is what it printed. An entry `prune` or `clear` left may only
/// be one it said it kept in use: a lock it found taken (`EACCES` and
/// `EAGAIN` are what `F_OFD_SETLK` says then, injected or not).
fn job_done(cmd: &[&str], cache: &Path, src: &Path, stdout: &str) -> Result<(), String> {
    let names = recorded(cache);
    let said_in_use = |n: &str| {
        stdout.lines().any(|l| {
            l == format!("kept {n}: in use") || l == format!("skipped {n}: in use by a reader")
        })
    };
    let idle_left: Vec<String> = names.keys().filter(|n| !said_in_use(n)).cloned().collect();
    match cmd[0] {
        "rm" if names.contains_key("b") => Err("`rm b` exited 0, `b` is still there".into()),
        "prune" | "clear" if !idle_left.is_empty() => Err(format!(
            "`{}` exited 0, entries are left: {idle_left:?}",
            cmd.join(" "),
        )),
        "store" => {
            let data = cache.join("objects/n/data");
            let same = ["f0", "f1", "f2", "sub/deep"]
                .iter()
                .all(|f| std::fs::read(data.join(f)).ok() == std::fs::read(src.join(f)).ok());
            if names.contains_key("n") && same {
                Ok(())
            } else {
                Err("`store` exited 0, `n` is not stored whole".into())
            }
        }
        "repair" if accounted(cache) != names.values().sum::<u64>() => {
            Err("`repair` exited 0, the books are not exact".into())
        }
        _ => Ok(()),
    }
}

fn args_for(cmd: &[&str], cache: &Path, src: &Path) -> Vec<String> {
    cmd.iter()
        .map(|a| match *a {
            "C" => cache.to_str().unwrap().to_owned(),
            "S" => src.to_str().unwrap().to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

/// The calls of `SYSCALLS` a clean run makes: per call, each one's strace
/// line and its occurrence as strace's `when=` counts it (per thread).
fn counts(args: &[String], dir: &Path) -> BTreeMap<String, Vec<(String, usize)>> {
    let log = dir.join("count.log");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .arg("-e")
        .arg(format!("trace={}", SYSCALLS.join(",")))
        .arg(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.code().is_some(), "{o:?}");
    let mut out = BTreeMap::<String, Vec<(String, usize)>>::new();
    let mut per_thread = BTreeMap::<(String, String), usize>::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        // "PID name(args…" or "name(args…"
        let mut words = line.split_whitespace();
        let pid = if line.contains(' ') && !line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            words.next().unwrap_or("").to_owned()
        } else {
            String::new()
        };
        let call = words
            .find(|w| w.contains('('))
            .and_then(|w| w.split('(').next())
            .unwrap_or("");
        if SYSCALLS.contains(&call) {
            let nth = per_thread.entry((pid, call.to_owned())).or_insert(0);
            *nth += 1;
            out.entry(call.to_owned())
                .or_default()
                .push((line.to_owned(), *nth));
        }
    }
    out
}

/// Sizes recorded in the entries' `object.info`, by name.
fn recorded(cache: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(cache.join("objects")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("uuid-") {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(e.path().join("object.info")) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            out.insert(name, v["size"].as_u64().unwrap());
        }
    }
    out
}

fn accounted(cache: &Path) -> u64 {
    std::fs::read_to_string(cache.join("cache.size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn leftovers(cache: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["objects", "stage"] {
        for e in std::fs::read_dir(cache.join(sub)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let invalid = sub == "objects"
                && !name.starts_with("uuid-")
                && !e.path().join("object.info").exists();
            if name.starts_with("uuid-") || invalid {
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    out
}

/// Check the invariants after one injected run; `what` names the run,
/// `clean` is the exit code of the same run without a failure.
/// `killed`: the run hung and was killed (after a failed `close`, see
/// `one_run`); only what it left is checked then.
fn check(cache: &Path, src: &Path, run: (&[&str], &Output, Option<i32>, bool), what: &str) {
    let (cmd, out, clean, killed) = run;
    let all = String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains("panicked"), "{what}: panic: {all}");
    // The child of `stage`/`load` (sh, true) is traced too: a call of its
    // own that fails is its own to report, and its exit code is passed on.
    let child = all.lines().any(|l| l.starts_with("sh:"));
    let stderr: String = all
        .lines()
        .filter(|l| !l.starts_with("sh:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let code = out.status.code();
    assert!(
        killed || matches!(code, Some(0..=2)),
        "{what}: exit {:?}: {stderr}",
        out.status
    );
    if code == Some(1) && !child {
        let lines: Vec<_> = stderr.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("error: "),
            "{what}: not one error line: {stderr:?}"
        );
    }
    if code == Some(0) {
        if let Err(m) = job_done(cmd, cache, src, &String::from_utf8_lossy(&out.stdout)) {
            panic!("{what}: false success: {m}");
        }
    }
    if what.ends_with("EINTR") && !child && !killed {
        assert_eq!(code, clean, "{what}: not retried: {stderr}");
    }
    // Never under-counted.
    let sum: u64 = recorded(cache).values().sum();
    assert!(
        accounted(cache) >= sum,
        "{what}: under-counted: cache.size {} < recorded {sum}",
        accounted(cache)
    );
    // The next listing sweeps what a failed cleanup left.
    let c = cache.to_str().unwrap();
    let ls = fscache(&["ls", c]);
    assert!(ls.status.success(), "{what}: ls after: {ls:?}");
    assert_eq!(leftovers(cache), Vec::<String>::new(), "{what}: debris");
    // Whatever loads is complete.
    for name in recorded(cache).keys() {
        let data = cache.join("objects").join(name).join("data");
        if name == "n" || ["a", "b", "c"].contains(&name.as_str()) {
            for f in ["f0", "f1", "f2", "sub/deep"] {
                assert_eq!(
                    std::fs::read(data.join(f)).ok(),
                    std::fs::read(src.join(f)).ok(),
                    "{what}: torn entry {name}: {f}"
                );
            }
        }
    }
    // One clean prune, live (no repair): the books are exact again.
    let p = fscache(&["prune", c, "--to", "0"]);
    assert!(p.status.success(), "{what}: the clean prune after: {p:?}");
    let sum: u64 = recorded(cache).values().sum();
    assert_eq!(
        accounted(cache),
        sum,
        "{what}: books after one clean prune (recorded {:?})",
        recorded(cache)
    );
}

/// One injected run: the command (its index in `commands()`), the call,
/// its occurrence and the errno.
struct Run {
    cmd: usize,
    call: String,
    k: usize,
    errno: &'static str,
}

/// Whether `FSCACHE_IOERR_ONLY` (a comma-separated list of `COMMAND` or
/// `COMMAND:CALL` or `COMMAND:CALL:ERRNO`, `*` for any command or call)
/// lets this run through; unset, all do.
fn selected(only: Option<&str>, cmd: &str, call: &str, errno: &str) -> bool {
    let Some(only) = only else { return true };
    only.split(',').any(|sel| {
        let mut parts = sel.split(':');
        parts.next().is_some_and(|c| c == cmd || c == "*")
            && parts.next().is_none_or(|c| c == call || c == "*")
            && parts.next().is_none_or(|e| e == errno)
    })
}

/// The payload of a caught panic, as text.
fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// How long one injected run may take before it counts as hung: a clean
/// run takes well under a second, even traced on a loaded machine. A run
/// with a failed `close` gets less: it may wait for itself (see below).
const HANG: std::time::Duration = std::time::Duration::from_secs(20);
const HANG_CLOSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a process of the group `pgid` is alive (a zombie is not: it
/// has closed its descriptors, released its locks).
fn group_alive(pgid: i32) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp …": comm may hold spaces, so split
        // after its closing parenthesis.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
    })
}

/// Make one run on a fresh copy of `template` at `cache` and check it;
/// `Err` holds what failed; `Ok(true)`: the run hung after a failed
/// `close`, which strace's injection makes and Linux never does (see below).
fn one_run(
    run: &Run,
    template: &Path,
    cache: &Path,
    src: &Path,
    clean: Option<i32>,
) -> Result<bool, String> {
    use std::os::unix::process::CommandExt;
    let cmd = &commands()[run.cmd];
    let args = args_for(cmd, cache, src);
    copy_tree(template, cache);
    // With `--seccomp-bpf` only the call under test stops the tracee (twice
    // as fast); its occurrences are counted as without it. The output goes
    // to files and the run is its own process group: a hung run is killed
    // whole, strace (which blocks SIGTERM with `-o`) and the tracee too.
    let call = &run.call;
    let out_path = cache.with_extension("stdout");
    let err_path = cache.with_extension("stderr");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "--seccomp-bpf", "-o", "/dev/null"])
        .arg(format!("--trace={call}"))
        .arg(format!(
            "--inject={call}:error={}:when={}",
            run.errno, run.k
        ))
        .arg(bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let limit = if call == "close" { HANG_CLOSE } else { HANG };
    let deadline = std::time::Instant::now() + limit;
    let (status, hung) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if std::time::Instant::now() > deadline {
            let pgid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            let status = child.wait().unwrap();
            // strace is reaped, but the tracee (its child, now init's) may
            // still be on its way out, its locks held: wait until no live
            // process is left in the group.
            let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while group_alive(pgid.as_raw_nonzero().get()) && std::time::Instant::now() < gone_by {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            break (status, true);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let out = Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    };
    let what = format!(
        "`fscache {}` with {call}#{} → {}",
        cmd.join(" "),
        run.k,
        run.errno
    );
    // strace fails a `close` by not making it: the descriptor stays open,
    // and an OFD lock on it stays held (fscache releases the locks of a
    // read-modify-write by closing, one `fcntl` less per update), so the
    // next lock of that file in the same process waits for itself. Linux
    // always releases the descriptor, whatever `close` returns, so this
    // cannot happen outside strace. Such a run is killed and checked as a
    // crash: what it left must heal as any crash's remains do.
    if hung && call != "close" {
        return Err(format!("{what}: hung (killed after {HANG:?})"));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(cache, src, (cmd, &out, clean, hung), &what)
    }))
    .map_err(panic_text)?;
    Ok(hung)
}

#[test]
fn every_injected_io_error_is_survived() {
    if !strace_works() {
        eprintln!("skipping: strace is missing or cannot trace here (cargo xtask ci installs it)");
        return;
    }
    let full = std::env::var_os("FSCACHE_IOERR_FULL").is_some();
    // `FSCACHE_IOERR_CALLS=openat2,fcntl` (`cargo xtask ioerr --calls
    // openat2,fcntl`): only those calls, of every command.
    let only = std::env::var("FSCACHE_IOERR_ONLY").ok().or_else(|| {
        std::env::var("FSCACHE_IOERR_CALLS").ok().map(|calls| {
            calls
                .split(',')
                .map(|c| format!("*:{c}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    });
    let jobs: usize = std::env::var("FSCACHE_IOERR_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(1)
        .max(1);
    const ERRNOS: &[&str] = &["EIO", "ENOSPC", "EACCES", "EPERM", "ENOLCK", "EINTR"];
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path());
    let template = template(tmp.path(), &src);
    let cache = tmp.path().join("cache");
    // The calls of the dynamic loader and of the runtime's start-up come
    // before the tool's own: a run that only prints its version makes them
    // all (and one write).
    let mut startup: BTreeMap<String, usize> = counts(&["--version".to_owned()], tmp.path())
        .into_iter()
        .map(|(call, seen)| (call, seen.len()))
        .collect();
    if let Some(w) = startup.get_mut("write") {
        *w = w.saturating_sub(1);
    }
    // The plan: every run, with the clean exit code of its command.
    let mut plan: Vec<Run> = Vec::new();
    let mut clean_codes = Vec::new();
    let mut rotation = 0usize;
    for (ci, cmd) in commands().iter().enumerate() {
        copy_tree(&template, &cache);
        let args = args_for(cmd, &cache, &src);
        let clean = fscache(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .status
            .code();
        clean_codes.push(clean);
        copy_tree(&template, &cache);
        let seen = counts(&args, tmp.path());
        for (call, lines) in &seen {
            let n = lines.len();
            let first = startup.get(call).copied().unwrap_or(0) + 1;
            if n < first {
                continue;
            }
            // Full: every occurrence with every errno. Subset: one
            // occurrence per command and call, the first, the middle or the
            // last, and the errnos taken in turn (which errno meets which
            // occurrence moves with the pair, so every errno meets every
            // class of call somewhere), and the reproductions of the reports
            // that found the classes of failure (`MUST`).
            let mut runs: Vec<(usize, &'static str)> = if full {
                (first..=n)
                    .flat_map(|k| ERRNOS.iter().map(move |e| (k, *e)))
                    .collect()
            } else {
                let turn = rotation;
                rotation += 1;
                let k = [first, (first + n) / 2, n][turn % 3];
                let mut runs = vec![(k, ERRNOS[turn % ERRNOS.len()])];
                for &(c, sys, errno, pick) in MUST {
                    if c != cmd[0] || sys != call.as_str() {
                        continue;
                    }
                    let k = match pick {
                        Pick::First => Some(first),
                        Pick::Last => Some(n),
                        Pick::Matching(text) => lines
                            .iter()
                            .find(|(line, _)| line.contains(text))
                            .map(|&(_, k)| k),
                    };
                    let k = k.unwrap_or_else(|| panic!("no `{sys}` matching in `{}`", cmd[0]));
                    runs.push((k, errno));
                }
                runs.dedup();
                runs
            };
            runs.retain(|(_, errno)| selected(only.as_deref(), cmd[0], call, errno));
            plan.extend(runs.into_iter().map(|(k, errno)| Run {
                cmd: ci,
                call: call.clone(),
                k,
                errno,
            }));
        }
    }
    eprintln!(
        "{} injected runs planned ({}), {jobs} at a time",
        plan.len(),
        if full { "full sweep" } else { "subset" }
    );
    // Workers take the runs in turn, each on a cache of its own; every
    // failing run is reported (at once, and at the end), not only the first.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let done = std::sync::Mutex::new(BTreeMap::<String, usize>::new());
    let hung = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..jobs {
            let (plan, next, failures, done, hung) = (&plan, &next, &failures, &done, &hung);
            let (template, src, clean_codes) = (&template, &src, &clean_codes);
            let cache = tmp.path().join(format!("cache-{w}"));
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(run) = plan.get(i) else { break };
                match one_run(run, template, &cache, src, clean_codes[run.cmd]) {
                    Err(m) => {
                        eprintln!("FAILED: {m}");
                        failures.lock().unwrap().push(m);
                    }
                    Ok(true) => {
                        hung.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(false) => {}
                }
                let mut done = done.lock().unwrap();
                *done.entry(commands()[run.cmd][0].to_owned()).or_insert(0) += 1;
                let total: usize = done.values().sum();
                if total % 500 == 0 {
                    eprintln!(
                        "{total}/{} runs, {} failing, {:.0} s",
                        plan.len(),
                        failures.lock().unwrap().len(),
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let runs = done.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "injected failures per command: {runs:?}; {} runs, {} failing, {} hung \
         after a failed close (killed, checked as crashes), {:.0} s",
        runs.values().sum::<usize>(),
        failures.len(),
        hung.into_inner(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failing runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    if only.is_none() {
        assert!(runs.values().sum::<usize>() > 50, "too few runs: {runs:?}");
    }
}

/// The report's reproduction: `strace -f -e
/// inject=write:error=ENOSPC:when=1 fscache prune C --to 0` on a cache of
/// 4 entries. The entries go, the failed counter write is reported with
/// what was removed (exit 1), and a second, clean prune makes the books
/// exact.
#[test]
fn a_prune_whose_counter_write_fails_says_so_and_the_next_heals_the_books() {
    if !strace_works() {
        eprintln!("skipping: strace is missing or cannot trace here (cargo xtask ci installs it)");
        return;
    }
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 50_000);
    for n in ["a", "b", "c", "d"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    let o = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg("inject=write:error=ENOSPC:when=1")
        .arg(BIN)
        .args([
            OsStr::new("prune"),
            cache.as_os_str(),
            OsStr::new("--to"),
            OsStr::new("0"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // The first write of the process is the counter's (prune prints after).
    expect_code(&o, 1);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("failed to uncharge") && err.contains("removed `a`"),
        "{err}"
    );
    // The prune's own reconcile may have healed the books already; one
    // clean prune surely does.
    expect_code(&fsc!("prune", cache, "--to", "0"), 0);
    assert!(std::fs::read_dir(cache.join("objects"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(size_file(&cache), 0);
    assert!(!cache.join("cache.size.suspect").exists());
}
