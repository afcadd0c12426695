//! The remote verbs: `push`, `pull`, `load --remote`, `remote
//! ls|info|prune|check|migrate|keygen`, over `fscache-remote`. A remote's
//! errors are said cause first, in one line (everything with `-v`).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use fscache::meta::OnDrop;
use fscache::{format_bytes, FsCache, Obtained};
use fscache_remote::{
    keygen, Access, CheckOptions, Progress, PruneOptions, Pushed, ReadThrough, Remote,
    RemoteBuilder,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::{open_existing, run_in, Gravest};
use crate::args::{RemoteArg, RemoteCmd, APPID};
use crate::fail::{chain, Fail, Outcome};
use crate::output::{self, outln, Format};
use crate::signals::Signals;
use crate::units::format_age;

/// Open an existing cache to pull into: entries pulled record their tree
/// digest in `object.info`, so `fscache verify` can check them later (the
/// facade hashes the tree once more at commit; the pull's own check of the
/// digest happens before).
fn open_for_pull(path: &Path) -> Result<FsCache, Fail> {
    open_existing(path)?;
    Ok(FsCache::builder(APPID).record_digests(true).open(path)?)
}

/// Open the remote of `r`, with the keys of the environment and its
/// time limit; with `must_exist` (every command but `push`), a missing
/// `file://` remote is an error naming it, not created.
fn open(r: &RemoteArg, must_exist: bool) -> Result<Remote, Fail> {
    open_url(&r.remote, r.timeout, must_exist)
}

fn open_url(url: &str, timeout: Duration, must_exist: bool) -> Result<Remote, Fail> {
    RemoteBuilder::new(url)
        .keys_from_env()
        .and_then(|b| b.timeout(timeout).must_exist(must_exist).open())
        .map_err(|e| Fail::error(format!("remote `{url}`: {}", said(&e, timeout))))
}

/// A remote's error, cause first in one line; with `-v`, everything
/// OpenDAL said (the HTTP context).
fn said(e: &fscache_remote::Error, timeout: Duration) -> String {
    let text = if output::verbose() {
        e.detail()
    } else {
        e.summary()
    };
    match text.strip_prefix("no answer in time") {
        Some(rest) => format!("no answer within {}{rest}", format_age(timeout)),
        None => text,
    }
}

/// A progress bar for a push or pull of `name`, on a terminal only (and
/// not with `-q`); the transfer sets its length when it knows it.
fn transfer_bar(verb: &str, name: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || !output::chatty() {
        return None;
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{verb} {{msg}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    Some(bar)
}

/// The observer that moves `bar`, if any.
fn advance(bar: &Option<ProgressBar>) -> impl Fn(Progress) + Sync + '_ {
    move |p: Progress| {
        if let Some(bar) = bar {
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
        }
    }
}

/// Run `each` on every name, collecting its JSON row; a failure is
/// reported at once, and the command exits with the gravest.
fn for_each_name(
    names: &[String],
    format: Format,
    mut each: impl FnMut(&str) -> Result<Value, Fail>,
) -> Outcome {
    let mut rows = Vec::new();
    let mut gravest = Gravest::default();
    for name in names {
        match each(name) {
            Ok(row) => rows.push(row),
            Err(fail) => {
                // A miss (exit 2) is not a failure.
                let outcome = if fail.code == 2 { "missing" } else { "failed" };
                rows.push(json!({"name": name, "outcome": outcome, "error": fail.message}));
                gravest.report(fail);
            }
        }
    }
    if format == Format::Json {
        output::json(&Value::Array(rows))?;
    }
    Ok(gravest.code())
}

pub(super) fn push(cache: &Path, names: &[String], r: &RemoteArg, format: Format) -> Outcome {
    let cache = open_existing(cache)?;
    let remote = open(r, false)?;
    let timeout = r.timeout;
    if !remote.signs() && crate::output::chatty() {
        crate::output::eline(format_args!(
            "fscache: note: pushing unsigned (set {} to sign; pullers that trust keys refuse unsigned entries)",
            fscache_remote::ENV_SECRET_KEY
        ));
    }
    for_each_name(names, format, |name| {
        let bar = transfer_bar("pushing", name);
        let pushed = remote.push_with_progress(&cache, name, &advance(&bar));
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        pushed_row(&cache, name, pushed, format, timeout)
    })
}

fn pushed_row(
    cache: &FsCache,
    name: &str,
    pushed: fscache_remote::Result<Option<fscache_remote::PushReport>>,
    format: Format,
    timeout: Duration,
) -> Result<Value, Fail> {
    match pushed {
        Ok(Some(r)) => {
            let word = match r.outcome {
                Pushed::Published => "pushed",
                _ => "exists",
            };
            if format == Format::Text {
                if word == "pushed" {
                    // Say what the data cost apart from the bookkeeping
                    // (manifest, index, intent), which is sent anyway.
                    outln!(
                        "pushed {name} ({} of {} blobs sent in {} packs, {} of data, {} in all)",
                        r.blobs_uploaded,
                        r.blobs,
                        r.packs_uploaded,
                        format_bytes(r.bytes_data),
                        format_bytes(r.bytes_uploaded)
                    )?;
                } else {
                    outln!("already on the remote: {name} (nothing sent)")?;
                }
            }
            Ok(json!({
                "name": name,
                "outcome": word,
                "digest": r.digest.to_string(),
                "blobs": r.blobs,
                "blobs_uploaded": r.blobs_uploaded,
                "bytes_uploaded": r.bytes_uploaded,
                "bytes_data": r.bytes_data,
                "packs_uploaded": r.packs_uploaded,
                "bytes_total": r.bytes_total,
            }))
        }
        Ok(None) => Err(Fail::miss(format!(
            "no entry `{name}` in {}",
            cache.path().display()
        ))),
        Err(e) => Err(Fail::error(format!(
            "failed to push `{name}`: {}",
            said(&e, timeout)
        ))),
    }
}

pub(super) fn pull(
    cache: &Path,
    names: &[String],
    r: &RemoteArg,
    on_drop: OnDrop,
    format: Format,
) -> Outcome {
    let cache = open_for_pull(cache)?;
    let timeout = r.timeout;
    let remote = RemoteBuilder::new(&r.remote)
        .on_drop(on_drop)
        .keys_from_env()
        .and_then(|b| b.timeout(timeout).must_exist(true).open())
        .map_err(|e| Fail::error(format!("remote `{}`: {}", r.remote, said(&e, timeout))))?;
    for_each_name(names, format, |name| {
        // An entry already local needs nothing from the remote (a pull
        // would download all of it first, and fail on a damaged remote).
        match cache.contains(name) {
            Ok(true) => {
                if format == Format::Text {
                    outln!("{name} is in the cache already")?;
                }
                return Ok(json!({"name": name, "outcome": "present"}));
            }
            Ok(false) => {}
            Err(e) => {
                return Err(Fail::error(format!(
                    "failed to pull `{name}`: {}",
                    chain(&e)
                )))
            }
        }
        let bar = transfer_bar("pulling", name);
        let pulled = remote.pull_with_progress(&cache, name, &advance(&bar));
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        pulled_row(name, pulled, format, timeout)
    })
}

fn pulled_row(
    name: &str,
    pulled: fscache_remote::Result<Option<Obtained>>,
    format: Format,
    timeout: Duration,
) -> Result<Value, Fail> {
    match pulled {
        Ok(Some(got)) => {
            let (word, said) = match &got {
                Obtained::Hit(_) => ("present", format!("{name} is in the cache already")),
                Obtained::Built(_) => ("pulled", format!("pulled {name}")),
                Obtained::Uncached(_) => (
                    "not-kept",
                    format!("pulled {name}, but the cache did not keep it (too large?)"),
                ),
            };
            if format == Format::Text {
                outln!("{said}")?;
            }
            Ok(json!({"name": name, "outcome": word}))
        }
        Ok(None) => Err(Fail::miss(format!("no entry `{name}` on the remote"))),
        Err(e) => Err(Fail::error(format!(
            "failed to pull `{name}`: {}",
            said(&e, timeout)
        ))),
    }
}

/// `fscache load --remote URL CACHE NAME -- CMD`: a local hit, else a
/// pull, else a miss (exit 2); a remote that fails is a miss too, its
/// reason on stderr (a URL or key that cannot be used is an error). A
/// local hit asks nothing of the remote, so nothing about it can make the
/// hit fail.
pub(super) fn load(
    path: &Path,
    name: &str,
    command: &[OsString],
    url: &str,
    timeout: Duration,
) -> Outcome {
    let signals = Signals::catch()?;
    let cache = open_for_pull(path)?;
    let got = match cache.load(name)? {
        Some(local) => ReadThrough::Local(local),
        // A URL or key that cannot be used is an error (exit 1), not a
        // miss: it is the caller's to fix.
        None => open_url(url, timeout, false)?
            .load_or_pull(&cache, name)
            .map_err(|e| Fail::error(format!("failed to load `{name}`: {}", chain(&e))))?,
    };
    if let ReadThrough::Miss { remote_error } = &got {
        if let Some(e) = remote_error {
            output::eline(format_args!(
                "warning: remote `{url}` failed, taken as a miss: {}",
                said(e, timeout)
            ));
            return Err(Fail::miss(format!(
                "no entry `{name}` in {}, and the remote failed",
                cache.path().display()
            )));
        }
        return Err(Fail::miss(format!(
            "no entry `{name}` in {} nor on the remote",
            cache.path().display()
        )));
    }
    if output::verbose() {
        if let ReadThrough::Pulled(o) = &got {
            let how = if o.is_cached() {
                "stored in the cache"
            } else {
                "not kept by the cache"
            };
            output::eline(format_args!("pulled `{name}` from the remote ({how})"));
        }
    }
    let dir = got.path().expect("not a miss").to_path_buf();
    // The entry stays read-locked until `got` drops, after the command.
    let after = format!("`{name}` released");
    let code = run_in(&dir, "FSCACHE_ENTRY", command, &signals, &after);
    drop(got);
    code
}

pub(super) fn run(g: &crate::args::Global, cmd: RemoteCmd) -> Outcome {
    match cmd {
        RemoteCmd::Ls { remote, output } => {
            let r = open(&remote, true)?;
            let names = r.list().map_err(|e| {
                Fail::error(format!(
                    "failed to list `{}`: {}",
                    remote.remote,
                    said(&e, remote.timeout)
                ))
            })?;
            if output.format() == Format::Json {
                output::json(&json!(names))?;
            } else if names.is_empty() {
                outln!("no entries on {}", remote.remote)?;
            } else {
                for n in &names {
                    outln!("{n}")?;
                }
            }
        }
        RemoteCmd::Info { remote, output } => {
            let r = open(&remote, true)?;
            let i = r.info().map_err(|e| {
                Fail::error(format!(
                    "failed to read `{}`: {}",
                    remote.remote,
                    said(&e, remote.timeout)
                ))
            })?;
            let access = match i.access {
                Access::ReadOnly => "read-only",
                _ => "read-write",
            };
            if output.format() == Format::Json {
                output::json(&json!({
                    "url": i.url,
                    "format_version": i.format_version,
                    "access": access,
                    "entries": i.manifests,
                    "blobs": i.blobs,
                    "blob_bytes": i.blob_bytes,
                    "packs": i.packs,
                    "pack_bytes": i.pack_bytes,
                    "intents": i.intents,
                    "prunes": i.prunes,
                }))?;
            } else {
                outln!("remote:         {}", i.url)?;
                outln!("format version: {}", i.format_version)?;
                outln!("entries:        {}", i.manifests)?;
                outln!(
                    "blobs:          {} ({} stored)",
                    i.blobs,
                    format_bytes(i.blob_bytes)
                )?;
                outln!(
                    "packs:          {} ({} stored)",
                    i.packs,
                    format_bytes(i.pack_bytes)
                )?;
                outln!("pushes running: {} (or left by dead pushes)", i.intents)?;
                outln!("prunes running: {} (or left by dead prunes)", i.prunes)?;
            }
        }
        RemoteCmd::Prune {
            remote,
            unused_for,
            grace,
            dry_run,
            output,
        } => {
            let r = open(&remote, true)?;
            let opts = PruneOptions::unused_for(unused_for)
                .grace(grace)
                .dry_run(dry_run);
            let p = r.prune(opts).map_err(|e| {
                Fail::error(format!(
                    "failed to prune `{}`: {}",
                    remote.remote,
                    said(&e, remote.timeout)
                ))
            })?;
            if output.format() == Format::Json {
                output::json(&json!({
                    "dry_run": dry_run,
                    "grace_seconds": grace.as_secs(),
                    "entries_removed": p.manifests_removed,
                    "entries_kept": p.manifests_kept,
                    "entries_unreadable": p.manifests_unreadable,
                    "blobs_removed": p.blobs_removed,
                    "bytes_removed": p.bytes_removed,
                    "blobs_referenced": p.blobs_referenced,
                    "blobs_young": p.blobs_young,
                    "packs_referenced": p.packs_referenced,
                    "packs_condemned": p.packs_condemned,
                    "packs_condemned_waiting": p.packs_condemned_waiting,
                    "packs_removed": p.packs_removed,
                    "pack_bytes_removed": p.pack_bytes_removed,
                    "packs_young": p.packs_young,
                    "intents_removed": p.intents_removed,
                }))?;
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for n in &p.manifests_removed {
                    outln!("{verb} {n}")?;
                }
                outln!(
                    "{verb} {} entries and {} blobs ({}); kept {} entries, {} blobs in use, {} younger than {}",
                    p.manifests_removed.len(),
                    p.blobs_removed,
                    format_bytes(p.bytes_removed),
                    p.manifests_kept,
                    p.blobs_referenced,
                    p.blobs_young,
                    format_age(grace),
                )?;
                outln!(
                    "packs: {verb} {} ({}), condemned {} (deleted by a prune a grace period later), {} waiting, {} in use, {} younger than {}",
                    p.packs_removed,
                    format_bytes(p.pack_bytes_removed),
                    p.packs_condemned,
                    p.packs_condemned_waiting,
                    p.packs_referenced,
                    p.packs_young,
                    format_age(grace),
                )?;
                for n in &p.manifests_unreadable {
                    output::eline(format_args!(
                        "warning: the manifest of `{n}` is unreadable; kept"
                    ));
                }
            }
        }
        RemoteCmd::Check {
            remote,
            read_data,
            repair,
            output,
        } => {
            // The cache a repair pushes from: --cache or $FSCACHE_DIR.
            let cache = crate::args::default_cache(g).ok();
            return check(
                &remote,
                read_data,
                repair,
                cache.as_deref(),
                output.format(),
            );
        }
        RemoteCmd::Migrate { remote, output } => {
            let r = open(&remote, true)?;
            let m = r.migrate().map_err(|e| {
                Fail::error(format!(
                    "failed to migrate `{}`: {}",
                    remote.remote,
                    said(&e, remote.timeout)
                ))
            })?;
            if output.format() == Format::Json {
                output::json(&json!({
                    "migrated": m.migrated,
                    "already": m.already,
                    "failed": m.failed.iter().map(|(n, why)| json!({"name": n, "error": why})).collect::<Vec<_>>(),
                    "packs_uploaded": m.packs_uploaded,
                    "bytes_uploaded": m.bytes_uploaded,
                }))?;
            } else {
                for n in &m.migrated {
                    outln!("migrated {n}")?;
                }
                for (n, why) in &m.failed {
                    output::eline(format_args!("warning: `{n}` left in format 1: {why}"));
                }
                outln!("{}", m.summary())?;
            }
            if !m.failed.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        RemoteCmd::Keygen { output, .. } => {
            let secret = keygen().map_err(|e| Fail::error(chain(&e)))?;
            if output.format() == Format::Json {
                output::json(&json!({
                    "secret_key": secret.to_string(),
                    "public_key": secret.public_key().to_string(),
                }))?;
            } else {
                outln!("FSCACHE_REMOTE_SECRET_KEY={secret}")?;
                outln!("FSCACHE_REMOTE_TRUSTED_KEYS={}", secret.public_key())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fscache remote check [--read-data] [--repair]`: exit 1 when anything
/// is (left) wrong.
fn check(
    remote: &RemoteArg,
    read_data: bool,
    repair: bool,
    cache: Option<&Path>,
    format: Format,
) -> Outcome {
    let local = match (repair, cache) {
        (true, Some(p)) => Some(open_existing(p)?),
        _ => None,
    };
    let r = open(remote, true)?;
    let opts = CheckOptions::new().read_data(read_data).repair(repair);
    let c = r.check(local.as_ref(), opts).map_err(|e| {
        Fail::error(format!(
            "failed to check `{}`: {}",
            remote.remote,
            said(&e, remote.timeout)
        ))
    })?;
    if format == Format::Json {
        output::json(&json!({
            "clean": c.is_clean(),
            "entries": c.manifests,
            "packs": c.packs,
            "blobs": c.blobs,
            "bytes_read": c.bytes_read,
            "signatures_checked": c.signatures_checked,
            "problems": c.problems.iter().map(|p| json!({"key": p.key, "what": p.what, "entries": p.entries})).collect::<Vec<_>>(),
            "damaged": c.damaged,
            "repaired": c.repaired,
            "dropped": c.dropped,
            "packs_unindexed": c.packs_unindexed,
        }))?;
    } else {
        for p in &c.problems {
            if p.entries.is_empty() {
                outln!("{}: {} (no entry needs what is wrong)", p.key, p.what)?;
            } else {
                outln!("{}: {} (breaks {})", p.key, p.what, p.entries.join(", "))?;
            }
        }
        for n in &c.repaired {
            outln!("repaired {n}: pushed again from the local cache")?;
        }
        for n in &c.dropped {
            outln!("dropped {n}: no local copy to heal it from; its manifest is removed")?;
        }
        let what = if read_data {
            "read and checked"
        } else {
            "checked"
        };
        outln!(
            "{what} {} entries, {} packs, {} format-1 blobs ({} read): {}",
            c.manifests,
            c.packs,
            c.blobs,
            format_bytes(c.bytes_read),
            if c.damaged.is_empty() {
                "no problems".to_string()
            } else if repair {
                format!(
                    "{} damaged, {} repaired, {} dropped",
                    c.damaged.len(),
                    c.repaired.len(),
                    c.dropped.len()
                )
            } else {
                format!(
                    "{} damaged ({}); `--repair` heals them",
                    c.damaged.len(),
                    c.damaged.join(", ")
                )
            }
        )?;
        if !c.signatures_checked {
            output::eline(format_args!(
                "note: signatures not checked (no ${} set)",
                fscache_remote::ENV_TRUSTED_KEYS
            ));
        }
        if repair && cache.is_none() && !c.damaged.is_empty() {
            output::eline(format_args!(
                "note: no local cache (--cache, $FSCACHE_DIR) to heal from"
            ));
        }
    }
    Ok(if c.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
