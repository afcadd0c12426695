//! The remote verbs: `push`, `pull`, `remote ls`, `remote keygen`, over
//! `fscache-remote`.

use std::path::Path;
use std::process::ExitCode;

use fscache::{format_bytes, Obtained};
use fscache_remote::{keygen, Pushed, Remote, RemoteBuilder};
use serde_json::{json, Value};

use crate::args::RemoteCmd;
use crate::commands::open_existing;
use crate::fail::{chain, Fail, Gravest, Outcome};
use crate::output;

/// Open the remote at `url`, with the keys of the environment.
fn open(url: &str) -> Result<Remote, Fail> {
    RemoteBuilder::new(url)
        .keys_from_env()
        .and_then(RemoteBuilder::open)
        .map_err(|e| Fail::error(format!("remote `{url}`: {}", chain(&e))))
}

/// Run `each` on every name, collecting its JSON row; a failure is
/// reported at once, and the command exits with the gravest.
fn for_each_name(
    names: &[String],
    as_json: bool,
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
    if as_json {
        output::json(&Value::Array(rows))?;
    }
    Ok(gravest.code())
}

pub(crate) fn push(cache: &Path, names: &[String], url: &str, as_json: bool) -> Outcome {
    let cache = open_existing(cache)?;
    let remote = open(url)?;
    for_each_name(names, as_json, |name| match remote.push(&cache, name) {
        Ok(Some(r)) => {
            let word = match r.outcome {
                Pushed::Published => "pushed",
                _ => "exists",
            };
            if !as_json {
                outln!(
                    "{} {name} ({} blobs, {} of {} sent)",
                    if word == "pushed" {
                        "pushed"
                    } else {
                        "already on the remote:"
                    },
                    r.blobs,
                    format_bytes(r.bytes_uploaded),
                    format_bytes(r.bytes_total)
                )?;
            }
            Ok(json!({
                "name": name,
                "outcome": word,
                "digest": r.digest.to_string(),
                "blobs": r.blobs,
                "blobs_uploaded": r.blobs_uploaded,
                "bytes_uploaded": r.bytes_uploaded,
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
    })
}

pub(crate) fn pull(cache: &Path, names: &[String], url: &str, as_json: bool) -> Outcome {
    let cache = open_existing(cache)?;
    let remote = open(url)?;
    for_each_name(names, as_json, |name| match remote.pull(&cache, name) {
        Ok(Some(got)) => {
            let (word, said) = match &got {
                Obtained::Hit(_) => ("present", format!("{name} is in the cache already")),
                Obtained::Built(_) => ("pulled", format!("pulled {name}")),
                Obtained::Uncached(_) => (
                    "not-kept",
                    format!("pulled {name}, but the cache did not keep it (too large?)"),
                ),
            };
            if !as_json {
                outln!("{said}")?;
            }
            Ok(json!({"name": name, "outcome": word}))
        }
        Ok(None) => Err(Fail::miss(format!("no entry `{name}` on the remote"))),
        Err(e) => Err(Fail::error(format!(
            "failed to pull `{name}`: {}",
            chain(&e)
        ))),
    })
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
