//! The walk of one copy: [`copy_tree_listed`] and its visitor, which
//! makes each node, gives it its metadata under the policy, and (when
//! hashing) feeds the digest and the listing.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::retry_on_intr;

use super::content::Content;
use super::lazy::{self, DirSlot, FileSlot, Hashes, LazyBody, PendingDir};
use super::{at, CopyOptions, CopyStats};
use crate::digest::{Body, Digest, Listing, NodeMeta, Record, Version};
use crate::meta::{self, Given, OnDrop, Wanted, Xattr};
use crate::retry_io;
use crate::stat;
use crate::walk::{is_dir, open_dir_nofollow, Frame, HardLinks, Visit, Visitor, Walk};

/// Files of at most this size (one digest block) are hashed between their
/// read and their write even when a hashing thread runs.
const HASH_IN_PASSING_UP_TO: u64 = crate::digest::BLOCK as u64;

/// The copy of both public functions; with a `tree` hasher for the root,
/// the digest too.
pub(super) fn copy_tree_listed(
    src: &Path,
    dst: &Dir,
    progress: &mut dyn FnMut(u64) -> io::Result<()>,
    tree: Option<Version>,
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
        tree: tree.map(PendingDir::new),
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
    let digest = match copier.root {
        Some(root) => Some(copier.hashes.finish(root).map_err(|e| at(src, e))?),
        None => None,
    };
    if let Some(records) = copier.records.as_mut() {
        for (i, slot) in std::mem::take(&mut copier.hashes.record_holes) {
            if let Some((size, hash)) = copier.hashes.file(slot) {
                records.0[i].body = file_body(size, &hash);
            }
        }
    }
    Ok((copier.stats, digest, copier.records))
}

/// Where one source directory's children go.
pub(super) struct Target {
    /// The destination directory being filled.
    pub(super) dst: Dir,
    /// Its path relative to the destination root.
    pub(super) dst_rel: PathBuf,
    /// Whether to give it the source directory's metadata once its children
    /// are written (not for the caller's `dst`).
    pub(super) finish: bool,
    /// The digest of its children so far, when the copy computes one.
    pub(super) tree: Option<PendingDir>,
}

/// What copying one child made, for its entry in the digest.
pub(super) enum Copied {
    /// A directory, whose children go to this target (boxed: a digest's
    /// hasher is large).
    Dir(Box<Target>),
    /// A regular file with this metadata; with where its size and content
    /// hash are when the copy hashes.
    File(Given, Option<FileSlot>),
    /// A symlink to this target.
    Symlink(Given, Vec<u8>),
    /// A FIFO, socket or device.
    Special(Given, Stat),
}

/// How the copy of one regular file is hashed.
#[derive(Clone, Copy)]
enum Hashing {
    /// Not at all.
    No,
    /// Each buffer between its read and its write.
    InPassing(Version),
    /// From its copy, on the hashing thread.
    Elsewhere(Version),
}

/// What the copy of a multiply-linked source inode left, for its later names.
struct Linked {
    /// Its copy's path relative to the destination root.
    rel: PathBuf,
    /// What its copy got, and its size and content hash when hashing.
    given: Given,
    content: Option<FileSlot>,
}

/// State of one [`copy_tree_into`] walk.
pub(super) struct Copier<'a> {
    dst_root: &'a Dir,
    pub(super) stats: CopyStats,
    on_drop: OnDrop,
    /// Multiply-linked source inodes → what their first copy left.
    links: HardLinks<Linked>,
    pub(super) content: Content<'a>,
    /// The content hashes and directory digests (when hashing).
    pub(super) hashes: Hashes,
    /// Where the root's digest is, once the walk has left it.
    pub(super) root: Option<DirSlot>,
    /// The listing of the copy, when asked for (with the digest).
    records: Option<Listing>,
    /// The owner a node this process creates gets (`geteuid`, `getegid`).
    creator: (u32, u32),
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
        let hashing = target.tree.as_ref().map(PendingDir::version);
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
            if let Some(r) = record_of(&rel, st, &copied, &self.hashes) {
                if let Copied::File(_, Some(slot)) = copied {
                    if self.hashes.file(slot).is_none() {
                        self.hashes.record_holes.push((records.0.len(), slot));
                    }
                }
                records.0.push(r);
            }
        }
        let tree = parent.state_mut().tree.as_mut();
        let hashes = &self.hashes;
        match (copied, tree) {
            (Copied::Dir(target), _) => return Ok(Visit::Descend(*target)),
            (Copied::File(given, Some(slot)), Some(tree)) => {
                tree.entry(hashes, name, node_meta(&given), LazyBody::File(slot));
            }
            (Copied::Symlink(given, target), Some(tree)) => {
                let body = LazyBody::Now(Body::Symlink(&target));
                tree.entry(hashes, name, node_meta(&given), body);
            }
            (Copied::Special(given, st), Some(tree)) => {
                let body = LazyBody::Now(Body::special(&st).unwrap_or(Body::Fifo));
                tree.entry(hashes, name, node_meta(&given), body);
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
        // Every child is there: the directory's own space is final (and
        // for the root, `dst` itself, whatever it holds besides) unless
        // xattrs are added to it.
        let made =
            retry_on_intr(|| rustix::fs::fstat(&dir.state().dst)).map_err(|e| at(dir.path(), e))?;
        let given = if dir.state().finish {
            let xattrs = meta::fd_xattrs(dir.fd()).map_err(|e| at(dir.path(), e))?;
            let want = Wanted::of(dir.stat(), xattrs);
            let given = meta::restore_fd_known(&dir.state().dst, &want, self.on_drop, &made)
                .map_err(|e| at(dir.path(), e))?;
            self.stats.dropped.add(given.dropped);
            self.stats.space += space_after(&want, made, || {
                retry_on_intr(|| rustix::fs::fstat(&dir.state().dst))
            })
            .map_err(|e| at(dir.path(), e))?;
            Some(given)
        } else {
            self.stats.space += stat::space(&made);
            None
        };
        let Some(tree) = dir.state_mut().tree.take() else {
            return Ok(());
        };
        let slot = self
            .hashes
            .finish_dir(tree)
            .map_err(|e| at(dir.path(), e))?;
        let Some(parent) = parent else {
            self.root = Some(slot);
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
            tree.entry(&self.hashes, name, node_meta(&given), LazyBody::Dir(slot));
        }
        Ok(())
    }

    fn error(&self, path: &Path, e: io::Error) -> io::Error {
        at(path, e)
    }
}

impl<'a> Copier<'a> {
    pub(super) fn new(
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
            hashes: Hashes::default(),
            root: None,
            records: None,
            creator: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
        }
    }

    /// Create `ddir/name` for a source directory and return where its
    /// children go; its metadata is applied when the walk leaves it.
    fn copy_dir(
        &mut self,
        ddir: &Dir,
        name: &OsStr,
        dst_rel: PathBuf,
        hashing: Option<Version>,
    ) -> io::Result<Copied> {
        // `name` is one component the walk read from a directory: no
        // resolution, as cap-std's `create_dir` would make sure of.
        retry_on_intr(|| rustix::fs::mkdirat(ddir, name, Mode::RWXU))?;
        // Not `open_dir_nofollow`: cap-std opens directories `O_PATH`, on
        // which fchmod and futimens fail with EBADF. One component, relative
        // to `ddir`, not following a symlink: what cap-std would do.
        let dst = Dir::from_std_file(File::from(open_dir_nofollow(ddir, name)?));
        // Whatever the umask left, the copy must be able to fill it, and
        // nobody else needs to see it half-filled: `0700`, set only where
        // the umask took from it (an `fstat` is no journal update).
        if retry_on_intr(|| rustix::fs::fstat(&dst))?.st_mode & 0o7777 != 0o700 {
            retry_on_intr(|| rustix::fs::fchmod(&dst, Mode::RWXU))?;
        }
        self.stats.dirs += 1;
        Ok(Copied::Dir(Box::new(Target {
            dst,
            dst_rel,
            finish: true,
            tree: hashing.map(PendingDir::new),
        })))
    }

    /// Copy the regular file `sfd/name`, or hard-link it to its earlier copy.
    pub(super) fn copy_file(
        &mut self,
        sfd: impl AsFd,
        ddir: &Dir,
        name: &OsStr,
        st: &Stat,
        dst_rel: PathBuf,
        hashing: Option<Version>,
    ) -> io::Result<Copied> {
        if let Some(first) = self.links.earlier(st) {
            retry_io(|| self.dst_root.hard_link(&first.rel, ddir, name))?;
            self.stats.hard_links += 1;
            return Ok(Copied::File(first.given.clone(), first.content));
        }
        // Non-blocking, the type checked right after (a FIFO since the
        // `lstat` must not hang the copy).
        let src: File = crate::walk::open_file_errno(&sfd, name)
            .map_err(|e| replaced_on(e, "file"))?
            .into();
        let fst = retry_on_intr(|| rustix::fs::fstat(&src))?;
        if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
            || stat::inode(&fst) != stat::inode(st)
        {
            return Err(replaced("file"));
        }
        let xattrs = meta::fd_xattrs(&src)?;
        // Born with its final permission bits (as far as the umask lets)
        // where its owner will be this process: no `fchmod` to follow. Else
        // owner-only until the `chown`, as `cp -a` does. Set-ID bits come
        // after the writes, which would clear them.
        let mode = if (fst.st_uid, fst.st_gid) == self.creator {
            fst.st_mode & 0o777
        } else {
            0o600
        };
        // Hashed on the hashing thread from its copy, read back without
        // touching the copy's access time (the times are given after the
        // content, and the read comes later). `O_NOATIME` is ours to set:
        // this process creates the file.
        // A file of one block or less is hashed in passing all the same:
        // its read and write cost less than a `copy_file_range`, a read
        // back and a hand-over.
        let elsewhere = hashing.is_some()
            && stat::size(&fst) > HASH_IN_PASSING_UP_TO
            && self.hashes.can_hash_elsewhere();
        let noatime = if elsewhere { OFlags::NOATIME.bits() } else { 0 };
        let dst = retry_io(|| {
            ddir.open_with(
                name,
                OpenOptions::new()
                    .read(elsewhere)
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(noatime as i32),
            )
        })?
        .into_std();
        let how = match hashing {
            Some(v) if elsewhere => Hashing::Elsewhere(v),
            Some(v) => Hashing::InPassing(v),
            None => Hashing::No,
        };
        self.copy_content(&src, dst, &fst, xattrs, dst_rel, how)
    }

    /// Move the content of the open `src` into the new `dst`, then its
    /// metadata (after the writes, which clear set-ID bits and
    /// capabilities: write(2)).
    fn copy_content(
        &mut self,
        src: &File,
        dst_file: File,
        fst: &Stat,
        xattrs: Vec<Xattr>,
        dst_rel: PathBuf,
        how: Hashing,
    ) -> io::Result<Copied> {
        let dst = &dst_file;
        let (moved, mut hashed) = match how {
            Hashing::InPassing(version) => {
                let (moved, size, hash) = self.content.copy_hashed(src, dst, fst, version)?;
                (moved, Some(self.hashes.known(size, hash)))
            }
            Hashing::Elsewhere(_) | Hashing::No => (self.content.copy(src, dst, fst)?, None),
        };
        self.stats.bytes += moved.bytes;
        self.stats.reflinked += u64::from(moved.reflinked);
        self.stats.sparse += u64::from(moved.sparse);
        self.stats.files += 1;
        let made = retry_on_intr(|| rustix::fs::fstat(dst))?;
        let want = Wanted::of(fst, xattrs);
        let given = meta::restore_fd_known(dst, &want, self.on_drop, &made)?;
        self.stats.dropped.add(given.dropped);
        self.stats.space += space_after(&want, made, || retry_on_intr(|| rustix::fs::fstat(dst)))?;
        if let Hashing::Elsewhere(version) = how {
            // Its metadata given, the copy goes to the hashing thread (or
            // is hashed here when none could be started).
            let slot = match self
                .hashes
                .elsewhere(dst_file, version, &dst_rel, stat::size(fst))?
            {
                Ok(slot) => slot,
                Err(file) => {
                    let (n, hash) = lazy::hash_copy(&file, &mut self.content.buf, version)?;
                    self.hashes.known(n, hash)
                }
            };
            hashed = Some(slot);
        }
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
        let given = self.restore_made(ddir, name, &Wanted::of(st, xattrs))?;
        self.stats.symlinks += 1;
        Ok(Copied::Symlink(given, target.into_bytes()))
    }

    /// Give the symlink, FIFO, socket or device `ddir/name` just made what
    /// `want` says, counting its drops and its space.
    fn restore_made(&mut self, ddir: &Dir, name: &OsStr, want: &Wanted) -> io::Result<Given> {
        let lstat = || retry_on_intr(|| rustix::fs::statat(ddir, name, AtFlags::SYMLINK_NOFOLLOW));
        let made = lstat()?;
        let given = meta::restore_at_known(ddir, name, want, self.on_drop, &made)?;
        self.stats.dropped.add(given.dropped);
        self.stats.space += space_after(want, made, lstat)?;
        Ok(given)
    }

    /// Recreate the FIFO, socket or device `name` in `ddir` with `mknodat`.
    pub(super) fn copy_special(
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
        let given = self.restore_made(ddir, name, &Wanted::of(st, xattrs))?;
        if ft == FileType::Fifo {
            self.stats.files += 1;
        } else {
            self.stats.specials += 1;
        }
        Ok(Copied::Special(given, *st))
    }
}

/// The space of a node whose `stat` was `made` before it was given what
/// `want` says: owner, mode and times take no blocks, but xattrs may (an
/// ext4 xattr block), so with xattrs it is `stat` again.
fn space_after(
    want: &Wanted,
    made: Stat,
    stat_again: impl FnOnce() -> rustix::io::Result<Stat>,
) -> io::Result<u64> {
    let now = if want.xattrs.is_empty() {
        made
    } else {
        stat_again()?
    };
    Ok(stat::space(&now))
}

/// The [`Record`] of a node the copy made at `rel` (not a directory:
/// those are recorded when the walk leaves them).
/// A file's hash not known yet is zeros here, filled in once it is.
fn record_of(rel: &Path, st: &Stat, copied: &Copied, hashes: &Hashes) -> Option<Record> {
    Some(match copied {
        Copied::Dir(_) => return None,
        Copied::File(given, Some(slot)) => {
            let body = match hashes.file(*slot) {
                Some((size, hash)) => file_body(size, &hash),
                None => vec![0; 40],
            };
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

/// A file's body in a [`Record`]: `u64le(size) ‖ content hash`.
fn file_body(size: u64, hash: &blake3::Hash) -> Vec<u8> {
    let mut body = size.to_le_bytes().to_vec();
    body.extend_from_slice(hash.as_bytes());
    body
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
pub(super) fn split_parent(src: &Path) -> io::Result<(&Path, &OsStr)> {
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
