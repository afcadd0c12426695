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
//! | permission bits, sticky bit | always | `fchmod` after `fchown` |
//! | set-user-ID / set-group-ID bits | when the owner / group is kept; else dropped | |
//! | numeric owner and group | as root; else a group the caller is in | `fchown`, `lchown` |
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
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::retry_on_intr;

use crate::digest::{Body, Digest, DirHasher, Listing, NodeMeta, Record, Version};
use crate::meta::{self, Dropped, Given, OnDrop, Wanted, Xattr};
use crate::retry_io;
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
        let hasher = DirHasher::of(Version::V2);
        let records = listed.then(Listing::default);
        let (stats, digest, listing) =
            copy_tree_listed(src, dst, progress, Some(hasher), self, records)?;
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

/// [`copy_tree_into`], and the [tree digest](crate::digest) (version 2) of
/// what it copied, computed in the same pass from one read of the data.
///
/// The digest is that of the copy: [`digest_tree`](crate::digest::digest_tree)
/// of `dst` gives the same value afterwards if `dst` was empty before and
/// nothing else changed it (owners, permission bits and xattrs are those
/// the copy really got, e.g. without a set-group-ID bit the kernel
/// dropped). For a `src` that is a file or a symlink, it is the digest of a
/// directory holding only that one name.
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
/// assert_eq!(digest, digest_tree(&dst_dir, &dst, Version::V2)?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn copy_tree_into_with_digest(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<(CopyStats, Digest)> {
    CopyOptions::new().copy_with_digest(src, dst, progress)
}

/// The copy of both public functions; with a `tree` hasher for the root,
/// the digest too.
fn copy_tree_listed(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
    tree: Option<DirHasher>,
    opts: &CopyOptions,
    records: Option<Listing>,
) -> io::Result<(CopyStats, Option<Digest>, Option<Listing>)> {
    let mut copier = Copier::new(dst, progress, opts);
    copier.records = records;
    let st = retry_on_intr(|| rustix::fs::statat(CWD, src, AtFlags::SYMLINK_NOFOLLOW))
        .map_err(|e| at(src, e))?;
    // `dst` belongs to the caller: its mode and times stay as they are.
    let target = Target {
        dst: retry_io(|| dst.try_clone()).map_err(|e| at(src, e))?,
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
        let parent_fd = retry_on_intr(|| {
            rustix::fs::openat(
                CWD,
                parent,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .map_err(|e| at(parent, e))?;
        let parent_st =
            retry_on_intr(|| rustix::fs::fstat(&parent_fd)).map_err(|e| at(parent, e))?;
        let names = vec![name.to_os_string()];
        Frame::with_names(parent_fd, parent.to_path_buf(), parent_st, target, names)
    };
    Walk::new().run(&mut copier, root)?;
    Ok((copier.stats, copier.digest, copier.records))
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
    /// A regular file with this metadata; with the size and content hash
    /// when the copy hashes.
    File(Given, Option<(u64, blake3::Hash)>),
    /// A symlink to this target.
    Symlink(Given, Vec<u8>),
    /// A FIFO, socket or device.
    Special(Given, Stat),
}

/// What the copy of a multiply-linked source inode left, for its later names.
struct Linked {
    /// Its copy's path relative to the destination root.
    rel: PathBuf,
    /// What its copy got, and its size and content hash when hashing.
    given: Given,
    content: Option<(u64, blake3::Hash)>,
}

/// State of one [`copy_tree_into`] walk.
struct Copier<'a> {
    dst_root: &'a Dir,
    stats: CopyStats,
    on_drop: OnDrop,
    /// Multiply-linked source inodes → what their first copy left.
    links: HardLinks<Linked>,
    content: Content<'a>,
    /// The root's digest, once the walk has left it (when hashing).
    digest: Option<Digest>,
    /// The listing of the copy, when asked for (with the digest).
    records: Option<Listing>,
}

/// The digest-side view of what a node got.
fn node_meta(given: &Given) -> NodeMeta<'_> {
    NodeMeta {
        perm: given.perm,
        uid: given.uid,
        gid: given.gid,
        xattrs: &given.xattrs,
    }
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
            FileType::Fifo
            | FileType::Socket
            | FileType::CharacterDevice
            | FileType::BlockDevice => self.copy_special(sfd, ddir, name, st),
            FileType::Unknown => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "unsupported file type",
            )),
        }
        .map_err(|e| at(path, e))?;
        // A directory's entry is written when the walk leaves it.
        if let Some(records) = self.records.as_mut() {
            let rel = parent.state().dst_rel.join(name);
            if let Some(r) = record_of(&rel, st, &copied) {
                records.0.push(r);
            }
        }
        let tree = parent.state_mut().tree.as_mut();
        match (copied, tree) {
            (Copied::Dir(target), _) => return Ok(Visit::Descend(*target)),
            (Copied::File(given, Some((size, hash))), Some(tree)) => {
                let body = Body::File {
                    size,
                    hash: hash.as_bytes(),
                };
                tree.entry(name, node_meta(&given), body);
            }
            (Copied::Symlink(given, target), Some(tree)) => {
                tree.entry(name, node_meta(&given), Body::Symlink(&target));
            }
            (Copied::Special(given, st), Some(tree)) => {
                let body = Body::special(&st).unwrap_or(Body::Fifo);
                tree.entry(name, node_meta(&given), body);
            }
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
        let given = if dir.state().finish {
            let xattrs = meta::fd_xattrs(dir.fd()).map_err(|e| at(dir.path(), e))?;
            let want = Wanted::of(dir.stat(), xattrs);
            let given = meta::restore_fd(&dir.state().dst, &want, self.on_drop)
                .map_err(|e| at(dir.path(), e))?;
            self.stats.dropped.add(given.dropped);
            Some(given)
        } else {
            None
        };
        // Every child is there: the directory's own space is final (and
        // for the root, `dst` itself, whatever it holds besides).
        let made =
            retry_on_intr(|| rustix::fs::fstat(&dir.state().dst)).map_err(|e| at(dir.path(), e))?;
        self.stats.space += stat::space(&made);
        let Some(tree) = dir.state_mut().tree.take() else {
            return Ok(());
        };
        let digest = tree.finish();
        let Some(parent) = parent else {
            self.digest = Some(digest);
            return Ok(());
        };
        let name = dir
            .path()
            .file_name()
            .ok_or_else(|| at(dir.path(), io::Error::other("walked directory has no name")))?;
        if let (Some(records), Some(given)) = (self.records.as_mut(), given.as_ref()) {
            records
                .0
                .push(record(&dir.state().dst_rel, dir.stat(), given, Vec::new()));
        }
        if let (Some(tree), Some(given)) = (parent.state_mut().tree.as_mut(), given) {
            tree.entry(name, node_meta(&given), Body::Dir(&digest));
        }
        Ok(())
    }

    fn error(&self, path: &Path, e: io::Error) -> io::Error {
        at(path, e)
    }
}

impl<'a> Copier<'a> {
    fn new(
        dst_root: &'a Dir,
        progress: &'a mut dyn FnMut(u64) -> io::Result<()>,
        opts: &CopyOptions,
    ) -> Self {
        Copier {
            dst_root,
            stats: CopyStats::default(),
            on_drop: opts.on_drop,
            links: HardLinks::new(),
            content: Content::new(progress),
            digest: None,
            records: None,
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
        retry_io(|| ddir.create_dir(name))?;
        // Not `open_dir_nofollow`: cap-std opens directories `O_PATH`, on
        // which fchmod and futimens fail with EBADF. One component, relative
        // to `ddir`, not following a symlink: what cap-std would do.
        let dst = Dir::from_std_file(File::from(open_dir_nofollow(ddir, name)?));
        // Whatever the umask left, the copy must be able to fill it, and
        // nobody else needs to see it half-filled.
        retry_on_intr(|| rustix::fs::fchmod(&dst, Mode::RWXU))?;
        self.stats.dirs += 1;
        Ok(Copied::Dir(Box::new(Target {
            dst,
            dst_rel,
            finish: true,
            tree: hashing.then(|| DirHasher::of(Version::V2)),
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
            retry_io(|| self.dst_root.hard_link(&first.rel, ddir, name))?;
            self.stats.hard_links += 1;
            return Ok(Copied::File(first.given.clone(), first.content));
        }
        // O_NONBLOCK: should the name have become a FIFO since the `lstat`,
        // the open must not hang; the type is checked right after.
        let src: File = retry_on_intr(|| {
            rustix::fs::openat(
                &sfd,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NOCTTY
                    | OFlags::NONBLOCK
                    | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .map_err(|e| replaced_on(e, "file"))?
        .into();
        let fst = retry_on_intr(|| rustix::fs::fstat(&src))?;
        if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
            || stat::inode(&fst) != stat::inode(st)
        {
            return Err(replaced("file"));
        }
        let xattrs = meta::fd_xattrs(&src)?;
        let dst = retry_io(|| {
            ddir.open_with(
                name,
                OpenOptions::new().write(true).create_new(true).mode(0o600),
            )
        })?
        .into_std();
        self.copy_content(&src, &dst, &fst, xattrs, dst_rel, hashing)
    }

    /// Move the content of the open `src` into the new `dst`, then its
    /// metadata (after the writes, which clear set-ID bits and
    /// capabilities: write(2)).
    fn copy_content(
        &mut self,
        src: &File,
        dst: &File,
        fst: &Stat,
        xattrs: Vec<Xattr>,
        dst_rel: PathBuf,
        hashing: bool,
    ) -> io::Result<Copied> {
        let (moved, hashed) = if hashing {
            let (moved, size, hash) = self.content.copy_hashed(src, dst, fst)?;
            (moved, Some((size, hash)))
        } else {
            (self.content.copy(src, dst, fst)?, None)
        };
        self.stats.bytes += moved.bytes;
        self.stats.reflinked += u64::from(moved.reflinked);
        self.stats.sparse += u64::from(moved.sparse);
        self.stats.files += 1;
        let given = meta::restore_fd(dst, &Wanted::of(fst, xattrs), self.on_drop)?;
        self.stats.dropped.add(given.dropped);
        self.stats.space += stat::space(&retry_on_intr(|| rustix::fs::fstat(dst))?);
        if stat::is_multiply_linked(fst) {
            let linked = Linked {
                rel: dst_rel,
                given: given.clone(),
                content: hashed,
            };
            self.links.note(fst, linked);
        }
        Ok(Copied::File(given, hashed))
    }

    /// Recreate the symlink `sfd/name` verbatim in `ddir`.
    fn copy_symlink(
        &mut self,
        sfd: impl AsFd,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<Copied> {
        let target = retry_on_intr(|| rustix::fs::readlinkat(&sfd, name, Vec::new()))
            .map_err(|e| replaced_on(e, "symlink"))?;
        let xattrs = meta::symlink_xattrs(&sfd, name)?;
        // `symlink_contents`, not `symlink`: the target is stored, never
        // resolved, and may be absolute or point anywhere.
        retry_io(|| ddir.symlink_contents(OsStr::from_bytes(target.as_bytes()), name))?;
        let given = meta::restore_at(ddir, name, &Wanted::of(st, xattrs), self.on_drop)?;
        self.stats.dropped.add(given.dropped);
        self.stats.symlinks += 1;
        self.stats.space += stat::space(&retry_on_intr(|| {
            rustix::fs::statat(ddir, name, AtFlags::SYMLINK_NOFOLLOW)
        })?);
        Ok(Copied::Symlink(given, target.into_bytes()))
    }

    /// Recreate the FIFO, socket or device `name` in `ddir` with `mknodat`.
    fn copy_special(
        &mut self,
        sfd: impl AsFd,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<Copied> {
        let ft = FileType::from_raw_mode(st.st_mode);
        // The node must still be what the walk saw (never opened: an open
        // could block or reach a driver).
        let now = retry_on_intr(|| rustix::fs::statat(&sfd, name, AtFlags::SYMLINK_NOFOLLOW))
            .map_err(|e| replaced_on(e, "node"))?;
        if stat::inode(&now) != stat::inode(st) || FileType::from_raw_mode(now.st_mode) != ft {
            return Err(replaced("node"));
        }
        let xattrs = meta::symlink_xattrs(&sfd, name)?;
        let rdev = match ft {
            FileType::CharacterDevice | FileType::BlockDevice => st.st_rdev as _,
            _ => 0,
        };
        retry_on_intr(|| rustix::fs::mknodat(ddir, name, ft, Mode::RUSR | Mode::WUSR, rdev))
            .map_err(|e| {
                if e == rustix::io::Errno::PERM {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "cannot create a device node: only root may (mknod(2))",
                    )
                } else {
                    e.into()
                }
            })?;
        let given = meta::restore_at(ddir, name, &Wanted::of(st, xattrs), self.on_drop)?;
        self.stats.dropped.add(given.dropped);
        if ft == FileType::Fifo {
            self.stats.files += 1;
        } else {
            self.stats.specials += 1;
        }
        let made = retry_on_intr(|| rustix::fs::statat(ddir, name, AtFlags::SYMLINK_NOFOLLOW))?;
        self.stats.space += stat::space(&made);
        Ok(Copied::Special(given, *st))
    }
}

/// The [`Record`] of a node the copy made at `rel` (not a directory:
/// those are recorded when the walk leaves them).
fn record_of(rel: &Path, st: &Stat, copied: &Copied) -> Option<Record> {
    Some(match copied {
        Copied::Dir(_) => return None,
        Copied::File(given, Some((size, hash))) => {
            let mut body = size.to_le_bytes().to_vec();
            body.extend_from_slice(hash.as_bytes());
            record(rel, st, given, body)
        }
        Copied::File(_, None) => return None,
        Copied::Symlink(given, target) => record(rel, st, given, target.clone()),
        Copied::Special(given, st) => {
            let body = match Body::special(st) {
                Some(Body::Char(a, b) | Body::Block(a, b)) => format!("{a}:{b}").into_bytes(),
                _ => Vec::new(),
            };
            record(rel, st, given, body)
        }
    })
}

/// A record of the node at `rel`: its source's type, what it was given.
fn record(rel: &Path, st: &Stat, given: &Given, body: Vec<u8>) -> Record {
    Record {
        path: rel.as_os_str().as_bytes().to_vec(),
        mode: (st.st_mode & 0o170000) | given.perm,
        uid: given.uid,
        gid: given.gid,
        xattrs: given
            .xattrs
            .iter()
            .map(|x| (x.name.clone(), *blake3::hash(&x.value).as_bytes()))
            .collect(),
        body,
    }
}

/// The error of a node replaced by something else while it was copied.
fn replaced(what: &str) -> io::Error {
    io::Error::other(format!("{what} was replaced by another while being copied"))
}

/// `e` from opening or reading a node the walk just listed: `ELOOP`
/// (a symlink now), `ENXIO` (a socket now) or `EINVAL` (not a symlink any
/// more) mean it was replaced.
fn replaced_on(e: rustix::io::Errno, what: &str) -> io::Error {
    use rustix::io::Errno;
    match e {
        Errno::LOOP | Errno::NXIO | Errno::INVAL => replaced(what),
        e => e.into(),
    }
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
