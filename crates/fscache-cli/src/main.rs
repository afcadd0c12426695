//! `fscache`: inspect, feed and maintain an fscache directory, safely
//! beside the builds that are using it right now.
//!
//! Every command goes through the public `fscache` facade and takes the
//! same locks as the library: `load`, `cat` and `stage` hold what a library
//! caller would hold, `rm` and `prune` never remove an entry a reader
//! holds, `set` updates `cache.info` under its lock and keeps unknown keys.
//!
//! ```text
//! fscache set  /var/cache/app --max-size 10G
//! fscache store /var/cache/app rpms ./rpms
//! fscache ls   /var/cache/app --sort size
//! fscache load /var/cache/app rpms -- ls -l
//! fscache prune /var/cache/app --unused-for 3d
//! ```
//!
//! # Exit codes
//!
//! `0` success; `1` an error (one line `error: …` on stderr naming the path
//! or name involved); `2` a miss (`load`, `cat`, `rm` of an absent name).
//! `load` and `stage` exit with the command's status.
//!
//! # Limitations
//!
//! * If `fscache load` itself is killed (`SIGKILL`), its read lock goes
//!   with it while the command it started may still run.
//! * `ls` reports "in use" as a snapshot: it may change the moment after.

#![forbid(unsafe_code)]

mod units;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use fscache::{
    format_bytes, parse_bytes, CacheInfo, EntryInfo, FsCache, MaxSize, PruneOptions, Removed,
    Stored,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::units::{format_age, parse_duration};

/// The application id the tool opens caches with (it seeds the boot id
/// written into the entries it stores).
const APPID: &str = "fscache-cli";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error: one line `error: …` on stderr naming the path or name involved
  2  miss: `load`, `cat` or `rm` of a name that is not in the cache
`load` and `stage` exit with the status of their command.

Every command takes the same locks as the fscache library, so it is safe
on a cache that builds are using right now.";

/// Inspect, feed and maintain an fscache directory (osbuild FsCache v1).
#[derive(Debug, Parser)]
#[command(name = "fscache", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show version, maximum size, accounted size, entries, size on disk
    /// and creation boot id.
    Info {
        /// The cache directory.
        cache: PathBuf,
        /// Print JSON (sizes in bytes).
        #[arg(long)]
        json: bool,
    },
    /// List entries: name, size, last use and whether a reader holds it now.
    Ls {
        /// The cache directory.
        cache: PathBuf,
        /// Order: `lru` (next to be evicted first), `size` (largest
        /// first) or `name`.
        #[arg(long, value_enum, default_value_t = Sort::Lru)]
        sort: Sort,
        /// Print JSON (sizes in bytes, times in seconds).
        #[arg(long)]
        json: bool,
    },
    /// Set the maximum size in `cache.info` (other keys kept); creates the
    /// cache if it does not exist.
    Set {
        /// The cache directory.
        cache: PathBuf,
        /// The new limit: `10G`, `512MiB`, `1.5GB`, `4096` or `unlimited`.
        #[arg(long, value_name = "SIZE", value_parser = parse_max_size, allow_hyphen_values = true)]
        max_size: MaxSize,
    },
    /// Store a copy of PATH as NAME; exits 0 only when it was stored.
    Store {
        /// The cache directory.
        cache: PathBuf,
        /// The entry's name.
        name: String,
        /// A directory (its contents become the entry's) or a file.
        path: PathBuf,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run CMD in NAME's data directory (also in $FSCACHE_ENTRY), holding
    /// the entry's read lock until CMD exits; exit with CMD's status.
    Load {
        /// The cache directory.
        cache: PathBuf,
        /// The entry's name.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Write one file of entry NAME to stdout, under the entry's read lock.
    Cat {
        /// The cache directory.
        cache: PathBuf,
        /// The entry's name.
        name: String,
        /// The file, relative to the entry's data directory.
        path: PathBuf,
    },
    /// Remove entries; an entry a reader holds is skipped, never removed.
    Rm {
        /// The cache directory.
        cache: PathBuf,
        /// The entries' names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove least-recently-used entries down to a size and/or entries
    /// unused for a while. Without --to or --unused-for: down to the
    /// maximum size in force.
    Prune {
        /// The cache directory.
        cache: PathBuf,
        /// Evict least-recently-used entries until at most SIZE is
        /// accounted (`10G`, `512MiB`).
        #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
        to: Option<u64>,
        /// Remove entries last used longer ago than DURATION (`30s`, `90m`,
        /// `12h`, `3d`, `1w`, `1h30m`).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
        unused_for: Option<Duration>,
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run CMD in a fresh scratch directory of the cache (also in
    /// $FSCACHE_STAGE), removed afterwards; exit with CMD's status.
    Stage {
        /// The cache directory.
        cache: PathBuf,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

/// The order of `ls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Sort {
    /// Least recently used first: the order eviction takes.
    Lru,
    /// Largest first.
    Size,
    /// By name.
    Name,
}

fn parse_max_size(s: &str) -> Result<MaxSize, String> {
    s.parse()
        .map_err(|e: fscache::ParseSizeError| e.to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_bytes(s).map_err(|e| e.to_string())
}

/// Why the tool stops: exit code and the one line to print on stderr.
#[derive(Debug)]
struct Fail {
    code: u8,
    message: String,
}

impl Fail {
    fn error(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: format!("error: {}", one_line(&message.into())),
        }
    }

    fn miss(message: impl Into<String>) -> Self {
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

type Outcome = Result<ExitCode, Fail>;

/// An error and its sources, one line: "failed to lock `x`: Permission
/// denied (os error 13)".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; every usage error is exit 1
            // (clap's own 2 would read as a miss).
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(fail) => {
            eprintln!("{}", fail.message);
            ExitCode::from(fail.code)
        }
    }
}

fn run(cmd: Cmd) -> Outcome {
    match cmd {
        Cmd::Info { cache, json } => info(&cache, json),
        Cmd::Ls { cache, sort, json } => ls(&cache, sort, json),
        Cmd::Set { cache, max_size } => set(&cache, max_size),
        Cmd::Store {
            cache,
            name,
            path,
            json,
        } => store(&cache, &name, &path, json),
        Cmd::Load {
            cache,
            name,
            command,
        } => load(&cache, &name, &command),
        Cmd::Cat { cache, name, path } => cat(&cache, &name, &path),
        Cmd::Rm { cache, names } => rm(&cache, &names),
        Cmd::Prune {
            cache,
            to,
            unused_for,
            dry_run,
            json,
        } => prune(
            &cache,
            PruneOptions {
                to,
                unused_for,
                dry_run,
            },
            json,
        ),
        Cmd::Stage { cache, command } => stage(&cache, &command),
    }
}

/// Open an existing cache; only `set` creates one.
fn open_existing(path: &Path) -> Result<FsCache, Fail> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => return Err(Fail::error(format!("`{shown}` is not a directory"))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::error(format!(
                "cache directory `{shown}` does not exist (create it with `fscache set {shown} --max-size SIZE`)"
            )))
        }
        Err(e) => return Err(Fail::error(format!("failed to access `{shown}`: {e}"))),
    }
    match std::fs::symlink_metadata(path.join("cache.info")) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::error(format!(
            "`{shown}` is not an fscache directory (no cache.info; create one with `fscache set`)"
        )))
        }
        // Let the open report anything else (e.g. permissions) precisely.
        Err(_) => {}
    }
    Ok(FsCache::open(APPID, path)?)
}

fn size_or_dash(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), format_bytes)
}

fn max_size_json(m: MaxSize) -> Value {
    match m {
        MaxSize::Bytes(n) => json!(n),
        MaxSize::Unlimited => json!("unlimited"),
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("a JSON value always serializes")
    );
}

fn info(path: &Path, as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    let info = cache.reload_info()?;
    let usage = cache.usage()?;
    let limit = info.limit();
    if as_json {
        print_json(&json!({
            "path": cache.path(),
            "version": info.version,
            "compatible": info.is_compatible(),
            "maximum_size": max_size_json(limit),
            "accounted_size": usage.accounted,
            "entries": usage.entries,
            "size_on_disk": usage.on_disk,
            "creation_boot_id": info.creation_boot_id,
        }));
    } else {
        let version = match info.version {
            Some(v) if info.is_compatible() => v.to_string(),
            Some(v) => format!("{v} (not supported: read-only to this tool)"),
            None => "- (missing: read-only to this tool)".to_owned(),
        };
        println!("cache:            {}", cache.path().display());
        println!("version:          {version}");
        println!("maximum size:     {limit}");
        println!("accounted size:   {}", format_bytes(usage.accounted));
        println!("entries:          {}", usage.entries);
        println!("size on disk:     {}", format_bytes(usage.on_disk));
        println!(
            "creation boot id: {}",
            info.creation_boot_id.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn age_of(t: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

fn ls(path: &Path, sort: Sort, as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    let mut entries = cache.entries()?;
    match sort {
        Sort::Lru => entries.sort_by(|a, b| a.last_use.cmp(&b.last_use).then(a.name.cmp(&b.name))),
        Sort::Size => entries.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name))),
        Sort::Name => entries.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    let now = SystemTime::now();
    if as_json {
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                let unix = e
                    .last_use
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                json!({
                    "name": e.name,
                    "size": e.size,
                    "last_use": unix,
                    "idle_seconds": age_of(e.last_use, now).as_secs(),
                    "in_use": e.in_use,
                })
            })
            .collect();
        print_json(&Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                size_or_dash(e.size),
                format!("{} ago", format_age(age_of(e.last_use, now))),
                if e.in_use { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    let header = ["NAME", "SIZE", "LAST USE", "IN USE"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    println!(
        "{:<w0$}  {:>w1$}  {:>w2$}  {}",
        header[0], header[1], header[2], header[3]
    );
    for [name, size, used, in_use] in &rows {
        println!("{name:<w0$}  {size:>w1$}  {used:>w2$}  {in_use}");
    }
    if rows.is_empty() {
        println!("(no entries)");
    }
    Ok(ExitCode::SUCCESS)
}

fn set(path: &Path, max_size: MaxSize) -> Outcome {
    let cache = FsCache::open(APPID, path)?;
    let before = cache.reload_info()?.limit();
    cache.set_info(CacheInfo {
        maximum_size: Some(max_size),
        ..Default::default()
    })?;
    let now = cache.info().limit();
    println!(
        "maximum size of {}: {now} (was {before})",
        cache.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn store(path: &Path, name: &str, src: &Path, as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    match std::fs::symlink_metadata(src) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::error(format!("`{}` does not exist", src.display())))
        }
        Err(e) => {
            return Err(Fail::error(format!(
                "failed to access `{}`: {e}",
                src.display()
            )))
        }
    }
    let before: Vec<String> = cache.entries()?.into_iter().map(|e| e.name).collect();
    let bar = progress_bar(src, name);
    let started = Instant::now();
    let mut shown = false;
    let outcome = cache.store_tree_with_progress(name, src, &mut |n| {
        let Some(bar) = &bar else { return };
        bar.inc(n);
        // Only a long copy earns a bar; a short one stays silent.
        if !shown && started.elapsed() > Duration::from_millis(500) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let stored = outcome?;
    let after = cache.entries()?;
    // Entries that vanished meanwhile: evicted to make room (or removed by
    // another process at the same time).
    let evicted: Vec<&String> = before
        .iter()
        .filter(|n| !after.iter().any(|e| &e.name == *n))
        .collect();
    let size = after.iter().find(|e| e.name == name).and_then(|e| e.size);
    let (word, why) = match stored {
        Stored::Committed => ("stored", None),
        Stored::Exists => ("exists", Some("an entry of that name exists already")),
        Stored::TooLarge => ("too-large", Some("larger than the cache's maximum size")),
        Stored::NoSpace => (
            "no-space",
            Some("no room even after evicting every idle entry"),
        ),
        Stored::Incompatible => (
            "incompatible",
            Some("the cache has a format version this tool does not write"),
        ),
    };
    if as_json {
        print_json(&json!({
            "name": name,
            "outcome": word,
            "size": if stored == Stored::Committed { size } else { None },
            "evicted": evicted,
        }));
    } else {
        if stored == Stored::Committed {
            println!("stored {name} ({})", size_or_dash(size));
        }
        for n in &evicted {
            println!("evicted {n}");
        }
    }
    match why {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => Err(Fail::error(format!("`{name}` not stored: {why}"))),
    }
}

/// A progress bar for copying `src`, drawn only when stderr is a terminal
/// (and, see the caller, only once the copy takes a while).
fn progress_bar(src: &Path, name: &str) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let total = fscache::tree_content_bytes(src).ok()?;
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(
        "storing {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    Some(bar)
}

/// The exit code for a child's status: its code, or 128 + the signal.
fn exit_code_of(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from((code & 0xff) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        (None, None) => ExitCode::FAILURE,
    }
}

fn run_in(dir: &Path, var: &str, command: &[OsString]) -> Outcome {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Fail::error("no command given after `--`"))?;
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env(var, dir)
        .status()
        .map_err(|e| {
            Fail::error(format!(
                "failed to run `{}`: {e}",
                program.to_string_lossy()
            ))
        })?;
    Ok(exit_code_of(status))
}

fn load(path: &Path, name: &str, command: &[OsString]) -> Outcome {
    let cache = open_existing(path)?;
    let Some(entry) = cache.load(name)? else {
        return Err(Fail::miss(format!(
            "no entry `{name}` in {}",
            cache.path().display()
        )));
    };
    // The entry stays read-locked until `entry` drops, after the command.
    let code = run_in(entry.path(), "FSCACHE_ENTRY", command);
    drop(entry);
    code
}

fn cat(path: &Path, name: &str, file: &Path) -> Outcome {
    if file.is_absolute() || file.components().any(|c| c == Component::ParentDir) {
        return Err(Fail::error(format!(
            "`{}`: give a path relative to the entry's data directory, without `..`",
            file.display()
        )));
    }
    let cache = open_existing(path)?;
    let Some(entry) = cache.load(name)? else {
        return Err(Fail::miss(format!(
            "no entry `{name}` in {}",
            cache.path().display()
        )));
    };
    // Beneath the entry's data directory: a symlink in the entry cannot
    // lead the read outside it.
    let dir = cap_std::fs::Dir::from_std_file(entry.open_dir()?);
    let shown = file.display();
    let mut f = match dir.open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::error(format!("no file `{shown}` in entry `{name}`")))
        }
        Err(e) => {
            return Err(Fail::error(format!(
                "failed to open `{shown}` in entry `{name}`: {e}"
            )))
        }
    };
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Fail::error(format!(
            "`{shown}` in entry `{name}` is a directory"
        )));
    }
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Fail::error(format!(
                    "failed to read `{shown}` in entry `{name}`: {e}"
                )))
            }
        };
        match out.write_all(&buf[..n]) {
            Ok(()) => {}
            // The reader went away (`| head`): not our failure.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(Fail::error(format!("failed to write to stdout: {e}"))),
        }
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Fail::error(format!("failed to write to stdout: {e}")))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn rm(path: &Path, names: &[String]) -> Outcome {
    let cache = open_existing(path)?;
    let mut worst: Option<Fail> = None;
    for name in names {
        let fail = match cache.remove(name) {
            Ok(Removed::Removed { freed }) => {
                println!("removed {name} (freed {})", format_bytes(freed));
                continue;
            }
            Ok(Removed::InUse) => Fail::error(format!("`{name}` is in use by a reader; skipped")),
            Ok(Removed::Missing) => {
                Fail::miss(format!("no entry `{name}` in {}", cache.path().display()))
            }
            Err(e) => Fail::from(e),
        };
        // Report every name; exit with the gravest: error (1) over miss (2).
        eprintln!("{}", fail.message);
        if worst.as_ref().is_none_or(|w| w.code == 2) {
            worst = Some(fail);
        }
    }
    Ok(worst.map_or(ExitCode::SUCCESS, |w| ExitCode::from(w.code)))
}

fn prune(path: &Path, opts: PruneOptions, as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    let sizes: Vec<EntryInfo> = cache.entries()?;
    let size_of = |n: &str| sizes.iter().find(|e| e.name == n).and_then(|e| e.size);
    let report = cache.prune(opts)?;
    if as_json {
        print_json(&json!({
            "dry_run": report.dry_run,
            "removed": report.removed,
            "skipped": report.skipped,
            "freed": report.freed,
            "accounted_size": report.accounted,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for n in &report.removed {
        println!("{verb} {n} ({})", size_or_dash(size_of(n)));
    }
    for n in &report.skipped {
        println!("kept {n}: in use");
    }
    let limit = cache.info().limit();
    if report.dry_run {
        println!(
            "would free {} of {} accounted (maximum {limit}); nothing removed",
            format_bytes(report.freed),
            format_bytes(report.accounted),
        );
    } else {
        println!(
            "freed {}; accounted size now {} (maximum {limit})",
            format_bytes(report.freed),
            format_bytes(report.accounted),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn stage(path: &Path, command: &[OsString]) -> Outcome {
    let cache = open_existing(path)?;
    let scratch = cache.stage()?;
    let code = run_in(scratch.path(), "FSCACHE_STAGE", command);
    // Removed here, whatever the command left in it.
    drop(scratch);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

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

    #[test]
    fn child_statuses_become_exit_codes() {
        assert_eq!(
            exit_code_of(ExitStatus::from_raw(3 << 8)),
            ExitCode::from(3)
        );
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), ExitCode::from(137));
    }
}
