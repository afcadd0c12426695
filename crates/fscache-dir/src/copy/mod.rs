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
//! on that `Dir`'s fd. The source is walked with the crate's one
//! [walk](crate::walk) (an explicit stack: a deep tree costs heap and two
//! fds per level, never native stack; hard links deduplicated there).
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

mod content;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, CWD};
use rustix::process::{Gid, Uid};

use crate::digest::{Digest, DirHasher};
use crate::stat;
use crate::walk::{is_dir, open_dir_nofollow, Frame, HardLinks, Visit, Visitor, Walk};
use content::Content;

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
    /// The space of the copy: `st_blocks × 512` of everything it created
    /// and of `dst` itself, each inode once, taken with an `fstat` of each
    /// copy as it is finished (a directory when all its children are). It
    /// is what a walk of `dst` afterwards (`fscache_quota::tree_space`)
    /// would measure, without that second walk, as long as nothing else
    /// writes into `dst` meanwhile.
    pub space: u64,
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
/// source. An error it returns stops the copy and is returned as it is
/// (e.g. [`io::ErrorKind::Interrupted`] when the user pressed Ctrl-C).
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
/// let stats = copy_tree_into(&src, &dst_dir, &mut |n| {
///     done += n;
///     Ok(())
/// })?;
/// assert_eq!((stats.files, stats.dirs, done, total), (1, 1, 5, 5));
/// assert_eq!(std::fs::read(dst.join("sub/hello"))?, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn copy_tree_into(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<CopyStats> {
    copy_tree(src, dst, progress, None).map(|(stats, _)| stats)
}

/// [`copy_tree_into`], and the [tree digest](crate::digest) of what it
/// copied, computed in the same pass from one read of the data.
///
/// The digest is that of the copy: [`digest_tree`](crate::digest::digest_tree)
/// of `dst` gives the same value afterwards if `dst` was empty before and
/// nothing else changed it (permission bits are those the copy really got,
/// e.g. without a set-group-ID bit the kernel dropped). For a `src` that is
/// a file or a symlink, it is the digest of a directory holding only that
/// one name.
///
/// Content is hashed as it passes through the process: it is copied with
/// `read`/`write`, each buffer hashed between its read and its write,
/// instead of with `copy_file_range`. Where `ioctl(FICLONE)` clones a file
/// (no data moves), the source is read once to hash it.
///
/// # Errors
///
/// As [`copy_tree_into`].
///
/// # Example
///
/// ```
/// use cap_std::{ambient_authority, fs::Dir};
/// use fscache_dir::copy::copy_tree_into_with_digest;
/// use fscache_dir::digest::digest_tree;
///
/// let tmp = tempfile::tempdir()?;
/// let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
/// std::fs::create_dir_all(src.join("sub"))?;
/// std::fs::write(src.join("sub/hello"), b"hello")?;
/// std::fs::create_dir(&dst)?;
/// let dst_dir = Dir::open_ambient_dir(&dst, ambient_authority())?;
///
/// let (stats, digest) = copy_tree_into_with_digest(&src, &dst_dir, &mut |_| Ok(()))?;
/// assert_eq!(stats.files, 1);
/// assert_eq!(digest, digest_tree(&dst_dir, &dst)?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn copy_tree_into_with_digest(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<(CopyStats, Digest)> {
    let (stats, digest) = copy_tree(src, dst, progress, Some(DirHasher::new()))?;
    let digest = digest.ok_or_else(|| at(src, io::Error::other("the walk never left the root")))?;
    Ok((stats, digest))
}

/// The copy of both public functions; with a `tree` hasher for the root,
/// the digest too.
fn copy_tree(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
    tree: Option<DirHasher>,
) -> io::Result<(CopyStats, Option<Digest>)> {
    let mut copier = Copier::new(dst, progress);
    let st = rustix::fs::statat(CWD, src, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| at(src, e))?;
    // `dst` belongs to the caller: its mode and times stay as they are.
    let target = Target {
        dst: dst.try_clone().map_err(|e| at(src, e))?,
        dst_rel: PathBuf::new(),
        finish: false,
        tree,
    };
    let root = if is_dir(&st) {
        let fd = open_dir_nofollow(CWD, src).map_err(|e| at(src, e))?;
        Frame::new(fd, src.to_path_buf(), target).map_err(|e| at(src, e))?
    } else {
        // A file or symlink: walk its parent, visiting that one name.
        let (parent, name) = split_parent(src)?;
        let parent_fd = rustix::fs::openat(
            CWD,
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| at(parent, e))?;
        let parent_st = rustix::fs::fstat(&parent_fd).map_err(|e| at(parent, e))?;
        let names = vec![name.to_os_string()];
        Frame::with_names(parent_fd, parent.to_path_buf(), parent_st, target, names)
    };
    Walk::new().run(&mut copier, root)?;
    Ok((copier.stats, copier.digest))
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
    struct Bytes {
        links: HardLinks,
        total: u64,
    }
    impl Visitor for Bytes {
        type State = ();
        fn visit(
            &mut self,
            _: &mut Frame<()>,
            _: &OsStr,
            _: &Path,
            st: &Stat,
        ) -> io::Result<Visit<()>> {
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => return Ok(Visit::Descend(())),
                FileType::RegularFile if self.links.first_visit(st) => {
                    self.total = self.total.saturating_add(stat::size(st));
                }
                _ => {}
            }
            Ok(Visit::Skip)
        }
        fn error(&self, path: &Path, e: io::Error) -> io::Error {
            at(path, e)
        }
    }
    let st = rustix::fs::statat(CWD, src, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| at(src, e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => return Ok(stat::size(&st)),
        FileType::Directory => {}
        _ => return Ok(0),
    }
    let fd = open_dir_nofollow(CWD, src).map_err(|e| at(src, e))?;
    let root = Frame::new(fd, src.to_path_buf(), ()).map_err(|e| at(src, e))?;
    let mut bytes = Bytes {
        links: HardLinks::new(),
        total: 0,
    };
    Walk::new().run(&mut bytes, root)?;
    Ok(bytes.total)
}

/// Where one source directory's children go.
struct Target {
    /// The destination directory being filled.
    dst: Dir,
    /// Its path relative to the destination root.
    dst_rel: PathBuf,
    /// Whether to give it the source directory's metadata once its children
    /// are written (not for the caller's `dst`).
    finish: bool,
    /// The digest of its children so far, when the copy computes one.
    tree: Option<DirHasher>,
}

/// What copying one child made, for its entry in the digest.
enum Copied {
    /// A directory, whose children go to this target (boxed: a digest's
    /// hasher is large).
    Dir(Box<Target>),
    /// A regular file with these permission bits; with the size and content
    /// hash when the copy hashes.
    File(u32, Option<(u64, blake3::Hash)>),
    /// A symlink with these bits, to this target.
    Symlink(u32, Vec<u8>),
    /// A FIFO with these bits.
    Other(u32),
}

/// What the copy of a multiply-linked source inode left, for its later names.
struct Linked {
    /// Its copy's path relative to the destination root.
    rel: PathBuf,
    /// Its permission bits, size and content hash, when the copy hashes.
    entry: Option<(u32, u64, blake3::Hash)>,
}

/// State of one [`copy_tree_into`] walk.
struct Copier<'a> {
    dst_root: &'a Dir,
    stats: CopyStats,
    /// `geteuid() == 0`: copy owner and group too.
    keep_owner: bool,
    /// Multiply-linked source inodes → what their first copy left.
    links: HardLinks<Linked>,
    content: Content<'a>,
    /// The root's digest, once the walk has left it (when hashing).
    digest: Option<Digest>,
}

impl Visitor for Copier<'_> {
    type State = Target;

    fn visit(
        &mut self,
        parent: &mut Frame<Target>,
        name: &OsStr,
        path: &Path,
        st: &Stat,
    ) -> io::Result<Visit<Target>> {
        let sfd = parent.fd();
        let target = parent.state();
        let ddir = &target.dst;
        let dst_rel = target.dst_rel.join(name);
        let hashing = target.tree.is_some();
        let copied = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => self.copy_dir(ddir, name, dst_rel, hashing),
            FileType::RegularFile => self.copy_file(sfd, ddir, name, st, dst_rel, hashing),
            FileType::Symlink => self.copy_symlink(sfd, ddir, name, st),
            FileType::Fifo => self.copy_fifo(ddir, name, st, hashing),
            FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Unknown => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "unsupported file type",
            )),
        }
        .map_err(|e| at(path, e))?;
        // A directory's entry is written when the walk leaves it.
        let tree = parent.state_mut().tree.as_mut();
        match (copied, tree) {
            (Copied::Dir(target), _) => return Ok(Visit::Descend(*target)),
            (Copied::File(mode, Some((size, hash))), Some(tree)) => {
                tree.file(name, mode, size, hash.as_bytes());
            }
            (Copied::Symlink(mode, target), Some(tree)) => tree.symlink(name, mode, &target),
            (Copied::Other(mode), Some(tree)) => tree.other(name, mode),
            _ => {}
        }
        Ok(Visit::Skip)
    }

    /// A directory's children are all written: now its metadata, and its
    /// entry in its parent's digest.
    fn leave(
        &mut self,
        mut dir: Frame<Target>,
        parent: Option<&mut Frame<Target>>,
    ) -> io::Result<()> {
        if dir.state().finish {
            self.set_metadata_fd(&dir.state().dst, dir.stat())
                .map_err(|e| at(dir.path(), e))?;
        }
        // Every child is there: the directory's own space is final (and
        // for the root, `dst` itself, whatever it holds besides).
        let made = rustix::fs::fstat(&dir.state().dst).map_err(|e| at(dir.path(), e))?;
        self.stats.space += stat::space(&made);
        let Some(tree) = dir.state_mut().tree.take() else {
            return Ok(());
        };
        let digest = tree.finish();
        let Some(parent) = parent else {
            self.digest = Some(digest);
            return Ok(());
        };
        let mode = given_mode(&dir.state().dst, dir.stat()).map_err(|e| at(dir.path(), e))?;
        let name = dir
            .path()
            .file_name()
            .ok_or_else(|| at(dir.path(), io::Error::other("walked directory has no name")))?;
        if let Some(tree) = parent.state_mut().tree.as_mut() {
            tree.dir(name, mode, &digest);
        }
        Ok(())
    }

    fn error(&self, path: &Path, e: io::Error) -> io::Error {
        at(path, e)
    }
}

impl<'a> Copier<'a> {
    fn new(dst_root: &'a Dir, progress: &'a mut dyn FnMut(u64) -> io::Result<()>) -> Self {
        Copier {
            dst_root,
            stats: CopyStats::default(),
            keep_owner: rustix::process::geteuid().is_root(),
            links: HardLinks::new(),
            content: Content::new(progress),
            digest: None,
        }
    }

    /// Create `ddir/name` for a source directory and return where its
    /// children go; its metadata is applied when the walk leaves it.
    fn copy_dir(
        &mut self,
        ddir: &Dir,
        name: &OsStr,
        dst_rel: PathBuf,
        hashing: bool,
    ) -> io::Result<Copied> {
        ddir.create_dir(name)?;
        // Not `open_dir_nofollow`: cap-std opens directories `O_PATH`, on
        // which fchmod and futimens fail with EBADF. One component, relative
        // to `ddir`, not following a symlink: what cap-std would do.
        let dst = Dir::from_std_file(File::from(open_dir_nofollow(ddir, name)?));
        // Whatever the umask left, the copy must be able to fill it, and
        // nobody else needs to see it half-filled.
        rustix::fs::fchmod(&dst, Mode::RWXU)?;
        self.stats.dirs += 1;
        Ok(Copied::Dir(Box::new(Target {
            dst,
            dst_rel,
            finish: true,
            tree: hashing.then(DirHasher::new),
        })))
    }

    /// Copy the regular file `sfd/name`, or hard-link it to its earlier copy.
    fn copy_file(
        &mut self,
        sfd: impl AsFd,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
        dst_rel: PathBuf,
        hashing: bool,
    ) -> io::Result<Copied> {
        if let Some(first) = self.links.earlier(st) {
            self.dst_root.hard_link(&first.rel, ddir, name)?;
            self.stats.hard_links += 1;
            return Ok(match first.entry {
                Some((mode, size, hash)) => Copied::File(mode, Some((size, hash))),
                None => Copied::File(st.st_mode, None),
            });
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
            || stat::inode(&fst) != stat::inode(st)
        {
            return Err(io::Error::other("file was replaced while being copied"));
        }
        let dst = ddir
            .open_with(
                name,
                OpenOptions::new().write(true).create_new(true).mode(0o600),
            )?
            .into_std();
        let (moved, hashed) = if hashing {
            let (moved, size, hash) = self.content.copy_hashed(&src, &dst, &fst)?;
            (moved, Some((size, hash)))
        } else {
            (self.content.copy(&src, &dst, &fst)?, None)
        };
        self.stats.bytes += moved.bytes;
        self.stats.reflinked += u64::from(moved.reflinked);
        self.stats.files += 1;
        // chown before chmod: chown clears the set-user-ID and set-group-ID
        // bits (chown(2)); after the writes for the same reason (write(2)).
        self.set_metadata_fd(&dst, &fst)?;
        self.stats.space += stat::space(&rustix::fs::fstat(&dst)?);
        let mode = match hashed {
            Some(_) => given_mode(&dst, &fst)?,
            None => fst.st_mode,
        };
        let entry = hashed.map(|(size, hash)| (mode, size, hash));
        let rel = dst_rel;
        self.links.note(&fst, Linked { rel, entry });
        Ok(Copied::File(mode, hashed))
    }

    /// Recreate the symlink `sfd/name` verbatim in `ddir`.
    fn copy_symlink(
        &mut self,
        sfd: impl AsFd,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<Copied> {
        let target = rustix::fs::readlinkat(sfd, name, Vec::new())?;
        // `symlink_contents`, not `symlink`: the target is stored, never
        // resolved, and may be absolute or point anywhere.
        ddir.symlink_contents(OsStr::from_bytes(target.as_bytes()), name)?;
        self.set_owner_and_times_at(ddir, name, st)?;
        self.stats.symlinks += 1;
        self.stats.space +=
            stat::space(&rustix::fs::statat(ddir, name, AtFlags::SYMLINK_NOFOLLOW)?);
        // Linux gives every symlink mode 0777 (symlink(7)): the copy's is
        // the source's.
        Ok(Copied::Symlink(st.st_mode, target.into_bytes()))
    }

    /// Recreate the FIFO `name` in `ddir` with `mknodat`.
    fn copy_fifo(
        &mut self,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
        hashing: bool,
    ) -> io::Result<Copied> {
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
        let made = rustix::fs::statat(ddir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        self.stats.space += stat::space(&made);
        let mode = if hashing && st.st_mode & SPECIAL_BITS != 0 {
            made.st_mode
        } else {
            st.st_mode
        };
        Ok(Copied::Other(mode))
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

/// The set-user-ID, set-group-ID and sticky bits.
const SPECIAL_BITS: u32 = 0o7000;

/// The mode the copy `fd` of a source with `st` really has, for its entry in
/// the digest: `st`'s, unless the kernel may have dropped one of its special
/// bits (`chmod(2)` silently clears set-group-ID for a caller outside the
/// file's group), in which case an `fstat` tells.
fn given_mode(fd: impl AsFd, st: &Stat) -> io::Result<u32> {
    if st.st_mode & SPECIAL_BITS == 0 {
        return Ok(st.st_mode);
    }
    Ok(rustix::fs::fstat(fd)?.st_mode)
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
    let ts = |(tv_sec, tv_nsec): stat::Stamp| Timespec { tv_sec, tv_nsec };
    Timestamps {
        last_access: ts(stat::atime(st)),
        last_modification: ts(stat::mtime(st)),
    }
}
