//! One entry or scratch directory, used by a command: `store`, `load`,
//! `cat` and `stage`.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Component, Path};
use std::process::ExitCode;
use std::time::Instant;

use fscache::meta::{Dropped, OnDrop};
use fscache::{format_bytes, CopyOptions, Stored};
use serde_json::json;

use super::{open_existing, run_in, size_or_dash, IfExists};
use crate::fail::{Fail, Outcome};
use crate::output::{self, detail, note, Format};
use crate::progress::Progress;
use crate::signals::{self, Signals};

pub(super) fn store(
    path: &Path,
    name: &str,
    src: &Path,
    if_exists: IfExists,
    on_drop: OnDrop,
    format: Format,
) -> Outcome {
    let signals = Signals::catch()?;
    let cache = open_existing(path)?;
    let is_symlink = match super::retry(|| std::fs::symlink_metadata(src)) {
        Ok(m) => m.file_type().is_symlink(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::error(format!("`{}` does not exist", src.display())))
        }
        Err(e) => {
            return Err(Fail::error(format!(
                "failed to access `{}`: {e}",
                src.display()
            )))
        }
    };
    // Check before copying: a copy of a large tree costs seconds only to
    // be discarded. (Another process may still win the name meanwhile; the
    // commit reports that too.)
    let mut content = 0;
    let report = if let Some(guard) = cache.store_if_absent(name)? {
        signals.check(|| format!("`{name}` not stored"))?;
        let mut progress = Progress::new(src, name);
        let started = Instant::now();
        // Copy and commit in one step, so the tree digest the copy computes
        // is recorded (`fscache verify` checks it later).
        let options = CopyOptions::new().on_drop(on_drop);
        let committed = guard.commit_tree_with(src, &options, &mut |n| {
            // Stop the copy: the guard drops, which removes the partial
            // copy (a removal that fails leaves debris the next sweep takes).
            if signals.caught().is_some() {
                return Err(io::ErrorKind::Interrupted.into());
            }
            progress.add(n);
            Ok(())
        });
        progress.finish();
        content = progress.done();
        if let (Err(_), Some(sig)) = (&committed, signals.caught()) {
            return Err(signals::stopped(
                sig,
                format!("`{name}` not stored, its partial copy removed"),
            ));
        }
        let report = committed?;
        detail!("copied in {:.1}s", started.elapsed().as_secs_f64())?;
        Some(report)
    } else {
        None
    };
    let (stored, evicted, size, dropped) = match report {
        Some(r) => (r.stored, r.evicted, Some(r.size), r.dropped),
        None => (Stored::Exists, Vec::new(), None, Dropped::default()),
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
    if format == Format::Json {
        output::json(&json!({
            "name": name,
            "outcome": word,
            "size": if stored == Stored::Committed { size } else { None },
            "content": if stored == Stored::Committed { Some(content) } else { None },
            "symlink": is_symlink,
            "evicted": evicted,
            "dropped": {
                "owners": dropped.owners,
                "set_id_bits": dropped.set_id_bits,
                "xattrs": dropped.xattrs,
            },
        }))?;
    } else {
        match stored {
            Stored::Committed => note!(
                "stored {name}: {} on disk ({} content)",
                size_or_dash(size),
                format_bytes(content)
            )?,
            Stored::Exists if why.is_none() => {
                note!("{name} exists already; left as it is, nothing copied")?;
            }
            _ => {}
        }
        if is_symlink && stored == Stored::Committed {
            // What `cp -a` does, but a user who named `/lib` may have
            // meant what it points to.
            note!(
                "stored a symlink; give `{}/` for its target's contents",
                src.display()
            )?;
        }
        for n in &evicted {
            note!("evicted {n}")?;
        }
        if dropped.any() {
            note!(
                "not kept (as `cp -a` as this user; --strict refuses): {} owners, {} set-ID bits, {} xattrs",
                dropped.owners,
                dropped.set_id_bits,
                dropped.xattrs
            )?;
        }
    }
    // The signal came during the commit, which finished: say so.
    signals.check(|| format!("stopped after `{name}` was {word}"))?;
    match why {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => Err(Fail::error(format!("`{name}` not stored: {why}"))),
    }
}

pub(super) fn load(path: &Path, name: &str, command: &[OsString]) -> Outcome {
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

pub(super) fn cat(path: &Path, name: &str, file: &Path) -> Outcome {
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
    let mut f = match super::retry(|| dir.open(file)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::error(format!("no file `{shown}` in entry `{name}`")))
        }
        Err(e) => {
            if let Some((link, target)) = escaping_symlink(&dir, file) {
                return Err(Fail::error(format!(
                    "`{}` in entry `{name}` is a symlink that points outside the entry (to `{}`)",
                    link.display(),
                    target.display()
                )));
            }
            return Err(Fail::error(format!(
                "failed to open `{shown}` in entry `{name}`: {e}"
            )));
        }
    };
    if super::retry(|| f.metadata()).is_ok_and(|m| m.is_dir()) {
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

/// The first symlink on the way to `file` (itself included) that leads
/// outside `dir`, with its target: what makes an open beneath `dir` fail
/// with cap-std's "a path led outside of the filesystem".
fn escaping_symlink(
    dir: &cap_std::fs::Dir,
    file: &Path,
) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let mut prefix = std::path::PathBuf::new();
    for c in file.components() {
        prefix.push(c);
        let meta = dir.symlink_metadata(&prefix).ok()?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        match dir.metadata(&prefix) {
            // Resolves beneath `dir` (or dangles there): not this one.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) => return Some((prefix.clone(), dir.read_link_contents(&prefix).ok()?)),
        }
    }
    None
}

pub(super) fn stage(path: &Path, command: &[OsString]) -> Outcome {
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
