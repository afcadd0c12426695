//! What the cache holds: `info`, `ls`, `stats` and `verify`.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fscache::{format_bytes, Removed};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::{age_of, max_size_json, open_existing, size_or_dash, sweep, Damaged, Then};
use crate::args::Sort;
use crate::fail::{chain, Fail, Outcome};
use crate::output::{self, detail, note, outln, Format};
use crate::units::format_age;

pub(super) fn info(path: &Path, format: Format) -> Outcome {
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
    if format == Format::Json {
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

pub(super) fn ls(path: &Path, sort: Sort, format: Format) -> Outcome {
    let cache = open_existing(path)?;
    let mut entries = cache.entries()?;
    match sort {
        Sort::Lru => entries.sort_by(|a, b| a.last_use.cmp(&b.last_use).then(a.name.cmp(&b.name))),
        Sort::Size => entries.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name))),
        Sort::Name => entries.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    let now = SystemTime::now();
    if format == Format::Json {
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

pub(super) fn stats(path: &Path, format: Format, then: Then) -> Outcome {
    let cache = open_existing(path)?;
    let s = cache.stats()?;
    if format == Format::Json {
        let mut map = serde_json::Map::new();
        map.insert("path".into(), json!(cache.path()));
        // The totals the text shows, so a script need not know the causes.
        map.insert("loads".into(), json!(s.loads()));
        map.insert("misses".into(), json!(s.misses()));
        map.insert("builds".into(), json!(s.builds()));
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
        outln!("  built:             {} (load_or_build)", s.builds())?;
        outln!("    kept:            {}", s.built)?;
        outln!("    not kept:        {}", s.built_uncached)?;
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
        outln!("waits for a builder: {}", s.build_waits)?;
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
    if then == Then::Zero {
        cache.zero_stats()?;
        // Not after a JSON document: stdout holds that one document.
        if format == Format::Text {
            note!("statistics zeroed")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(path: &Path, names: &[String], on_damage: Damaged, format: Format) -> Outcome {
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
    let (mut missing, mut unverified, mut kept) = (0usize, 0usize, 0usize);
    let mut removal_failed: Option<String> = None;
    for (name, r) in results {
        // What changed where, when the commit kept a record beside the
        // digest (before any removal below).
        let changes = match &r {
            Ok(Verified::Mismatch { .. }) => cache.verify_changes(&name).ok().flatten(),
            _ => None,
        };
        let (state, removed) = match r {
            Ok(Verified::Ok(_)) => ("ok".to_owned(), None),
            Ok(Verified::Unverified) => {
                unverified += 1;
                ("unverified".to_owned(), None)
            }
            Ok(Verified::Miss) => {
                // Only a name the user asked for is a miss: an entry that
                // `verify_all` listed and that was evicted or removed before
                // its turn simply went, as other processes may make it do.
                if !names.is_empty() {
                    missing += 1;
                }
                ("missing".to_owned(), None)
            }
            Ok(v @ (Verified::Mismatch { .. } | Verified::Incomplete { .. })) => {
                damaged += 1;
                let removed = if on_damage == Damaged::Remove {
                    Some(match cache.remove(&name) {
                        Ok(Removed::Removed { .. }) => "removed".to_owned(),
                        Ok(Removed::InUse) => {
                            kept += 1;
                            "kept: in use".to_owned()
                        }
                        Ok(Removed::Missing) => "gone".to_owned(),
                        // Its removal failed: the rest are still checked,
                        // and the command fails.
                        Err(e) => {
                            let why = chain(&e);
                            removal_failed.get_or_insert_with(|| {
                                format!("failed to remove damaged `{name}`: {why}")
                            });
                            format!("removal failed: {why}")
                        }
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
                (format!("error: {}", chain(&e)), None)
            }
        };
        rows.push((name, state, removed, changes.unwrap_or_default()));
    }
    let what = |c: &[fscache::Change]| {
        c.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if format == Format::Json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(n, s, r, ch)| {
                let changes: Vec<Value> = ch
                    .iter()
                    .map(|(p, c)| {
                        json!({
                            "path": p.to_string_lossy(),
                            "changed": c.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({"name": n, "state": s, "removed": r, "changes": changes})
            })
            .collect();
        output::json(&Value::Array(list))?;
    } else {
        for (n, s, r, ch) in &rows {
            match r {
                Some(r) => outln!("{n}: {s} ({r})")?,
                None => outln!("{n}: {s}")?,
            }
            for (p, c) in ch {
                outln!("  {}: {}", p.display(), what(c))?;
            }
        }
    }
    if let Some(why) = removal_failed {
        return Err(Fail::error(why));
    }
    if damaged > 0 {
        let what = if damaged == 1 {
            "1 damaged entry".to_owned()
        } else {
            format!("{damaged} damaged entries")
        };
        return Err(Fail::error(match on_damage {
            Damaged::Remove if kept == 0 => format!("{what} (removed)"),
            Damaged::Remove => format!("{what}; {kept} in use, kept: retry when released"),
            _ => format!("{what}; `fscache verify --remove-bad` removes damaged entries"),
        }));
    }
    if unverified > 0 && format == Format::Text {
        note!(
            "{unverified} unverified: {} no recorded digest (osbuild's, or stored by the library without `record_digests(true)`; `fscache store` records one)",
            if unverified == 1 {
                "it has"
            } else {
                "they have"
            }
        )?;
    }
    if missing > 0 {
        let what = if missing == 1 {
            "1 name has no entry".to_owned()
        } else {
            format!("{missing} names have no entry")
        };
        return Err(Fail::miss(format!("{what} in {}", cache.path().display())));
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
