//! The Python package `fscache` (crates/fscache-py + python/): `ci`'s
//! pytest step and `cargo xtask pybench`.
//!
//! Both use one virtual environment, `<target>/pyvenv`, made with the
//! machine's `python3 -m venv` (after `apt-get install python3-venv` as
//! root when the module is missing) and given maturin and pytest by pip.
//! The package is built into it with `maturin develop`: a debug build for
//! the tests, which shares the workspace's compiled dependencies (only
//! pyo3 and the binding crate build again), and `--release` for the
//! benchmark.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{cargo, root, run, target_dir, Result};

/// The venv's directory, its `bin/`, created and provisioned if needed.
fn venv() -> Result<PathBuf> {
    let venv = target_dir()?.join("pyvenv");
    let bin = venv.join("bin");
    if !bin.join("python").exists() {
        let make = || {
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !make() {
            // Debian splits `venv`/`ensurepip` into python3-venv.
            println!("\n$ apt-get install -y python3-venv");
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "python3-venv"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            let _ = std::fs::remove_dir_all(&venv);
            if !make() {
                return Err("`python3 -m venv` failed: install python3 with venv".into());
            }
        }
    }
    let have = |tool: &str| bin.join(tool).exists();
    if !have("maturin") || !have("pytest") {
        let mut pip = Command::new(bin.join("python"));
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "maturin>=1.5,<2",
            "pytest",
        ]);
        run(pip)?;
    }
    Ok(bin)
}

/// `maturin develop` of the package into the venv at `bin/..`.
fn develop(bin: &Path, release: bool) -> Result<()> {
    let mut m = Command::new(bin.join("maturin"));
    m.args(["develop", "--quiet"]);
    if release {
        // Without the remote tier: its dependencies are most of a release
        // build, and the benchmark does not use them.
        m.args(["--release", "--no-default-features"]);
    }
    m.current_dir(root())
        .env("VIRTUAL_ENV", bin.parent().unwrap_or(bin))
        .env("PATH", path_with(bin));
    let started = Instant::now();
    run(m)?;
    println!(
        "python: built the package in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `$PATH` with `bin` first.
fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut paths = vec![bin.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// `ci`'s Python step: build the `fscache` CLI and the package, then
/// `pytest python/tests` with `$FSCACHE_BIN` naming the CLI. Tests that
/// need osbuild's code skip unless `$FSCACHE_OSBUILD_PATH` (or an
/// installed osbuild) provides it.
pub fn tests() -> Result<()> {
    let bin = venv()?;
    let cli = target_dir()?.join("debug").join("fscache");
    // In `ci` the tests built it already, with the workspace's features;
    // `-p` alone would resolve other features and rebuild half the tree,
    // so only a missing binary, or one older than a source file (a run
    // of `pytest` alone after an edit), is built again.
    if !cli.exists() || older_than_sources(&cli) {
        run(cargo(["build", "-p", "fscache-cli"]))?;
    }
    develop(&bin, false)?;
    let mut pytest = Command::new(bin.join("python"));
    pytest
        .args(["-m", "pytest", "-q", "-rs", "python/tests"])
        .current_dir(root())
        .env("FSCACHE_BIN", cli)
        .env("PATH", path_with(&bin))
        .stdin(Stdio::null());
    run(pytest)
}

/// Whether a file under `crates/` changed after `bin` was built.
fn older_than_sources(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let mut dirs = vec![root().join("crates")];
    while let Some(dir) = dirs.pop() {
        let Ok(list) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in list.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
            {
                return true;
            }
        }
    }
    false
}

/// `cargo xtask pybench`: a release build of the package, then
/// `python/bench/bench.py`'s table (fscache beside osbuild's FsCache where
/// importable, and `cp -a`).
pub fn bench() -> Result<()> {
    let bin = venv()?;
    develop(&bin, true)?;
    let mut py = Command::new(bin.join("python"));
    py.arg("python/bench/bench.py")
        .current_dir(root())
        .env("PATH", path_with(&bin));
    run(py)
}
