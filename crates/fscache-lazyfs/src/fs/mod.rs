//! The passthrough FUSE file system: every request is forwarded to the
//! backing directory through descriptors, and fed to the [`Model`].
//!
//! Each inode the kernel learns of is pinned by an `O_PATH` descriptor for
//! the whole mount (`forget` is ignored): the model names inodes by their
//! FUSE number, and a pinned backing inode can neither be reused under
//! another identity nor lose the content a power loss may need, even once
//! unlinked. Regular opens go through `/proc/self/fd/N` of that
//! descriptor; every entry change is an `*at` call relative to the
//! parent's.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use rustix::fs::{AtFlags, Mode, OFlags, Stat, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::model::{Model, NodeId};

/// How long the kernel may cache names and attributes. Every change goes
/// through this file system, so caching cannot go stale.
const TTL: Duration = Duration::from_secs(1);

/// One inode the kernel knows.
struct Node {
    /// `O_PATH | O_NOFOLLOW` descriptor pinning the backing inode.
    fd: OwnedFd,
    kind: FileType,
}

/// Everything behind the one lock of the file system.
pub(crate) struct State {
    nodes: HashMap<NodeId, Node>,
    by_backing: HashMap<(u64, u64), NodeId>,
    next_ino: NodeId,
    files: HashMap<u64, OwnedFd>,
    dirs: HashMap<u64, Vec<(NodeId, FileType, OsString)>>,
    next_fh: u64,
    pub(crate) model: Model,
    /// The power is off: every request fails with `EIO`.
    pub(crate) dead: bool,
    /// The last requests, for the report of a loss.
    pub(crate) log: Vec<String>,
}

/// How many requests the log keeps.
const LOG_KEEP: usize = 200;

fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc_ifmt::S_IFMT {
        libc_ifmt::S_IFDIR => FileType::Directory,
        libc_ifmt::S_IFLNK => FileType::Symlink,
        libc_ifmt::S_IFIFO => FileType::NamedPipe,
        libc_ifmt::S_IFSOCK => FileType::Socket,
        libc_ifmt::S_IFCHR => FileType::CharDevice,
        libc_ifmt::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The `S_IF*` constants (rustix keeps them in `FileType`; plain numbers
/// read better in one match).
mod libc_ifmt {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFBLK: u32 = 0o060000;
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn attr(ino: NodeId, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw_os_error())
}

fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as _,
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = d.subsec_nanos() as i64;
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec as _,
                }
            }
        },
    }
}

impl State {
    /// A fresh state over `root`, the backing directory.
    pub(crate) fn new(root: OwnedFd) -> std::io::Result<Self> {
        let st = rustix::fs::fstat(&root)?;
        let mut s = State {
            nodes: HashMap::new(),
            by_backing: HashMap::new(),
            next_ino: 2,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            model: Model::new(),
            dead: false,
            log: Vec::new(),
        };
        s.by_backing.insert((st.st_dev, st.st_ino), 1);
        s.nodes.insert(
            1,
            Node {
                fd: root,
                kind: FileType::Directory,
            },
        );
        Ok(s)
    }

    fn note(&mut self, what: String) {
        if self.log.len() >= LOG_KEEP {
            self.log.remove(0);
        }
        self.log.push(what);
    }

    fn fd(&self, ino: NodeId) -> Result<&OwnedFd, fuser::Errno> {
        self.nodes
            .get(&ino)
            .map(|n| &n.fd)
            .ok_or(fuser::Errno::ESTALE)
    }

    /// The node of `parent/name`, pinned on first sight.
    fn child(&mut self, parent: NodeId, name: &OsStr) -> Result<(NodeId, Stat), Errno> {
        let pfd = self.fd(parent).map_err(|_| Errno::STALE)?;
        let st = rustix::fs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if let Some(&ino) = self.by_backing.get(&(st.st_dev, st.st_ino)) {
            return Ok((ino, st));
        }
        let fd = rustix::fs::openat(
            pfd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st2 = rustix::fs::fstat(&fd)?;
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) {
            return Err(Errno::AGAIN);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_backing.insert((st.st_dev, st.st_ino), ino);
        self.nodes.insert(
            ino,
            Node {
                fd,
                kind: kind_of(st.st_mode),
            },
        );
        Ok((ino, st))
    }

    /// The live entries of directory `ino`.
    pub(crate) fn list(&mut self, ino: NodeId) -> Result<Vec<(NodeId, FileType, OsString)>, Errno> {
        let fd = self.fd(ino).map_err(|_| Errno::STALE)?;
        let dir = rustix::fs::openat(
            fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut names = Vec::new();
        for ent in rustix::fs::Dir::read_from(&dir)? {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(OsStr::from_bytes(name).to_owned());
        }
        let mut out = Vec::new();
        for name in names {
            match self.child(ino, &name) {
                Ok((child, st)) => out.push((child, kind_of(st.st_mode), name)),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Record `dir`'s durable entries before its first change.
    fn before_dir_change(&mut self, dir: NodeId) -> Result<(), Errno> {
        if self.model.needs_dir(dir) {
            let entries: BTreeMap<OsString, NodeId> = self
                .list(dir)?
                .into_iter()
                .map(|(n, _, name)| (name, n))
                .collect();
            self.model.record_dir(dir, entries);
        }
        Ok(())
    }

    /// The live content of `ino` (a regular file), through its pinned
    /// descriptor, so even an unlinked one.
    pub(crate) fn content(&self, ino: NodeId) -> Option<Vec<u8>> {
        let n = self.nodes.get(&ino)?;
        if n.kind != FileType::RegularFile {
            return None;
        }
        std::fs::read(proc_path(&n.fd)).ok()
    }

    /// Record `file`'s durable content before its first change.
    fn before_file_change(&mut self, file: NodeId) {
        if self.model.needs_file(file) {
            let c = self.content(file).unwrap_or_default();
            self.model.record_file(file, c);
        }
    }

    /// Pin a node this file system just created as `parent/name`.
    fn created(&mut self, parent: NodeId, name: &OsStr, what: &str) -> Result<FileAttr, Errno> {
        let (ino, st) = self.child(parent, name)?;
        match kind_of(st.st_mode) {
            FileType::Directory => self.model.record_dir(ino, BTreeMap::new()),
            FileType::RegularFile => self.model.record_file(ino, Vec::new()),
            _ => {}
        }
        let line = format!("{what} {}/{}", parent, name.to_string_lossy());
        self.model.add(parent, name, ino, line.clone());
        self.note(line);
        Ok(attr(ino, &st))
    }

    pub(crate) fn node_kind(&self, ino: NodeId) -> Option<FileType> {
        self.nodes.get(&ino).map(|n| n.kind)
    }

    pub(crate) fn node_fd(&self, ino: NodeId) -> Option<&OwnedFd> {
        self.nodes.get(&ino).map(|n| &n.fd)
    }
}

/// The file system handed to `fuser`.
pub(crate) struct LazyFsImpl {
    pub(crate) state: Arc<Mutex<State>>,
}

impl LazyFsImpl {
    /// The state, or `EIO` once the power is off.
    fn live(&self) -> Result<MutexGuard<'_, State>, fuser::Errno> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.dead {
            return Err(fuser::Errno::EIO);
        }
        Ok(s)
    }
}

macro_rules! live {
    ($self:ident, $reply:ident) => {
        match $self.live() {
            Ok(s) => s,
            Err(e) => return $reply.error(e),
        }
    };
}

macro_rules! tryr {
    ($e:expr, $reply:ident) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(errno(e)),
        }
    };
}

// The FUSE requests, each forwarded to the backing directory and fed to
// the model (after the macros above, which it uses).
mod ops;
