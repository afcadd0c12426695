//! What a manifest says about each node beyond its content: capture on
//! push (owner, mtime, xattrs, FIFOs, sockets, devices, data ranges) and
//! restore on pull, under the local copy's policy ([`fscache::meta`]):
//! ownership kept when running as root, a set-user-ID or set-group-ID bit
//! never kept on an owner the node did not get, xattrs the kernel refuses
//! dropped and counted.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use fscache::meta::{self, Given, OnDrop, Wanted, Xattr};

use crate::error::{Error, Result};
use crate::manifest::{Kind, Meta, XattrJson, XattrValues};

/// The owner, modification time and xattrs of the node at `path`
/// (`md` is its `lstat`), as a manifest records them: an xattr value
/// over [`XATTR_INLINE_MAX`](crate::manifest::XATTR_INLINE_MAX) bytes
/// as a blob reference, its bytes added to `blobs` for the push to pack.
///
/// # Errors
///
/// Reading the xattrs failed; an xattr name is not UTF-8
/// ([`Error::Unsupported`]).
pub(crate) fn capture(path: &Path, md: &Metadata, blobs: &mut XattrValues) -> Result<Meta> {
    let xattrs = meta::path_xattrs(path).map_err(|e| Error::io("read xattrs", path, e))?;
    let xattrs = xattrs
        .into_iter()
        .map(|x| {
            let name = String::from_utf8(x.name).map_err(|_| Error::Unsupported {
                path: path.into(),
                why: "an extended attribute's name is not UTF-8".into(),
            })?;
            Ok(XattrJson::of(name, x.value, blobs))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Meta {
        uid: Some(md.uid()),
        gid: Some(md.gid()),
        mtime: Some((md.mtime(), md.mtime_nsec() as u32)),
        xattrs,
    })
}

/// The kind of a FIFO, socket or device with permission bits `perm`;
/// `None` for any other type.
pub(crate) fn special(md: &Metadata, perm: u32) -> Option<Kind> {
    let ft = md.file_type();
    let rdev = md.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    Some(if ft.is_fifo() {
        Kind::Fifo { perm }
    } else if ft.is_socket() {
        Kind::Socket { perm }
    } else if ft.is_char_device() {
        Kind::Char { perm, major, minor }
    } else if ft.is_block_device() {
        Kind::Block { perm, major, minor }
    } else {
        return None;
    })
}

/// The data ranges of the sparse regular file `f` of `md` (`None`: all
/// data, or the file system cannot say).
pub(crate) fn data_ranges(f: &File, md: &Metadata, path: &Path) -> Result<Option<Vec<(u64, u64)>>> {
    if md.size() == 0 || md.blocks() * 512 >= md.size() {
        return Ok(None);
    }
    fscache::data_ranges(f, md.size()).map_err(|e| Error::io("seek", path, e))
}

/// Create the FIFO, socket or device node `kind` at `path` (mode `0600`
/// until [`restore`] gives it its own).
pub(crate) fn create_special(path: &Path, kind: &Kind) -> Result<()> {
    use rustix::fs::FileType;
    let (ft, dev) = match *kind {
        Kind::Fifo { .. } => (FileType::Fifo, 0),
        Kind::Socket { .. } => (FileType::Socket, 0),
        Kind::Char { major, minor, .. } => {
            (FileType::CharacterDevice, rustix::fs::makedev(major, minor))
        }
        Kind::Block { major, minor, .. } => {
            (FileType::BlockDevice, rustix::fs::makedev(major, minor))
        }
        _ => return Ok(()),
    };
    let mode = rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR;
    rustix::fs::mknodat(rustix::fs::CWD, path, ft, mode, dev)
        .map_err(|e| Error::io("create node", path, e.into()))
}

/// The mode `st_mode` would have for `kind`: its type bits and `perm`.
fn mode_of(kind: &Kind) -> u32 {
    let ty = match kind {
        Kind::Dir { .. } => 0o040000,
        Kind::File { .. } => 0o100000,
        Kind::Symlink { .. } => 0o120000,
        Kind::Fifo { .. } => 0o010000,
        Kind::Socket { .. } => 0o140000,
        Kind::Char { .. } => 0o020000,
        Kind::Block { .. } => 0o060000,
    };
    ty | kind.perm()
}

/// Give the node at `path`, just made by the pull, the owner, mode, xattrs
/// and mtime its manifest node lists, under the [policy](fscache::meta).
/// A node of a manifest without metadata (written before it existed) gets
/// its mode only, owned by the caller, as those pulls did.
///
/// # Errors
///
/// A failing system call; an xattr too large for the destination; under
/// [`OnDrop::Fail`], the first drop.
pub(crate) fn restore(path: &Path, kind: &Kind, m: &Meta, on_drop: OnDrop) -> Result<Given> {
    let want = wanted(kind, m);
    let io = |e| Error::io("restore metadata", path, e);
    match kind {
        Kind::Dir { .. } | Kind::File { .. } => {
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc_nofollow())
                .open(path)
                .map_err(io)?;
            // What it has already is not set again (the pull made it: its
            // owner is often the wanted one).
            let now =
                rustix::io::retry_on_intr(|| rustix::fs::fstat(&f)).map_err(|e| io(e.into()))?;
            meta::restore_fd_known(&f, &want, on_drop, &now).map_err(io)
        }
        _ => {
            let parent = path.parent().unwrap_or(Path::new("."));
            let name = path.file_name().unwrap_or(OsStr::new("."));
            let dir = fs::File::open(parent).map_err(io)?;
            let now = rustix::io::retry_on_intr(|| {
                rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            })
            .map_err(|e| io(e.into()))?;
            meta::restore_at_known(&dir, name, &want, on_drop, &now).map_err(io)
        }
    }
}

/// [`restore`] of a file through `f`, which the pull opened to write it
/// (its content is complete).
///
/// # Errors
///
/// As [`restore`].
pub(crate) fn restore_file(
    f: &File,
    path: &Path,
    kind: &Kind,
    m: &Meta,
    on_drop: OnDrop,
) -> Result<Given> {
    let io = |e| Error::io("restore metadata", path, e);
    // Its content is complete: what it has already is not set again.
    let now = rustix::io::retry_on_intr(|| rustix::fs::fstat(f)).map_err(|e| io(e.into()))?;
    meta::restore_fd_known(f, &wanted(kind, m), on_drop, &now).map_err(io)
}

/// What the policy is asked to give a node of `kind` with metadata `m`.
fn wanted(kind: &Kind, m: &Meta) -> Wanted {
    let xattrs = m
        .xattrs
        .iter()
        .map(|x| Xattr {
            name: x.name.as_bytes().to_vec(),
            // Checked by `Manifest::validate` before anything was written;
            // a pull puts every xattr blob inline first
            // (`Manifest::inline_xattrs`), so none is looked up here.
            value: x.bytes(&XattrValues::new()).unwrap_or_default(),
        })
        .collect();
    Wanted {
        // No owner listed (a manifest written before metadata): the
        // caller's, asked only then.
        uid: m.uid.unwrap_or_else(|| rustix::process::geteuid().as_raw()),
        gid: m.gid.unwrap_or_else(|| rustix::process::getegid().as_raw()),
        mode: mode_of(kind),
        atime: None,
        mtime: m.mtime.map(|(s, ns)| (s, i64::from(ns))),
        xattrs,
    }
}

/// `O_NOFOLLOW`: the pull opens only what it made an instant ago.
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

use std::os::unix::fs::OpenOptionsExt;

/// Per path, what the pull gave each node: what the built tree's digest
/// is checked against.
pub(crate) type GivenMap = HashMap<String, Given>;
