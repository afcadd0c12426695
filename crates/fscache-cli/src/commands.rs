//! The commands: each opens the cache through the `fscache` facade, does
//! its work under the library's locks, and prints its report.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::CommandFactory;
use fscache::{
    format_bytes, CacheInfo, EntryInfo, FsCache, MaxSize, PruneOptions, Removed, Stored, Swept,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::args::{given_once, name_arg, split_cache, split_cache_variadic, Cli, Cmd, Sort, APPID};
use crate::fail::{Fail, Gravest, Outcome};
use crate::output::{self, detail, note, outln};
use crate::signals::{self, Signals};
use crate::units::format_age;

pub(crate) fn run(cli: Cli) -> Outcome {
    let g = &cli.global;
    match cli.command {
        Cmd::Info { cache, json } => info(&given_once(g, cache)?, json),
        Cmd::Ls { cache, sort, json } => ls(&given_once(g, cache)?, sort, json),
        Cmd::Set {
            cache,
            max_size,
            prune,
            json,
        } => set(&given_once(g, cache)?, max_size, prune, json),
        Cmd::Store {
            args,
            fail_if_exists,
            json,
        } => {
            let (cache, rest) = split_cache(g, args, 2)?;
            let [name, src] = two(rest)?;
            let exists = if fail_if_exists {
                IfExists::Fail
            } else {
                IfExists::Succeed
            };
            store(&cache, &name_arg(name)?, Path::new(&src), exists, json)
        }
        Cmd::Load {
            args,
            command,
            remote,
        } => {
            let (cache, rest) = split_cache(g, args, 1)?;
            let [name] = <[OsString; 1]>::try_from(rest).map_err(|_| usage())?;
            match remote.filter(|r| !r.is_empty()) {
                Some(url) => crate::remote::load(&cache, &name_arg(name)?, &command, &url),
                None => load(&cache, &name_arg(name)?, &command),
            }
        }
        Cmd::Cat { args } => {
            let (cache, rest) = split_cache(g, args, 2)?;
            let [name, file] = two(rest)?;
            cat(&cache, &name_arg(name)?, Path::new(&file))
        }
        Cmd::Rm { args, json } => {
            let (cache, rest) = split_cache_variadic(g, args)?;
            let names = rest
                .into_iter()
                .map(name_arg)
                .collect::<Result<Vec<_>, _>>()?;
            rm(&cache, &names, json)
        }
        Cmd::Clear { cache, json } => clear(&given_once(g, cache)?, json),
        Cmd::Push { args, remote, json } => {
            let (cache, rest) = split_cache_variadic(g, args)?;
            let names = rest
                .into_iter()
                .map(name_arg)
                .collect::<Result<Vec<_>, _>>()?;
            crate::remote::push(&cache, &names, &remote, json)
        }
        Cmd::Pull { args, remote, json } => {
            let (cache, rest) = split_cache_variadic(g, args)?;
            let names = rest
                .into_iter()
                .map(name_arg)
                .collect::<Result<Vec<_>, _>>()?;
            crate::remote::pull(&cache, &names, &remote, json)
        }
        Cmd::Remote { command } => crate::remote::remote(command),
        Cmd::Prune {
            cache,
            to,
            unused_for,
            dry_run,
            json,
        } => prune(
            &given_once(g, cache)?,
            PruneOptions {
                to,
                unused_for,
                dry_run,
            },
            json,
        ),
        Cmd::Repair { cache, json } => repair(&given_once(g, cache)?, json),
        Cmd::Stats { cache, json, zero } => stats(&given_once(g, cache)?, json, zero),
        Cmd::Verify {
            cache,
            names,
            remove_bad,
            json,
        } => verify(&given_once(g, cache)?, &names, remove_bad, json),
        Cmd::Stage { cache, command } => stage(&given_once(g, cache)?, &command),
        Cmd::Completions { shell } => completions(shell),
        Cmd::Manpage { dir } => manpage(dir.as_deref()),
    }
}

fn usage() -> Fail {
    Fail::error("wrong number of arguments (see `fscache help`)")
}

fn two(args: Vec<OsString>) -> Result<[OsString; 2], Fail> {
    <[OsString; 2]>::try_from(args).map_err(|_| usage())
}

/// Open an existing cache; only `set` creates one.
pub(crate) fn open_existing(path: &Path) -> Result<FsCache, Fail> {
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

/// Sweep the debris of dead writers; `None` when the cache's version is
/// not ours to modify.
fn sweep(cache: &FsCache) -> Result<Option<Swept>, Fail> {
    match cache.sweep() {
        Ok(swept) => Ok(Some(swept)),
        Err(fscache::Error::Incompatible { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn info(path: &Path, as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    let info = cache.reload_info()?;
    let before = cache.usage()?;
    let swept = sweep(&cache)?;
    let removed = swept.as_ref().map_or(0, |s| s.removed.len());
    // Walk again only when something went; the difference is the debris's
    // size (approximate while others write).
    let usage = if removed == 0 { before } else { cache.usage()? };
    let debris_bytes = before.on_disk.saturating_sub(usage.on_disk);
    let limit = info.limit();
    if as_json {
        return output::json(&json!({
            "path": cache.path(),
            "version": info.version,
            "compatible": info.is_compatible(),
            "maximum_size": max_size_json(limit),
            "accounted_size": usage.accounted,
            "entries": usage.entries,
            "size_on_disk": usage.on_disk,
            "creation_boot_id": info.creation_boot_id,
            "debris": swept.as_ref().map(|s| json!({
                "removed": s.removed,
                "size_on_disk": debris_bytes,
                "uncharged": s.freed,
            })),
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    let version = match info.version {
        Some(v) if info.is_compatible() => v.to_string(),
        Some(v) => format!("{v} (not supported: read-only to this tool)"),
        None => "- (missing: read-only to this tool)".to_owned(),
    };
    let debris = match &swept {
        None => "not swept (read-only to this tool)".to_owned(),
        Some(_) if removed == 0 => "none".to_owned(),
        Some(s) => format!(
            "{removed} {}, {}, removed",
            if removed == 1 { "item" } else { "items" },
            format_bytes(debris_bytes.max(s.freed))
        ),
    };
    outln!("cache:            {}", cache.path().display())?;
    outln!("version:          {version}")?;
    outln!("maximum size:     {limit}")?;
    outln!("accounted size:   {}", format_bytes(usage.accounted))?;
    outln!("entries:          {}", usage.entries)?;
    outln!("size on disk:     {}", format_bytes(usage.on_disk))?;
    outln!(
        "creation boot id: {}",
        info.creation_boot_id.as_deref().unwrap_or("-")
    )?;
    outln!("debris:           {debris}")?;
    for n in swept.iter().flat_map(|s| &s.removed) {
        detail!("  removed {n}")?;
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
        output::json(&Value::Array(list))?;
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
    outln!(
        "{:<w0$}  {:>w1$}  {:>w2$}  {}",
        header[0],
        header[1],
        header[2],
        header[3]
    )?;
    for [name, size, used, in_use] in &rows {
        outln!("{name:<w0$}  {size:>w1$}  {used:>w2$}  {in_use}")?;
    }
    if rows.is_empty() {
        note!("(no entries)")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn set(path: &Path, max_size: MaxSize, do_prune: bool, as_json: bool) -> Outcome {
    let cache = FsCache::open(APPID, path)?;
    let before = cache.reload_info()?.limit();
    cache.set_info(CacheInfo {
        maximum_size: Some(max_size),
        ..Default::default()
    })?;
    let now = cache.info().limit();
    // A dry run down to the limit now in force: the accounted size, and
    // what a prune would remove.
    let plan = cache.prune(PruneOptions {
        dry_run: true,
        ..Default::default()
    })?;
    let over = matches!(now, MaxSize::Bytes(m) if plan.accounted > m);
    let pruned = if over && do_prune {
        Some(cache.prune(PruneOptions::default())?)
    } else {
        None
    };
    if as_json {
        return output::json(&json!({
            "path": cache.path(),
            "maximum_size": max_size_json(now),
            "previous_maximum_size": max_size_json(before),
            "accounted_size": pruned.as_ref().map_or(plan.accounted, |p| p.accounted),
            "over_limit": over && pruned.is_none(),
            "pruned": pruned.as_ref().map(|p| json!({
                "removed": p.removed,
                "skipped": p.skipped,
                "freed": p.freed,
            })),
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    note!(
        "maximum size of {}: {now} (was {before})",
        cache.path().display()
    )?;
    match pruned {
        Some(p) => {
            for n in &p.removed {
                note!("removed {n}")?;
            }
            for n in &p.skipped {
                note!("kept {n}: in use")?;
            }
            note!(
                "freed {}; accounted size now {}",
                format_bytes(p.freed),
                format_bytes(p.accounted)
            )?;
        }
        None if over => {
            note!(
                "the cache holds {}, over the new maximum: the next store evicts,",
                format_bytes(plan.accounted)
            )?;
            note!(
                "or `fscache prune` (or `set --prune`) removes {} {} now",
                plan.removed.len(),
                if plan.removed.len() == 1 {
                    "entry"
                } else {
                    "entries"
                }
            )?;
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// What `store` does when the name exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IfExists {
    /// Leave the entry, report it, exit 0.
    Succeed,
    /// Leave the entry, exit 1 (`--fail-if-exists`).
    Fail,
}

fn store(path: &Path, name: &str, src: &Path, if_exists: IfExists, as_json: bool) -> Outcome {
    let signals = Signals::catch()?;
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
        signals.check(|| format!("`{name}` not stored"))?;
        let guard = cache.store(name)?;
        let bar = progress_bar(src, name);
        let started = Instant::now();
        let mut shown = false;
        // Copy and commit in one step, so the tree digest the copy computes
        // is recorded (`fscache verify` checks it later).
        let committed = guard.commit_tree(src, &mut |n| {
            // Stop the copy: the guard drops, which removes the partial
            // copy (a removal that fails leaves debris the next sweep takes).
            if signals.caught().is_some() {
                return Err(io::ErrorKind::Interrupted.into());
            }
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
        if let (Err(_), Some(sig)) = (&committed, signals.caught()) {
            return Err(signals::stopped(
                sig,
                format!("`{name}` not stored, its partial copy removed"),
            ));
        }
        let report = committed?;
        detail!("copied in {:.1}s", started.elapsed().as_secs_f64())?;
        Some(report)
    };
    let (stored, evicted, size) = match report {
        Some(r) => (r.stored, r.evicted, Some(r.size)),
        None => (Stored::Exists, Vec::new(), None),
    };
    let (word, why) = match stored {
        Stored::Committed => ("stored", None),
        Stored::Exists if if_exists == IfExists::Succeed => ("exists", None),
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
        output::json(&json!({
            "name": name,
            "outcome": word,
            "size": if stored == Stored::Committed { size } else { None },
            "evicted": evicted,
        }))?;
    } else {
        match stored {
            Stored::Committed => note!("stored {name} ({})", size_or_dash(size))?,
            Stored::Exists if why.is_none() => {
                note!("{name} exists already; left as it is, nothing copied")?;
            }
            _ => {}
        }
        for n in &evicted {
            note!("evicted {n}")?;
        }
    }
    // The signal came during the commit, which finished: say so.
    signals.check(|| format!("stopped after `{name}` was {word}"))?;
    match why {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => Err(Fail::error(format!("`{name}` not stored: {why}"))),
    }
}

/// A progress bar for copying `src`, drawn only when stderr is a terminal
/// (and, see the caller, only once the copy takes a while).
fn progress_bar(src: &Path, name: &str) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() || !output::chatty() {
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

/// Run `command` in `dir` and wait for it. A stop signal sent to us is
/// passed on to the command (a Ctrl-C reaches both of us anyway), and once
/// it has exited we stop with 128 + N; `after` says what the caller's
/// guard will have undone by then.
pub(crate) fn run_in(
    dir: &Path,
    var: &str,
    command: &[OsString],
    signals: &Signals,
    after: &str,
) -> Outcome {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Fail::error("no command given after `--`"))?;
    let shown = program.to_string_lossy();
    signals.check(|| format!("`{shown}` not run; {after}"))?;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env(var, dir)
        .spawn()
        .map_err(|e| Fail::error(format!("failed to run `{shown}`: {e}")))?;
    let pid = rustix::process::Pid::from_child(&child);
    let mut forwarded = false;
    // Poll rather than block in wait(): a blocked wait would not notice
    // the signal (its handler only sets a flag, and the wait restarts).
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Fail::error(format!("failed to wait for `{shown}`: {e}"))),
        }
        if let (Some(sig), false) = (signals.caught(), forwarded) {
            // It may have gone meanwhile: then there is nobody to tell.
            let _ = rustix::process::kill_process(pid, signals::to_rustix(sig));
            forwarded = true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    signals.check(|| format!("`{shown}` ended ({status}); {after}"))?;
    Ok(exit_code_of(status))
}

fn load(path: &Path, name: &str, command: &[OsString]) -> Outcome {
    let signals = Signals::catch()?;
    let cache = open_existing(path)?;
    let Some(entry) = cache.load(name)? else {
        return Err(Fail::miss(format!(
            "no entry `{name}` in {}",
            cache.path().display()
        )));
    };
    // The entry stays read-locked until `entry` drops, after the command.
    let after = format!("`{name}` released");
    let code = run_in(entry.path(), "FSCACHE_ENTRY", command, &signals, &after);
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
        out.write_all(&buf[..n])
            .map_err(|e| output::stdout_failed(&e))?;
    }
    out.flush().map_err(|e| output::stdout_failed(&e))?;
    Ok(ExitCode::SUCCESS)
}

fn rm(path: &Path, names: &[String], as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    let mut gravest = Gravest::default();
    let (mut removed, mut in_use, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let fail = match cache.remove(name) {
            Ok(Removed::Removed { freed }) => {
                if !as_json {
                    note!("removed {name} (freed {})", format_bytes(freed))?;
                }
                removed.push(json!({"name": name, "freed": freed}));
                continue;
            }
            Ok(Removed::InUse) => {
                in_use.push(name);
                Fail::error(format!("`{name}` is in use by a reader; skipped"))
            }
            Ok(Removed::Missing) => {
                missing.push(name);
                Fail::miss(format!("no entry `{name}` in {}", cache.path().display()))
            }
            Err(e) => Fail::from(e),
        };
        gravest.report(fail);
    }
    if as_json {
        output::json(&json!({
            "removed": removed,
            "in_use": in_use,
            "missing": missing,
        }))?;
    }
    Ok(gravest.code())
}

fn clear(path: &Path, as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    let mut removed = Vec::new();
    let mut skipped = Vec::new();
    let mut freed = 0u64;
    for e in cache.entries()? {
        match cache.remove(&e.name)? {
            Removed::Removed { freed: f } => {
                freed = freed.saturating_add(f);
                if !as_json {
                    note!("removed {} ({})", e.name, format_bytes(f))?;
                }
                removed.push(e.name);
            }
            Removed::InUse => {
                if !as_json {
                    note!("skipped {}: in use by a reader", e.name)?;
                }
                skipped.push(e.name);
            }
            // Removed by someone else since the listing: nothing to do.
            Removed::Missing => {}
        }
    }
    if as_json {
        return output::json(&json!({
            "removed": removed,
            "skipped": skipped,
            "freed": freed,
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    let entries = |n: usize| if n == 1 { "entry" } else { "entries" };
    note!(
        "removed {} {}, freed {}; skipped {} in use",
        removed.len(),
        entries(removed.len()),
        format_bytes(freed),
        skipped.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn prune(path: &Path, opts: PruneOptions, as_json: bool) -> Outcome {
    let signals = Signals::catch()?;
    let cache = open_existing(path)?;
    let sizes: Vec<EntryInfo> = cache.entries()?;
    let size_of = |n: &str| sizes.iter().find(|e| e.name == n).and_then(|e| e.size);
    // Debris first, reported on its own (the prune would sweep it silently).
    let swept = if opts.dry_run { None } else { sweep(&cache)? };
    signals.check(|| "nothing pruned".to_owned())?;
    // One pass of the library's prune: each removal in it is atomic, so a
    // signal is acted on when the pass is done.
    let report = cache.prune(opts)?;
    let debris: &[String] = swept.as_ref().map_or(&[], |s| &s.removed);
    if as_json {
        output::json(&json!({
            "dry_run": report.dry_run,
            "removed": report.removed,
            "skipped": report.skipped,
            "freed": report.freed,
            "accounted_size": report.accounted,
            "debris_removed": debris,
        }))?;
    } else {
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for n in &report.removed {
            note!("{verb} {n} ({})", size_or_dash(size_of(n)))?;
        }
        for n in &report.skipped {
            note!("kept {n}: in use")?;
        }
        if !debris.is_empty() {
            note!("debris: {} removed", debris.len())?;
        }
        for n in debris {
            detail!("  removed {n}")?;
        }
        let limit = cache.info().limit();
        if report.dry_run {
            note!(
                "would free {} of {} accounted (maximum {limit}); nothing removed",
                format_bytes(report.freed),
                format_bytes(report.accounted),
            )?;
        } else {
            note!(
                "freed {}; accounted size now {} (maximum {limit})",
                format_bytes(report.freed),
                format_bytes(report.accounted),
            )?;
        }
    }
    signals.check(|| {
        let n = report.removed.len();
        format!(
            "stopped after its pass ({n} {} removed)",
            if n == 1 { "entry" } else { "entries" }
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

fn repair(path: &Path, as_json: bool) -> Outcome {
    let cache = open_existing(path)?;
    // `repair` rewrites `cache.size`: only for a cache in our format.
    let info = cache.reload_info()?;
    if !info.is_compatible() {
        return Err(fscache::Error::Incompatible {
            path: cache.path().to_owned(),
            version: info.version,
        }
        .into());
    }
    let Some(r) = cache.repair()? else {
        return Err(Fail::error(format!(
            "`{}` is open in other processes; repair needs it to itself: \
             retry when they are done (`fscache info` removes debris meanwhile)",
            cache.path().display()
        )));
    };
    if as_json {
        return output::json(&json!({
            "removed": r.removed,
            "accounted_before": r.accounted_before,
            "accounted": r.accounted,
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    for n in &r.removed {
        note!("removed {n}")?;
    }
    let books = match r.accounted_before {
        Some(b) if b == r.accounted => format!("{} (was right)", format_bytes(b)),
        Some(b) => format!(
            "{} (was {}, corrected)",
            format_bytes(r.accounted),
            format_bytes(b)
        ),
        None => format!("{} (was unreadable, rebuilt)", format_bytes(r.accounted)),
    };
    outln!("debris removed:   {}", r.removed.len())?;
    outln!("accounted size:   {books}")?;
    Ok(ExitCode::SUCCESS)
}

fn stats(path: &Path, as_json: bool, zero: bool) -> Outcome {
    let cache = open_existing(path)?;
    let s = cache.stats()?;
    if as_json {
        let mut map = serde_json::Map::new();
        for (k, v) in s.fields() {
            map.insert(k.to_owned(), json!(v));
        }
        map.insert("hit-rate".into(), json!(s.hit_rate()));
        let recent: Vec<Value> = s
            .recent_removals
            .iter()
            .map(|r| json!({"name": r.name, "at": r.at, "why": r.why}))
            .collect();
        map.insert("recent-removals".into(), Value::Array(recent));
        output::json(&Value::Object(map))?;
    } else {
        let rate = s
            .hit_rate()
            .map_or_else(|| "-".to_owned(), |r| format!("{:.1} %", r * 100.0));
        outln!("cache:               {}", cache.path().display())?;
        outln!("hit rate:            {rate}")?;
        outln!("loads:               {}", s.loads())?;
        outln!("  hits:              {}", s.hits)?;
        outln!("  misses:            {}", s.misses())?;
        outln!("    absent:          {}", s.misses_absent)?;
        outln!("    busy:            {}", s.misses_busy)?;
        outln!("    invalid:         {}", s.misses_invalid)?;
        outln!("    incompatible:    {}", s.misses_incompatible)?;
        outln!(
            "stores committed:    {} ({})",
            s.stored,
            format_bytes(s.bytes_stored)
        )?;
        outln!("  exists already:    {}", s.stored_exists)?;
        outln!("  too large:         {}", s.stored_too_large)?;
        outln!("  no space:          {}", s.stored_no_space)?;
        outln!("  incompatible:      {}", s.stored_incompatible)?;
        outln!(
            "evictions:           {} ({})",
            s.evictions,
            format_bytes(s.evicted_bytes)
        )?;
        outln!("prunes / removals:   {} / {}", s.prunes, s.removals)?;
        outln!("repairs:             {}", s.repairs)?;
        outln!("lock waits:          {}", s.lock_waits)?;
        if !s.recent_removals.is_empty() {
            outln!("recently removed (newest first):")?;
            let now = SystemTime::now();
            for r in s.recent_removals.iter().rev().take(10) {
                let at = UNIX_EPOCH + Duration::from_secs(r.at);
                outln!(
                    "  {:<24} {:>8} ago  {}",
                    r.name,
                    format_age(age_of(at, now)),
                    r.why
                )?;
            }
        }
    }
    if zero {
        cache.zero_stats()?;
        note!("statistics zeroed")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(path: &Path, names: &[String], remove_bad: bool, as_json: bool) -> Outcome {
    use fscache::Verified;
    let cache = open_existing(path)?;
    let results: Vec<(String, Result<Verified, fscache::Error>)> = if names.is_empty() {
        let bar = verify_bar();
        let r = cache.verify_all(&|p| {
            if let Some(bar) = &bar {
                bar.set_length(p.total as u64);
                bar.set_position(p.done as u64);
            }
        })?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        r
    } else {
        names.iter().map(|n| (n.clone(), cache.verify(n))).collect()
    };
    let mut rows = Vec::new();
    let mut damaged = 0usize;
    for (name, r) in results {
        let (state, removed) = match r {
            Ok(Verified::Ok(_)) => ("ok".to_owned(), None),
            Ok(Verified::Unverified) => ("unverified".to_owned(), None),
            Ok(Verified::Miss) => ("missing".to_owned(), None),
            Ok(v @ (Verified::Mismatch { .. } | Verified::Incomplete { .. })) => {
                damaged += 1;
                let removed = if remove_bad {
                    Some(match cache.remove(&name)? {
                        Removed::Removed { .. } => "removed",
                        Removed::InUse => "kept: in use",
                        Removed::Missing => "gone",
                    })
                } else {
                    None
                };
                let state = match v {
                    Verified::Incomplete { missing } => {
                        format!("damaged: {} gone", missing.names().join(", "))
                    }
                    _ => "damaged".to_owned(),
                };
                (state, removed)
            }
            Ok(_) => ("unknown".to_owned(), None),
            Err(e) => {
                damaged += 1;
                (format!("error: {}", crate::fail::chain(&e)), None)
            }
        };
        rows.push((name, state, removed));
    }
    if as_json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(n, s, r)| json!({"name": n, "state": s, "removed": r}))
            .collect();
        output::json(&Value::Array(list))?;
    } else {
        for (n, s, r) in &rows {
            match r {
                Some(r) => outln!("{n}: {s} ({r})")?,
                None => outln!("{n}: {s}")?,
            }
        }
    }
    if damaged > 0 {
        return Err(Fail::error(format!("{damaged} damaged entries")));
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar for `verify`, on a terminal only.
fn verify_bar() -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("verifying [{bar:30}] {pos}/{len}") {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

fn stage(path: &Path, command: &[OsString]) -> Outcome {
    let signals = Signals::catch()?;
    let cache = open_existing(path)?;
    let scratch = cache.stage()?;
    let code = run_in(
        scratch.path(),
        "FSCACHE_STAGE",
        command,
        &signals,
        "scratch directory removed",
    );
    // Removed here, whatever the command left in it.
    drop(scratch);
    code
}

fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fscache", &mut script);
    output::bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}

fn manpage(dir: Option<&Path>) -> Outcome {
    let render = |cmd: clap::Command| -> Result<Vec<u8>, Fail> {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| Fail::error(format!("failed to render the man page: {e}")))?;
        Ok(page)
    };
    let top = Cli::command();
    let Some(dir) = dir else {
        output::bytes(&render(top)?)?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Fail::error(format!("failed to create `{}`: {e}", dir.display())))?;
    let mut pages = vec![("fscache.1".to_owned(), render(top.clone())?)];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("fscache-{}", sub.get_name());
        let page = render(sub.clone().name(name.clone()))?;
        pages.push((format!("{name}.1"), page));
    }
    for (file, page) in pages {
        let p = dir.join(&file);
        std::fs::write(&p, page)
            .map_err(|e| Fail::error(format!("failed to write `{}`: {e}", p.display())))?;
        note!("wrote {}", p.display())?;
    }
    Ok(ExitCode::SUCCESS)
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
