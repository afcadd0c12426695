//! Changing the cache's limit, books and entries: `set`, `rm`, `clear`,
//! `prune` and `repair`.

use std::path::Path;
use std::process::ExitCode;

use fscache::{format_bytes, CacheInfo, EntryInfo, FsCache, MaxSize, PruneOptions, Removed};
use serde_json::json;

use super::{max_size_json, open_existing, size_or_dash, sweep, Gravest, OverLimit};
use crate::args::APPID;
use crate::fail::{Fail, Outcome};
use crate::output::{self, detail, note, outln, Format};
use crate::signals::Signals;

pub(super) fn set(
    path: &Path,
    max_size: MaxSize,
    over_limit: OverLimit,
    format: Format,
) -> Outcome {
    let cache = FsCache::open(APPID, path)?;
    let before = cache.reload_info()?.limit();
    cache.set_info(CacheInfo {
        maximum_size: Some(max_size),
        ..Default::default()
    })?;
    let now = cache.info().limit();
    // A dry run down to the limit now in force: the accounted size, and
    // what a prune would remove.
    let plan = cache.prune(PruneOptions::new().dry_run(true))?;
    let over = matches!(now, MaxSize::Bytes(m) if plan.accounted > m);
    let pruned = if over && over_limit == OverLimit::Prune {
        Some(cache.prune(PruneOptions::default())?)
    } else {
        None
    };
    if format == Format::Json {
        return output::json(&json!({
            "path": cache.path(),
            "maximum_size": max_size_json(now),
            "previous_maximum_size": max_size_json(before),
            "accounted_size": pruned.as_ref().map_or(plan.accounted, |p| p.accounted),
            "over_limit": over && pruned.is_none(),
            // What a prune would remove now (the text's "removes N entries").
            "prune_would_remove": if over && pruned.is_none() { plan.removed.clone() } else { Vec::new() },
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

pub(super) fn rm(path: &Path, names: &[String], format: Format) -> Outcome {
    let cache = open_existing(path)?;
    let mut gravest = Gravest::default();
    let (mut removed, mut in_use, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let fail = match cache.remove(name) {
            Ok(Removed::Removed { freed }) => {
                if format == Format::Text {
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
            // The entry may be gone although the call failed (its
            // `object.info` went, then the uncharge failed): say so.
            Err(e) if !cache.contains(name).unwrap_or(true) => {
                removed.push(json!({"name": name, "freed": null}));
                Fail::error(format!(
                    "removed `{name}`, but its books failed (the next prune recounts them): {}",
                    crate::fail::chain(&e)
                ))
            }
            Err(e) => Fail::from(e),
        };
        gravest.report(fail);
    }
    if format == Format::Json {
        output::json(&json!({
            "removed": removed,
            "in_use": in_use,
            "missing": missing,
        }))?;
    }
    Ok(gravest.code())
}

pub(super) fn clear(path: &Path, format: Format) -> Outcome {
    let cache = open_existing(path)?;
    let mut removed = Vec::new();
    let mut skipped = Vec::new();
    let mut freed = 0u64;
    for e in cache.entries()? {
        let outcome = match cache.remove(&e.name) {
            Ok(r) => r,
            Err(err) => {
                let gone = !cache.contains(&e.name).unwrap_or(true);
                if gone {
                    removed.push(e.name.clone());
                }
                return Err(Fail::error(format!(
                    "{} `{}`{}: {}; removed before it: {}",
                    if gone { "removed" } else { "failed to remove" },
                    e.name,
                    if gone {
                        ", but its books failed (the next prune recounts them)"
                    } else {
                        ""
                    },
                    crate::fail::chain(&err),
                    names_or_none(&removed)
                )));
            }
        };
        match outcome {
            Removed::Removed { freed: f } => {
                freed = freed.saturating_add(f);
                if format == Format::Text {
                    note!("removed {} ({})", e.name, format_bytes(f))?;
                }
                removed.push(e.name);
            }
            Removed::InUse => {
                if format == Format::Text {
                    note!("skipped {}: in use by a reader", e.name)?;
                }
                skipped.push(e.name);
            }
            // Removed by someone else since the listing: nothing to do.
            Removed::Missing => {}
        }
    }
    if format == Format::Json {
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

pub(super) fn prune(path: &Path, opts: PruneOptions, format: Format) -> Outcome {
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
    if format == Format::Json {
        output::json(&json!({
            "dry_run": report.dry_run,
            "removed": report.removed,
            "skipped": report.skipped,
            "freed": report.freed,
            "accounted_size": report.accounted,
            "maximum_size": max_size_json(cache.info().limit()),
            "sizes": report
                .removed
                .iter()
                .map(|n| (n.clone(), json!(size_of(n))))
                .collect::<serde_json::Map<_, _>>(),
            "debris_removed": debris,
            "failed": report.failed,
            "error": report.error,
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
    if let Some(error) = &report.error {
        let mut msg = error.clone();
        if !report.failed.is_empty() {
            msg.push_str(&format!(
                "; left {} it was asked to remove",
                names_or_none(&report.failed)
            ));
        }
        msg.push_str(&format!("; removed {}", names_or_none(&report.removed)));
        return Err(Fail::error(msg));
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

/// `a`, `b`, `c`, or "nothing".
fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        return "nothing".to_owned();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn repair(path: &Path, format: Format) -> Outcome {
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
        if format == Format::Json {
            // A script reading stdout gets a document either way.
            output::json(&json!({
                "repaired": false,
                "busy": true,
                "removed": [],
            }))?;
        }
        return Err(Fail::error(format!(
            "`{}` is open in other processes; repair needs it to itself: \
             retry when they are done (`fscache info` removes debris meanwhile)",
            cache.path().display()
        )));
    };
    if format == Format::Json {
        return output::json(&json!({
            "repaired": true,
            "busy": false,
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
