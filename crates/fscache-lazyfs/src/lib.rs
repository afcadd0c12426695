//! A passthrough FUSE file system that forgets what was not synced when
//! the power goes out: test tooling to prove crash consistency, after
//! LazyFS (the FUSE file system Jepsen uses) and CrashMonkey.
//!
//! Use this when a test must show what survives a power loss, which a
//! `SIGKILL` cannot: the page cache keeps everything a killed process
//! wrote. [`LazyFs::mount`] forwards every request to a backing directory
//! and keeps a model of what is not durable yet; [`LazyFs::power_loss`]
//! turns the power off (every later request fails with `EIO`) and writes
//! the durable state, as a fresh directory, where the test mounts it again.
//!
//! # Design
//!
//! * What counts as durable is the [`model`]'s rules: a directory's entries
//!   as of its last `fsync`, in per-directory order; a file's data as of
//!   its last `fsync`/`fdatasync`, lost by whole pages. [`Loss`] picks
//!   "lose all unsynced" or a seeded random subset that respects the
//!   `fsync` barriers.
//! * Locks: the file system does not negotiate `FUSE_POSIX_LOCKS`, so the
//!   kernel keeps `fcntl` locks itself, per open file description for OFD
//!   locks, as on a local file system: the cache's locking protocol runs
//!   unchanged, across processes.
//! * Supported: `rename` and `renameat2` (`RENAME_NOREPLACE`,
//!   `RENAME_EXCHANGE`), `link`, `symlink`, `mknod`, xattrs on files and
//!   directories, `fallocate`, `fsync` of files and directories.
//!   `copy_file_range` and `FICLONE` are not offered, so callers fall back
//!   to plain writes (which the model sees).
//!
//! # Limitations
//!
//! * `sync(2)` and `syncfs(2)` never reach a `/dev/fuse` daemon (the kernel
//!   sends `FUSE_SYNCFS` only to virtiofs), so they make nothing durable
//!   here: [`LazyFs::sync`] stands for them. Code that relies on `syncfs`
//!   alone is reported as losing data, which on a real file system it
//!   would not.
//! * Inode attributes (mode, owner, times, xattrs) are taken as they are at
//!   the loss, not rolled back; only entries and file data are.
//! * Every inode seen stays pinned by a descriptor until unmount: fine for
//!   tests, not for millions of files.
//! * Needs `/dev/fuse` and root (the pure-Rust mount calls `mount(2)`
//!   itself); [`LazyFs::available`] says why not.
//!
//! # Example
//!
//! ```no_run
//! use fscache_lazyfs::{LazyFs, Loss};
//! # fn main() -> std::io::Result<()> {
//! let fs = LazyFs::mount("/tmp/backing".as_ref(), "/tmp/mnt".as_ref())?;
//! std::fs::write("/tmp/mnt/file", b"not synced")?;
//! let report = fs.power_loss(Loss::AllUnsynced, "/tmp/after".as_ref())?;
//! fs.unmount()?;
//! assert!(!std::path::Path::new("/tmp/after/file").exists());
//! println!("{report}");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod fs;
pub mod model;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, FileType, MountOption};
use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};

use model::{Durable, NodeId};
pub use model::{Loss, PAGE};

/// A mounted lazy file system. Dropping it unmounts (lazily, if busy).
#[must_use = "dropping it unmounts the file system"]
pub struct LazyFs {
    session: Option<BackgroundSession>,
    state: Arc<Mutex<fs::State>>,
    mountpoint: PathBuf,
}

/// What a power loss did.
#[derive(Debug, Clone, Default)]
pub struct LossReport {
    /// What was lost: one line per metadata operation or file.
    pub lost: Vec<String>,
    /// How many unsynced metadata operations a random loss kept anyway.
    pub kept: usize,
    /// How many metadata operations `fsync`s had made durable.
    pub durable: u64,
    /// The last requests the file system served before the loss.
    pub log: Vec<String>,
}

impl fmt::Display for LossReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "power loss: {} made durable by fsync, {} unsynced kept, {} lost",
            self.durable,
            self.kept,
            self.lost.len()
        )?;
        for l in self.lost.iter().take(40) {
            writeln!(f, "  {l}")?;
        }
        if self.lost.len() > 40 {
            writeln!(f, "  … {} more", self.lost.len() - 40)?;
        }
        writeln!(f, "last requests:")?;
        for l in self.log.iter().rev().take(40).rev() {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// What is pending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Metadata operations not yet durable.
    pub ops: usize,
    /// Files with unsynced data.
    pub dirty_files: usize,
}

impl LazyFs {
    /// Whether this process can mount it: `Err` says why not (no
    /// `/dev/fuse`, not root).
    pub fn available() -> Result<(), String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        if !rustix::process::geteuid().is_root() {
            return Err("mounting FUSE without fusermount needs root".into());
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("cannot open /dev/fuse: {e}")),
        }
    }

    /// `mount(2)` a lazy file system over `mountpoint` that forwards to
    /// `backing`, whose content counts as durable.
    ///
    /// # Errors
    ///
    /// `backing` cannot be opened, or the mount failed (see
    /// [`LazyFs::available`]).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyFs> {
        let root = rustix::fs::open(
            backing,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let state = Arc::new(Mutex::new(fs::State::new(root)?));
        let fs = fs::LazyFsImpl {
            state: state.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lazyfs".into()),
            MountOption::Subtype("lazyfs".into()),
            MountOption::DefaultPermissions,
        ];
        // Let other users' processes in too (as root `mount(2)` allows it).
        config.acl = fuser::SessionACL::All;
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(LazyFs {
            session: Some(session),
            state,
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    fn state(&self) -> std::sync::MutexGuard<'_, fs::State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make everything durable, as `sync(2)` or `syncfs(2)` would (which
    /// never reach a FUSE daemon; see the crate docs).
    pub fn sync(&self) {
        let mut s = self.state();
        let mut model = std::mem::take(&mut s.model);
        model.sync_all(&mut |n| s.content(n));
        s.model = model;
    }

    /// What is not durable now.
    pub fn pending(&self) -> Pending {
        let s = self.state();
        Pending {
            ops: s.model.pending_ops(),
            dirty_files: s.model.dirty_files().len(),
        }
    }

    /// The pending metadata operations, oldest first.
    pub fn pending_log(&self) -> Vec<String> {
        self.state().model.pending_log()
    }

    /// Turn the power off: from now on every request fails with `EIO`
    /// (closing still works, as processes die), and the durable state is
    /// written to `out` (created; it must not exist or be empty), with
    /// the modes, owners, times and xattrs the inodes have now.
    ///
    /// # Errors
    ///
    /// The power was already off, or writing `out` failed.
    pub fn power_loss(&self, loss: Loss, out: &Path) -> io::Result<LossReport> {
        let mut s = self.state();
        if s.dead {
            return Err(io::Error::other("the power is already off"));
        }
        s.dead = true;
        let model = std::mem::take(&mut s.model);
        let durable_ops = model.durable_ops();
        let d = model.lose(loss, &mut |n| s.content(n));
        materialize(&mut s, &d, out)?;
        Ok(LossReport {
            lost: d.lost,
            kept: d.kept,
            durable: durable_ops,
            log: s.log.clone(),
        })
    }

    /// Unmount and wait for the file system thread.
    ///
    /// # Errors
    ///
    /// The unmount failed (busy: some process still has a file open); the
    /// mount is then detached lazily and the error returned.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // `release` of the last closed files reaches the daemon
        // asynchronously, and keeps the mount busy until it has: retry
        // for a while.
        let mut tries = 0;
        let res = loop {
            match rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::empty()) {
                Err(rustix::io::Errno::BUSY) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r,
            }
        };
        match res {
            Ok(()) => {
                // Already unmounted: fuser's own unmount then fails
                // harmlessly; the thread ends as /dev/fuse reports ENODEV.
                let _ = session.join();
                Ok(())
            }
            Err(e) => {
                let _ =
                    rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
                drop(session);
                Err(io::Error::other(format!(
                    "failed to unmount `{}`: {e} (detached lazily)",
                    self.mountpoint.display()
                )))
            }
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
            // The session's own drop unmounts (already gone) and leaves the
            // thread to end when the kernel drops the connection.
            self.session.take();
        }
    }
}

/// Write the durable state `d` of the file system `s` into `out`.
fn materialize(s: &mut fs::State, d: &Durable, out: &Path) -> io::Result<()> {
    std::fs::create_dir_all(out)?;
    let mut stack: Vec<(NodeId, PathBuf)> = vec![(1, out.to_owned())];
    let mut dirs: Vec<(NodeId, PathBuf)> = vec![(1, out.to_owned())];
    let mut seen_dirs: HashSet<NodeId> = HashSet::from([1]);
    let mut files: HashMap<NodeId, PathBuf> = HashMap::new();
    while let Some((dir, path)) = stack.pop() {
        let entries: Vec<(OsString, NodeId)> = match d.dirs.get(&dir) {
            Some(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            // Unchanged since the mount: as it is live.
            None => s
                .list(dir)
                .map(|l| l.into_iter().map(|(n, _, name)| (name, n)).collect())
                .unwrap_or_default(),
        };
        for (name, node) in entries {
            let p = path.join(&name);
            let Some(kind) = s.node_kind(node) else {
                continue;
            };
            match kind {
                FileType::Directory => {
                    // A directory has one name; a second is impossible
                    // here, but never loop.
                    if !seen_dirs.insert(node) {
                        continue;
                    }
                    std::fs::create_dir(&p)?;
                    stack.push((node, p.clone()));
                    dirs.push((node, p));
                }
                FileType::RegularFile => {
                    if let Some(first) = files.get(&node) {
                        std::fs::hard_link(first, &p)?;
                        continue;
                    }
                    let content = match d.files.get(&node) {
                        Some(c) => c.clone(),
                        None => s.content(node).unwrap_or_default(),
                    };
                    std::fs::write(&p, content)?;
                    attrs(s, node, &p, kind);
                    files.insert(node, p);
                }
                FileType::Symlink => {
                    let fd = s.node_fd(node).expect("known");
                    let target = rustix::fs::readlinkat(fd, "", Vec::new())?;
                    std::os::unix::fs::symlink(
                        std::ffi::OsStr::from_encoded_bytes_checked(target.as_bytes()),
                        &p,
                    )?;
                    attrs(s, node, &p, kind);
                }
                other => {
                    let fd = s.node_fd(node).expect("known");
                    let st = rustix::fs::fstat(fd)?;
                    let ft = match other {
                        FileType::NamedPipe => rustix::fs::FileType::Fifo,
                        FileType::Socket => rustix::fs::FileType::Socket,
                        FileType::CharDevice => rustix::fs::FileType::CharacterDevice,
                        _ => rustix::fs::FileType::BlockDevice,
                    };
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        &p,
                        ft,
                        Mode::from_raw_mode(st.st_mode & 0o7777),
                        st.st_rdev,
                    )?;
                    attrs(s, node, &p, kind);
                }
            }
        }
    }
    // Directories last, deepest first: their times must not move again.
    for (node, p) in dirs.iter().rev() {
        attrs(s, *node, p, FileType::Directory);
    }
    Ok(())
}

/// Give `p` the mode, owner, times and xattrs `node` has now (best
/// effort: the model does not roll attributes back).
fn attrs(s: &fs::State, node: NodeId, p: &Path, kind: FileType) {
    let Some(fd) = s.node_fd(node) else { return };
    let Ok(st) = rustix::fs::fstat(fd) else {
        return;
    };
    let _ = rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    );
    if kind == FileType::Symlink {
        return;
    }
    let proc = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(fd)
    ));
    let mut names = vec![0u8; 64 * 1024];
    if let Ok(n) = rustix::fs::listxattr(&proc, &mut names[..]) {
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = std::ffi::OsStr::from_encoded_bytes_checked(name);
            let mut value = vec![0u8; 64 * 1024];
            if let Ok(len) = rustix::fs::getxattr(&proc, name, &mut value[..]) {
                let _ =
                    rustix::fs::setxattr(p, name, &value[..len], rustix::fs::XattrFlags::empty());
            }
        }
    }
    let _ = rustix::fs::chmodat(
        rustix::fs::CWD,
        p,
        Mode::from_raw_mode(st.st_mode & 0o7777),
        AtFlags::empty(),
    );
    let ts = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    let _ = rustix::fs::utimensat(rustix::fs::CWD, p, &ts, AtFlags::empty());
}

/// `OsStr` from the bytes a syscall returned.
trait FromBytes {
    fn from_encoded_bytes_checked(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_checked(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}
