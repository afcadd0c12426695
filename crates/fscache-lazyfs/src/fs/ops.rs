//! The FUSE requests of [`LazyFsImpl`]: each is forwarded to the backing
//! directory through the pinned descriptors and fed to the [`Model`], the
//! entry changes after [`State::before_dir_change`], the data changes
//! after [`State::before_file_change`].

use super::*;

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
