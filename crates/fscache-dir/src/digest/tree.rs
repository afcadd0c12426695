//! The digest of a tree on disk: [`digest_tree`] (and
//! [`digest_tree_listed`], with its [`Listing`]) over the crate's one
//! walk.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Stat};
use rustix::io::retry_on_intr;

use super::content::hash_content;
use super::{Body, Digest, DirHasher, Listing, NodeMeta, Record, Version};
use crate::meta::{self, Xattr};
use crate::stat;
use crate::walk::{open_dir_nofollow, Frame, HardLinks, Visit, Visitor, Walk};

/// The tree digest of the directory `dir` in `version`, named `path` in
/// errors.
///
/// The tree is walked with the crate's one [walk](crate::walk): no symlink
/// is followed, each directory's children are read in name order, and a
/// hard-linked inode's content is read once (each of its names is still an
/// entry of its own). A FIFO, socket or device is never opened (its xattrs
/// are read by path, without following it). `dir` itself is not changed:
/// it is reopened for reading (so an `O_PATH` descriptor, as cap-std
/// holds, is fine).
///
/// # Errors
///
/// Any failing `open`, `stat`, `getdents`, `read`, `readlink` or
/// `listxattr`, with its [`io::ErrorKind`] kept and the path it concerns
/// (below `path`) named; a file replaced by something else while it is
/// hashed.
///
/// # Example
///
/// ```
/// use std::path::Path;
/// use cap_std::{ambient_authority, fs::Dir};
/// use fscache_dir::digest::{digest_tree, Digest, Version};
///
/// let tmp = tempfile::tempdir()?;
/// let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority())?;
/// let empty: Digest = digest_tree(&dir, tmp.path(), Version::V2)?;
/// dir.write("hello", b"hello")?;
/// let one = digest_tree(&dir, tmp.path(), Version::V2)?;
/// assert_ne!(empty, one);
/// assert_eq!(one.to_string().parse::<Digest>(), Ok(one));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn digest_tree(dir: impl AsFd, path: &Path, version: Version) -> io::Result<Digest> {
    let mut records = None;
    digest_walk(dir, path, version, &mut records)
}

/// [`digest_tree`], and the [`Listing`] of every node (what
/// [`compare`](super::compare) names differences with; its files' content
/// hashes are those of `version`, and a `version` of 1 is read as 2: a
/// listing covers owners and xattrs).
///
/// # Errors
///
/// As [`digest_tree`].
pub fn digest_tree_listed(
    dir: impl AsFd,
    path: &Path,
    version: Version,
) -> io::Result<(Digest, Listing)> {
    let mut records = Some(Listing::default());
    let d = digest_walk(dir, path, version.max(Version::V2), &mut records)?;
    Ok((d, records.unwrap_or_default()))
}

fn digest_walk(
    dir: impl AsFd,
    path: &Path,
    version: Version,
    records: &mut Option<Listing>,
) -> io::Result<Digest> {
    let fd = open_dir_nofollow(&dir, ".").map_err(|e| at(path, e))?;
    let root =
        Frame::new(fd, path.to_path_buf(), DirHasher::of(version)).map_err(|e| at(path, e))?;
    let mut hasher = TreeHasher {
        version,
        links: HardLinks::new(),
        buf: Vec::new(),
        root: None,
        records: records.take(),
        base: path.to_path_buf(),
    };
    Walk::new().run(&mut hasher, root)?;
    *records = hasher.records.take();
    hasher
        .root
        .ok_or_else(|| at(path, io::Error::other("the walk never left the root")))
}

/// State of one [`digest_tree`] walk.
struct TreeHasher {
    version: Version,
    /// Multiply-linked inodes → their size and content hash.
    links: HardLinks<(u64, blake3::Hash)>,
    buf: Vec<u8>,
    root: Option<Digest>,
    /// The listing being made, when asked for.
    records: Option<Listing>,
    /// The root's path, to make records' paths relative.
    base: std::path::PathBuf,
}

impl TreeHasher {
    /// Size, content hash and (in versions 2 and 3) xattrs of the regular file
    /// `name` in `dirfd`.
    fn file(
        &mut self,
        dirfd: impl AsFd,
        name: &OsStr,
        st: &Stat,
    ) -> io::Result<(u64, blake3::Hash, Vec<Xattr>)> {
        let want_xattrs = self.version.has_metadata();
        if let Some(&known) = self.links.earlier(st) {
            let xattrs = if want_xattrs {
                meta::symlink_xattrs(&dirfd, name)?
            } else {
                Vec::new()
            };
            return Ok((known.0, known.1, xattrs));
        }
        // Non-blocking, the inode checked right after (a FIFO since the
        // `lstat` must not hang the digest).
        let file: File = crate::walk::open_file_errno(&dirfd, name)?.into();
        let fst = retry_on_intr(|| rustix::fs::fstat(&file))?;
        if FileType::from_raw_mode(fst.st_mode) != FileType::RegularFile
            || stat::inode(&fst) != stat::inode(st)
        {
            return Err(io::Error::other("file was replaced while being hashed"));
        }
        let xattrs = if want_xattrs {
            meta::fd_xattrs(&file)?
        } else {
            Vec::new()
        };
        let known = hash_content(&file, &mut self.buf, self.version)?;
        self.links.note(st, known);
        Ok((known.0, known.1, xattrs))
    }

    fn record(&mut self, path: &Path, st: &Stat, xattrs: &[Xattr], body: Vec<u8>) {
        let Some(records) = self.records.as_mut() else {
            return;
        };
        let rel = path.strip_prefix(&self.base).unwrap_or(path);
        records.0.push(Record {
            path: rel.as_os_str().as_bytes().to_vec(),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            xattrs: xattrs
                .iter()
                .map(|x| (x.name.clone(), *blake3::hash(&x.value).as_bytes()))
                .collect(),
            body,
        });
    }
}

impl Visitor for TreeHasher {
    type State = DirHasher;

    fn visit(
        &mut self,
        parent: &mut Frame<DirHasher>,
        name: &OsStr,
        path: &Path,
        st: &Stat,
    ) -> io::Result<Visit<DirHasher>> {
        let v2 = self.version.has_metadata();
        match FileType::from_raw_mode(st.st_mode) {
            // Its entry is written when the walk leaves it (`leave`).
            FileType::Directory => return Ok(Visit::Descend(DirHasher::of(self.version))),
            FileType::RegularFile => {
                let (size, hash, xattrs) =
                    self.file(parent.fd(), name, st).map_err(|e| at(path, e))?;
                let body = Body::File {
                    size,
                    hash: hash.as_bytes(),
                };
                parent
                    .state_mut()
                    .entry(name, NodeMeta::of(st, &xattrs), body);
                let mut b = size.to_le_bytes().to_vec();
                b.extend_from_slice(hash.as_bytes());
                self.record(path, st, &xattrs, b);
            }
            FileType::Symlink => {
                let target =
                    retry_on_intr(|| rustix::fs::readlinkat(parent.fd(), name, Vec::new()))
                        .map_err(|e| at(path, e))?;
                let xattrs = if v2 {
                    meta::symlink_xattrs(parent.fd(), name).map_err(|e| at(path, e))?
                } else {
                    Vec::new()
                };
                let target = target.into_bytes();
                parent
                    .state_mut()
                    .entry(name, NodeMeta::of(st, &xattrs), Body::Symlink(&target));
                self.record(path, st, &xattrs, target);
            }
            _ => {
                let xattrs = if v2 {
                    meta::symlink_xattrs(parent.fd(), name).map_err(|e| at(path, e))?
                } else {
                    Vec::new()
                };
                let body = Body::special(st).unwrap_or(Body::Fifo);
                parent
                    .state_mut()
                    .entry(name, NodeMeta::of(st, &xattrs), body);
                let rdev = match body {
                    Body::Char(a, b) | Body::Block(a, b) => format!("{a}:{b}").into_bytes(),
                    _ => Vec::new(),
                };
                self.record(path, st, &xattrs, rdev);
            }
        }
        Ok(Visit::Skip)
    }

    fn leave(
        &mut self,
        dir: Frame<DirHasher>,
        parent: Option<&mut Frame<DirHasher>>,
    ) -> io::Result<()> {
        let digest = dir.state().finish();
        let Some(parent) = parent else {
            self.root = Some(digest);
            return Ok(());
        };
        let name = dir
            .path()
            .file_name()
            .ok_or_else(|| at(dir.path(), io::Error::other("walked directory has no name")))?;
        let xattrs = if self.version.has_metadata() {
            meta::fd_xattrs(dir.fd()).map_err(|e| at(dir.path(), e))?
        } else {
            Vec::new()
        };
        parent
            .state_mut()
            .entry(name, NodeMeta::of(dir.stat(), &xattrs), Body::Dir(&digest));
        self.record(dir.path(), dir.stat(), &xattrs, Vec::new());
        Ok(())
    }

    fn error(&self, path: &Path, e: io::Error) -> io::Error {
        at(path, e)
    }
}

/// Fold `path` into `e`, keeping its kind and errno.
fn at(path: &Path, e: impl Into<io::Error>) -> io::Error {
    crate::with_path("digest", path, e.into())
}
