//! `cargo xtask dist`: what an installer ships beside the `fscache`
//! binary, generated from its clap definition: the man pages and the shell
//! completions, in `<target>/dist/`, beside the systemd timer and service
//! that prune a cache and the tmpfiles.d line that keeps age rules out of
//! it (from `contrib/`). `check` renders and parses them (CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{demo::build_cli, target_dir, Result};

/// The shells `fscache completions` is installed for, with each file's
/// conventional name (bash-completion, zsh's `fpath`, fish's
/// `vendor_completions.d`).
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "fscache.bash"),
    ("zsh", "_fscache"),
    ("fish", "fscache.fish"),
];

/// What `contrib/` ships, by its path there and in `dist/`.
const CONTRIB: [(&str, &str); 3] = [
    (
        "systemd/fscache-prune@.service",
        "systemd/fscache-prune@.service",
    ),
    (
        "systemd/fscache-prune@.timer",
        "systemd/fscache-prune@.timer",
    ),
    (
        "tmpfiles.d/fscache-osbuild.conf",
        "tmpfiles.d/fscache-osbuild.conf",
    ),
];

/// Write `<target>/dist/{fscache.1, fscache-*.1, completions/…,
/// systemd/fscache-prune@.{service,timer}, tmpfiles.d/…}` and return the
/// directory.
pub fn dist() -> Result<PathBuf> {
    let bin = build_cli()?;
    let dist = target_dir()?.join("dist");
    if dist.exists() {
        std::fs::remove_dir_all(&dist)?;
    }
    let status = Command::new(&bin)
        .arg("-q")
        .arg("manpage")
        .arg(&dist)
        .status()?;
    if !status.success() {
        return Err(format!("`fscache manpage` failed: {status}").into());
    }
    let completions = dist.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in COMPLETIONS {
        let out = Command::new(&bin)
            .args(["completions", shell])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(format!("`fscache completions {shell}` failed: {}", out.status).into());
        }
        std::fs::write(completions.join(file), out.stdout)?;
    }
    // The systemd units that prune a cache on a timer, and the tmpfiles.d
    // line that keeps age-based cleaning out of it.
    for (from, to) in CONTRIB {
        let src = crate::root().join("contrib").join(from);
        let dst = dist.join(to);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&src, &dst)
            .map_err(|e| format!("failed to copy `{}`: {e}", src.display()))?;
    }
    println!("dist: wrote {}", dist.display());
    Ok(dist)
}

/// Whether `program` can be run here.
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Run a check; fail with its stderr if it fails or warns.
fn check_with(mut command: Command, what: &Path) -> Result<()> {
    let out = command.stdout(Stdio::null()).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.contains("warning") {
        return Err(format!("{} does not check: {err}", what.display()).into());
    }
    Ok(())
}

/// `dist`, then render every man page (`man -l`, else `groff`) and parse
/// every completion script with its shell (`bash -n`, `zsh -n`,
/// `fish --no-execute`), saying which checks were skipped for lack of a
/// tool.
pub fn check() -> Result<()> {
    let dist = dist()?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dist)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    if pages.is_empty() {
        return Err("dist wrote no man page".into());
    }
    let renderer = if have("man") {
        Some("man")
    } else if have("groff") {
        Some("groff")
    } else {
        None
    };
    match renderer {
        None => println!(
            "dist: skipped rendering the man pages: neither `man` nor `groff` is installed"
        ),
        Some(r) => {
            for page in &pages {
                let mut c = Command::new(r);
                if r == "man" {
                    c.arg("-l").env("MANPAGER", "cat").env("MANWIDTH", "80");
                } else {
                    c.args(["-man", "-Tutf8", "-ww"]);
                }
                c.arg(page);
                check_with(c, page)?;
            }
            println!("dist: {} man pages render with `{r}`", pages.len());
        }
    }
    for (shell, file) in COMPLETIONS {
        let path = dist.join("completions").join(file);
        if !have(shell) {
            println!("dist: skipped parsing {file}: `{shell}` is not installed");
            continue;
        }
        let mut c = Command::new(shell);
        c.arg(if shell == "fish" {
            "--no-execute"
        } else {
            "-n"
        })
        .arg(&path);
        check_with(c, &path)?;
        println!("dist: {file} parses with `{shell}`");
    }
    Ok(())
}
