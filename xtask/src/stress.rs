//! `cargo xtask stress`: random operations from several helper processes
//! on one cache, then the figures and the books.
//!
//! Each process is `fscache-test-helper stress CACHE SEED SECONDS LIMIT`
//! (its own seed): stores of 1–6 files with a `DIGEST` that every hit
//! re-checks, loads held for a few milliseconds, stages and removals, on
//! 50 names in a cache far smaller than they need, so eviction runs all
//! the time. A process that meets an error or a corrupt hit exits non-zero
//! with the reason on stdout: each such process is one error.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::{build_helper, Result};

/// The cache's maximum size: about a third of what the 50 names need.
const LIMIT: u64 = 512 * 1024;

/// What `stress` runs.
pub struct Options {
    /// How many helper processes.
    pub procs: u64,
    /// How long each runs.
    pub seconds: u64,
    /// The cache directory (default: a new one in the temp dir, removed
    /// afterwards).
    pub cache: Option<PathBuf>,
}

/// Parse `--procs P --seconds S [--cache DIR]`.
pub fn parse(args: &[&str]) -> Result<Options> {
    let mut o = Options {
        procs: 4,
        seconds: 30,
        cache: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("`{flag}` needs a number, not `{value}`"))
        };
        match *flag {
            "--procs" => o.procs = num()?,
            "--seconds" => o.seconds = num()?,
            "--cache" => o.cache = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option `{other}`").into()),
        }
    }
    if o.procs == 0 {
        return Err("`--procs` must be at least 1".into());
    }
    Ok(o)
}

/// Run the stress and report; an error if any process failed or the books
/// are off afterwards.
pub fn stress(o: &Options) -> Result<()> {
    let helper = build_helper()?;
    // Empty: nothing to remove (a cache the caller named stays anyway).
    let mut scratch = Scratch(PathBuf::new());
    let cache = match &o.cache {
        Some(dir) => dir.clone(),
        None => {
            // tmpfs when there is one: the run measures the cache, not a disk.
            let base = Path::new("/dev/shm");
            let base = if base.is_dir() {
                base.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            scratch = Scratch(base.join(format!("fscache-stress-{}", std::process::id())));
            scratch.0.join("cache")
        }
    };
    println!(
        "stress: {} processes for {} s on {} (limit {} bytes)",
        o.procs,
        o.seconds,
        cache.display(),
        LIMIT
    );
    let started = Instant::now();
    let kids = (0..o.procs)
        .map(|i| {
            Command::new(&helper)
                .arg("stress")
                .arg(&cache)
                .arg((i + 1).to_string())
                .arg(o.seconds.to_string())
                .arg(LIMIT.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("failed to spawn {}: {e}", helper.display()))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut totals = serde_json::Map::new();
    let mut errors = 0;
    for (i, kid) in kids.into_iter().enumerate() {
        let out = kid.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or("");
        match serde_json::from_str::<Value>(last) {
            Ok(Value::Object(counters)) if out.status.success() => {
                for (k, v) in counters {
                    let sum = totals.get(&k).and_then(Value::as_u64).unwrap_or(0)
                        + v.as_u64().unwrap_or(0);
                    totals.insert(k, sum.into());
                }
            }
            _ => {
                errors += 1;
                println!("stress: process {i} failed ({}): {last}", out.status);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let get = |k: &str| totals.get(k).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "stress: {} ops in {elapsed:.1} s = {:.0} ops/s; hits {}, misses {}, committed {}, \
         exists {}, no space {}, too large {}, evictions {}, removals {}, stages {}; errors {errors}",
        get("ops"),
        get("ops") as f64 / elapsed,
        get("hits"),
        get("misses"),
        get("committed"),
        get("exists"),
        get("nospace"),
        get("toolarge"),
        get("evicted"),
        get("removed"),
        get("stages"),
    );
    let books = check_books(&cache);
    match &books {
        Ok(b) => println!("stress: books exact: {b}"),
        Err(e) => println!("stress: books WRONG: {e}"),
    }
    if errors > 0 || books.is_err() {
        // Keep the evidence: the cache as the failure left it.
        if let Some(kept) = scratch.keep() {
            println!(
                "stress: the cache is kept for a post-mortem: {}",
                kept.display()
            );
        }
    }
    if errors > 0 {
        return Err(format!("stress: {errors} processes failed").into());
    }
    books.map(drop)
}

/// `cache.size` against the sum of the entries' `object.info` sizes, and
/// no `uuid-*` debris in `objects/` nor anything in `stage/`.
fn check_books(cache: &Path) -> Result<String> {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("failed to read `{}`: {e}", p.display()));
    let size: u64 = serde_json::from_slice::<Value>(&read(&cache.join("cache.size"))?)?
        .as_u64()
        .ok_or("cache.size is not a non-negative integer")?;
    let names = |dir: &Path| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in
            fs::read_dir(dir).map_err(|e| format!("failed to read `{}`: {e}", dir.display()))?
        {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    };
    let mut sum = 0;
    let mut entries = 0;
    let mut debris = Vec::new();
    for name in names(&cache.join("objects"))? {
        if name.starts_with("uuid-") {
            debris.push(format!("objects/{name}"));
            continue;
        }
        let info = cache.join("objects").join(&name).join("object.info");
        let v: Value = serde_json::from_slice(&read(&info)?)?;
        sum += v["size"]
            .as_u64()
            .ok_or_else(|| format!("`{}` has no size", info.display()))?;
        entries += 1;
    }
    debris.extend(
        names(&cache.join("stage"))?
            .into_iter()
            .map(|n| format!("stage/{n}")),
    );
    if !debris.is_empty() {
        return Err(format!("debris left: {debris:?}").into());
    }
    if size != sum {
        return Err(format!("cache.size {size}, but the {entries} entries record {sum}").into());
    }
    if size > LIMIT {
        return Err(format!("cache.size {size} over the limit {LIMIT}").into());
    }
    Ok(format!(
        "cache.size {size} = the sum of {entries} object.info sizes, no debris"
    ))
}

/// A scratch directory removed on drop (unless kept).
struct Scratch(PathBuf);

impl Scratch {
    /// Do not remove it: hand back its path (`None` when there is none).
    fn keep(&mut self) -> Option<PathBuf> {
        let path = std::mem::take(&mut self.0);
        (!path.as_os_str().is_empty()).then_some(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}
