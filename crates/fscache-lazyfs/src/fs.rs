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

impl Filesystem for LazyFsImpl {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        // No FUSE_POSIX_LOCKS: the kernel keeps locks itself, per open
        // file description for OFD locks, exactly as on a local file
        // system. No writeback cache: every write reaches `write` here.
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = live!(self, reply);
        let (ino, st) = tryr!(s.child(parent.0, name), reply);
        reply.entry(&TTL, &attr(ino, &st), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = live!(self, reply);
        let fd = match s.fd(ino.0) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        let st = tryr!(rustix::fs::fstat(fd), reply);
        reply.attr(&TTL, &attr(ino.0, &st));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = live!(self, reply);
        let ino = ino.0;
        let Some(kind) = s.node_kind(ino) else {
            return reply.error(fuser::Errno::ESTALE);
        };
        if let Some(size) = size {
            s.before_file_change(ino);
            let old = tryr!(rustix::fs::fstat(s.fd(ino).expect("known")), reply).st_size as u64;
            let r = match fh.and_then(|fh| s.files.get(&fh.0)) {
                Some(fd) => rustix::fs::ftruncate(fd, size),
                None => {
                    match rustix::fs::open(
                        proc_path(s.fd(ino).expect("known")),
                        OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => rustix::fs::ftruncate(&fd, size),
                        Err(e) => Err(e),
                    }
                }
            };
            tryr!(r, reply);
            s.model.resize(ino, old, size);
            s.note(format!("truncate {ino} to {size}"));
        }
        let fd = s.fd(ino).expect("known");
        if let Some(mode) = mode {
            if kind != FileType::Symlink {
                tryr!(
                    rustix::fs::chmodat(
                        rustix::fs::CWD,
                        proc_path(fd),
                        Mode::from_raw_mode(mode & 0o7777),
                        AtFlags::empty()
                    ),
                    reply
                );
            }
        }
        if uid.is_some() || gid.is_some() {
            tryr!(
                rustix::fs::chownat(
                    fd,
                    "",
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                    AtFlags::EMPTY_PATH
                ),
                reply
            );
        }
        if (atime.is_some() || mtime.is_some()) && kind != FileType::Symlink {
            let ts = Timestamps {
                last_access: timespec(atime),
                last_modification: timespec(mtime),
            };
            tryr!(
                rustix::fs::utimensat(rustix::fs::CWD, proc_path(fd), &ts, AtFlags::empty()),
                reply
            );
        }
        let st = tryr!(rustix::fs::fstat(fd), reply);
        reply.attr(&TTL, &attr(ino, &st));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = live!(self, reply);
        let fd = match s.fd(ino.0) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        let target = tryr!(rustix::fs::readlinkat(fd, "", Vec::new()), reply);
        reply.data(target.as_bytes());
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        tryr!(s.before_dir_change(parent.0), reply);
        let pfd = s.fd(parent.0).expect("known");
        tryr!(
            rustix::fs::mknodat(
                pfd,
                name,
                rustix::fs::FileType::from_raw_mode(mode),
                Mode::from_raw_mode(mode & !umask & 0o7777),
                rdev as u64
            ),
            reply
        );
        let a = tryr!(s.created(parent.0, name, "mknod"), reply);
        reply.entry(&TTL, &a, Generation(0));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        tryr!(s.before_dir_change(parent.0), reply);
        let pfd = s.fd(parent.0).expect("known");
        tryr!(
            rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(mode & !umask & 0o7777)),
            reply
        );
        let a = tryr!(s.created(parent.0, name, "mkdir"), reply);
        reply.entry(&TTL, &a, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent.0, name, AtFlags::empty(), "unlink", reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent.0, name, AtFlags::REMOVEDIR, "rmdir", reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        tryr!(s.before_dir_change(parent.0), reply);
        let pfd = s.fd(parent.0).expect("known");
        tryr!(rustix::fs::symlinkat(target, pfd, link_name), reply);
        let a = tryr!(s.created(parent.0, link_name, "symlink"), reply);
        reply.entry(&TTL, &a, Generation(0));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        let (from, to) = (parent.0, newparent.0);
        tryr!(s.before_dir_change(from), reply);
        tryr!(s.before_dir_change(to), reply);
        let (node, _) = tryr!(s.child(from, name), reply);
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let other = if exchange {
            Some(tryr!(s.child(to, newname), reply).0)
        } else {
            None
        };
        let mut rflags = rustix::fs::RenameFlags::empty();
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            rflags |= rustix::fs::RenameFlags::NOREPLACE;
        }
        if exchange {
            rflags |= rustix::fs::RenameFlags::EXCHANGE;
        }
        let ffd = s.fd(from).expect("known");
        let tfd = s.fd(to).expect("known");
        tryr!(
            rustix::fs::renameat_with(ffd, name, tfd, newname, rflags),
            reply
        );
        let line = format!(
            "rename {from}/{} -> {to}/{}{}",
            name.to_string_lossy(),
            newname.to_string_lossy(),
            if exchange { " (exchange)" } else { "" }
        );
        s.model
            .rename(from, name, node, to, newname, other, line.clone());
        s.note(line);
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        tryr!(s.before_dir_change(newparent.0), reply);
        let fd = match s.fd(ino.0) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        let pfd = s.fd(newparent.0).expect("known");
        tryr!(
            rustix::fs::linkat(fd, "", pfd, newname, AtFlags::EMPTY_PATH),
            reply
        );
        let st = tryr!(rustix::fs::fstat(s.fd(ino.0).expect("known")), reply);
        let line = format!(
            "link {} -> {}/{}",
            ino.0,
            newparent.0,
            newname.to_string_lossy()
        );
        s.model.add(newparent.0, newname, ino.0, line.clone());
        s.note(line);
        reply.entry(&TTL, &attr(ino.0, &st), Generation(0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = live!(self, reply);
        let fd = match s.fd(ino.0) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        // Writes arrive with their offset: the backing open needs no
        // O_APPEND (pwrite would ignore the offset); creation flags were
        // handled by the kernel, and so was O_NOFOLLOW, which on the
        // `/proc` magic link would fail with ELOOP.
        let keep = !(libc_flags::O_APPEND
            | libc_flags::O_CREAT
            | libc_flags::O_EXCL
            | libc_flags::O_NOFOLLOW);
        let flags = OFlags::from_bits_retain((flags.0 as u32) & keep) | OFlags::CLOEXEC;
        let file = tryr!(rustix::fs::open(proc_path(fd), flags, Mode::empty()), reply);
        let fh = s.next_fh;
        s.next_fh += 1;
        s.files.insert(fh, file);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = live!(self, reply);
        let Some(fd) = s.files.get(&fh.0) else {
            return reply.error(fuser::Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match rustix::io::pread(fd, &mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::INTR) => {}
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = live!(self, reply);
        s.before_file_change(ino.0);
        let Some(fd) = s.files.get(&fh.0) else {
            return reply.error(fuser::Errno::EBADF);
        };
        let mut done = 0;
        while done < data.len() {
            match rustix::io::pwrite(fd, &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(e) => return reply.error(errno(e)),
            }
        }
        s.model.write(ino.0, offset, data.len() as u64);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Closing is allowed after the loss too (the processes die).
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        // The backing file need not reach its disk: only the model's
        // durable state counts.
        let content = s.content(ino.0).unwrap_or_default();
        s.model.sync_file(ino.0, content);
        s.note(format!(
            "{} {}",
            if datasync { "fdatasync" } else { "fsync" },
            ino.0
        ));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = live!(self, reply);
        let list = tryr!(s.list(ino.0), reply);
        let fh = s.next_fh;
        s.next_fh += 1;
        s.dirs.insert(fh, list);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = live!(self, reply);
        let Some(list) = s.dirs.get(&fh.0) else {
            return reply.error(fuser::Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        s.model.sync_dir(ino.0);
        s.note(format!("fsync dir {}", ino.0));
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = live!(self, reply);
        let v = tryr!(rustix::fs::fstatvfs(s.fd(1).expect("root")), reply);
        reply.statfs(
            v.f_blocks,
            v.f_bfree,
            v.f_bavail,
            v.f_files,
            v.f_ffree,
            v.f_bsize as u32,
            v.f_namemax as u32,
            v.f_frsize as u32,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let s = live!(self, reply);
        let Some(path) = s.xattr_path(ino.0) else {
            return reply.error(fuser::Errno::ENOTSUP);
        };
        tryr!(
            rustix::fs::setxattr(
                path,
                name,
                value,
                XattrFlags::from_bits_retain(flags as u32)
            ),
            reply
        );
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let s = live!(self, reply);
        let Some(path) = s.xattr_path(ino.0) else {
            return reply.error(fuser::Errno::ENODATA);
        };
        if size == 0 {
            let n = tryr!(rustix::fs::getxattr_query(&path, name), reply);
            return reply.size(n as u32);
        }
        let mut buf = vec![0u8; size as usize];
        let n = tryr!(rustix::fs::getxattr(&path, name, &mut buf[..]), reply);
        reply.data(&buf[..n]);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let s = live!(self, reply);
        let Some(path) = s.xattr_path(ino.0) else {
            return if size == 0 {
                reply.size(0)
            } else {
                reply.data(&[])
            };
        };
        if size == 0 {
            let n = tryr!(rustix::fs::listxattr_query(&path), reply);
            return reply.size(n as u32);
        }
        let mut buf = vec![0u8; size as usize];
        let n = tryr!(rustix::fs::listxattr(&path, &mut buf[..]), reply);
        reply.data(&buf[..n]);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let s = live!(self, reply);
        let Some(path) = s.xattr_path(ino.0) else {
            return reply.error(fuser::Errno::ENODATA);
        };
        tryr!(rustix::fs::removexattr(path, name), reply);
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // `default_permissions`: the kernel checks modes itself.
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = live!(self, reply);
        tryr!(s.before_dir_change(parent.0), reply);
        let pfd = s.fd(parent.0).expect("known");
        let keep = !libc_flags::O_APPEND;
        let flags = OFlags::from_bits_retain((flags as u32) & keep)
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::CLOEXEC;
        let file = tryr!(
            rustix::fs::openat(
                pfd,
                name,
                flags,
                Mode::from_raw_mode(mode & !umask & 0o7777)
            ),
            reply
        );
        let a = tryr!(s.created(parent.0, name, "create"), reply);
        let fh = s.next_fh;
        s.next_fh += 1;
        s.files.insert(fh, file);
        reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty());
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = live!(self, reply);
        s.before_file_change(ino.0);
        let Some(fd) = s.files.get(&fh.0) else {
            return reply.error(fuser::Errno::EBADF);
        };
        let old = tryr!(rustix::fs::fstat(fd), reply).st_size as u64;
        tryr!(
            rustix::fs::fallocate(
                fd,
                rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
                offset,
                length
            ),
            reply
        );
        let new = tryr!(rustix::fs::fstat(s.files.get(&fh.0).expect("held")), reply).st_size as u64;
        s.model.write(ino.0, offset, length);
        if new != old {
            s.model.resize(ino.0, old, new);
        }
        reply.ok();
    }
}

impl State {
    /// The path xattr calls take for `ino` (`None` for a symlink, whose
    /// `/proc` link would be followed).
    fn xattr_path(&self, ino: NodeId) -> Option<PathBuf> {
        let n = self.nodes.get(&ino)?;
        match n.kind {
            FileType::RegularFile | FileType::Directory => Some(proc_path(&n.fd)),
            _ => None,
        }
    }
}

impl LazyFsImpl {
    fn remove(&self, parent: NodeId, name: &OsStr, flags: AtFlags, what: &str, reply: ReplyEmpty) {
        let mut s = live!(self, reply);
        tryr!(s.before_dir_change(parent), reply);
        // Pin the node first: a power loss may bring the name back.
        tryr!(s.child(parent, name), reply);
        let pfd = s.fd(parent).expect("known");
        tryr!(rustix::fs::unlinkat(pfd, name, flags), reply);
        let line = format!("{what} {parent}/{}", name.to_string_lossy());
        s.model.remove(parent, name, line.clone());
        s.note(line);
        reply.ok();
    }
}

/// The `O_*` bits the file system strips (as `u32`, the width of
/// `OFlags`).
mod libc_flags {
    pub const O_CREAT: u32 = 0o100;
    pub const O_EXCL: u32 = 0o200;
    pub const O_APPEND: u32 = 0o2000;
    pub const O_NOFOLLOW: u32 = 0o400000;
}
