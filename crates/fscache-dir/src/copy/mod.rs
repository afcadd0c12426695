//! Native copy of a directory tree into a capability directory, keeping
//! what GNU `cp -a --reflink=auto` keeps: type, mode, numeric owner, times,
//! hard links, extended attributes, device nodes, FIFOs, sockets and holes.
//!
//! Use this to fill a cache entry's `data/` directory from a tree on disk, or
//! to copy an entry back out, without spawning `cp`.
//!
//! # What is kept
//!
//! | what | kept | how |
//! |---|---|---|
//! | regular files, directories, symlinks (verbatim, never followed) | always | |
//! | FIFOs, sockets | always | `mknodat` |
//! | character and block devices | as root; else an error (as `cp -a`) | `mknodat` |
//! | hard links among the copied files | always | `linkat` to the first copy |
//! | permission bits, sticky bit | always | `fchmod` after `fchown`, or born with them (below) |
//! | set-user-ID / set-group-ID bits | when the owner / group is kept; else dropped | |
//! | numeric owner and group | as root; else a group the caller is in | `fchown`, `lchown`, where the copy has another |
//! | atime and mtime, to the nanosecond (files, dirs, symlinks) | always | `futimens`, `utimensat(AT_SYMLINK_NOFOLLOW)`, last |
//! | xattrs: `user.*`, ACLs (`system.posix_acl_*`) | always | `flistxattr`/`fgetxattr`/`fsetxattr` on the fd; `l*xattr` for what cannot be opened |
//! | xattrs: `security.*` (`security.capability`, `security.selinux`) | as root; else dropped where the kernel refuses | the same, after `fchown` (which clears `security.capability`) |
//! | xattrs: `trusted.*` | as root; else unseen (listed to `CAP_SYS_ADMIN` only), so neither kept nor counted | the same |
//! | holes of sparse files | always | `FICLONE`, else `SEEK_DATA`/`SEEK_HOLE`, copying only the data ranges |
//! | ctime, birth time, inode numbers, file flags (`chattr`) | never | |
//!
//! What is dropped under that policy is counted in [`CopyStats::dropped`];
//! with [`CopyOptions::on_drop`]`(`[`OnDrop::Fail`]`)` the first drop is an
//! error instead. An xattr the destination cannot hold is always an error
//! ([`XattrTooLarge`](crate::meta::XattrTooLarge)). The policy itself is
//! [`crate::meta`]'s, shared with a remote pull.
//!
//! # Design
//!
//! The source is walked with `openat(O_NOFOLLOW)` and `fstatat(
//! AT_SYMLINK_NOFOLLOW)` relative to the fd of the directory being read, so no
//! symlink in the source is ever followed (only the components of `src`
//! itself are resolved the usual way). Every destination operation is one
//! path component relative to a `cap_std::fs::Dir` of the directory being
//! filled; the system calls cap-std lacks (`FICLONE`, `copy_file_range`,
//! `futimens`, `fchmod`, `mknodat`, `fchownat`, `utimensat`, the xattr
//! calls) go through rustix on that `Dir`'s fd. The source is walked with
//! the crate's one [walk](crate::walk) (an explicit stack: a deep tree costs
//! heap and two fds per level, never native stack; hard links deduplicated
//! there).
//!
//! File content is cloned with `ioctl(FICLONE)` where the file system shares
//! extents (btrfs, XFS, bcachefs…); otherwise a sparse file (fewer blocks
//! than its size) has only its data ranges copied, at their offsets, and its
//! length set, so the copy allocates what the source does; any other file
//! is copied in the kernel with `copy_file_range(2)`, and where that is
//! refused too, with `read`/`write`. Once a method is refused as unsupported
//! for a source file system (keyed by its `st_dev`), it is not tried again
//! for later files of that file system.
//!
//! Each node gets its metadata in the order that keeps all of it: content,
//! then `chown` (it clears set-ID bits and `security.capability`), `chmod`,
//! xattrs, and the times last. A directory is created with mode `0700` and
//! receives all of that only after its children are written, so a read-only
//! directory can still be filled, its mtime is not disturbed by the copy,
//! and a default ACL does not leak into children made before it.
//!
//! What a node has already is not set again, as `cp -a` skips a `chown`
//! that changes nothing: each copy is `fstat`ed after its content (the
//! `fstat` its space is taken from), and `chown` is made only where its
//! owner differs from the source's, `chmod` only where that or its bits
//! differ. A file whose source owner is the copying process's is created
//! with its permission bits (without set-ID bits, which the writes would
//! clear), so a root copy of a root-owned tree makes neither call for most
//! files; a file of another owner is created `0600` until its `chown`. On
//! ext4 every inode change is a journal update: a regular file costs three
//! (create, write, times), one fewer than `cp -a`'s four.
//!
//! # Limitations
//!
//! * On error the destination is left partially filled (directories still
//!   mode `0700`); the caller removes it, as a `store`/`stage` guard does.
//! * A source changed during the copy gives a copy of some mixture of its
//!   states; a file replaced by another type between `stat` and `open` is an
//!   error.
//! * Symlink and special-file xattrs are read and written through
//!   `/proc/self/fd/N/NAME`: without `/proc`, a copy of a symlink fails.

mod content;
mod copier;
mod lazy;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Stat, CWD};
use rustix::io::retry_on_intr;

use crate::digest::{Digest, Listing, Version};
use crate::meta::{Dropped, OnDrop};
use crate::stat;
use crate::walk::{open_dir_nofollow, Frame, HardLinks, Visit, Visitor, Walk};
use copier::copy_tree_listed;

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
    /// Sockets and character and block devices recreated.
    pub specials: u64,
    /// Names made hard links to a file copied earlier in the same copy.
    pub hard_links: u64,
    /// Bytes of regular-file content copied (each hard-linked inode once;
    /// a sparse file's holes included).
    pub bytes: u64,
    /// Files cloned with `ioctl(FICLONE)` (shared extents, no data copied).
    pub reflinked: u64,
    /// Sparse files of which only the data ranges were copied.
    pub sparse: u64,
    /// What the [policy](crate::meta) could not keep (owners as non-root,
    /// set-ID bits on an owner not kept, xattrs the kernel refused).
    pub dropped: Dropped,
    /// The space of the copy: `st_blocks × 512` of everything it created
    /// and of `dst` itself, each inode once, taken with an `fstat` of each
    /// copy as it is finished (a directory when all its children are). It
    /// is what a walk of `dst` afterwards (`fscache_quota::tree_space`)
    /// would measure, without that second walk, as long as nothing else
    /// writes into `dst` meanwhile.
    pub space: u64,
}

/// How a copy treats metadata it cannot keep, in the style of
/// [`LockOptions`](crate::LockOptions): build one, then
/// [`copy`](Self::copy) or [`copy_with_digest`](Self::copy_with_digest).
///
/// ```
/// use cap_std::{ambient_authority, fs::Dir};
/// use fscache_dir::copy::CopyOptions;
/// use fscache_dir::meta::OnDrop;
///
/// let tmp = tempfile::tempdir()?;
/// let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
/// std::fs::create_dir(&src)?;
/// std::fs::write(src.join("f"), b"x")?;
/// std::fs::create_dir(&dst)?;
/// let dst_dir = Dir::open_ambient_dir(&dst, ambient_authority())?;
/// let stats = CopyOptions::new()
///     .on_drop(OnDrop::Fail)
///     .copy(&src, &dst_dir, &mut |_| Ok(()))?;
/// assert!(!stats.dropped.any());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    on_drop: OnDrop,
}

impl CopyOptions {
    /// The default: metadata the kernel refuses is dropped and counted, as
    /// `cp -a` does.
    pub fn new() -> Self {
        Self::default()
    }

    /// What to do with metadata that cannot be kept: count it
    /// ([`OnDrop::Count`], the default) or fail ([`OnDrop::Fail`], strict).
    pub fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// [`copy_tree_into`] with these options.
    ///
    /// # Errors
    ///
    /// As [`copy_tree_into`]; under [`OnDrop::Fail`], the first drop.
    pub fn copy(
        &self,
        src: &Path,
        dst: &Dir,
        progress: &mut dyn FnMut(u64) -> io::Result<()>,
    ) -> io::Result<CopyStats> {
        copy_tree_listed(src, dst, progress, None, self, None).map(|(stats, _, _)| stats)
    }

    /// [`copy_tree_into_with_digest`] with these options.
    ///
    /// # Errors
    ///
    /// As [`copy`](Self::copy).
    pub fn copy_with_digest(
        &self,
        src: &Path,
        dst: &Dir,
        progress: &mut dyn FnMut(u64) -> io::Result<()>,
    ) -> io::Result<(CopyStats, Digest)> {
        let (stats, digest, _) = self.copy_listed(src, dst, progress, false)?;
        Ok((stats, digest))
    }

    /// [`copy_with_digest`](Self::copy_with_digest), and the
    /// [`Listing`] of the copy: what
    /// [`digest_tree_listed`](crate::digest::digest_tree_listed) of `dst`
    /// gives afterwards, so a later check can name what changed.
    ///
    /// # Errors
    ///
    /// As [`copy`](Self::copy).
    pub fn copy_with_listing(
        &self,
        src: &Path,
        dst: &Dir,
        progress: &mut dyn FnMut(u64) -> io::Result<()>,
    ) -> io::Result<(CopyStats, Digest, Listing)> {
        self.copy_listed(src, dst, progress, true)
    }

    fn copy_listed(
        &self,
        src: &Path,
        dst: &Dir,
        progress: &mut dyn FnMut(u64) -> io::Result<()>,
        listed: bool,
    ) -> io::Result<(CopyStats, Digest, Listing)> {
        let records = listed.then(Listing::default);
        let (stats, digest, listing) =
            copy_tree_listed(src, dst, progress, Some(Version::default()), self, records)?;
        let digest =
            digest.ok_or_else(|| at(src, io::Error::other("the walk never left the root")))?;
        Ok((stats, digest, listing.unwrap_or_default()))
    }
}

/// Copy `src` into the open directory `dst`: if `src` is a directory, its
/// children (recursively) become `dst`'s children; if it is a file or a
/// symlink, it is copied as `dst/<its file name>`.
///
/// Everything the [module docs](self)' table lists is kept, under its
/// policy (default [`CopyOptions`]); `dst`'s own mode, owner, xattrs and
/// times are left alone.
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
/// [`io::ErrorKind::AlreadyExists`]; a device node as non-root is
/// [`io::ErrorKind::PermissionDenied`]; a node replaced by another type
/// while it is copied is an error naming it. The destination is then
/// partially filled.
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
    CopyOptions::new().copy(src, dst, progress)
}

/// [`copy_tree_into`], and the [tree digest](crate::digest) (version 3) of
/// what it copied, computed while it copies, from the copies.
///
/// The digest is that of the copy: [`digest_tree`](crate::digest::digest_tree)
/// of `dst` gives the same value afterwards if `dst` was empty before and
/// nothing else changed it (owners, permission bits and xattrs are those
/// the copy really got, e.g. without a set-group-ID bit the kernel
/// dropped). For a `src` that is a file or a symlink, it is the digest of a
/// directory holding only that one name.
///
/// Each file is copied as [`copy_tree_into`] copies it (a clone,
/// `copy_file_range`: its data need not pass through the process), then
/// its copy is read back (with `O_NOATIME`, so its times stay those given)
/// and hashed on a second thread while the copy goes on: the digest costs
/// the copy little time on a machine with two cores, and it is the hash
/// of what was stored even if the source changes meanwhile. Where no
/// thread can be started, each buffer is hashed between its `read` and
/// its `write` instead.
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
/// use fscache_dir::digest::{digest_tree, Version};
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
/// assert_eq!(digest, digest_tree(&dst_dir, &dst, Version::default())?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn copy_tree_into_with_digest(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<(CopyStats, Digest)> {
    CopyOptions::new().copy_with_digest(src, dst, progress)
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
    let st = retry_on_intr(|| rustix::fs::statat(CWD, src, AtFlags::SYMLINK_NOFOLLOW))
        .map_err(|e| at(src, e))?;
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

/// Fold `path` into `e` as a [`PathError`](crate::PathError), keeping its
/// kind and errno.
fn at(path: &Path, e: impl Into<io::Error>) -> io::Error {
    crate::with_path("copy", path, e.into())
}
