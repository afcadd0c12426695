//! What the test modules share: running `fscache` (`fsc!`), exit codes
//! and errors checked with the output shown, temporary caches and trees,
//! a reader that holds an entry, and strace.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_fscache");

/// Run `fscache ARGS…`.
pub fn fscache<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fscache")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the exit code, showing the output when it differs.
#[track_caller]
pub fn expect_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
}

/// Assert a failure: exit 1, stderr starting `error: ` and mentioning
/// `needle`, never a panic or a backtrace.
#[track_caller]
pub fn expect_error(o: &Output, needle: &str) {
    expect_code(o, 1);
    let err = stderr(o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
}

/// `fscache ARGS…` with arguments of any string or path type.
macro_rules! fsc {
    ($($arg:expr),* $(,)?) => {
        $crate::util::fscache([$(AsRef::<::std::ffi::OsStr>::as_ref(&$arg)),*])
    };
}

#[track_caller]
pub fn json(o: &Output) -> Value {
    expect_code(o, 0);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// A fresh cache with the given limit, in a temporary directory.
pub fn new_cache(max: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    expect_code(&fsc!("set", cache, "--max-size", max), 0);
    (tmp, cache)
}

/// A source tree with one file of `bytes` bytes.
pub fn tree(dir: &Path, name: &str, bytes: usize) -> PathBuf {
    let t = dir.join(name);
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(t.join("sub/file"), vec![b'x'; bytes]).unwrap();
    std::fs::write(t.join("hello.txt"), format!("hello from {name}\n")).unwrap();
    t
}

pub fn store(cache: &Path, name: &str, src: &Path) -> Output {
    fscache([
        OsStr::new("store"),
        cache.as_os_str(),
        name.as_ref(),
        src.as_os_str(),
    ])
}

pub fn ls_json(cache: &Path) -> Vec<Value> {
    let v = json(&fsc!("ls", cache, "--json"));
    v.as_array().unwrap().clone()
}

pub fn names(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Set an entry's last use to `secs_ago` seconds ago.
pub fn age(cache: &Path, name: &str, secs_ago: u64) {
    let f = std::fs::File::open(cache.join("objects").join(name).join("object.lock")).unwrap();
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    f.set_times(std::fs::FileTimes::new().set_accessed(t))
        .unwrap();
}

/// Start `fscache load CACHE NAME -- sleep SECS` and wait until `ls` shows
/// the entry held.
/// A reader: `fscache load CACHE NAME -- sleep SECS`, in a process group of
/// its own so that [`stop`] ends the `sleep` too. Returns once it holds
/// the entry.
pub fn hold(cache: &Path, name: &str, secs: &str) -> Child {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(BIN)
        .args([OsStr::new("load"), cache.as_os_str(), name.as_ref()])
        .args(["--", "sleep", secs])
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let held = ls_json(cache)
            .iter()
            .any(|e| e["name"] == name && e["in_use"] == true);
        if held {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = stop(&mut child);
    panic!("the reader never took its lock: {status:?}");
}

/// Kill a [`hold`] reader's whole process group (the CLI and its command)
/// and reap it.
pub fn stop(child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    child.wait()
}

/// `fscache ARGS…` with `FSCACHE_DIR=dir`.
pub fn with_env<I, S>(dir: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .env("FSCACHE_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The number `cache.size` holds.
pub fn size_file(cache: &Path) -> u64 {
    std::fs::read_to_string(cache.join("cache.size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether strace runs and can trace here (`cargo xtask ci` installs it).
pub fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=none", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
