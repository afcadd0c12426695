//! The remote verbs: `push`, `pull`, `load --remote`, `remote
//! ls|info|prune|keygen`, over `fscache-remote`.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use fscache::meta::OnDrop;
use fscache::{format_bytes, FsCache, Obtained};
use fscache_remote::{
    keygen, Access, Progress, PruneOptions, Pushed, ReadThrough, Remote, RemoteBuilder,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::{open_existing, run_in, Gravest};
use crate::args::{RemoteCmd, APPID};
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

/// Open the remote at `url`, with the keys of the environment.
fn open(url: &str) -> Result<Remote, Fail> {
    RemoteBuilder::new(url)
        .keys_from_env()
        .and_then(RemoteBuilder::open)
        .map_err(|e| Fail::error(format!("remote `{url}`: {}", chain(&e))))
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
                rows.push(json!({"name": name, "outcome": "failed", "error": fail.message}));
                gravest.report(fail);
            }
        }
    }
    if format == Format::Json {
        output::json(&Value::Array(rows))?;
    }
    Ok(gravest.code())
}

pub(super) fn push(cache: &Path, names: &[String], url: &str, format: Format) -> Outcome {
    let cache = open_existing(cache)?;
    let remote = open(url)?;
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
        pushed_row(&cache, name, pushed, format)
    })
}

fn pushed_row(
    cache: &FsCache,
    name: &str,
    pushed: fscache_remote::Result<Option<fscache_remote::PushReport>>,
    format: Format,
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
            chain(&e)
        ))),
    }
}

pub(super) fn pull(
    cache: &Path,
    names: &[String],
    url: &str,
    on_drop: OnDrop,
    format: Format,
) -> Outcome {
    let cache = open_for_pull(cache)?;
    let remote = RemoteBuilder::new(url)
        .on_drop(on_drop)
        .keys_from_env()
        .and_then(RemoteBuilder::open)
        .map_err(|e| Fail::error(format!("remote `{url}`: {}", chain(&e))))?;
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
        pulled_row(name, pulled, format)
    })
}

fn pulled_row(
    name: &str,
    pulled: fscache_remote::Result<Option<Obtained>>,
    format: Format,
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
            chain(&e)
        ))),
    }
}

/// `fscache load --remote URL CACHE NAME -- CMD`: a local hit, else a
/// pull, else a miss (exit 2); a remote that fails is a miss too, its
/// reason on stderr.
pub(super) fn load(path: &Path, name: &str, command: &[OsString], url: &str) -> Outcome {
    let signals = Signals::catch()?;
    let cache = open_for_pull(path)?;
    let remote = open(url)?;
    let got = remote
        .load_or_pull(&cache, name)
        .map_err(|e| Fail::error(format!("failed to load `{name}`: {}", chain(&e))))?;
    if let ReadThrough::Miss { remote_error } = &got {
        if let Some(e) = remote_error {
            output::eline(format_args!(
                "warning: remote `{url}` failed, taken as a miss: {}",
                chain(e)
            ));
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

pub(super) fn run(cmd: RemoteCmd) -> Outcome {
    match cmd {
        RemoteCmd::Ls { remote, output } => {
            let r = open(&remote)?;
            let names = r
                .list()
                .map_err(|e| Fail::error(format!("failed to list `{remote}`: {}", chain(&e))))?;
            if output.format() == Format::Json {
                output::json(&json!(names))?;
            } else if names.is_empty() {
                outln!("no entries on {remote}")?;
            } else {
                for n in &names {
                    outln!("{n}")?;
                }
            }
        }
        RemoteCmd::Info { remote, output } => {
            let r = open(&remote)?;
            let i = r
                .info()
                .map_err(|e| Fail::error(format!("failed to read `{remote}`: {}", chain(&e))))?;
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
            let r = open(&remote)?;
            let opts = PruneOptions::unused_for(unused_for)
                .grace(grace)
                .dry_run(dry_run);
            let p = r
                .prune(opts)
                .map_err(|e| Fail::error(format!("failed to prune `{remote}`: {}", chain(&e))))?;
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
