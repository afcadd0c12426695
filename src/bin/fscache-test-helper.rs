//! A helper process for the multi-process tests and the demo: takes locks
//! (and, later, other cache actions) on request and reports on stdout.
//!
//! Protocol: one subcommand per run, chosen by the first argument; the
//! helper prints one word per event on its own line to stdout and flushes it
//! at once, so a parent can read it line by line. Exit status: 0 on success
//! (contention is a success), 1 on an I/O error, 2 on a usage error.
//!
//! ```text
//! fscache-test-helper lock PATH shared|exclusive try|wait
//! ```
//!
//! `lock` opens the existing file PATH read-write (as a separate open file
//! description) and
//! * `try`: prints `locked` and holds the lock, or prints `contended` and
//!   exits at once;
//! * `wait`: prints `waiting for KIND lock on PATH`, blocks until the lock
//!   is granted, then prints `locked` and holds it.
//!
//! A held lock is kept until stdin reaches EOF (the parent closes its end or
//! dies), then released explicitly, and the helper exits 0.
//!
//! Cache subcommands (the multi-process and crash tests):
//!
//! ```text
//! fscache-test-helper stress CACHE SEED SECONDS [LIMIT]
//! fscache-test-helper crash-in-store CACHE NAME
//! fscache-test-helper crash-after-charge CACHE NAME
//! fscache-test-helper crash-at POINT CACHE NAME
//! fscache-test-helper crash-model POINT CACHE NAME SEED BLOCKS
//! fscache-test-helper store-model CACHE NAME SEED BLOCKS
//! fscache-test-helper hold CACHE NAME
//! fscache-test-helper build-once CACHE NAME LOG
//! fscache-test-helper serve CACHE APPID [committed|relaxed]
//! ```
//!
//! * `stress` opens the cache as appid `fscache-stress` (setting its
//!   maximum size to LIMIT bytes if given) and for SECONDS does
//!   random stores, loads, stages and a few removals (seeded by SEED) on
//!   the names `n00`..`n49`. Every stored entry carries a `DIGEST` file (see
//!   [`digest_dir`]) that every hit re-checks. It prints one JSON line of
//!   counters (`hits misses committed exists nospace toolarge stages
//!   evicted removed ops`) and
//!   exits 0; a hit whose content does not match prints `CORRUPT NAME` and
//!   exits 3; an error of the library prints `ERROR …` and exits 4.
//! * `crash-in-store` starts storing NAME, writes its data, prints `dying`
//!   and kills itself with `SIGKILL` before the commit.
//! * `crash-after-charge` does the same but dies inside the commit, at the
//!   hook point `commit:rename`: the size is charged and `object.info`
//!   written, the rename not done.
//! * `crash-at` is the general form: store NAME and commit, dying at the
//!   first time the hook POINT fires after the cache is open (see
//!   `fscache::FsCache::open_with_hook`); if it never fires, it prints
//!   `survived: OUTCOME` and exits 5.
//! * `crash-model` is the model test's crash: the entry holds the model's
//!   content, POINT may also be `fill` (die after writing the data), and
//!   at `remove:rmdir` it removes NAME instead of storing.
//! * `store-model` stores NAME with the model's content and prints the
//!   commit's outcome as `serve` does (the model test runs it under
//!   `strace` fault injection).
//! * `hold` loads NAME, prints `loaded` (and holds the read lock until stdin
//!   reaches EOF, then exits 0) or `miss` (and exits 0 at once).
//!
//! * `build-once` waits for a line on stdin (so a parent can start several
//!   at once), then `load_or_build`s NAME: the build appends one line to
//!   LOG, sleeps 300 ms and writes `data/f`. It prints `hit`, `built` or
//!   `uncached REASON`, then the content of `f`.
//!
//! * `serve` opens the cache as one handle of the model-based tests
//!   (appid APPID), prints `ready`, then answers each request line on
//!   stdin with one line on stdout, until stdin ends (everything held is
//!   then dropped). See [`serve`] for the requests; the answers are those
//!   of `tests/suite/model.rs` (`Outcome`).
//!
//! To add a subcommand, add an arm to the `match` in `run` and a line to the
//! usage text.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use fscache_lock::{FileLock, LockKind};
use fscache_workspace::model::{self, Handle, Outcome, Request};

const USAGE: &str = "\
usage: fscache-test-helper COMMAND ARGS...
commands:
  lock PATH shared|exclusive try|wait   lock PATH, report, hold until stdin EOF
  stress CACHE SEED SECONDS [LIMIT]     random loads/stores/stages, JSON counters
  crash-in-store CACHE NAME             store NAME, write data, SIGKILL itself
  crash-after-charge CACHE NAME         store NAME, SIGKILL itself at commit:rename
  crash-at POINT CACHE NAME             store NAME, SIGKILL itself at hook POINT
  hold CACHE NAME                       load NAME, hold it until stdin EOF
  build-once CACHE NAME LOG             after a stdin line, load_or_build NAME, logging builds
  serve CACHE APPID [DURABILITY]        one handle of the model tests: a request per stdin line";

/// Why the helper failed: a usage error (exit 2), an I/O error (exit 1), or
/// a verdict with its own exit status and stdout line.
enum Failure {
    Usage(String),
    Io(String, io::Error),
    Status(u8, String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("fscache-test-helper: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Io(what, e)) => {
            eprintln!("fscache-test-helper: {what}: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Status(code, line)) => {
            // stdout, so the parent reads the verdict with the counters.
            println!("{line}");
            ExitCode::from(code)
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["lock", path, kind, mode] => lock(path, parse_kind(kind)?, parse_mode(mode)?),
        ["lock", ..] => Err(Failure::Usage("`lock` takes 3 arguments".into())),
        ["stress", cache, seed, seconds] => {
            stress(cache, parse_num(seed)?, parse_num(seconds)?, None)
        }
        ["stress", cache, seed, seconds, limit] => stress(
            cache,
            parse_num(seed)?,
            parse_num(seconds)?,
            Some(parse_num(limit)?),
        ),
        ["stress", ..] => Err(Failure::Usage("`stress` takes 3 or 4 arguments".into())),
        ["crash-in-store", cache, name] => crash_in_store(cache, name),
        ["crash-after-charge", cache, name] => crash_at("commit:rename", cache, name),
        ["crash-at", point, cache, name] => crash_at(point, cache, name),
        ["crash-model", point, cache, name, seed, blocks] => {
            crash_model(point, cache, name, parse_num(seed)?, parse_num(blocks)?)
        }
        ["store-model", cache, name, seed, blocks] => {
            store_model(cache, name, parse_num(seed)?, parse_num(blocks)?)
        }
        ["store-model", ..] => Err(Failure::Usage("`store-model` takes 4 arguments".into())),
        ["crash-model", ..] => Err(Failure::Usage("`crash-model` takes 5 arguments".into())),
        ["hold", cache, name] => hold(cache, name),
        ["build-once", cache, name, log] => build_once(cache, name, log),
        ["build-once", ..] => Err(Failure::Usage("`build-once` takes 3 arguments".into())),
        ["serve", cache, appid] => serve(cache, appid, None),
        ["serve", cache, appid, durability] => serve(cache, appid, Some(durability)),
        ["serve", ..] => Err(Failure::Usage("`serve` takes 2 or 3 arguments".into())),
        [cmd @ ("crash-in-store" | "crash-after-charge" | "hold"), ..] => {
            Err(Failure::Usage(format!("`{cmd}` takes 2 arguments")))
        }
        ["crash-at", ..] => Err(Failure::Usage("`crash-at` takes 3 arguments".into())),
        [] => Err(Failure::Usage("missing command".into())),
        [other, ..] => Err(Failure::Usage(format!("unknown command `{other}`"))),
    }
}

/// Whether `lock` waits for the lock or gives up at once.
#[derive(Clone, Copy)]
enum Mode {
    Try,
    Wait,
}

fn parse_kind(s: &str) -> Result<LockKind, Failure> {
    match s {
        "shared" => Ok(LockKind::Shared),
        "exclusive" => Ok(LockKind::Exclusive),
        _ => Err(Failure::Usage(format!(
            "lock kind must be `shared` or `exclusive`, not `{s}`"
        ))),
    }
}

fn parse_mode(s: &str) -> Result<Mode, Failure> {
    match s {
        "try" => Ok(Mode::Try),
        "wait" => Ok(Mode::Wait),
        _ => Err(Failure::Usage(format!(
            "lock mode must be `try` or `wait`, not `{s}`"
        ))),
    }
}

fn lock(path: &str, kind: LockKind, mode: Mode) -> Result<(), Failure> {
    let io_err = |what: &str| {
        let what = format!("{what} `{path}`");
        move |e| Failure::Io(what, e)
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("failed to open"))?;
    let guard = match mode {
        Mode::Try => FileLock::try_lock(file, kind).map_err(io_err("failed to lock"))?,
        Mode::Wait => {
            say(&format!("waiting for {kind} lock on {path}"))?;
            Some(FileLock::lock(file, kind).map_err(io_err("failed to lock"))?)
        }
    };
    let Some(guard) = guard else {
        return say("contended");
    };
    say("locked")?;
    hold_until_stdin_eof()?;
    guard.unlock().map_err(io_err("failed to unlock"))?;
    Ok(())
}

/// Print one protocol line and flush it, so the parent sees it now.
fn say(line: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Io("failed to write stdout".into(), e))
}

/// Block until the parent closes our stdin (or dies); input is discarded.
fn hold_until_stdin_eof() -> Result<(), Failure> {
    io::copy(&mut io::stdin().lock(), &mut io::sink())
        .map(drop)
        .map_err(|e| Failure::Io("failed to read stdin".into(), e))
}

fn parse_num(s: &str) -> Result<u64, Failure> {
    s.parse()
        .map_err(|_| Failure::Usage(format!("expected a non-negative integer, not `{s}`")))
}

/// A library error: exit 4 with `ERROR …` on stdout.
fn lib_err(what: &str) -> impl FnOnce(fscache::Error) -> Failure + '_ {
    move |e| Failure::Status(4, format!("ERROR {what}: {e}"))
}

/// An I/O error on the helper's own files (not the library's).
fn io_err(what: String) -> impl FnOnce(io::Error) -> Failure {
    move |e| Failure::Io(what, e)
}

/// xorshift64*: a tiny seeded generator, plenty for picking operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's fixed point; spread small seeds apart.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for `n` far below 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The file holding the digest of an entry's other files.
const DIGEST: &str = "DIGEST";

/// Lower-case hex SHA-256 over the regular files of `dir` other than
/// `DIGEST`, in name order, each as its name, a NUL byte, its length (u64
/// little-endian) and its content. `Ok(None)` if `dir` holds anything but
/// regular files.
fn digest_dir(dir: &Path) -> io::Result<Option<String>> {
    use sha2::{Digest, Sha256};
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            return Ok(None);
        }
        let name = entry.file_name();
        if name != DIGEST {
            names.push(name);
        }
    }
    names.sort();
    let mut hash = Sha256::new();
    for name in names {
        let content = std::fs::read(dir.join(&name))?;
        hash.update(name.as_encoded_bytes());
        hash.update([0]);
        hash.update((content.len() as u64).to_le_bytes());
        hash.update(&content);
    }
    Ok(Some(
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

/// Bytes derived from `version` and `file`: what a store of that version
/// writes, so content is random but reproducible.
fn content(version: u64, file: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(version ^ file.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fill `data` with 1–6 files of 0–20 KiB derived from a random version,
/// and their `DIGEST`.
fn fill(data: &Path, rng: &mut Rng) -> Result<(), Failure> {
    let version = rng.next();
    for file in 0..1 + rng.below(6) {
        let len = rng.below(20 * 1024 + 1) as usize;
        let path = data.join(format!("f{file}"));
        std::fs::write(&path, content(version, file, len))
            .map_err(io_err(format!("failed to write `{}`", path.display())))?;
    }
    let digest = digest_dir(data)
        .map_err(io_err(format!("failed to digest `{}`", data.display())))?
        .expect("only files were written");
    let path = data.join(DIGEST);
    std::fs::write(&path, digest).map_err(io_err(format!("failed to write `{}`", path.display())))
}

/// Whether the loaded entry at `data` matches its `DIGEST`.
fn verify(data: &Path) -> bool {
    let Ok(recorded) = std::fs::read_to_string(data.join(DIGEST)) else {
        return false;
    };
    matches!(digest_dir(data), Ok(Some(d)) if d == recorded)
}

/// What `stress` counts.
#[derive(Default)]
struct Counters {
    hits: u64,
    misses: u64,
    committed: u64,
    exists: u64,
    nospace: u64,
    toolarge: u64,
    stages: u64,
    evicted: u64,
    removed: u64,
    ops: u64,
}

fn stress(cache: &str, seed: u64, seconds: u64, limit: Option<u64>) -> Result<(), Failure> {
    use fscache::{CacheInfo, FsCache, MaxSize, Stored};
    use std::time::{Duration, Instant};

    let cache = FsCache::open("fscache-stress", cache).map_err(lib_err("open"))?;
    if let Some(limit) = limit {
        cache
            .set_info(CacheInfo {
                maximum_size: Some(MaxSize::Bytes(limit)),
                ..Default::default()
            })
            .map_err(lib_err("set_info"))?;
    }
    let mut rng = Rng::new(seed);
    let mut n = Counters::default();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        n.ops += 1;
        let name = format!("n{:02}", rng.below(50));
        match rng.below(10) {
            0..=3 => {
                let w = cache.store(&name).map_err(lib_err("store"))?;
                fill(w.path(), &mut rng)?;
                let report = w.commit_report().map_err(lib_err("commit"))?;
                n.evicted += report.evicted.len() as u64;
                match report.stored {
                    Stored::Committed => n.committed += 1,
                    Stored::Exists => n.exists += 1,
                    Stored::NoSpace => n.nospace += 1,
                    Stored::TooLarge => n.toolarge += 1,
                    Stored::Incompatible => {
                        return Err(Failure::Status(4, "ERROR commit: incompatible".into()))
                    }
                }
            }
            4..=8 => match cache.load(&name).map_err(lib_err("load"))? {
                Some(entry) => {
                    if !verify(entry.path()) {
                        return Err(Failure::Status(3, format!("CORRUPT {name}")));
                    }
                    n.hits += 1;
                    std::thread::sleep(Duration::from_millis(rng.below(6)));
                    drop(entry);
                }
                None => n.misses += 1,
            },
            9 if rng.below(4) == 0 => {
                // Now and then a removal: it must never take what another
                // process holds, nor unbalance the books.
                if let fscache::Removed::Removed { .. } =
                    cache.remove(&name).map_err(lib_err("remove"))?
                {
                    n.removed += 1;
                }
            }
            _ => {
                let scratch = cache.stage().map_err(lib_err("stage"))?;
                let path = scratch.path().join("scratch");
                std::fs::write(&path, content(rng.next(), 0, 4096))
                    .map_err(io_err(format!("failed to write `{}`", path.display())))?;
                drop(scratch);
                n.stages += 1;
            }
        }
    }
    say(&format!(
        r#"{{"hits": {}, "misses": {}, "committed": {}, "exists": {}, "nospace": {}, "toolarge": {}, "stages": {}, "evicted": {}, "removed": {}, "ops": {}}}"#,
        n.hits,
        n.misses,
        n.committed,
        n.exists,
        n.nospace,
        n.toolarge,
        n.stages,
        n.evicted,
        n.removed,
        n.ops
    ))
}

/// Die now, the hard way: no destructors, no unlocks, no core dump.
fn die() -> ! {
    let _ = say("dying");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

fn crash_in_store(cache: &str, name: &str) -> Result<(), Failure> {
    let cache = fscache::FsCache::open("fscache-crash", cache).map_err(lib_err("open"))?;
    let w = cache.store(name).map_err(lib_err("store"))?;
    fill(w.path(), &mut Rng::new(1))?;
    die()
}

/// The cache at `cache`, opened with a hook that kills this process the
/// first time `point` fires after the open (the open itself never trips
/// it).
fn open_dying_at(cache: &str, point: &str) -> Result<fscache::FsCache, Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let point = fscache::HookPoint::from_name(point)
        .ok_or_else(|| Failure::Status(2, format!("unknown hook point `{point}`")))?;
    let armed = Arc::new(AtomicBool::new(false));
    let hook: fscache::Hook = {
        let armed = armed.clone();
        Arc::new(move |p: fscache::HookPoint, _: &Path| {
            if p == point && armed.load(Ordering::SeqCst) {
                die();
            }
        })
    };
    let cache = fscache::FsCache::open_with_hook("fscache-crash", cache, Some(hook))
        .map_err(lib_err("open"))?;
    armed.store(true, Ordering::SeqCst);
    Ok(cache)
}

fn crash_at(point: &str, cache: &str, name: &str) -> Result<(), Failure> {
    let cache = open_dying_at(cache, point)?;
    let w = cache.store(name).map_err(lib_err("store"))?;
    fill(w.path(), &mut Rng::new(1))?;
    let outcome = w.commit().map_err(lib_err("commit"))?;
    Err(Failure::Status(5, format!("survived: {outcome:?}")))
}

/// The model test's store under an injected I/O error: store NAME with the
/// model's content of SEED (BLOCKS pages), commit, and print `stored
/// OUTCOME EVICTED` (as `serve` answers `store`); an error exits 1.
fn store_model(cache: &str, name: &str, seed: u64, blocks: u64) -> Result<(), Failure> {
    let cache = fscache::FsCache::open("fscache-fault", cache).map_err(lib_err("open"))?;
    let w = cache.store(name).map_err(lib_err("store"))?;
    model::fill(w.path(), seed, blocks).map_err(io_err(format!(
        "failed to write `{}`",
        w.path().join("f").display()
    )))?;
    let r = w.commit_report().map_err(lib_err("commit"))?;
    say(&Outcome::Stored {
        stored: r.stored,
        evicted: r.evicted,
    }
    .to_string())
}

/// The model test's crash: store NAME with the model's content of SEED
/// (BLOCKS pages) and die at POINT: `fill` (the data written, before the
/// commit), or a hook point (see `crash-at`). At `remove:rmdir` the
/// process removes NAME instead of storing it. A point never reached
/// prints `survived: OUTCOME` and exits 5.
fn crash_model(
    point: &str,
    cache: &str,
    name: &str,
    seed: u64,
    blocks: u64,
) -> Result<(), Failure> {
    let fill = |dir: &Path| {
        model::fill(dir, seed, blocks).map_err(io_err(format!(
            "failed to write `{}`",
            dir.join("f").display()
        )))
    };
    if point == "fill" {
        let cache = fscache::FsCache::open("fscache-crash", cache).map_err(lib_err("open"))?;
        let w = cache.store(name).map_err(lib_err("store"))?;
        fill(w.path())?;
        die()
    }
    let cache = open_dying_at(cache, point)?;
    if point == fscache::HookPoint::RemoveRmdir.name() {
        let removed = cache.remove(name).map_err(lib_err("remove"))?;
        return Err(Failure::Status(5, format!("survived: {removed:?}")));
    }
    let w = cache.store(name).map_err(lib_err("store"))?;
    fill(w.path())?;
    let outcome = w.commit().map_err(lib_err("commit"))?;
    Err(Failure::Status(5, format!("survived: {outcome:?}")))
}

fn build_once(cache: &str, name: &str, log: &str) -> Result<(), Failure> {
    let cache = fscache::FsCache::builder("fscache-flight")
        .max_size_if_unset(fscache::MaxSize::Unlimited)
        .open(cache)
        .map_err(lib_err("open"))?;
    let mut go = String::new();
    io::stdin()
        .read_line(&mut go)
        .map_err(io_err("failed to read stdin".into()))?;
    let got = cache
        .load_or_build(name, |dir| -> io::Result<()> {
            let mut f = OpenOptions::new().append(true).create(true).open(log)?;
            writeln!(f, "{}", std::process::id())?;
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::fs::write(dir.join("f"), format!("built by {}", std::process::id()))
        })
        .map_err(io_err("load_or_build failed".into()))?;
    let what = match &got {
        fscache::Obtained::Hit(_) => "hit".to_string(),
        fscache::Obtained::Built(_) => "built".to_string(),
        fscache::Obtained::Uncached(t) => format!("uncached {:?}", t.reason()),
    };
    say(&what)?;
    let content = std::fs::read_to_string(got.path().join("f"))
        .map_err(io_err("failed to read the entry".into()))?;
    say(&content)
}

fn hold(cache: &str, name: &str) -> Result<(), Failure> {
    let cache = fscache::FsCache::open("fscache-hold", cache).map_err(lib_err("open"))?;
    let Some(entry) = cache.load(name).map_err(lib_err("load"))? else {
        return say("miss");
    };
    say("loaded")?;
    hold_until_stdin_eof()?;
    drop(entry);
    Ok(())
}

/// One handle of the model-based tests, driven over stdin: each line is a
/// [`Request`], answered with one line, the [`Outcome`] of
/// [`Handle::run`] (the wire format and the handle are
/// `fscache_workspace::model`, shared with the tests' in-process driver).
fn serve(cache: &str, appid: &str, durability: Option<&str>) -> Result<(), Failure> {
    use io::BufRead;
    let cache = match durability {
        None => fscache::FsCache::open(appid, cache),
        // The power-loss tests: digests recorded, so `verify` can tell a
        // damaged entry.
        Some(d) => fscache::FsCache::builder(appid)
            .durability(match d {
                "committed" => fscache::Durability::Committed,
                "relaxed" => fscache::Durability::Relaxed,
                other => return Err(Failure::Usage(format!("unknown durability `{other}`"))),
            })
            .record_digests(true)
            .open(cache),
    }
    .map_err(lib_err("open"))?;
    say("ready")?;
    let mut handle = Handle::new(cache);
    for line in io::stdin().lock().lines() {
        let line = line.map_err(io_err("failed to read stdin".into()))?;
        let answer = match Request::parse(&line) {
            Ok(request) => handle.run(&request),
            Err(e) => Outcome::Error(e),
        };
        say(&answer.to_string())?;
    }
    Ok(())
}
