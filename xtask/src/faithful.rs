//! `cargo xtask faithful`: the fidelity check on a real tree no one here
//! wrote, judged from outside (issue 17's "a real tree" test).
//!
//! The tree is a Debian `debootstrap --variant=minbase` root, made once
//! in `<target>/faithful/debian-minbase` and reused (debootstrap is
//! installed with apt when missing, as root); where debootstrap cannot
//! run (no network, not root), a copy of part of this machine's `/usr`
//! (`bin`, `sbin`, `share/man`) in `<target>/faithful/usr-copy`
//! instead. `crates/fscache-remote/tests/remote/faithful.rs`'s
//! `a_real_tree_survives_store_load_push_and_pull` then takes it through
//! `store_tree` → load and `store_tree` → push → pull (fs service and
//! moto's S3), with the caches on ext4 (`<target>/faithful/tmp`) and on
//! tmpfs (`/dev/shm`), and `rsync -aHAXn --numeric-ids --itemize-changes`
//! must find nothing different. CI runs the generated tree with every
//! feature instead (the same file's other tests).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{cargo, ensure_test_tools, run, target_dir, Result};

/// The Debian suite debootstrap makes, and the mirror it fetches from.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// Run the real-tree round trips on ext4 and tmpfs.
pub(crate) fn faithful() -> Result<()> {
    ensure_test_tools();
    let tree = real_tree()?;
    let scratch = target_dir()?.join("faithful/tmp");
    fs::create_dir_all(&scratch)
        .map_err(|e| format!("failed to create `{}`: {e}", scratch.display()))?;
    let mut places = vec![scratch];
    if fs_type(Path::new("/dev/shm")).as_deref() == Some("tmpfs") {
        places.push(PathBuf::from("/dev/shm"));
    } else {
        println!("faithful: /dev/shm is not tmpfs here: ext4 only");
    }
    for tmp in places {
        let mut test = cargo([
            "test",
            "-p",
            "fscache-remote",
            "--test",
            "remote",
            "--",
            "--exact",
            "faithful::a_real_tree_survives_store_load_push_and_pull",
            "--nocapture",
        ]);
        test.env("FSCACHE_FAITHFUL_TREE", &tree).env("TMPDIR", &tmp);
        run(test)?;
    }
    println!("\nfaithful: {} round-trips unchanged", tree.display());
    Ok(())
}

/// The real tree: made once, then reused. The bench of `store_tree`
/// beside `cp -a` uses it too, when it is there.
pub(crate) fn real_tree() -> Result<PathBuf> {
    let base = target_dir()?.join("faithful");
    let debian = base.join("debian-minbase");
    if debian.join("etc/debian_version").exists() {
        return Ok(debian);
    }
    let usr = base.join("usr-copy");
    if usr.join("usr/bin").exists() {
        return Ok(usr);
    }
    fs::create_dir_all(&base).map_err(|e| format!("failed to create `{}`: {e}", base.display()))?;
    match debootstrap(&debian) {
        Ok(()) => return Ok(debian),
        Err(why) => println!("faithful: no debootstrap root ({why}); copying /usr instead"),
    }
    let partial = base.join("usr-copy.tmp");
    remove_all(&partial)?;
    fs::create_dir_all(partial.join("usr/share"))?;
    let mut cp = Command::new("cp");
    cp.arg("-a")
        .args(["/usr/bin", "/usr/sbin"])
        .arg(partial.join("usr"));
    run(cp)?;
    let mut cp = Command::new("cp");
    cp.args(["-a", "/usr/share/man"])
        .arg(partial.join("usr/share"));
    run(cp)?;
    fs::rename(&partial, &usr)?;
    Ok(usr)
}

/// Make a minbase root at `dest` (through `dest.tmp`, renamed when
/// complete), installing debootstrap when it is missing.
fn debootstrap(dest: &Path) -> Result<()> {
    let have = || {
        Command::new("sh")
            .args([
                "-c",
                "command -v debootstrap || test -x /usr/sbin/debootstrap",
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have() {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "-qq", "debootstrap"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(apt)?;
    }
    let partial = dest.with_extension("tmp");
    remove_all(&partial)?;
    let mut d = Command::new("debootstrap");
    d.args(["--variant=minbase", SUITE])
        .arg(&partial)
        .arg(MIRROR);
    run(d)?;
    fs::rename(&partial, dest)
        .map_err(|e| format!("failed to rename `{}`: {e}", partial.display()))?;
    Ok(())
}

fn remove_all(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("failed to remove `{}`: {e}", p.display()).into())
        }
        _ => Ok(()),
    }
}

/// The file system type of `p` as `stat -f` names it.
fn fs_type(p: &Path) -> Option<String> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(p)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
