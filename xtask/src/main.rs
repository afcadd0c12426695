//! Project automation, run as `cargo xtask <command>` from anywhere in the
//! workspace (see `.cargo/config.toml`).
//!
//! * `ci`: the bar every change must pass: fmt, clippy, docs, tests (with
//!   a fast subset of the I/O-error sweep), the Python package's tests
//!   (`pytest`), a 30-second `stress`, benches build, `dist` with its
//!   pages rendered and completions parsed, then `package`. Stops at the
//!   first failing step.
//! * `pytest`: builds the Python package `fscache` into `<target>/pyvenv`
//!   (python3's venv, maturin and pytest from pip) and runs
//!   `python/tests`; `pybench`: its `timeit` table beside osbuild's
//!   FsCache (see `python.rs`).
//! * `ioerr [--calls C1,C2]`: the full I/O-error sweep (every occurrence
//!   of every traced system call, or of the listed ones, of every command
//!   fails once, with each errno), on a copy of the binary,
//!   `FSCACHE_IOERR_JOBS` (2) runs at a time;
//!   `FSCACHE_IOERR_ONLY=COMMAND[:CALL[:ERRNO]],…` narrows it further.
//! * `faithful`: a real OS tree no one here wrote (a Debian minbase root
//!   made once with debootstrap, else a copy of `/usr`) through
//!   `store_tree` → load and push → pull, caches on ext4 and tmpfs,
//!   judged by `rsync -aHAXn --numeric-ids` (see `faithful.rs`).
//! * `powerloss --rounds N [--seed S]`: the long power-loss sweep on the
//!   lazy FUSE file system (`fscache-lazyfs`): N rounds of each mode from
//!   seed S (`ci` runs a few; they need root and `/dev/fuse`).
//! * `package`: packages every publishable crate and runs its tests (unit,
//!   integration, doc) from the extracted `.crate` files, which depend on
//!   each other's packaged versions. This catches what only packaging
//!   breaks: a file outside the crate's folder, a path dependency without a
//!   version, a test that needs an unpublished crate.
//! * `bench [FILTER]`: runs the criterion benches, then prints one table of
//!   the medians measured by this run, each with its ratio to its baseline.
//!   `fscache-remote`'s bench (`remote`, not criterion: one push and pull
//!   of a 190 MiB tree is one sample) prints its own table as it runs:
//!   push and pull beside `tar | zstd` and one PUT/GET, on the fs service
//!   and moto, and the bytes of a second push after 1 % of the files
//!   changed (`FSCACHE_BENCH_FULL=1`: 1 GiB, 50 000 files).
//! * `remote-bench`: the remote tier's benchmark on the 50 000-file,
//!   1 GiB tree (`FSCACHE_BENCH_FULL=0` for the 10 000-file one) against
//!   `s3s-fs`, moto and the fs service, the S3 servers behind the 10 ms
//!   latency proxy, beside `tar | zstd` + one PUT/GET and restic. It
//!   installs what it lacks: `s3s-fs` 0.14.1 (`cargo install --locked` at
//!   `opt-level = 1`, as `ci` does), restic and `/usr/bin/time` (apt, as
//!   root), moto (pip).
//! * `demo`: builds the `fscache` binary and runs a real scenario on a
//!   temporary cache, printing each command and its output.
//! * `dist`: writes what an installer ships beside the `fscache` binary
//!   to `<target>/dist/`: its man pages and shell completions (`ci` also
//!   renders and parses them).
//! * `demo-lock`: shows the OFD locks of `fscache-lock` across real
//!   processes.
//! * `stress --procs P --seconds S [--cache DIR]`: P helper processes do
//!   random stores, loads (every hit's content digest checked), stages and
//!   removals on one small cache for S seconds; then it reports ops/s,
//!   hits, misses, evictions and errors (which must be 0), and checks the
//!   books: `cache.size` exactly the sum of the `object.info` sizes, no
//!   debris. `ci` runs 30 s of it after the tests.
//!
//! # Baselines in `bench`
//!
//! Within a criterion group, a benchmark whose function id is `raw`,
//! `baseline` or `std`, or starts with one of them followed by `_`, is a
//! *baseline*. Benchmark `X` (with parameter `P`, if any) is compared with
//! the baseline of the same group and parameter named `<prefix>_…_X`, i.e.
//! whose function id ends with `_X` (`shared` ↔ `raw_fcntl_shared`); if
//! there is none, with the only baseline of the group with parameter `P`;
//! otherwise it has no ratio. The ratio is `median(X) / median(baseline)`:
//! above 1 means slower than the baseline.

use std::env;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fscache_lock::{FileLock, LockKind};
use serde_json::Value;

mod demo;
mod dist;
mod faithful;
mod lockbench;
mod python;
mod stress;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: cargo xtask <command>
commands:
  ci              fmt, clippy, doc, test, stress 30 s, bench --no-run, dist, package;
                  stop at the first failure
  package         package the publishable crates and run their tests from the .crate files
  bench [FILTER]  run the criterion benches and print medians with baseline ratios
                  (`bench lock`: only benches/lock.rs, with fscache-lock against its
                  peers as one table of ratios)
  remote-bench    the remote bench on the 1 GiB tree against s3s-fs, moto and fs behind a
                  10 ms proxy, beside tar|zstd and restic (installs s3s-fs, restic)
  demo            run the `fscache` tool through a real scenario on a temporary cache
  dist [--check]  write the man pages and shell completions to <target>/dist
                  (--check: and render and parse them, as `ci` does)
  demo-lock       show fscache-lock's OFD locks working across processes
  ioerr [--calls C1,C2]
                  the full I/O-error sweep: every occurrence of every traced system
                  call (or of the listed ones) of every command fails once, with
                  EIO, ENOSPC, EACCES, EPERM, ENOLCK, EINTR; 2 runs at a time
                  (FSCACHE_IOERR_JOBS), on a copy of the binary;
                  FSCACHE_IOERR_ONLY=rm,prune:write[:EIO],*:*:EINTR narrows it
                  (`ci` runs a fast subset)
  faithful        a real OS tree (debootstrap minbase, made once in <target>/faithful; else
                  a copy of /usr) through store_tree/load/push/pull/verify on ext4 and
                  tmpfs, judged by rsync -aHAXn (CI runs a generated tree instead)
  stress --procs P --seconds S [--cache DIR]
                  P processes of random operations on one cache, then exact books
  powerloss --rounds N [--seed S]
                  N power-loss rounds per mode on the lazy FUSE file system, from
                  seed S (root and /dev/fuse; `ci` runs a few)
  pytest          build the Python package `fscache` (maturin, in <target>/pyvenv) and
                  run python/tests (`ci` does this)
  pybench         release build of the Python package, then a timeit table beside
                  osbuild's FsCache (where importable: $FSCACHE_OSBUILD_PATH) and
                  `cp -a`, wall and CPU time, in $FSCACHE_PYBENCH_DIR (default $TMPDIR)";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci"] => ci(),
        ["package"] => package(),
        ["bench"] => bench(None),
        ["bench", filter] => bench(Some(filter)),
        ["demo"] => demo::demo(),
        ["remote-bench"] => remote_bench(),
        ["ioerr"] => ioerr(None),
        ["ioerr", "--calls", calls] => ioerr(Some(calls)),
        ["faithful"] => faithful::faithful(),
        ["powerloss", rest @ ..] => powerloss(rest),
        ["dist"] => dist::dist().map(|_| ()),
        ["dist", "--check"] => dist::check(),
        ["demo-lock"] => demo_lock(),
        ["stress", rest @ ..] => stress::parse(rest).and_then(|o| stress::stress(&o)),
        ["pytest"] => python::tests(),
        ["pybench"] => python::bench(),
        ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// `cargo`, as the one that runs us (`$CARGO`), in the workspace root.
fn cargo<I: IntoIterator<Item = &'static str>>(args: I) -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(root());
    command
}

/// Print `command` as a shell would show it, run it, fail if it fails.
fn run(mut command: Command) -> Result<()> {
    let envs: Vec<String> = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={} ", k.to_str()?, v?.to_str()?)))
        .collect();
    let shown = format!(
        "{}{} {}",
        envs.concat(),
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("\n$ {shown}");
    let status = command
        .status()
        .map_err(|e| format!("failed to run `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed: {status}").into())
    }
}

/// The tools some tests need, by the Debian package that has them: the
/// I/O-error and durability tests trace with `strace`; the file-system
/// tests make btrfs and xfs loop images; the faithful-tree tests judge
/// copies with `rsync -aHAX` and make ACLs and capabilities.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("strace", "strace"),
    ("rsync", "rsync"),
    ("getfattr", "attr"),
    ("setfacl", "acl"),
    ("setcap", "libcap2-bin"),
    ("mkfs.btrfs", "btrfs-progs"),
    ("mkfs.xfs", "xfsprogs"),
    ("filefrag", "e2fsprogs"),
    // The bash completion test types into a terminal.
    ("tmux", "tmux"),
];

/// `cargo xtask remote-bench`: install what the remote bench needs, then
/// run it on the full tree.
fn remote_bench() -> Result<()> {
    ensure_s3s_fs();
    let apt: Vec<&str> = [("restic", "restic"), ("/usr/bin/time", "time")]
        .into_iter()
        .filter(|(t, _)| {
            !(succeeds(t, &["version"]) || succeeds(t, &["--version"]) || Path::new(t).exists())
        })
        .map(|(_, p)| p)
        .collect();
    if !apt.is_empty() && succeeds("apt-get", &["--version"]) && !apt_install(&apt) {
        println!(
            "installing {} failed: the bench rows that need them skip",
            apt.join(", ")
        );
    }
    if !succeeds("python3", &["-c", "import moto.server"]) {
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .status();
    }
    let mut bench = cargo(["bench", "-p", "fscache-remote", "--bench", "remote"]);
    if env::var_os("FSCACHE_BENCH_FULL").is_none() {
        bench.env("FSCACHE_BENCH_FULL", "1");
    }
    run(bench)
}

/// Whether `tool args…` runs and exits 0 (its output discarded).
fn succeeds(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `apt-get update`, then install `packages` without questions; whether
/// the install succeeded.
fn apt_install(packages: &[&str]) -> bool {
    println!("\n$ apt-get install -y {}", packages.join(" "));
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
}

/// The S3 server the remote suite and bench run against beside moto:
/// `s3s-fs` 0.14.1 (the newest that builds with this toolchain), from
/// crates.io, installed when `s3s-fs --version` fails. Built at
/// `opt-level = 1` without LTO: about 2 minutes on 2 cores instead of many,
/// and a test server's speed is not what is measured (the bench's
/// baseline goes through the same server).
fn ensure_s3s_fs() {
    if succeeds("s3s-fs", &["--version"]) {
        return;
    }
    println!("\n$ cargo install s3s-fs --version 0.14.1 --locked --features binary (opt-level 1)");
    let started = Instant::now();
    let ok = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "s3s-fs", "--version", "0.14.1", "--locked"])
        .args(["--features", "binary"])
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        println!(
            "ci: s3s-fs installed in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("installing s3s-fs failed: the s3s-fs test and bench rows say so and skip");
    }
}

/// Install the missing [`TEST_TOOLS`] with apt when we are root and apt is
/// there; otherwise say which tests will skip. Never fails: a test that
/// lacks its tool skips and says why.
fn ensure_test_tools() {
    let have = |tool: &str| {
        Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool} || test -x /sbin/{tool}"),
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ensure_fuse();
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(tool, _)| !have(tool))
        .map(|&(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root || !have("apt-get") {
        println!(
            "ci: missing {} (not root, or no apt-get): the tests that need them skip",
            missing.join(", ")
        );
        return;
    }
    if !apt_install(&missing) {
        println!(
            "ci: installing {} failed: the tests that need them skip",
            missing.join(", ")
        );
    }
}

/// The power-loss tests mount FUSE with `mount(2)` as root (fuser's pure
/// Rust mount: no libfuse, no `fusermount`), so they need only
/// `/dev/fuse`: load the module and make the node when it is missing.
fn ensure_fuse() {
    if Path::new("/dev/fuse").exists() {
        return;
    }
    let _ = Command::new("modprobe")
        .arg("fuse")
        .stderr(Stdio::null())
        .status();
    if !Path::new("/dev/fuse").exists() {
        let _ = Command::new("mknod")
            .args(["-m", "0666", "/dev/fuse", "c", "10", "229"])
            .stderr(Stdio::null())
            .status();
    }
    if !Path::new("/dev/fuse").exists() {
        println!("ci: no /dev/fuse (and it cannot be made here): the power-loss tests skip");
    }
}

/// The tests of every target. With cargo-nextest (when installed), each
/// test runs in a process of its own: a test that forks children cannot
/// then keep, for the instant between its fork and the child's exec, a
/// copy of another test's lock-file descriptor (that delays the release of
/// an OFD lock, and an eviction test sees the entry as still held). Without
/// nextest, the same isolation comes from one test at a time.
fn tests() -> Result<()> {
    let nextest = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if nextest {
        run(cargo([
            "nextest",
            "run",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--no-fail-fast",
        ]))?;
        // The benches, once each as tests (criterion's quick check).
        run(cargo(["test", "--workspace", "--benches"]))
    } else {
        println!("ci: cargo-nextest is not installed: running the tests one at a time");
        run(cargo([
            "test",
            "--workspace",
            "--all-targets",
            "--",
            "--test-threads=1",
        ]))
    }
}

/// The long power-loss sweep: the `powerloss` tests with more rounds.
fn powerloss(args: &[&str]) -> Result<()> {
    let (mut rounds, mut seed) = ("100", "0");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().ok_or(format!("`{a}` needs a value"))?;
        match *a {
            "--rounds" => rounds = value,
            "--seed" => seed = value,
            other => return Err(format!("unknown option `{other}`").into()),
        }
        value
            .parse::<u64>()
            .map_err(|_| format!("`{a}` takes a number, not `{value}`"))?;
    }
    ensure_test_tools();
    // One test at a time: a test's helper children, forked from this
    // process, must not hold copies of another test's descriptors.
    let mut test = cargo([
        "test",
        "--test",
        "suite",
        "powerloss",
        "--",
        "--nocapture",
        "--test-threads=1",
    ]);
    test.env("FSCACHE_POWERLOSS_ROUNDS", rounds);
    test.env("FSCACHE_POWERLOSS_SEED", seed);
    run(test)
}

/// The full I/O-error sweep of `crates/fscache-cli/tests/cli/io_errors.rs`:
/// every occurrence of every listed system call (of `calls` only, a comma
/// list, when given) failing with every errno.
fn ioerr(calls: Option<&str>) -> Result<()> {
    ensure_test_tools();
    run(cargo([
        "test",
        "-p",
        "fscache-cli",
        "--test",
        "cli",
        "--no-run",
    ]))?;
    // The sweep takes long: it runs a copy of the binary, so a rebuild in
    // the meantime does not change what is swept.
    let target = target_dir()?;
    let snapshot = target.join("ioerr");
    std::fs::create_dir_all(&snapshot)?;
    let bin = snapshot.join("fscache");
    std::fs::copy(target.join("debug/fscache"), &bin)?;
    let mut test = cargo([
        "test",
        "-p",
        "fscache-cli",
        "--test",
        "cli",
        "io_errors::",
        "--",
        "--nocapture",
    ]);
    test.env("FSCACHE_IOERR_FULL", "1");
    test.env("FSCACHE_IOERR_BIN", &bin);
    if std::env::var_os("FSCACHE_IOERR_JOBS").is_none() {
        test.env("FSCACHE_IOERR_JOBS", "2");
    }
    if let Some(calls) = calls {
        test.env("FSCACHE_IOERR_CALLS", calls);
    }
    run(test)
}

/// The CI bar, in order; the first failure stops it.
fn ci() -> Result<()> {
    ensure_test_tools();
    ensure_s3s_fs();
    run(cargo(["fmt", "--all", "--", "--check"]))?;
    run(cargo([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let mut doc = cargo(["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-Dwarnings");
    run(doc)?;
    tests()?;
    run(cargo(["test", "--workspace", "--doc"]))?;
    println!("\n$ cargo xtask pytest");
    let started = Instant::now();
    python::tests()?;
    println!(
        "ci: python step took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("\n$ cargo xtask stress --procs 4 --seconds 30");
    stress::stress(&stress::Options {
        procs: 4,
        seconds: 30,
        cache: None,
    })?;
    run(cargo(["bench", "--workspace", "--no-run"]))?;
    println!("\n$ cargo xtask dist (and render the man pages, parse the completions)");
    dist::check()?;
    let started = Instant::now();
    package()?;
    println!(
        "\nci: all steps passed (package step: {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo package` every publishable crate, extract the `.crate` files into
/// a scratch workspace whose `[patch.crates-io]` points each crate's name at
/// its extracted copy, and run `cargo test` there.
///
/// The patch makes the packaged crates depend on each other exactly as they
/// will once published (by version, from the registry), without publishing:
/// a patch that matches the requirement wins over whatever crates.io holds
/// under that name (crates.io has an unrelated `fscache`). The scratch
/// workspace has its own target directory under ours, so it never
/// invalidates the main build, and reuses the root `Cargo.lock`, so it
/// tests the dependency versions that the main build tests.
fn package() -> Result<()> {
    let meta = metadata()?;
    let target = PathBuf::from(
        meta["target_directory"]
            .as_str()
            .ok_or("cargo metadata has no target_directory")?,
    );
    // `publish = false` reads as `[]`; absent `publish` as null.
    let crates: Vec<(String, String)> = meta["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?
        .iter()
        .filter(|p| p["publish"].as_array().is_none_or(|r| !r.is_empty()))
        .filter_map(|p| Some((p["name"].as_str()?.into(), p["version"].as_str()?.into())))
        .collect();
    if crates.is_empty() {
        return Err("no publishable crate in the workspace".into());
    }

    // `--no-verify`: the test run below builds and tests each crate from
    // its package anyway, once for all of them instead of once per crate.
    // `--allow-dirty`: check the working tree as it is, before committing.
    let mut command = cargo(["package", "--no-verify", "--allow-dirty"]);
    for (name, _) in &crates {
        command.args(["-p", name]);
    }
    run(command)?;

    let check = target.join("package-check");
    let ws = check.join("ws");
    match fs::remove_dir_all(&ws) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("failed to remove `{}`: {e}", ws.display()).into()),
    }
    fs::create_dir_all(&ws).map_err(|e| format!("failed to create `{}`: {e}", ws.display()))?;

    let mut manifest = String::from(
        "# Written by `cargo xtask package`: the packaged crates, each patched in\n\
         # for its crates.io name so that they depend on each other's packages.\n\
         [workspace]\nresolver = \"2\"\nmembers = [\n",
    );
    let mut patch = String::from("\n[patch.crates-io]\n");
    for (name, version) in &crates {
        let dir = format!("{name}-{version}");
        // -m: the files get the extraction's time, not the archive's (cargo
        // writes fixed ones), so cargo sees them newer than what it built
        // from an earlier package in the same target directory.
        let mut tar = Command::new("tar");
        tar.arg("-mxzf")
            .arg(target.join("package").join(format!("{dir}.crate")))
            .arg("-C")
            .arg(&ws);
        run(tar)?;
        manifest.push_str(&format!("    \"{dir}\",\n"));
        patch.push_str(&format!("{name} = {{ path = \"{dir}\" }}\n"));
    }
    manifest.push_str("]\n");
    manifest.push_str(&patch);
    let write = |path: PathBuf, text: &[u8]| {
        fs::write(&path, text).map_err(|e| format!("failed to write `{}`: {e}", path.display()))
    };
    write(ws.join("Cargo.toml"), manifest.as_bytes())?;
    let lock = fs::read(root().join("Cargo.lock"))
        .map_err(|e| format!("failed to read the root Cargo.lock: {e}"))?;
    write(ws.join("Cargo.lock"), &lock)?;

    // --all-features: a crate's own tests may need its test-only features
    // (fscache-dir's `test-hooks`), which the workspace turns on through a
    // dev-dependency that packaging strips.
    // The workspace's own target directory: the packaged crates build
    // apart from the workspace's (their paths differ, and so do their
    // fingerprints), while the crates.io dependencies they share are
    // reused instead of built a second time.
    let mut test = cargo(["test", "--workspace", "--all-features"]);
    test.current_dir(&ws).env("CARGO_TARGET_DIR", &target);
    run(test)
}

/// `cargo metadata` of the workspace, without dependencies.
fn metadata() -> Result<Value> {
    let out = cargo(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed: {}", out.status).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The target directory, as cargo resolves it (env, config, default).
fn target_dir() -> Result<PathBuf> {
    metadata()?["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata has no target_directory".into())
}

/// Where criterion writes: `$CRITERION_HOME`, else `<target>/criterion`.
fn criterion_home() -> Result<PathBuf> {
    match env::var_os("CRITERION_HOME") {
        Some(home) => Ok(root().join(home)),
        None => Ok(target_dir()?.join("criterion")),
    }
}

/// One benchmark result read from criterion's `new/` directory.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) group: String,
    pub(crate) function: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) full_id: String,
    pub(crate) median_ns: f64,
}

impl Measured {
    fn is_baseline(&self) -> bool {
        let f = self.function.as_deref().unwrap_or("");
        ["raw", "baseline", "std"]
            .iter()
            .any(|p| f == *p || f.strip_prefix(p).is_some_and(|r| r.starts_with('_')))
    }
}

fn bench(filter: Option<&str>) -> Result<()> {
    let home = criterion_home()?;
    // Only results this run writes count; older ones stay for criterion's
    // own change reports. One second of slack for coarse file times.
    let started = SystemTime::now() - Duration::from_secs(1);
    let command = if filter == Some("lock") {
        // The lock bench alone, every group of it.
        cargo(["bench", "-p", "fscache-workspace", "--bench", "lock"])
    } else {
        // `--bench *`: bench targets only, not the libtest harness of
        // lib/bins.
        let mut command = cargo(["bench", "--workspace", "--bench", "*"]);
        if let Some(filter) = filter {
            command.arg("--").arg(filter);
        }
        command
    };
    run(command)?;

    let mut results = Vec::new();
    collect(&home, started, &mut results)?;
    let (peers, results): (Vec<Measured>, Vec<Measured>) = results
        .into_iter()
        .partition(|m| m.group.starts_with(lockbench::GROUP_PREFIX));
    if results.is_empty() && peers.is_empty() {
        println!("\nno benchmark results written under {}", home.display());
    } else if !results.is_empty() {
        print_table(&results);
    }
    lockbench::print(&peers, &home, started);
    Ok(())
}

/// Find `new/benchmark.json` + `new/estimates.json` pairs written since
/// `since` below `dir`.
fn collect(dir: &Path, since: SystemTime, out: &mut Vec<Measured>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("failed to read `{}`: {e}", dir.display()).into()),
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name() == Some("new".as_ref()) {
            if let Some(m) = read_measured(&path, since)? {
                out.push(m);
            }
        } else if path.file_name() != Some("report".as_ref()) {
            collect(&path, since, out)?;
        }
    }
    Ok(())
}

fn read_measured(new: &Path, since: SystemTime) -> Result<Option<Measured>> {
    let estimates = new.join("estimates.json");
    let Ok(meta) = fs::metadata(&estimates) else {
        return Ok(None);
    };
    if meta.modified()? < since {
        return Ok(None);
    }
    let read = |p: &Path| -> Result<Value> {
        let text =
            fs::read_to_string(p).map_err(|e| format!("failed to read `{}`: {e}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let bench = read(&new.join("benchmark.json"))?;
    let est = read(&estimates)?;
    let string = |v: &Value| v.as_str().map(str::to_owned);
    let Some(median_ns) = est["median"]["point_estimate"].as_f64() else {
        return Ok(None);
    };
    Ok(Some(Measured {
        group: string(&bench["group_id"]).unwrap_or_default(),
        function: string(&bench["function_id"]),
        value: string(&bench["value_str"]),
        full_id: string(&bench["full_id"]).unwrap_or_default(),
        median_ns,
    }))
}

/// The baseline of `m` by the rule in the crate docs, if any.
fn baseline_of<'a>(m: &Measured, all: &'a [Measured]) -> Option<&'a Measured> {
    if m.is_baseline() {
        return None;
    }
    let candidates: Vec<&Measured> = all
        .iter()
        .filter(|b| b.is_baseline() && b.group == m.group && b.value == m.value)
        .collect();
    let suffix = format!("_{}", m.function.as_deref().unwrap_or(""));
    candidates
        .iter()
        .find(|b| b.function.as_deref().unwrap_or("").ends_with(&suffix))
        .copied()
        .or(match candidates.as_slice() {
            [only] => Some(*only),
            _ => None,
        })
}

/// Sort key: group, parameter (numerically when it is a number), then the
/// benchmark's name, with each baseline right after the first benchmark
/// compared with it.
fn sort_key(m: &Measured, all: &[Measured]) -> (String, u64, String, String, bool) {
    let value = m.value.clone().unwrap_or_default();
    let number = value.parse().unwrap_or(u64::MAX);
    let own = m.function.clone().unwrap_or_default();
    let subject = if m.is_baseline() {
        all.iter()
            .filter(|x| baseline_of(x, all).is_some_and(|b| std::ptr::eq(b, m)))
            .filter_map(|x| x.function.clone())
            .min()
            .unwrap_or_else(|| own.clone())
    } else {
        own
    };
    (m.group.clone(), number, value, subject, m.is_baseline())
}

pub(crate) fn human(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn print_table(results: &[Measured]) {
    let mut sorted: Vec<&Measured> = results.iter().collect();
    sorted.sort_by_key(|m| sort_key(m, results));
    let rows: Vec<[String; 3]> = sorted
        .iter()
        .map(|m| {
            let ratio = match baseline_of(m, results) {
                Some(b) => format!(
                    "{:.2}× {}",
                    m.median_ns / b.median_ns,
                    b.function.as_deref().unwrap_or("")
                ),
                None if m.is_baseline() => "(baseline)".to_owned(),
                None => "-".to_owned(),
            };
            [m.full_id.clone(), human(m.median_ns), ratio]
        })
        .collect();
    let header = ["benchmark", "median", "vs baseline"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    println!();
    println!("{:<w0$}  {:>w1$}  {}", header[0], header[1], header[2]);
    for [id, median, ratio] in rows {
        // `{:>w$}` counts chars, so `µ` pads correctly.
        println!("{id:<w0$}  {median:>w1$}  {ratio}");
    }
}

/// Build `fscache-test-helper` and return the path of its executable, as
/// cargo reports it (so `CARGO_TARGET_DIR` and config are respected).
pub(crate) fn build_helper() -> Result<PathBuf> {
    let out = cargo([
        "build",
        "--quiet",
        "--message-format=json",
        "-p",
        "fscache-workspace",
        "--bin",
        "fscache-test-helper",
    ])
    .stderr(Stdio::inherit())
    .output()?;
    if !out.status.success() {
        return Err(format!("building fscache-test-helper failed: {}", out.status).into());
    }
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "fscache-test-helper" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(exe.into());
            }
        }
    }
    Err("cargo did not report the fscache-test-helper executable".into())
}

/// The lock layer across two real processes: this process holds an
/// exclusive lock; a helper process first fails to take it without
/// waiting, then waits for it and gets it once we release.
fn demo_lock() -> Result<()> {
    println!("== fscache-lock: OFD locks across processes ==");
    let helper = build_helper()?;
    let path = env::temp_dir().join(format!("fscache-demo-{}.lock", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("failed to create `{}`: {e}", path.display()))?;
    let result = demo_lock_with(&helper, &path, file);
    let _ = fs::remove_file(&path);
    result
}

fn demo_lock_with(helper: &Path, path: &Path, file: File) -> Result<()> {
    let held = FileLock::lock(file, LockKind::Exclusive)?;
    println!(
        "[xtask {}] holds an exclusive lock on {}",
        std::process::id(),
        path.display()
    );

    let spawn = |mode: &str| {
        Command::new(helper)
            .args([
                OsString::from("lock"),
                path.into(),
                "exclusive".into(),
                mode.into(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
    };

    let child = spawn("try")?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("[helper {pid}] try: {line}");
    }

    let mut child = spawn("wait")?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut next = || -> Result<String> { Ok(lines.next().ok_or("the helper ended early")??) };
    println!("[helper {pid}] {}", next()?);
    println!("[xtask] keeping the lock for 1 s…");
    std::thread::sleep(Duration::from_secs(1));
    println!("[xtask] releasing");
    let released = Instant::now();
    drop(held);
    let line = next()?;
    println!(
        "[helper {pid}] {line} ({:.1} ms after the release)",
        released.elapsed().as_secs_f64() * 1e3
    );
    // Closing the helper's stdin tells it to unlock and exit.
    drop(child.stdin.take());
    let status = child.wait()?;
    println!("[helper {pid}] exited: {status}");
    if !status.success() || line != "locked" {
        return Err("the helper did not get the lock".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(group: &str, function: &str, value: Option<&str>) -> Measured {
        Measured {
            group: group.into(),
            function: Some(function.into()),
            value: value.map(Into::into),
            full_id: String::new(),
            median_ns: 1.0,
        }
    }

    #[test]
    fn baseline_matching() {
        let all = [
            m("g", "shared", None),
            m("g", "raw_fcntl_shared", None),
            m("g", "exclusive", None),
            m("g", "raw_fcntl_exclusive", None),
            m("g", "other", None),
            m("h", "x", Some("4")),
            m("h", "std", Some("4")),
            m("h", "std", Some("8")),
            m("h", "rawish", Some("4")),
        ];
        let base = |i: usize| baseline_of(&all[i], &all).and_then(|b| b.function.clone());
        assert_eq!(base(0).as_deref(), Some("raw_fcntl_shared"));
        assert_eq!(base(2).as_deref(), Some("raw_fcntl_exclusive"));
        assert_eq!(base(4), None, "two baselines, none named for it");
        assert_eq!(base(5).as_deref(), Some("std"), "the only one, same value");
        assert!(all[1].is_baseline() && all[6].is_baseline());
        assert!(!all[8].is_baseline(), "`rawish` is not `raw_…`");
        assert_eq!(human(1500.0), "1.50 µs");
    }
}
