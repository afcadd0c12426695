//! Node metadata beyond content and mode: extended attributes read and
//! written on a descriptor (or, for a symlink, without following it), and
//! the one policy for what a copy keeps when the kernel refuses it.
//!
//! Use this to read a node's xattrs in the form the [tree digest
//! (version 2)](crate::digest) and a remote manifest record them, and to
//! restore a node's owner, mode, xattrs and times in the order that keeps
//! them all ([`restore_fd`], [`restore_at`]).
//!
//! # The policy (as GNU `cp -a`)
//!
//! | what | as root | as another user |
//! |---|---|---|
//! | numeric owner and group | kept | not kept (the copy is the caller's; a group the caller is in is kept) |
//! | set-user-ID bit | kept | kept only where the owner is kept, else dropped |
//! | set-group-ID bit | kept | kept only where the group is kept, else dropped |
//! | `user.*`, `system.posix_acl_*` xattrs | kept | kept |
//! | `security.*` xattrs (`security.capability`, `security.selinux`) | kept | dropped where the kernel refuses them (`EPERM`) |
//! | `trusted.*` xattrs | kept | not seen: the kernel lists them to `CAP_SYS_ADMIN` only (xattr(7)), so neither kept nor counted |
//! | any xattr the destination file system does not support (`EOPNOTSUPP`) | dropped | dropped |
//!
//! Every drop is counted in a [`Dropped`]; with [`OnDrop::Fail`] the first
//! one is an error instead (of kind [`io::ErrorKind::PermissionDenied`] or
//! [`io::ErrorKind::Unsupported`], naming what could not be kept).
//! An xattr value the destination cannot hold (`E2BIG`, `ENOSPC`,
//! `ERANGE`) is always an error, [`XattrTooLarge`], never a drop.
//!
//! # Order
//!
//! `chown` first, since it clears the set-ID bits and `security.capability`
//! (chown(2), capabilities(7)); then `chmod`; then the xattrs (an ACL and the
//! mode agree, as they did on the source); the times last, since every
//! change before moves the ctime and nothing after may move the mtime.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Mode, Stat, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::stat;

/// One extended attribute: its full name (with the namespace, e.g.
/// `user.mime_type`) and its value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattr {
    /// The name's bytes, without a trailing NUL.
    pub name: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
}

/// What to do with metadata the kernel refuses to keep (see the [module
/// docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDrop {
    /// Drop it and count it, as `cp -a` does.
    #[default]
    Count,
    /// Fail with an error naming it.
    Fail,
}

/// Counts of metadata a copy or restore could not keep, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Nodes whose owner or group differs from the source's (not root).
    pub owners: u64,
    /// Set-user-ID and set-group-ID bits dropped because the owner or
    /// group they belong to was not kept.
    pub set_id_bits: u64,
    /// Extended attributes the kernel refused to set.
    pub xattrs: u64,
}

impl Dropped {
    /// Whether anything was dropped.
    pub fn any(&self) -> bool {
        self.owners + self.set_id_bits + self.xattrs > 0
    }

    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: Dropped) {
        self.owners += other.owners;
        self.set_id_bits += other.set_id_bits;
        self.xattrs += other.xattrs;
    }
}

/// An extended attribute the destination cannot hold.
#[derive(Debug)]
pub struct XattrTooLarge {
    /// The attribute's name.
    pub name: String,
    /// The size of its value.
    pub size: usize,
    /// The kernel's answer.
    pub source: io::Error,
}

impl fmt::Display for XattrTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "extended attribute `{}` ({} bytes) is larger than the destination allows",
            self.name, self.size
        )
    }
}

impl std::error::Error for XattrTooLarge {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What a node should become: the source's owner, mode, times and xattrs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// `st_mode` (only `& 0o7777` is applied).
    pub mode: u32,
    /// Access time, `(seconds, nanoseconds)`; `None` leaves it alone.
    pub atime: Option<stat::Stamp>,
    /// Modification time; `None` leaves it alone.
    pub mtime: Option<stat::Stamp>,
    /// Extended attributes to set.
    pub xattrs: Vec<Xattr>,
}

impl Wanted {
    /// Owner, mode and both times of `st`, with these `xattrs`.
    pub fn of(st: &Stat, xattrs: Vec<Xattr>) -> Self {
        Wanted {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode,
            atime: Some(stat::atime(st)),
            mtime: Some(stat::mtime(st)),
            xattrs,
        }
    }
}

/// What [`restore_fd`] or [`restore_at`] gave the node, for the digest of
/// the copy: its owner and permission bits as they are now, and the xattrs
/// it kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    /// The owner it has.
    pub uid: u32,
    /// The group it has.
    pub gid: u32,
    /// Its permission bits (`& 0o7777`).
    pub perm: u32,
    /// The xattrs it was given (the wanted ones minus the dropped).
    pub xattrs: Vec<Xattr>,
    /// What could not be kept.
    pub dropped: Dropped,
}

/// The set-user-ID bit.
const SET_UID: u32 = 0o4000;
/// The set-group-ID bit.
const SET_GID: u32 = 0o2000;

/// `flistxattr` + `fgetxattr`: every extended attribute of the open file
/// `fd`, sorted by name. A file system without xattrs has none.
///
/// `fd` must be a real descriptor, not `O_PATH` (`EBADF`).
///
/// # Errors
///
/// A failing `flistxattr` or `fgetxattr`, with its errno.
#[doc(alias = "flistxattr")]
pub fn fd_xattrs(fd: impl AsFd) -> io::Result<Vec<Xattr>> {
    let fd = fd.as_fd();
    read_all(
        || retry(|| rustix::fs::flistxattr_query(fd)),
        |buf| retry(|| rustix::fs::flistxattr(fd, &mut buf[..])),
        |name, buf| retry(|| rustix::fs::fgetxattr(fd, name, &mut buf[..])),
        |name| retry(|| rustix::fs::fgetxattr_query(fd, name)),
    )
}

/// `llistxattr` + `lgetxattr` on `/proc/self/fd/DIR/NAME`: every extended
/// attribute of `dir/name` without following it if it is a symlink (a
/// symlink cannot be opened for `fgetxattr`), sorted by name.
///
/// # Errors
///
/// As [`fd_xattrs`]; without `/proc`, `ENOENT`.
pub fn symlink_xattrs(dir: impl AsFd, name: &OsStr) -> io::Result<Vec<Xattr>> {
    let path = proc_path(dir.as_fd(), name);
    let path = path.as_slice();
    let p = OsStr::from_bytes(path);
    read_all(
        || retry(|| rustix::fs::llistxattr_query(p)),
        |buf| retry(|| rustix::fs::llistxattr(p, &mut buf[..])),
        |name, buf| retry(|| rustix::fs::lgetxattr(p, name, &mut buf[..])),
        |name| retry(|| rustix::fs::lgetxattr_query(p, name)),
    )
}

/// `llistxattr` + `lgetxattr`: every extended attribute of the node at
/// `path`, without following it if it is a symlink, sorted by name.
///
/// # Errors
///
/// As [`fd_xattrs`].
pub fn path_xattrs(path: &std::path::Path) -> io::Result<Vec<Xattr>> {
    read_all(
        || retry(|| rustix::fs::llistxattr_query(path)),
        |buf| retry(|| rustix::fs::llistxattr(path, &mut buf[..])),
        |name, buf| retry(|| rustix::fs::lgetxattr(path, name, &mut buf[..])),
        |name| retry(|| rustix::fs::lgetxattr_query(path, name)),
    )
}

/// `/proc/self/fd/<dir>/<name>`: a path to `name` in `dir` that resolves
/// `dir` through procfs and `name` as one component.
fn proc_path(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    p
}

/// The list-then-get loop of both readers: sizes are asked first, and a
/// list or value that grew in between (`ERANGE`) is asked again.
fn read_all(
    list_size: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut Vec<u8>) -> rustix::io::Result<usize>,
    get: impl Fn(&OsStr, &mut Vec<u8>) -> rustix::io::Result<usize>,
    get_size: impl Fn(&OsStr) -> rustix::io::Result<usize>,
) -> io::Result<Vec<Xattr>> {
    let names = loop {
        let n = match list_size() {
            Ok(n) => n,
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match list(&mut buf) {
            Ok(got) => {
                buf.truncate(got);
                break buf;
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let oname = OsStr::from_bytes(name);
        let value = loop {
            let n = match get_size(oname) {
                Ok(n) => n,
                // Removed since the listing: it is not there any more.
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            };
            let mut buf = vec![0u8; n];
            match get(oname, &mut buf) {
                Ok(got) => {
                    buf.truncate(got);
                    break Some(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(value) = value {
            out.push(Xattr {
                name: name.to_vec(),
                value,
            });
        }
    }
    out.sort();
    Ok(out)
}

/// Give the open file or directory `fd` (just created by the caller) the
/// owner, mode, xattrs and times of `want`, under the [policy](self), in
/// the order that keeps them all: chown, chmod, xattrs, times.
///
/// # Errors
///
/// A failing system call; a drop under [`OnDrop::Fail`]; an xattr too
/// large for the destination ([`XattrTooLarge`] as the source).
pub fn restore_fd(fd: impl AsFd, want: &Wanted, on_drop: OnDrop) -> io::Result<Given> {
    restore_fd_from(fd, want, on_drop, None)
}

/// [`restore_fd`] of a node whose `fstat` the caller took after its last
/// write (`now`): what it has already is not set again, as `cp -a` skips
/// a `chown` that would change nothing. No `fchown` when it has the wanted
/// owner, and then no `fchmod` when it has the wanted bits too; an ext4
/// inode change is a journal update, so a copy by its owner saves two per
/// node.
///
/// # Errors
///
/// As [`restore_fd`].
pub fn restore_fd_known(
    fd: impl AsFd,
    want: &Wanted,
    on_drop: OnDrop,
    now: &Stat,
) -> io::Result<Given> {
    restore_fd_from(fd, want, on_drop, Some(now))
}

fn restore_fd_from(
    fd: impl AsFd,
    want: &Wanted,
    on_drop: OnDrop,
    now: Option<&Stat>,
) -> io::Result<Given> {
    let fd = fd.as_fd();
    let mut dropped = Dropped::default();
    let owned = owned_already(now, want);
    let (uid, gid) = match owned {
        Some(_) => (want.uid, want.gid),
        None => chown_as_allowed(
            |u, g| retry(|| rustix::fs::fchown(fd, u, g)),
            || retry(|| rustix::fs::fstat(fd)),
            want,
            on_drop,
            &mut dropped,
        )?,
    };
    let perm = allowed_perm(want, uid, gid, on_drop, &mut dropped)?;
    let chmod = needs_chmod(owned, perm);
    if chmod {
        retry(|| rustix::fs::fchmod(fd, Mode::from_raw_mode(perm)))?;
    }
    let xattrs = set_xattrs(
        |n, v| retry(|| rustix::fs::fsetxattr(fd, n, v, XattrFlags::empty())),
        want,
        on_drop,
        &mut dropped,
    )?;
    // chmod(2) may have dropped set-group-ID silently (a group the caller
    // is not in, without CAP_FSETID): say what the node has.
    let perm = if chmod && perm & SET_GID != 0 {
        retry(|| rustix::fs::fstat(fd))?.st_mode & 0o7777
    } else {
        perm
    };
    if let Some(t) = timestamps(want) {
        retry(|| rustix::fs::futimens(fd, &t))?;
    }
    Ok(Given {
        uid,
        gid,
        perm,
        xattrs,
        dropped,
    })
}

/// [`restore_fd`] for `dir/name`, which cannot be opened for it (a
/// symlink: owner, xattrs and times without following it; a FIFO, socket
/// or device: an open could block or reach a driver). The mode is set
/// with `fchmodat` (never on a symlink, whose mode Linux fixes at `0o777`).
///
/// # Errors
///
/// As [`restore_fd`].
pub fn restore_at(
    dir: impl AsFd,
    name: &OsStr,
    want: &Wanted,
    on_drop: OnDrop,
) -> io::Result<Given> {
    restore_at_from(dir, name, want, on_drop, None)
}

/// [`restore_at`] of a node whose `lstat` the caller took after making it
/// (`now`): what it has already is not set again, as in
/// [`restore_fd_known`].
///
/// # Errors
///
/// As [`restore_fd`].
pub fn restore_at_known(
    dir: impl AsFd,
    name: &OsStr,
    want: &Wanted,
    on_drop: OnDrop,
    now: &Stat,
) -> io::Result<Given> {
    restore_at_from(dir, name, want, on_drop, Some(now))
}

fn restore_at_from(
    dir: impl AsFd,
    name: &OsStr,
    want: &Wanted,
    on_drop: OnDrop,
    now: Option<&Stat>,
) -> io::Result<Given> {
    let dir = dir.as_fd();
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    let mut dropped = Dropped::default();
    let owned = owned_already(now, want);
    let (uid, gid) = match owned {
        Some(_) => (want.uid, want.gid),
        None => chown_as_allowed(
            |u, g| retry(|| rustix::fs::chownat(dir, name, u, g, nofollow)),
            || retry(|| rustix::fs::statat(dir, name, nofollow)),
            want,
            on_drop,
            &mut dropped,
        )?,
    };
    let is_symlink =
        rustix::fs::FileType::from_raw_mode(want.mode) == rustix::fs::FileType::Symlink;
    let (perm, chmod) = if is_symlink {
        (0o777, false)
    } else {
        let perm = allowed_perm(want, uid, gid, on_drop, &mut dropped)?;
        let chmod = needs_chmod(owned, perm);
        if chmod {
            // The name is the node the caller made an instant ago, not a
            // symlink (fchmodat cannot refuse to follow one: EOPNOTSUPP).
            retry(|| rustix::fs::chmodat(dir, name, Mode::from_raw_mode(perm), AtFlags::empty()))?;
        }
        (perm, chmod)
    };
    let xattrs = if want.xattrs.is_empty() {
        Vec::new()
    } else {
        let path = proc_path(dir, name);
        let p = OsStr::from_bytes(&path);
        set_xattrs(
            |n, v| retry(|| rustix::fs::lsetxattr(p, n, v, XattrFlags::empty())),
            want,
            on_drop,
            &mut dropped,
        )?
    };
    let perm = if chmod && perm & SET_GID != 0 {
        retry(|| rustix::fs::statat(dir, name, nofollow))?.st_mode & 0o7777
    } else {
        perm
    };
    if let Some(t) = timestamps(want) {
        retry(|| rustix::fs::utimensat(dir, name, &t, nofollow))?;
    }
    Ok(Given {
        uid,
        gid,
        perm,
        xattrs,
        dropped,
    })
}

/// `now`, if the node it describes has the wanted owner already (no
/// `chown` to make, so nothing of its mode was cleared).
fn owned_already<'a>(now: Option<&'a Stat>, want: &Wanted) -> Option<&'a Stat> {
    now.filter(|st| st.st_uid == want.uid && st.st_gid == want.gid)
}

/// Whether the permission bits must be set: unless the node is known to
/// have its owner and these bits already.
fn needs_chmod(owned: Option<&Stat>, perm: u32) -> bool {
    owned.is_none_or(|st| st.st_mode & 0o7777 != perm)
}

/// Whether this process may give files any owner (`geteuid() == 0`).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Set the wanted owner where the kernel allows it: the whole owner as
/// root; else the group alone when the caller is in it. Returns the owner
/// the node has afterwards, counting a difference as a drop.
fn chown_as_allowed(
    chown: impl Fn(Option<Uid>, Option<Gid>) -> rustix::io::Result<()>,
    stat_now: impl Fn() -> rustix::io::Result<Stat>,
    want: &Wanted,
    on_drop: OnDrop,
    dropped: &mut Dropped,
) -> io::Result<(u32, u32)> {
    let (uid, gid) = (
        (want.uid != u32::MAX).then(|| Uid::from_raw(want.uid)),
        (want.gid != u32::MAX).then(|| Gid::from_raw(want.gid)),
    );
    // One call, as `cp -a` makes: as root it gives the whole owner, and
    // only a refusal costs more calls.
    match chown(uid, gid) {
        Ok(()) => return Ok((want.uid, want.gid)),
        Err(Errno::PERM | Errno::INVAL) => {
            // Not root (or an id the file system cannot store): the group
            // alone, where the caller is in it.
            match chown(None, gid) {
                Ok(()) | Err(Errno::PERM | Errno::INVAL) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    let after = stat_now()?;
    if after.st_uid != want.uid || after.st_gid != want.gid {
        if on_drop == OnDrop::Fail {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "owner {}:{} cannot be kept (the copy is {}:{})",
                    want.uid, want.gid, after.st_uid, after.st_gid
                ),
            ));
        }
        dropped.owners += 1;
    }
    Ok((after.st_uid, after.st_gid))
}

/// The permission bits to give: the wanted ones, without a set-user-ID
/// or set-group-ID bit whose owner or group the node did not get.
fn allowed_perm(
    want: &Wanted,
    uid: u32,
    gid: u32,
    on_drop: OnDrop,
    dropped: &mut Dropped,
) -> io::Result<u32> {
    let mut perm = want.mode & 0o7777;
    for (bit, kept) in [(SET_UID, uid == want.uid), (SET_GID, gid == want.gid)] {
        if perm & bit != 0 && !kept {
            if on_drop == OnDrop::Fail {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the set-{}-ID bit cannot be kept: its {} {} is not kept",
                        if bit == SET_UID { "user" } else { "group" },
                        if bit == SET_UID { "owner" } else { "group" },
                        if bit == SET_UID { want.uid } else { want.gid },
                    ),
                ));
            }
            perm &= !bit;
            dropped.set_id_bits += 1;
        }
    }
    Ok(perm)
}

/// Set each wanted xattr; a refusal by privilege or by the file system is
/// a drop, a value too large an error. Returns the ones set.
fn set_xattrs(
    set: impl Fn(&OsStr, &[u8]) -> rustix::io::Result<()>,
    want: &Wanted,
    on_drop: OnDrop,
    dropped: &mut Dropped,
) -> io::Result<Vec<Xattr>> {
    let mut kept = Vec::with_capacity(want.xattrs.len());
    for x in &want.xattrs {
        let name = OsStr::from_bytes(&x.name);
        match set(name, &x.value) {
            Ok(()) => kept.push(x.clone()),
            Err(e @ (Errno::TOOBIG | Errno::NOSPC | Errno::RANGE)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    XattrTooLarge {
                        name: String::from_utf8_lossy(&x.name).into_owned(),
                        size: x.value.len(),
                        source: e.into(),
                    },
                ));
            }
            Err(e @ (Errno::PERM | Errno::ACCESS | Errno::OPNOTSUPP)) => {
                if on_drop == OnDrop::Fail {
                    let kind = if e == Errno::OPNOTSUPP {
                        io::ErrorKind::Unsupported
                    } else {
                        io::ErrorKind::PermissionDenied
                    };
                    return Err(io::Error::new(
                        kind,
                        format!(
                            "extended attribute `{}` cannot be kept: {}",
                            String::from_utf8_lossy(&x.name),
                            io::Error::from(e)
                        ),
                    ));
                }
                dropped.xattrs += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(kept)
}

/// The times of `want` for `futimens`/`utimensat`; `UTIME_OMIT` for one
/// not given, `None` when neither is.
fn timestamps(want: &Wanted) -> Option<Timestamps> {
    if want.atime.is_none() && want.mtime.is_none() {
        return None;
    }
    // UTIME_OMIT, from <sys/stat.h>: leave that time alone.
    const UTIME_OMIT: i64 = (1 << 30) - 2;
    let ts = |t: Option<stat::Stamp>| match t {
        Some((tv_sec, tv_nsec)) => Timespec { tv_sec, tv_nsec },
        None => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT as _,
        },
    };
    Some(Timestamps {
        last_access: ts(want.atime),
        last_modification: ts(want.mtime),
    })
}

/// Call `f` again while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An xattr value the destination cannot hold is a named error, never
    /// a silent drop (ext4 without `ea_inode` holds at most one block).
    #[test]
    fn an_xattr_too_large_is_a_named_error() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let st = rustix::fs::fstat(&f).unwrap();
        let big = Xattr {
            name: b"user.big".to_vec(),
            value: vec![7; XATTR_LIMIT],
        };
        let want = Wanted::of(&st, vec![big]);
        match restore_fd(&f, &want, OnDrop::Count) {
            // A file system that holds 64 KiB values (XFS, btrfs…), or
            // none at all (dropped, counted).
            Ok(given) => assert!(given.xattrs.len() + given.dropped.xattrs as usize == 1),
            Err(e) => {
                let named = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<XattrTooLarge>())
                    .expect("an XattrTooLarge");
                assert_eq!(named.name, "user.big");
                assert!(
                    e.to_string().contains("larger than the destination allows"),
                    "{e}"
                );
            }
        }
    }

    /// A node known to have its owner gets no `chown`; its bits are set
    /// where they differ (a set-user-ID bit too, its owner being kept) and
    /// left alone where they agree.
    #[test]
    fn what_a_node_has_already_is_not_set_again() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        let now = rustix::fs::fstat(&f).unwrap();
        let mut want = Wanted::of(&now, Vec::new());
        let given = restore_fd_known(&f, &want, OnDrop::Fail, &now).unwrap();
        assert_eq!(given.perm, now.st_mode & 0o7777);
        assert!(!given.dropped.any());
        want.mode = (now.st_mode & !0o7777) | 0o4750;
        let given = restore_fd_known(&f, &want, OnDrop::Fail, &now).unwrap();
        assert_eq!(given.perm, 0o4750);
        assert_eq!(rustix::fs::fstat(&f).unwrap().st_mode & 0o7777, 0o4750);
    }

    /// The most bytes Linux lets one xattr value have (`XATTR_SIZE_MAX`).
    const XATTR_LIMIT: usize = 64 << 10;
}
