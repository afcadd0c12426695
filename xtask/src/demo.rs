//! `cargo xtask demo`: the `fscache` binary on a real, temporary cache,
//! each command printed as `$ fscache …` with its output.
//!
//! The scenario: set a limit, store the workspace's own crates, list them,
//! hold one under `load` while another process tries to `rm` it, store
//! past the limit and see which entries eviction removed (never the held
//! one), `prune`, `info`; then a store stopped by Ctrl-C (nothing left),
//! the debris of a killed writer reported and removed by `info`, `repair`
//! and `clear`.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{cargo, root, Result};

/// Build the `fscache` binary and return its path, as cargo reports it
/// (so `CARGO_TARGET_DIR` and cargo config are respected).
pub(crate) fn build_cli() -> Result<PathBuf> {
    let out = cargo([
        "build",
        "--quiet",
        "--message-format=json",
        "-p",
        "fscache-cli",
        "--bin",
        "fscache",
    ])
    .stderr(Stdio::inherit())
    .output()?;
    if !out.status.success() {
        return Err(format!("building fscache-cli failed: {}", out.status).into());
    }
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "fscache" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(exe.into());
            }
        }
    }
    // Cargo reports fresh artifacts too; this is a fallback only.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root().join(t))
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join("debug/fscache"))
}

/// The binary, the cache, and how to show them.
struct Demo {
    bin: PathBuf,
    cache: PathBuf,
}

impl Demo {
    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).current_dir(root());
        c
    }

    fn show<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                let a = a.as_ref().to_string_lossy().into_owned();
                if a.contains(' ') || a.contains('$') || a.contains(';') {
                    format!("'{a}'")
                } else {
                    a
                }
            })
            .collect();
        format!("$ fscache {}", shown.join(" "))
    }

    /// Print the command, run it, print its output (stdout and stderr in
    /// order of the streams) and a non-zero exit code.
    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<i32> {
        println!("\n{}", self.show(args));
        let out = self.command(args).stdin(Stdio::null()).output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        print!("{}", String::from_utf8_lossy(&out.stderr));
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            println!("[exit {code}]");
        }
        Ok(code)
    }

    /// Run quietly and parse `--json` output.
    fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Value> {
        let out = self.command(args).stdin(Stdio::null()).output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn cache(&self) -> &str {
        self.cache.to_str().unwrap_or("CACHE")
    }
}

/// What each tree costs in a cache on the demo's file system, measured
/// by storing them all in a throwaway unlimited cache beside the real one.
fn measure(d: &Demo, trees: &[(&str, &str)]) -> Result<Vec<u64>> {
    let probe = d.cache.with_file_name("calibrate");
    let p = probe.to_str().ok_or("non-UTF-8 temporary path")?;
    let quiet = |args: &[&str]| -> Result<()> {
        let out = d.command(args).stdin(Stdio::null()).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{}` failed: {}",
                d.show(args),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into())
        }
    };
    quiet(&["set", p, "--max-size", "unlimited"])?;
    for (name, tree) in trees {
        quiet(&["store", p, name, tree])?;
    }
    let list = d.json(&["ls", p, "--json"])?;
    let _ = fs::remove_dir_all(&probe);
    trees
        .iter()
        .map(|(name, _)| {
            list.as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == *name)
                .and_then(|e| e["size"].as_u64())
                .ok_or_else(|| format!("could not measure `{name}`").into())
        })
        .collect()
}

/// Where to put the cache: `/dev/shm` when there is one (fast, gone on
/// reboot), else the temporary directory.
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("fscache-demo-{}", std::process::id()))
}

/// `cargo xtask demo`.
pub fn demo() -> Result<()> {
    let bin = build_cli()?;
    let dir = scratch();
    let demo = Demo {
        bin,
        cache: dir.join("cache"),
    };
    let result = scenario(&demo);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn scenario(d: &Demo) -> Result<()> {
    let c = d.cache();
    let trees = [
        ("lock", "crates/fscache-lock"),
        ("dir", "crates/fscache-dir"),
        ("quota", "crates/fscache-quota"),
        ("facade", "crates/fscache"),
    ];
    // Room for the first three, not for the fourth as well: storing it
    // must evict.
    let sizes = measure(d, &trees)?;
    let limit = (sizes[..3].iter().sum::<u64>() + sizes[3] / 2).div_ceil(1024);
    let limit = format!("{limit}K");

    println!("== fscache: a size-limited LRU cache of directory trees, shared by processes ==");
    println!("cache: {c}   (removed at the end)");
    d.run(&["set", c, "--max-size", &limit])?;
    for (name, tree) in &trees[..3] {
        d.run(&["store", c, name, tree])?;
    }
    d.run(&["ls", c])?;

    println!("\n# A reader holds `lock` for 3 s; meanwhile another process tries to remove it.");
    let script = "echo \"reading $FSCACHE_ENTRY\"; ls; sleep 3";
    let load_args = ["load", c, "lock", "--", "sh", "-c", script];
    println!("\n{} &", d.show(&load_args));
    let reader = d
        .command(&load_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    while_held(d, reader, &trees[3])?;

    println!("\n# Use `facade`; then see what has not been used for 2 s, and shrink to 100K.");
    d.run(&["load", c, "facade", "--", "head", "-n", "3", "Cargo.toml"])?;
    d.run(&["prune", c, "--unused-for", "2s", "--dry-run"])?;
    d.run(&["prune", c, "--to", "100K"])?;
    d.run(&["info", c])?;
    after_a_crash(d)
}

/// Ctrl-C during a store, the debris of a killed one, `repair`, `clear`.
fn after_a_crash(d: &Demo) -> Result<()> {
    let c = d.cache();
    println!("\n# Lift the limit and store two trees again, for what follows.");
    d.run(&["set", c, "--max-size", "unlimited"])?;
    d.run(&["store", c, "lock", "crates/fscache-lock"])?;
    d.run(&["store", c, "dir", "crates/fscache-dir"])?;

    // 64 MiB in 256 files: a copy that takes a while.
    let big = d.cache.with_file_name("big");
    fs::create_dir_all(&big)?;
    for i in 0..256 {
        fs::write(big.join(format!("f{i}")), vec![b'x'; 256 << 10])?;
    }
    let big = big.to_str().unwrap_or("big").to_owned();
    println!(
        "\n# Ctrl-C (SIGINT) 30 ms into a 64 MiB store: it removes its partial copy, exits 130."
    );
    let args = ["store", c, "big", &big];
    println!("\n{}   # then: kill -INT", d.show(&args));
    let child = d
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(30));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    let out = child.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    print!("{}", String::from_utf8_lossy(&out.stderr));
    println!("[exit {}]", out.status.code().unwrap_or(-1));

    println!("\n# A writer killed with SIGKILL cannot clean up: its work stays as debris,");
    println!("# unlocked. `info` removes it and says so (as `prune` and `ls` do).");
    let debris = d
        .cache
        .join("objects/uuid-0123456789abcdef0123456789abcdef");
    fs::create_dir_all(debris.join("data"))?;
    fs::write(debris.join("object.lock"), b"")?;
    fs::write(debris.join("data/blob"), vec![0u8; 1 << 20])?;
    d.run(&["info", c])?;

    println!("\n# `repair` rebuilds the books from the entries; it needs the cache to itself.");
    d.run(&["repair", c])?;

    println!("\n# Integrity: each store recorded its tree digest; flip one byte of `dir`.");
    d.run(&["verify", c])?;
    let victim = fs::read_dir(d.cache.join("objects/dir/data"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_file());
    if let Some(victim) = victim {
        let mut bytes = fs::read(&victim)?;
        if let Some(b) = bytes.first_mut() {
            *b ^= 1;
        }
        fs::write(&victim, bytes)?;
    }
    d.run(&["verify", c, "--remove-bad"])?;

    println!("\n# What every process that used this cache did, summed (`--zero` resets).");
    d.run(&["stats", c])?;

    println!("\n# `clear` removes every entry no reader holds (like `ccache -C`).");
    d.run(&["clear", c])?;
    d.run(&["ls", c])?;
    Ok(())
}

/// The part of the scenario that runs while `reader` holds `lock`.
fn while_held(d: &Demo, mut reader: Child, (name, tree): &(&str, &str)) -> Result<()> {
    let c = d.cache();
    let body = || -> Result<()> {
        wait_until_held(d, "lock")?;
        d.run(&["ls", c])?;
        d.run(&["rm", c, "lock"])?;
        println!("\n# Store past the limit: eviction removes least-recently-used idle entries, never `lock`.");
        d.run(&["store", c, name, tree])?;
        d.run(&["ls", c])?;
        Ok(())
    };
    let result = body();
    let status = reader.wait()?;
    let mut out = String::new();
    if let Some(mut s) = reader.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = reader.stderr.take() {
        s.read_to_string(&mut out)?;
    }
    println!("\n# The reader's output, once its command exited (the lock went with it):");
    print!("{out}");
    println!("[load exited: {status}]");
    result
}

/// Poll `ls --json` until `name` shows a reader.
fn wait_until_held(d: &Demo, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let list = d.json(&["ls", d.cache(), "--json"])?;
        let held = list
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == name && e["in_use"] == true);
        if held {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("the reader never took `{name}`").into())
}
