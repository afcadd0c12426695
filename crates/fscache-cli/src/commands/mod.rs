//! The commands: [`run`] dispatches each to its module, which opens the
//! cache through the `fscache` facade, does its work under the library's
//! locks, and prints its report.
//!
//! * `inspect` — `info`, `ls`, `stats`, `verify`: what the cache holds.
//! * `maintain` — `set`, `rm`, `clear`, `prune`, `repair`: changing the
//!   cache's limit, books and entries.
//! * `entry` — `store`, `load`, `cat`, `stage`: one entry or scratch
//!   directory, used by a command.
//! * `remote` — `push`, `pull`, `load --remote`, `remote …`.
//! * `docs` — `completions`, `manpage`.
//!
//! The helpers those modules share live here. A command module uses
//! them and never another command module, so the only arrows run from
//! this file's dispatch down and from a module to this file's helpers.

mod docs;
mod entry;
mod inspect;
mod maintain;
mod remote;

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus};
use std::time::{Duration, SystemTime};

use fscache::meta::OnDrop;
use fscache::{format_bytes, FsCache, MaxSize, PruneOptions, Swept};
use serde_json::{json, Value};

use crate::args::{
    given_once, name_arg, split_cache, split_cache_variadic, Cli, Cmd, Global, APPID,
};
use crate::fail::{Fail, Outcome};
use crate::output;
use crate::signals::{self, Signals};

/// Run the command `cli` names.
pub(crate) fn run(cli: Cli) -> Outcome {
    let g = &cli.global;
    match cli.command {
        Cmd::Info { cache, output } => inspect::info(&given_once(g, cache)?, output.format()),
        Cmd::Ls {
            cache,
            sort,
            output,
        } => inspect::ls(&given_once(g, cache)?, sort, output.format()),
        Cmd::Set {
            cache,
            max_size,
            prune,
            force,
            output,
        } => {
            let over = if prune {
                OverLimit::Prune
            } else {
                OverLimit::Keep
            };
            let path = given_once(g, cache)?;
            if !force {
                refuse_foreign_directory(&path)?;
            }
            maintain::set(&path, max_size, over, output.format())
        }
        Cmd::Store {
            args,
            fail_if_exists,
            strict,
            output,
        } => {
            let (cache, rest) = split_cache(g, args, 2)?;
            let [name, src] = two(rest)?;
            let exists = if fail_if_exists {
                IfExists::Fail
            } else {
                IfExists::Succeed
            };
            let name = name_arg(name)?;
            let on_drop = if strict { OnDrop::Fail } else { OnDrop::Count };
            let src = Path::new(&src);
            entry::store(&cache, &name, src, exists, on_drop, output.format())
        }
        Cmd::Load {
            args,
            command,
            remote,
            timeout,
        } => {
            let (cache, rest) = split_cache(g, args, 1)?;
            let [name] = <[OsString; 1]>::try_from(rest).map_err(|_| usage())?;
            let name = name_arg(name)?;
            match remote.filter(|r| !r.is_empty()) {
                Some(url) => remote::load(&cache, &name, &command, &url, timeout),
                None => entry::load(&cache, &name, &command),
            }
        }
        Cmd::Cat { args } => {
            let (cache, rest) = split_cache(g, args, 2)?;
            let [name, file] = two(rest)?;
            entry::cat(&cache, &name_arg(name)?, Path::new(&file))
        }
        Cmd::Rm { args, output } => {
            let (cache, names) = cache_and_names(g, args)?;
            maintain::rm(&cache, &names, output.format())
        }
        Cmd::Clear { cache, output } => maintain::clear(&given_once(g, cache)?, output.format()),
        Cmd::Push(t) => {
            let (cache, names) = cache_and_names(g, t.args)?;
            remote::push(&cache, &names, &t.remote, t.output.format())
        }
        Cmd::Pull(p) => {
            let (cache, names) = cache_and_names(g, p.transfer.args)?;
            let on_drop = if p.strict {
                OnDrop::Fail
            } else {
                OnDrop::Count
            };
            let format = p.transfer.output.format();
            remote::pull(&cache, &names, &p.transfer.remote, on_drop, format)
        }
        Cmd::Remote { command } => remote::run(g, command),
        Cmd::Prune {
            cache,
            to,
            unused_for,
            dry_run,
            output,
        } => maintain::prune(
            &given_once(g, cache)?,
            {
                let mut opts = PruneOptions::new().dry_run(dry_run);
                opts.to = to;
                opts.unused_for = unused_for;
                opts
            },
            output.format(),
        ),
        Cmd::Repair { cache, output } => maintain::repair(&given_once(g, cache)?, output.format()),
        Cmd::Stats {
            cache,
            output,
            zero,
        } => {
            let then = if zero { Then::Zero } else { Then::Keep };
            inspect::stats(&given_once(g, cache)?, output.format(), then)
        }
        Cmd::Verify {
            args,
            remove_bad,
            output,
        } => {
            let (cache, rest) = crate::args::split_cache_optional(g, args)?;
            let names = rest
                .into_iter()
                .map(name_arg)
                .collect::<Result<Vec<_>, _>>()?;
            let damaged = if remove_bad {
                Damaged::Remove
            } else {
                Damaged::Report
            };
            inspect::verify(&cache, &names, damaged, output.format())
        }
        Cmd::Stage { cache, command } => entry::stage(&given_once(g, cache)?, &command),
        Cmd::Completions { shell, .. } => docs::completions(shell),
        Cmd::Manpage { dir, .. } => docs::manpage(dir.as_deref()),
        Cmd::Complete { words, .. } => docs::complete(&words),
    }
}

/// What `store` does when the name exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IfExists {
    /// Leave the entry, report it, exit 0.
    Succeed,
    /// Leave the entry, exit 1 (`--fail-if-exists`).
    Fail,
}

/// What `set` does when the cache holds more than the new limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OverLimit {
    /// Say so; the next store evicts.
    Keep,
    /// Prune down to the limit now (`--prune`).
    Prune,
}

/// What `stats` does after showing the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Leave them.
    Keep,
    /// Reset them to zero (`--zero`).
    Zero,
}

/// What `verify` does with a damaged entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damaged {
    /// Report it (exit 1).
    Report,
    /// Report and remove it, unless a reader holds it (`--remove-bad`).
    Remove,
}

fn usage() -> Fail {
    Fail::error("wrong number of arguments (see `fscache help`)")
}

fn two(args: Vec<OsString>) -> Result<[OsString; 2], Fail> {
    <[OsString; 2]>::try_from(args).map_err(|_| usage())
}

/// The cache and the entry names of a command taking any number of them.
fn cache_and_names(
    g: &Global,
    args: Vec<OsString>,
) -> Result<(std::path::PathBuf, Vec<String>), Fail> {
    let (cache, rest) = split_cache_variadic(g, args)?;
    let names = rest
        .into_iter()
        .map(name_arg)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cache, names))
}

/// Call `f` again while it fails with `EINTR`: an interrupted call is
/// made again, here as in the library.
pub(crate) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// `set` makes a cache only of a new or empty directory, or of one that
/// is a cache already: a directory holding other files (a mistyped path,
/// `$HOME`) would get a `CACHEDIR.TAG` that makes backup tools skip it.
fn refuse_foreign_directory(path: &Path) -> Result<(), Fail> {
    let shown = path.display();
    // Not `std::fs::read_dir`: its `ReadDir` panics when `closedir` fails
    // (the I/O-error sweep made a `close` fail); a descriptor's drop
    // ignores the error, and nothing was written through it.
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = match rustix::io::retry_on_intr(|| rustix::fs::open(path, flags, Mode::empty())) {
        Ok(d) => d,
        // Absent: `set` creates it. Anything else, the open reports.
        Err(_) => return Ok(()),
    };
    if retry(|| std::fs::symlink_metadata(path.join("cache.info"))).is_ok() {
        return Ok(());
    }
    let read_err = |e: rustix::io::Errno| {
        Fail::error(format!(
            "failed to read directory `{shown}`: {}",
            io::Error::from(e)
        ))
    };
    let list = rustix::io::retry_on_intr(|| rustix::fs::Dir::read_from(&dir)).map_err(read_err)?;
    let mut names = Vec::new();
    for entry in list {
        let entry = entry.map_err(read_err)?;
        if ![&b"."[..], b".."].contains(&entry.file_name().to_bytes()) {
            names.push(entry.file_name().to_owned());
        }
    }
    if !names.is_empty() {
        return Err(Fail::error(format!(
            "`{shown}` is not empty and not a cache: `fscache set` makes a cache of a new or \
             empty directory only (--force to make this one a cache anyway)"
        )));
    }
    Ok(())
}

/// Open an existing cache; only `set` creates one.
fn open_existing(path: &Path) -> Result<FsCache, Fail> {
    let shown = path.display();
    match retry(|| std::fs::metadata(path)) {
        Ok(m) if !m.is_dir() => return Err(Fail::error(format!("`{shown}` is not a directory"))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::error(format!(
                "cache directory `{shown}` does not exist (create it with `fscache set {shown} --max-size SIZE`)"
            )))
        }
        Err(e) => return Err(Fail::error(format!("failed to access `{shown}`: {e}"))),
    }
    match retry(|| std::fs::symlink_metadata(path.join("cache.info"))) {
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

fn age_of(t: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
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

/// The failures of a command over several names: each is reported on
/// stderr as it comes, and the command exits with the gravest, an error
/// (1) over a miss (2).
#[derive(Default)]
struct Gravest(Option<Fail>);

impl Gravest {
    /// Report `fail` now and remember it if it is the gravest so far.
    fn report(&mut self, fail: Fail) {
        output::eline(format_args!("{}", fail.message));
        if self.0.as_ref().is_none_or(|w| w.code == 2) {
            self.0 = Some(fail);
        }
    }

    /// The exit code: success when nothing failed.
    fn code(self) -> ExitCode {
        self.0.map_or(ExitCode::SUCCESS, |w| ExitCode::from(w.code))
    }
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
fn run_in(dir: &Path, var: &str, command: &[OsString], signals: &Signals, after: &str) -> Outcome {
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
        .map_err(|e| Fail::not_run(&e, format!("failed to run `{shown}`: {e}")))?;
    let pid = rustix::process::Pid::from_child(&child);
    let mut forwarded = false;
    // Poll rather than block in wait(): a blocked wait would not notice
    // the signal (its handler only sets a flag, and the wait restarts).
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            // wait4 interrupted by a signal: ask again (the loop notices
            // the signal itself below).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Unable to watch it: stop it before the caller's guard
                // removes the directory it runs in, and reap it.
                let _ = child.kill();
                let _ = retry(|| child.wait());
                return Err(Fail::error(format!(
                    "failed to wait for `{shown}` (stopped it): {e}"
                )));
            }
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
