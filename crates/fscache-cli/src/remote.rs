//! The remote verbs: `push`, `pull`, `remote ls`, `remote keygen`, over
//! `fscache-remote`.

use std::path::Path;
use std::process::ExitCode;

use fscache::{format_bytes, Obtained};
use fscache_remote::{keygen, Pushed, Remote, RemoteBuilder};
use serde_json::{json, Value};

use crate::args::RemoteCmd;
use crate::commands::open_existing;
use crate::fail::{chain, Fail, Outcome};
use crate::output;

/// Open the remote at `url`, with the keys of the environment.
fn open(url: &str) -> Result<Remote, Fail> {
    RemoteBuilder::new(url)
        .keys_from_env()
        .and_then(RemoteBuilder::open)
        .map_err(|e| Fail::error(format!("remote `{url}`: {}", chain(&e))))
}

pub(crate) fn push(cache: &Path, names: &[String], url: &str, as_json: bool) -> Outcome {
    let cache = open_existing(cache)?;
    let remote = open(url)?;
    let mut rows = Vec::new();
    let mut worst: Option<Fail> = None;
    for name in names {
        let fail = match remote.push(&cache, name) {
            Ok(Some(r)) => {
                if !as_json {
                    let what = match r.outcome {
                        Pushed::Published => "pushed",
                        Pushed::Exists => "already on the remote:",
                    };
                    outln!(
                        "{what} {name} ({} blobs, {} of {} sent)",
                        r.blobs,
                        format_bytes(r.bytes_uploaded),
                        format_bytes(r.bytes_total)
                    )?;
                }
                rows.push(json!({
                    "name": name,
                    "outcome": match r.outcome { Pushed::Published => "pushed", Pushed::Exists => "exists" },
                    "digest": r.digest.to_string(),
                    "blobs": r.blobs,
                    "blobs_uploaded": r.blobs_uploaded,
                    "bytes_uploaded": r.bytes_uploaded,
                    "bytes_total": r.bytes_total,
                }));
                continue;
            }
            Ok(None) => Fail::miss(format!("no entry `{name}` in {}", cache.path().display())),
            Err(e) => Fail::error(format!("failed to push `{name}`: {}", chain(&e))),
        };
        rows.push(json!({"name": name, "outcome": "failed", "error": fail.message}));
        output::eline(format_args!("{}", fail.message));
        if worst.as_ref().is_none_or(|w| w.code == 2) {
            worst = Some(fail);
        }
    }
    if as_json {
        output::json(&Value::Array(rows))?;
    }
    Ok(worst.map_or(ExitCode::SUCCESS, |w| ExitCode::from(w.code)))
}

pub(crate) fn pull(cache: &Path, names: &[String], url: &str, as_json: bool) -> Outcome {
    let cache = open_existing(cache)?;
    let remote = open(url)?;
    let mut rows = Vec::new();
    let mut worst: Option<Fail> = None;
    for name in names {
        let fail = match remote.pull(&cache, name) {
            Ok(Some(got)) => {
                let state = match &got {
                    Obtained::Hit(_) => "present",
                    Obtained::Built(_) => "pulled",
                    Obtained::Uncached(_) => "not-kept",
                };
                if !as_json {
                    match state {
                        "pulled" => outln!("pulled {name}")?,
                        "present" => outln!("{name} is in the cache already")?,
                        _ => outln!("pulled {name}, but the cache did not keep it (too large?)")?,
                    }
                }
                rows.push(json!({"name": name, "outcome": state}));
                continue;
            }
            Ok(None) => Fail::miss(format!("no entry `{name}` on the remote")),
            Err(e) => Fail::error(format!("failed to pull `{name}`: {}", chain(&e))),
        };
        rows.push(json!({"name": name, "outcome": "failed", "error": fail.message}));
        output::eline(format_args!("{}", fail.message));
        if worst.as_ref().is_none_or(|w| w.code == 2) {
            worst = Some(fail);
        }
    }
    if as_json {
        output::json(&Value::Array(rows))?;
    }
    Ok(worst.map_or(ExitCode::SUCCESS, |w| ExitCode::from(w.code)))
}

pub(crate) fn remote(cmd: RemoteCmd) -> Outcome {
    match cmd {
        RemoteCmd::Ls { remote, json } => {
            let r = open(&remote)?;
            let names = r
                .list()
                .map_err(|e| Fail::error(format!("failed to list `{remote}`: {}", chain(&e))))?;
            if json {
                output::json(&json!(names))?;
            } else {
                for n in &names {
                    outln!("{n}")?;
                }
            }
        }
        RemoteCmd::Keygen => {
            let secret = keygen().map_err(|e| Fail::error(chain(&e)))?;
            outln!("FSCACHE_REMOTE_SECRET_KEY={secret}")?;
            outln!("FSCACHE_REMOTE_TRUSTED_KEYS={}", secret.public_key())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
