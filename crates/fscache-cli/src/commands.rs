//! The commands: each opens the cache through the `fscache` facade, does
//! its work under the library's locks, and prints its report.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fscache::{
    format_bytes, CacheInfo, EntryInfo, FsCache, MaxSize, PruneOptions, Removed, Stored,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::args::{Sort, APPID};
use crate::fail::{Fail, Outcome};
use crate::units::format_age;

pub(crate) fn run(cmd: crate::args::Cmd) -> Outcome {
    match cmd {
        crate::args::Cmd::Info { cache, json } => info(&cache, json),
        crate::args::Cmd::Ls { cache, sort, json } => ls(&cache, sort, json),
        crate::args::Cmd::Set { cache, max_size } => set(&cache, max_size),
        crate::args::Cmd::Store {
            cache,
            name,
            path,
            json,
        } => store(&cache, &name, &path, json),
        crate::args::Cmd::Load {
            cache,
            name,
            command,
        } => load(&cache, &name, &command),
        crate::args::Cmd::Cat { cache, name, path } => cat(&cache, &name, &path),
        crate::args::Cmd::Rm { cache, names } => rm(&cache, &names),
        crate::args::Cmd::Prune {
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
        crate::args::Cmd::Stage { cache, command } => stage(&cache, &command),
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
    // Check before copying: a copy of a large tree costs seconds only to
    // be discarded. (Another process may still win the name meanwhile; the
    // commit reports that too.)
    let report = if cache.contains(name)? {
        None
    } else {
        let guard = cache.store(name)?;
        let bar = progress_bar(src, name);
        let started = Instant::now();
        let mut shown = false;
        let copied = guard.copy_from(src, &mut |n| {
            let Some(bar) = &bar else { return Ok(()) };
            bar.inc(n);
            // Only a long copy earns a bar; a short one stays silent.
            if !shown && started.elapsed() > Duration::from_millis(500) {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                shown = true;
            }
            Ok(())
        });
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        copied?;
        Some(guard.commit_report()?)
    };
    let (stored, evicted, size) = match report {
        Some(r) => (r.stored, r.evicted, Some(r.size)),
        None => (Stored::Exists, Vec::new(), None),
    };
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

    #[test]
    fn child_statuses_become_exit_codes() {
        assert_eq!(
            exit_code_of(ExitStatus::from_raw(3 << 8)),
            ExitCode::from(3)
        );
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), ExitCode::from(137));
    }
}
