//! Native copy of a directory tree into a capability directory, keeping
//! modes, times, symlinks, hard links and (as root) ownership.
//!
//! Use this to fill a cache entry's `data/` directory from a tree on disk, or
//! to copy an entry back out, without spawning `cp`.
//!
//! # Design
//!
//! The source is walked with `openat(O_NOFOLLOW)` and `fstatat(
//! AT_SYMLINK_NOFOLLOW)` relative to the fd of the directory being read, so no
//! symlink in the source is ever followed (only the components of `src`
//! itself are resolved the usual way). Every destination operation is one
//! path component relative to a `cap_std::fs::Dir` of the directory being
//! filled; the system calls cap-std lacks (`FICLONE`, `copy_file_range`,
//! `futimens`, `fchmod`, `mknodat`, `fchownat`, `utimensat`) go through rustix
//! on that `Dir`'s fd. The walk keeps an explicit stack, so a deep tree costs
//! heap and two fds per level, never native stack.
//!
//! File content is cloned with `ioctl(FICLONE)` where the file system shares
//! extents (btrfs, XFS, bcachefs…); otherwise it is copied in the kernel with
//! `copy_file_range(2)`, and where that is refused too, with `read`/`write`.
//! Once a method is refused as unsupported for a source file system (keyed by
//! its `st_dev`), it is not tried again for later files of that file system.
//!
//! A directory is created with mode `0700` and receives its real mode,
//! ownership and times only after all its children are written, so a
//! read-only directory can still be filled and its mtime is not disturbed by
//! the copy.
//!
//! # Limitations
//!
//! * On error the destination is left partially filled (directories still
//!   mode `0700`); the caller removes it, as a `store`/`stage` guard does.
//! * Sockets and character or block devices are refused with
//!   [`io::ErrorKind::Unsupported`]; extended attributes, ACLs and file
//!   flags are not copied.
//! * Ownership is kept only when running with `geteuid() == 0`; otherwise
//!   the copy belongs to the caller and set-group-ID bits the kernel refuses
//!   are dropped silently (as `chmod(2)` does).
//! * A source changed during the copy gives a copy of some mixture of its
//!   states; a file replaced by another type between `stat` and `open` is an
//!   error.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, CWD};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

/// How many bytes one `copy_file_range` call moves at most: small enough for
/// a progress bar to move on big files, big enough to cost nothing.
const RANGE_CHUNK: usize = 8 << 20;

/// Buffer size of the `read`/`write` fallback.
const RW_BUFFER: usize = 256 << 10;

/// Errnos by which `ioctl(FICLONE)` says the file system (or this pair of
/// them) cannot clone: ioctl_ficlone(2) lists EOPNOTSUPP, EXDEV and EINVAL;
/// ENOTTY and EBADF come from file systems without the ioctl.
const CLONE_REFUSALS: &[Errno] = &[
    Errno::OPNOTSUPP,
    Errno::XDEV,
    Errno::INVAL,
    Errno::NOTTY,
    Errno::BADF,
];

/// Errnos by which `copy_file_range(2)` says it cannot copy between these
/// file systems: EXDEV across file systems (before 5.3 and since 5.19),
/// ENOSYS before 4.5, EOPNOTSUPP and EINVAL where a file system does not
/// take part, EBADF on some special files.
const RANGE_REFUSALS: &[Errno] = &[
    Errno::XDEV,
    Errno::NOSYS,
    Errno::OPNOTSUPP,
    Errno::INVAL,
    Errno::BADF,
];

/// Totals of a copy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files whose content was copied (or cloned), plus FIFOs
    /// recreated; not counting extra hard links.
    pub files: u64,
    /// Directories created (not counting `dst` itself).
    pub dirs: u64,
    /// Symbolic links recreated.
    pub symlinks: u64,
    /// Names made hard links to a file copied earlier in the same copy.
    pub hard_links: u64,
    /// Bytes of regular-file content copied (each hard-linked inode once).
    pub bytes: u64,
    /// Files cloned with `ioctl(FICLONE)` (shared extents, no data copied).
    pub reflinked: u64,
}

/// Copy `src` into the open directory `dst`: if `src` is a directory, its
/// children (recursively) become `dst`'s children; if it is a file or a
/// symlink, it is copied as `dst/<its file name>`.
///
/// Symlinks are recreated verbatim and never followed (only the components
/// of `src` leading to its last one are resolved). Regular files,
/// directories, FIFOs and symlinks keep their permission bits (including
/// set-user-ID, set-group-ID and sticky, as far as the kernel allows), their
/// access and modification times to the nanosecond, and, when running as
/// root, their owner and group. Hard links among the copied files stay hard
/// links. `dst`'s own mode and times are left alone.
///
/// `progress(n)` is called as content is written, with the number of bytes
/// just copied: at least once per copied regular file (with 0 for an empty
/// one), in chunks for big files. The sum of all calls is the content size
/// of the tree, the number [`tree_content_bytes`] returns for an unchanged
/// source.
///
/// # Errors
///
/// Any failing system call, with the [`io::ErrorKind`] kept and the source
/// path it concerns named in the message; a missing `src` is
/// [`io::ErrorKind::NotFound`]; a name that already exists in `dst` is
/// [`io::ErrorKind::AlreadyExists`]; a socket or device is
/// [`io::ErrorKind::Unsupported`]. The destination is then partially filled.
///
/// # Example
///
/// ```
/// use cap_std::{ambient_authority, fs::Dir};
/// use fscache_dir::copy::{copy_tree_into, tree_content_bytes};
///
/// let tmp = tempfile::tempdir()?;
/// let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
/// std::fs::create_dir_all(src.join("sub"))?;
/// std::fs::write(src.join("sub/hello"), b"hello")?;
/// std::fs::create_dir(&dst)?;
/// let dst_dir = Dir::open_ambient_dir(&dst, ambient_authority())?;
///
/// let total = tree_content_bytes(&src)?;
/// let mut done = 0;
/// let stats = copy_tree_into(&src, &dst_dir, &mut |n| done += n)?;
/// assert_eq!((stats.files, stats.dirs, done, total), (1, 1, 5, 5));
/// assert_eq!(std::fs::read(dst.join("sub/hello"))?, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn copy_tree_into(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64),
) -> io::Result<CopyStats> {
    let mut copier = Copier {
        dst_root: dst,
        progress,
        stats: CopyStats::default(),
        keep_owner: rustix::process::geteuid().is_root(),
        links: HashMap::new(),
        methods: HashMap::new(),
    };
    let st = rustix::fs::statat(CWD, src, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| at(src, e))?;
    let first = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let fd = open_dir_nofollow(CWD, src).map_err(|e| at(src, e))?;
        Frame {
            names: list_names(&fd).map_err(|e| at(src, e))?.into_iter(),
            src: fd,
            dst: dst.try_clone().map_err(|e| at(src, e))?,
            src_path: src.to_path_buf(),
            dst_rel: PathBuf::new(),
            // `dst` belongs to the caller: its mode and times stay as they are.
            stat: None,
        }
    } else {
        let (parent, name) = split_parent(src)?;
        let parent_fd = rustix::fs::openat(
            CWD,
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| at(parent, e))?;
        match copier.copy_entry(parent_fd.as_fd(), dst, name, src.to_path_buf(), name.into())? {
            // Replaced by a directory since the `lstat`: copy it as one.
            Some(frame) => frame,
            None => return Ok(copier.stats),
        }
    };
    copier.run(first)?;
    Ok(copier.stats)
}

/// Bytes of regular-file content under `src` (for a progress bar's total),
/// not following symlinks, hard-linked inodes counted once.
///
/// `src` itself may be a regular file (its size), a symlink or other
/// non-directory (0), or a directory (the sum over the tree).
///
/// # Errors
///
/// Any failing `stat`, `open` or `getdents`, with the path named; a missing
/// `src` is [`io::ErrorKind::NotFound`].
pub fn tree_content_bytes(src: &Path) -> io::Result<u64> {
    let st = rustix::fs::statat(CWD, src, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| at(src, e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => return Ok(size_of(&st)),
        FileType::Directory => {}
        _ => return Ok(0),
    }
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![(
        open_dir_nofollow(CWD, src).map_err(|e| at(src, e))?,
        src.to_path_buf(),
    )];
    while let Some((fd, path)) = stack.pop() {
        for name in list_names(&fd).map_err(|e| at(&path, e))? {
            let child = path.join(&name);
            let st = rustix::fs::statat(&fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| at(&child, e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let sub = open_dir_nofollow(&fd, &name).map_err(|e| at(&child, e))?;
                    stack.push((sub, child));
                }
                FileType::RegularFile => {
                    if st.st_nlink > 1 && !seen.insert(inode_of(&st)) {
                        continue;
                    }
                    total = total.saturating_add(size_of(&st));
                }
                _ => {}
            }
        }
    }
    Ok(total)
}

/// How file content is moved; ordered from cheapest to most general.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// `ioctl(FICLONE)`: share extents.
    Reflink,
    /// `copy_file_range(2)`: in-kernel copy.
    CopyFileRange,
    /// `read(2)`/`write(2)` through a user-space buffer.
    ReadWrite,
}

/// One directory being copied: its source fd, its destination handle and the
/// names still to copy.
struct Frame {
    /// The source directory, opened `O_DIRECTORY | O_NOFOLLOW`.
    src: OwnedFd,
    /// The destination directory being filled.
    dst: Dir,
    /// Children not yet copied, sorted so hard links resolve the same way
    /// every time.
    names: std::vec::IntoIter<OsString>,
    /// The source directory's path, for error messages.
    src_path: PathBuf,
    /// The destination directory's path relative to the destination root.
    dst_rel: PathBuf,
    /// The source directory's metadata to apply once all children are
    /// written; `None` for the caller's `dst`.
    stat: Option<Stat>,
}

/// State of one [`copy_tree_into`] walk.
struct Copier<'a> {
    dst_root: &'a Dir,
    progress: &'a mut dyn FnMut(u64),
    stats: CopyStats,
    /// `geteuid() == 0`: copy owner and group too.
    keep_owner: bool,
    /// (dev, ino) of multiply-linked source files → their copy's path
    /// relative to `dst_root`.
    links: HashMap<(u64, u64), PathBuf>,
    /// Source `st_dev` → the cheapest content method not yet refused there.
    methods: HashMap<u64, Method>,
}

impl Copier<'_> {
    /// Copy the tree below `first`, depth first, finishing each directory's
    /// metadata when its last child is written.
    fn run(&mut self, first: Frame) -> io::Result<()> {
        let mut stack = vec![first];
        while let Some(top) = stack.last_mut() {
            if let Some(name) = top.names.next() {
                let src_path = top.src_path.join(&name);
                let dst_rel = top.dst_rel.join(&name);
                if let Some(child) =
                    self.copy_entry(top.src.as_fd(), &top.dst, &name, src_path, dst_rel)?
                {
                    stack.push(child);
                }
            } else if let Some(done) = stack.pop() {
                if let Some(st) = &done.stat {
                    self.set_metadata_fd(&done.dst, st)
                        .map_err(|e| at(&done.src_path, e))?;
                }
            }
        }
        Ok(())
    }

    /// Copy the entry `name` of the source directory `sfd` into `ddir`.
    /// A directory is created and returned as a new frame to fill.
    fn copy_entry(
        &mut self,
        sfd: BorrowedFd<'_>,
        ddir: &Dir,
        name: &OsStr,
        src_path: PathBuf,
        dst_rel: PathBuf,
    ) -> io::Result<Option<Frame>> {
        let st = rustix::fs::statat(sfd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| at(&src_path, e))?;
        let result = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => self.copy_dir(sfd, ddir, name, &src_path, dst_rel).map(Some),
            FileType::RegularFile => self.copy_file(sfd, ddir, name, &st, dst_rel).map(|()| None),
            FileType::Symlink => self.copy_symlink(sfd, ddir, name, &st).map(|()| None),
            FileType::Fifo => self.copy_fifo(ddir, name, &st).map(|()| None),
            FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Unknown => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "unsupported file type",
            )),
        };
        result.map_err(|e| at(&src_path, e))
    }

    /// Create `ddir/name` for the source directory `sfd/name` and return
    /// its frame; its metadata is applied when the frame is finished.
    fn copy_dir(
        &mut self,
        sfd: BorrowedFd<'_>,
        ddir: &Dir,
        name: &OsStr,
        src_path: &Path,
        dst_rel: PathBuf,
    ) -> io::Result<Frame> {
        let src = open_dir_nofollow(sfd, name)?;
        let st = rustix::fs::fstat(&src)?;
        let names = list_names(&src)?;
        ddir.create_dir(name)?;
        // Not `open_dir_nofollow`: cap-std opens directories `O_PATH`, on
        // which fchmod and futimens fail with EBADF. One component, relative
        // to `ddir`, not following a symlink: what cap-std would do.
        let dst = Dir::from_std_file(File::from(open_dir_nofollow(ddir, name)?));
        // Whatever the umask left, the copy must be able to fill it, and
        // nobody else needs to see it half-filled.
        rustix::fs::fchmod(&dst, Mode::RWXU)?;
        self.stats.dirs += 1;
        Ok(Frame {
            src,
            dst,
            names: names.into_iter(),
            src_path: src_path.to_path_buf(),
            dst_rel,
            stat: Some(st),
        })
    }

    /// Copy the regular file `sfd/name`, or hard-link it to its earlier copy.
    fn copy_file(
        &mut self,
        sfd: BorrowedFd<'_>,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
        dst_rel: PathBuf,
    ) -> io::Result<()> {
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&inode_of(st)) {
                self.dst_root.hard_link(first, ddir, name)?;
                self.stats.hard_links += 1;
                return Ok(());
            }
        }
        // O_NONBLOCK: should the name have become a FIFO since the `lstat`,
        // the open must not hang; the type is checked right after.
        let src: File = rustix::fs::openat(
            sfd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?
        .into();
        let fst = rustix::fs::fstat(&src)?;
        if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
            || inode_of(&fst) != inode_of(st)
        {
            return Err(io::Error::other("file was replaced while being copied"));
        }
        let dst = ddir
            .open_with(
                name,
                OpenOptions::new().write(true).create_new(true).mode(0o600),
            )?
            .into_std();
        self.copy_content(&src, &dst, &fst)?;
        self.stats.files += 1;
        // chown before chmod: chown clears the set-user-ID and set-group-ID
        // bits (chown(2)); after the writes for the same reason (write(2)).
        self.set_metadata_fd(&dst, &fst)?;
        if fst.st_nlink > 1 {
            self.links.insert(inode_of(&fst), dst_rel);
        }
        Ok(())
    }

    /// Move the content of `src` into the empty `dst` with the cheapest
    /// method this source file system has not refused yet.
    fn copy_content(&mut self, src: &File, dst: &File, st: &Stat) -> io::Result<()> {
        let size = size_of(st);
        let dev = inode_of(st).0;
        let method = match self.methods.get(&dev) {
            // Nothing to clone or copy in the kernel; read(2) still finds the
            // content of a pseudo file that reports size 0.
            _ if size == 0 => Method::ReadWrite,
            Some(&method) => method,
            None => Method::Reflink,
        };
        if method == Method::Reflink {
            match retry_on_intr(|| rustix::fs::ioctl_ficlone(dst, src)) {
                Ok(()) => {
                    self.stats.reflinked += 1;
                    self.stats.bytes += size;
                    (self.progress)(size);
                    return Ok(());
                }
                Err(e) if refused(e, CLONE_REFUSALS) => {
                    self.methods.insert(dev, Method::CopyFileRange);
                }
                // Anything else (EPERM on an immutable file, ETXTBSY…) may be
                // about this file only: copy it instead, try cloning again
                // for the next.
                Err(_) => {}
            }
        }
        let mut copied = 0u64;
        if method != Method::ReadWrite {
            loop {
                let chunk = retry_on_intr(|| {
                    rustix::fs::copy_file_range(src, None, dst, None, RANGE_CHUNK)
                });
                match chunk {
                    // Some pseudo file systems report EOF to copy_file_range
                    // although read(2) has data (coreutils guards the same
                    // way): with nothing copied, let read/write have a look.
                    Ok(0) if copied == 0 => break,
                    Ok(0) => {
                        self.stats.bytes += copied;
                        return Ok(());
                    }
                    Ok(n) => {
                        copied += n as u64;
                        (self.progress)(n as u64);
                    }
                    // Not supported here: both file offsets moved by exactly
                    // `copied`, so read/write carries on from there.
                    Err(e) if refused(e, RANGE_REFUSALS) => {
                        self.methods.insert(dev, Method::ReadWrite);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        copied += read_write(src, dst, &mut *self.progress)?;
        if copied == 0 {
            // Every file moves the progress bar at least once.
            (self.progress)(0);
        }
        self.stats.bytes += copied;
        Ok(())
    }

    /// Recreate the symlink `sfd/name` verbatim in `ddir`.
    fn copy_symlink(
        &mut self,
        sfd: BorrowedFd<'_>,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<()> {
        let target = rustix::fs::readlinkat(sfd, name, Vec::new())?;
        // `symlink_contents`, not `symlink`: the target is stored, never
        // resolved, and may be absolute or point anywhere.
        ddir.symlink_contents(OsStr::from_bytes(target.as_bytes()), name)?;
        self.set_owner_and_times_at(ddir, name, st)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// Recreate the FIFO `name` in `ddir` with `mknodat`.
    fn copy_fifo(&mut self, ddir: &Dir, name: &OsStr, st: &Stat) -> io::Result<()> {
        rustix::fs::mknodat(ddir, name, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)?;
        self.set_owner_and_times_at(ddir, name, st)?;
        // After the chown, which clears set-ID bits; chmod leaves the times
        // alone. fchmodat cannot refuse to follow a symlink (Linux answers
        // EOPNOTSUPP to AT_SYMLINK_NOFOLLOW), and opening a FIFO to fchmod it
        // would block; the name is the FIFO this copy created an instant ago.
        rustix::fs::chmodat(
            ddir,
            name,
            Mode::from_raw_mode(st.st_mode),
            AtFlags::empty(),
        )?;
        self.stats.files += 1;
        Ok(())
    }

    /// Give the open file or directory `fd` the owner (as root), mode and
    /// times of `st`. The order matters: chown clears the set-ID bits
    /// (chown(2)), and times go last so nothing after them moves them.
    fn set_metadata_fd(&self, fd: impl AsFd, st: &Stat) -> io::Result<()> {
        if self.keep_owner {
            rustix::fs::fchown(&fd, owner_of(st), group_of(st))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode))?;
        rustix::fs::futimens(&fd, &times_of(st))?;
        Ok(())
    }

    /// Give `ddir/name` the owner (as root) and times of `st` without
    /// following it, for what cannot be opened for it (a symlink, a FIFO).
    fn set_owner_and_times_at(&self, ddir: &Dir, name: &OsStr, st: &Stat) -> io::Result<()> {
        if self.keep_owner {
            rustix::fs::chownat(
                ddir,
                name,
                owner_of(st),
                group_of(st),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        rustix::fs::utimensat(ddir, name, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }
}

/// Copy the rest of `src` into `dst` through a buffer, reporting each chunk;
/// returns the bytes copied.
fn read_write(mut src: &File, mut dst: &File, progress: &mut dyn FnMut(u64)) -> io::Result<u64> {
    let mut buf = vec![0u8; RW_BUFFER];
    let mut copied = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        copied += n as u64;
        progress(n as u64);
    }
}

/// Whether `e` is one of the errnos by which a method says "not here".
fn refused(e: Errno, which: &[Errno]) -> bool {
    which.contains(&e)
}

/// Call `f` again while it fails with `EINTR`.
fn retry_on_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// `openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)`: open a
/// directory, refusing a symlink in the last component.
fn open_dir_nofollow(dirfd: impl AsFd, path: impl AsRef<Path>) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dirfd,
        path.as_ref(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in the directory `fd`, without `.` and `..`, sorted.
fn list_names(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Split a non-directory `src` into the directory to open and the name in it.
fn split_parent(src: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = src.file_name().ok_or_else(|| {
        at(
            src,
            io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let parent = match src.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

/// Fold `path` into `e` as a [`PathError`](crate::PathError), keeping its
/// kind and errno.
fn at(path: &Path, e: impl Into<io::Error>) -> io::Error {
    crate::with_path("copy", path, e.into())
}

/// The key that identifies an inode: (st_dev, st_ino).
#[allow(clippy::useless_conversion)] // the field types differ between targets
fn inode_of(st: &Stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

/// `st_size` as a byte count (never negative for a regular file).
fn size_of(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// The owner to give a copy; `None` leaves it alone (never `-1`).
fn owner_of(st: &Stat) -> Option<Uid> {
    (st.st_uid != u32::MAX).then(|| Uid::from_raw(st.st_uid))
}

/// The group to give a copy; `None` leaves it alone (never `-1`).
fn group_of(st: &Stat) -> Option<Gid> {
    (st.st_gid != u32::MAX).then(|| Gid::from_raw(st.st_gid))
}

/// Access and modification times of `st`, to the nanosecond.
fn times_of(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: timespec(st.st_atime, st.st_atime_nsec),
        last_modification: timespec(st.st_mtime, st.st_mtime_nsec),
    }
}

/// A `Timespec` from `stat` fields, whose integer types differ by target.
fn timespec(sec: impl TryInto<i64>, nsec: impl TryInto<i64>) -> Timespec {
    Timespec {
        tv_sec: sec.try_into().unwrap_or(0),
        tv_nsec: nsec.try_into().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    /// A source and a destination directory under one temporary directory.
    struct Fixture {
        _tmp: tempfile::TempDir,
        src: PathBuf,
        dst: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            let dst = tmp.path().join("dst");
            fs::create_dir(&src).unwrap();
            fs::create_dir(&dst).unwrap();
            Fixture {
                _tmp: tmp,
                src,
                dst,
            }
        }

        fn dst_dir(&self) -> Dir {
            Dir::open_ambient_dir(&self.dst, ambient_authority()).unwrap()
        }

        /// Copy `path` into the destination; returns the stats and the sum
        /// of the progress calls.
        fn copy(&self, path: &Path) -> io::Result<(CopyStats, u64, usize)> {
            let (mut sum, mut calls) = (0, 0);
            let stats = copy_tree_into(path, &self.dst_dir(), &mut |n| {
                sum += n;
                calls += 1;
            })?;
            Ok((stats, sum, calls))
        }
    }

    /// Set atime and mtime of `path` (not following a symlink) to values
    /// with nanoseconds.
    fn set_times(path: &Path, sec: i64, nsec: i64) {
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: sec - 100,
                tv_nsec: nsec + 1,
            },
            last_modification: Timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    /// (mtime, mtime_nsec, atime, atime_nsec) of `path`, not following it.
    fn times(path: &Path) -> (i64, i64, i64, i64) {
        let m = fs::symlink_metadata(path).unwrap();
        (m.mtime(), m.mtime_nsec(), m.atime(), m.atime_nsec())
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn copy_contents_of_files() {
        let f = Fixture::new();
        let big: Vec<u8> = (0..(3 << 20) + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        fs::write(f.src.join("empty"), b"").unwrap();
        fs::write(f.src.join("small"), b"hello").unwrap();
        fs::create_dir_all(f.src.join("a/b/c")).unwrap();
        fs::write(f.src.join("a/b/c/big"), &big).unwrap();

        let total = tree_content_bytes(&f.src).unwrap();
        let (stats, sum, calls) = f.copy(&f.src).unwrap();

        assert_eq!(fs::read(f.dst.join("empty")).unwrap(), b"");
        assert_eq!(fs::read(f.dst.join("small")).unwrap(), b"hello");
        assert_eq!(fs::read(f.dst.join("a/b/c/big")).unwrap(), big);
        assert_eq!(total, big.len() as u64 + 5);
        assert_eq!(sum, total);
        assert!(calls >= 3, "at least one progress call per file");
        assert_eq!(stats.files, 3);
        assert_eq!(stats.dirs, 3);
        assert_eq!(stats.bytes, total);
        assert_eq!(stats.symlinks + stats.hard_links, 0);
    }

    #[test]
    fn copy_keeps_modes_and_fills_read_only_dirs() {
        let f = Fixture::new();
        fs::write(f.src.join("private"), b"p").unwrap();
        fs::write(f.src.join("tool"), b"#!/bin/sh\n").unwrap();
        fs::write(f.src.join("setid"), b"s").unwrap();
        fs::create_dir(f.src.join("ro")).unwrap();
        fs::create_dir(f.src.join("sticky")).unwrap();
        fs::write(f.src.join("ro/inside"), b"i").unwrap();
        fs::create_dir(f.src.join("ro/sub")).unwrap();
        let set = |p: &str, m: u32| {
            fs::set_permissions(f.src.join(p), fs::Permissions::from_mode(m)).unwrap()
        };
        set("private", 0o600);
        set("tool", 0o755);
        set("setid", 0o6755);
        set("ro/inside", 0o444);
        set("ro/sub", 0o500);
        set("ro", 0o555);
        set("sticky", 0o1777);

        f.copy(&f.src).unwrap();

        for (p, m) in [
            ("private", 0o600),
            ("tool", 0o755),
            ("ro/inside", 0o444),
            ("ro/sub", 0o500),
            ("ro", 0o555),
            ("sticky", 0o1777),
        ] {
            assert_eq!(mode(&f.dst.join(p)), m, "{p}");
        }
        // Set-group-ID survives only where the caller is in the group.
        let setid = mode(&f.dst.join("setid"));
        assert_eq!(setid & !0o2000, 0o4755, "{setid:o}");
        // Let the TempDir remove it.
        set("ro", 0o755);
        fs::set_permissions(f.dst.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn copy_keeps_times_with_nanoseconds() {
        let f = Fixture::new();
        fs::create_dir(f.src.join("dir")).unwrap();
        fs::write(f.src.join("dir/file"), b"x").unwrap();
        symlink("file", f.src.join("dir/link")).unwrap();
        set_times(&f.src.join("dir/file"), 1_000_000_000, 123_456_789);
        set_times(&f.src.join("dir/link"), 1_100_000_000, 987_654_321);
        // Last, because writing its children changes a directory's mtime.
        set_times(&f.src.join("dir"), 1_200_000_000, 555_555_555);

        // Before the copy: reading the source moves its atimes.
        let paths = ["dir", "dir/file", "dir/link"];
        let before = paths.map(|p| times(&f.src.join(p)));

        f.copy(&f.src).unwrap();

        for (p, want) in paths.iter().zip(before) {
            assert_eq!(times(&f.dst.join(p)), want, "{p}");
        }
        assert_eq!(
            times(&f.dst.join("dir")),
            (1_200_000_000, 555_555_555, 1_199_999_900, 555_555_556)
        );
    }

    #[test]
    fn copy_keeps_symlinks_verbatim() {
        let f = Fixture::new();
        fs::create_dir(f.src.join("real")).unwrap();
        fs::write(f.src.join("real/file"), b"content").unwrap();
        symlink("real/file", f.src.join("relative")).unwrap();
        symlink("/etc/passwd", f.src.join("absolute")).unwrap();
        symlink("does/not/exist", f.src.join("dangling")).unwrap();
        symlink("real", f.src.join("to_dir")).unwrap();
        symlink("../../../../escape", f.src.join("escape")).unwrap();

        let (stats, _, _) = f.copy(&f.src).unwrap();

        for (name, target) in [
            ("relative", "real/file"),
            ("absolute", "/etc/passwd"),
            ("dangling", "does/not/exist"),
            ("to_dir", "real"),
            ("escape", "../../../../escape"),
        ] {
            let p = f.dst.join(name);
            assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
            assert_eq!(fs::read_link(&p).unwrap(), Path::new(target));
        }
        assert_eq!(stats.symlinks, 5);
        // The symlink to a directory was not followed.
        assert_eq!(stats.dirs, 1);
        assert_eq!(stats.files, 1);
    }

    #[test]
    fn copy_keeps_hard_links() {
        let f = Fixture::new();
        fs::create_dir(f.src.join("d")).unwrap();
        fs::write(f.src.join("a"), b"shared").unwrap();
        fs::hard_link(f.src.join("a"), f.src.join("d/b")).unwrap();
        fs::hard_link(f.src.join("a"), f.src.join("d/c")).unwrap();
        fs::write(f.src.join("lonely"), b"l").unwrap();

        let total = tree_content_bytes(&f.src).unwrap();
        let (stats, sum, _) = f.copy(&f.src).unwrap();

        let ino = |p: &str| fs::metadata(f.dst.join(p)).unwrap().ino();
        assert_eq!(ino("a"), ino("d/b"));
        assert_eq!(ino("a"), ino("d/c"));
        assert_ne!(ino("a"), ino("lonely"));
        assert_eq!(fs::metadata(f.dst.join("a")).unwrap().nlink(), 3);
        assert_eq!(fs::read(f.dst.join("d/c")).unwrap(), b"shared");
        assert_eq!(total, 7);
        assert_eq!(sum, total);
        assert_eq!((stats.files, stats.hard_links, stats.bytes), (2, 2, 7));
    }

    #[test]
    fn copy_single_file_and_symlink_as_named_child() {
        let f = Fixture::new();
        fs::write(f.src.join("one"), b"1").unwrap();
        set_times(&f.src.join("one"), 1_300_000_000, 42);
        symlink("one", f.src.join("link")).unwrap();

        let before = times(&f.src.join("one"));

        let (stats, sum, _) = f.copy(&f.src.join("one")).unwrap();
        assert_eq!((stats.files, sum), (1, 1));
        assert_eq!(times(&f.dst.join("one")), before);
        assert_eq!(fs::read(f.dst.join("one")).unwrap(), b"1");

        let (stats, sum, _) = f.copy(&f.src.join("link")).unwrap();
        assert_eq!((stats.symlinks, sum), (1, 0));
        assert_eq!(fs::read_link(f.dst.join("link")).unwrap(), Path::new("one"));
        assert_eq!(tree_content_bytes(&f.src.join("one")).unwrap(), 1);
        assert_eq!(tree_content_bytes(&f.src.join("link")).unwrap(), 0);
    }

    #[test]
    fn split_parent_of_bare_name_is_cwd() {
        let (parent, name) = split_parent(Path::new("file")).unwrap();
        assert_eq!((parent, name), (Path::new("."), OsStr::new("file")));
        let (parent, name) = split_parent(Path::new("/a/b")).unwrap();
        assert_eq!((parent, name), (Path::new("/a"), OsStr::new("b")));
        let err = split_parent(Path::new("/")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// Copy `src/big` to `dst/big` with `method` forced for the source file
    /// system, as after a refusal of the cheaper ones.
    fn copy_with_method(method: Method) -> (CopyStats, u64) {
        let f = Fixture::new();
        let big: Vec<u8> = (0..(1 << 20) + 999).map(|i| (i % 253) as u8).collect();
        fs::write(f.src.join("big"), &big).unwrap();
        let dev = fs::metadata(&f.src).unwrap().dev();
        let dst = f.dst_dir();
        let mut sum = 0;
        let mut progress = |n| sum += n;
        let mut copier = Copier {
            dst_root: &dst,
            progress: &mut progress,
            stats: CopyStats::default(),
            keep_owner: false,
            links: HashMap::new(),
            methods: HashMap::from([(dev, method)]),
        };
        let src_dir = open_dir_nofollow(CWD, &f.src).unwrap();
        let child = copier
            .copy_entry(
                src_dir.as_fd(),
                &dst,
                OsStr::new("big"),
                f.src.join("big"),
                "big".into(),
            )
            .unwrap();
        assert!(child.is_none());
        let stats = copier.stats;
        assert_eq!(fs::read(f.dst.join("big")).unwrap(), big);
        (stats, sum)
    }

    #[test]
    fn refused_reflink_is_remembered() {
        let f = Fixture::new();
        fs::write(f.src.join("a"), b"aaa").unwrap();
        fs::write(f.src.join("b"), b"bbb").unwrap();
        let dev = fs::metadata(&f.src).unwrap().dev();
        let dst = f.dst_dir();
        let mut progress = |_| {};
        let mut copier = Copier {
            dst_root: &dst,
            progress: &mut progress,
            stats: CopyStats::default(),
            keep_owner: false,
            links: HashMap::new(),
            methods: HashMap::new(),
        };
        let src_dir = open_dir_nofollow(CWD, &f.src).unwrap();
        for name in ["a", "b"] {
            copier
                .copy_entry(
                    src_dir.as_fd(),
                    &dst,
                    OsStr::new(name),
                    f.src.join(name),
                    name.into(),
                )
                .unwrap();
        }
        match copier.stats.reflinked {
            // A file system that clones: nothing refused.
            2 => assert_eq!(copier.methods.get(&dev), None),
            0 => assert_ne!(copier.methods.get(&dev), None),
            n => panic!("reflinked {n} of 2"),
        }
        assert_eq!(copier.stats.bytes, 6);
    }

    #[test]
    fn copy_file_range_fallback() {
        let (stats, sum) = copy_with_method(Method::CopyFileRange);
        assert_eq!(
            (stats.reflinked, stats.bytes, sum),
            (0, (1 << 20) + 999, (1 << 20) + 999)
        );
    }

    #[test]
    fn read_write_fallback() {
        let (stats, sum) = copy_with_method(Method::ReadWrite);
        assert_eq!(
            (stats.reflinked, stats.bytes, sum),
            (0, (1 << 20) + 999, (1 << 20) + 999)
        );
    }

    #[test]
    fn copy_missing_source_names_it() {
        let f = Fixture::new();
        let missing = f.src.join("nope");
        let err = f.copy(&missing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        let err = tree_content_bytes(&missing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn copy_into_existing_name_fails_with_path() {
        let f = Fixture::new();
        fs::create_dir(f.src.join("sub")).unwrap();
        fs::write(f.src.join("sub/file"), b"x").unwrap();
        fs::create_dir(f.dst.join("sub")).unwrap();
        let err = f.copy(&f.src).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("sub"), "{err}");
    }

    #[test]
    fn copy_recreates_fifo() {
        let f = Fixture::new();
        let fifo = f.src.join("pipe");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o640), 0).unwrap();
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o640)).unwrap();
        set_times(&fifo, 1_400_000_000, 7);

        let (stats, _, _) = f.copy(&f.src).unwrap();

        let copy = f.dst.join("pipe");
        let st = rustix::fs::statat(CWD, &copy, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Fifo);
        assert_eq!(mode(&copy), 0o640);
        assert_eq!(times(&copy), times(&fifo));
        assert_eq!(stats.files, 1);
    }

    #[test]
    fn copy_refuses_socket_with_path() {
        let f = Fixture::new();
        let sock = f.src.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = f.copy(&f.src).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        let msg = err.to_string();
        assert!(msg.contains("unsupported file type"), "{msg}");
        assert!(msg.contains(&sock.display().to_string()), "{msg}");
    }

    #[test]
    fn copy_keeps_owner_when_root() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: keeping ownership needs root");
            return;
        }
        let f = Fixture::new();
        fs::create_dir(f.src.join("d")).unwrap();
        fs::write(f.src.join("d/file"), b"x").unwrap();
        symlink("file", f.src.join("d/link")).unwrap();
        let (uid, gid) = (Some(Uid::from_raw(12345)), Some(Gid::from_raw(23456)));
        for p in ["d", "d/file", "d/link"] {
            rustix::fs::chownat(CWD, f.src.join(p), uid, gid, AtFlags::SYMLINK_NOFOLLOW).unwrap();
        }
        f.copy(&f.src).unwrap();
        for p in ["d", "d/file", "d/link"] {
            let m = fs::symlink_metadata(f.dst.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (12345, 23456), "{p}");
        }
    }

    #[test]
    fn copy_deep_tree() {
        // Deeper than a recursive walk on a small test thread stack would
        // like, shallower than the fd limit (two fds per level).
        let f = Fixture::new();
        let levels = 200;
        let src_dir = Dir::open_ambient_dir(&f.src, ambient_authority()).unwrap();
        let mut rel = PathBuf::new();
        for _ in 0..levels {
            rel.push("d");
            src_dir.create_dir(&rel).unwrap();
        }
        src_dir.write(rel.join("leaf"), b"deep").unwrap();
        let (stats, sum, _) = f.copy(&f.src).unwrap();
        assert_eq!((stats.dirs, stats.files, sum), (levels, 1, 4));
        let dst = f.dst_dir();
        assert_eq!(dst.read(rel.join("leaf")).unwrap(), b"deep");
    }

    #[test]
    fn content_bytes_skip_symlinks_and_count_hard_links_once() {
        let f = Fixture::new();
        fs::write(f.src.join("a"), vec![1u8; 1000]).unwrap();
        fs::hard_link(f.src.join("a"), f.src.join("b")).unwrap();
        symlink("/etc/passwd", f.src.join("c")).unwrap();
        fs::create_dir(f.src.join("d")).unwrap();
        fs::write(f.src.join("d/e"), vec![2u8; 24]).unwrap();
        assert_eq!(tree_content_bytes(&f.src).unwrap(), 1024);
    }

    #[test]
    fn reflink_on_btrfs_when_available() {
        // A loop-mounted btrfs needs root, mkfs.btrfs and mount; skip
        // otherwise. The generic fallbacks are covered by every other test.
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: a loop-mounted btrfs needs root");
            return;
        }
        let have = |tool: &str| {
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok()
        };
        if !have("mkfs.btrfs") {
            eprintln!("skipped: mkfs.btrfs not found");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("btrfs.img");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&image)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        let ok = |cmd: &mut std::process::Command| {
            cmd.output().map(|o| o.status.success()).unwrap_or(false)
        };
        if !ok(std::process::Command::new("mkfs.btrfs")
            .arg("-q")
            .arg(&image))
        {
            eprintln!("skipped: mkfs.btrfs failed");
            return;
        }
        if !ok(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt))
        {
            eprintln!("skipped: cannot loop-mount btrfs here");
            return;
        }
        let result = (|| -> io::Result<CopyStats> {
            let src = mnt.join("src");
            let dst = mnt.join("dst");
            fs::create_dir(&src)?;
            fs::create_dir(&dst)?;
            fs::write(src.join("f1"), vec![3u8; 100_000])?;
            fs::write(src.join("f2"), b"two")?;
            let dst_dir = Dir::open_ambient_dir(&dst, ambient_authority())?;
            let stats = copy_tree_into(&src, &dst_dir, &mut |_| {})?;
            assert_eq!(fs::read(dst.join("f1"))?, vec![3u8; 100_000]);
            Ok(stats)
        })();
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        let stats = result.unwrap();
        assert_eq!(stats.reflinked, 2);
    }
}
