//! The one walk of a directory tree, shared by the copy, the space
//! measurement and recursive removal: one depth policy, one
//! one-file-system rule, one hard-link dedupe.
//!
//! # Design
//!
//! The walk is depth first over an explicit stack of [`Frame`]s, one per
//! open directory, so a deep tree costs heap and one descriptor per level,
//! never native stack. Its depth is bounded by the process's open-file
//! limit alone: a tree deeper than that fails with `EMFILE`, the same for
//! every user of the walk.
//!
//! Each directory is read once, by `getdents64` on its own descriptor, and
//! its names are sorted, so the order (and hence which name of a hard-linked
//! inode comes first) is the same every time. Each child is `fstatat`ed by
//! name with `AT_SYMLINK_NOFOLLOW`; a directory is opened with
//! `O_DIRECTORY | O_NOFOLLOW` relative to its parent's descriptor and must
//! still be the inode that was `stat`ed. No symlink is ever followed.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::stat::{self, Inode};

/// What the walk does with a child the visitor has seen.
#[derive(Debug)]
pub enum Visit<S> {
    /// Open the child (a directory) and walk it, carrying `S`.
    Descend(S),
    /// Go on with the next sibling.
    Skip,
}

/// An open directory on the walk's stack.
#[derive(Debug)]
pub struct Frame<S> {
    fd: OwnedFd,
    path: PathBuf,
    stat: Stat,
    state: S,
    names: std::vec::IntoIter<OsString>,
}

impl<S> Frame<S> {
    /// A frame of the open directory `fd` (read with `getdents64`), named
    /// `path` in errors, carrying `state`.
    ///
    /// # Errors
    ///
    /// `fstat` or reading the directory failed.
    pub fn new(fd: OwnedFd, path: PathBuf, state: S) -> io::Result<Self> {
        let stat = rustix::io::retry_on_intr(|| rustix::fs::fstat(&fd))?;
        let names = read_names(&fd)?;
        Ok(Self::with_names(fd, path, stat, state, names))
    }

    /// A frame of the directory `fd` that visits `names` only, in that order
    /// (to walk a single child of a directory).
    pub fn with_names(
        fd: OwnedFd,
        path: PathBuf,
        stat: Stat,
        state: S,
        names: Vec<OsString>,
    ) -> Self {
        Self {
            fd,
            path,
            stat,
            state,
            names: names.into_iter(),
        }
    }

    /// The directory's descriptor, for `*at` calls on its children.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory's path, as given for the root and joined below it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `fstat` of the directory, taken when it was opened.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// The visitor's state of this directory.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The visitor's state of this directory, mutably.
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }
}

/// What a walk calls back.
pub trait Visitor {
    /// What the visitor keeps per open directory.
    type State;

    /// The child `name` of `parent`, at `path`, with its `lstat`. Return
    /// [`Visit::Descend`] for a directory to walk into it.
    ///
    /// # Errors
    ///
    /// Any error ends the walk with it.
    fn visit(
        &mut self,
        parent: &mut Frame<Self::State>,
        name: &OsStr,
        path: &Path,
        st: &Stat,
    ) -> io::Result<Visit<Self::State>>;

    /// Every child of `dir` was visited; `parent` is `None` for the root.
    ///
    /// # Errors
    ///
    /// Any error ends the walk with it.
    fn leave(
        &mut self,
        dir: Frame<Self::State>,
        parent: Option<&mut Frame<Self::State>>,
    ) -> io::Result<()> {
        let _ = (dir, parent);
        Ok(())
    }

    /// Fold `path` into an error of the walk's own `stat`, `open` or read.
    fn error(&self, path: &Path, e: io::Error) -> io::Error {
        let _ = path;
        e
    }
}

/// How a tree is walked (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct Walk {
    one_file_system: bool,
    skip_vanished: bool,
}

impl Walk {
    /// A walk that reports every child and fails when one vanishes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Skip children on another file system than the root (nothing of a
    /// file system mounted below the root is visited).
    pub fn one_file_system(mut self) -> Self {
        self.one_file_system = true;
        self
    }

    /// Skip children that vanish (or turn into something else) between the
    /// listing, the `stat` and the open: racing removals are legal.
    pub fn skip_vanished(mut self) -> Self {
        self.skip_vanished = true;
        self
    }

    /// Walk the tree below `root`, depth first.
    ///
    /// # Errors
    ///
    /// The first error of the walk or the visitor.
    pub fn run<V: Visitor>(&self, v: &mut V, root: Frame<V::State>) -> io::Result<()> {
        let dev = stat::device(&root.stat);
        let mut stack = vec![root];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.next() else {
                let done = stack.pop().expect("the loop saw a top frame");
                v.leave(done, stack.last_mut())?;
                continue;
            };
            let path = top.path.join(&name);
            let st = match rustix::io::retry_on_intr(|| {
                rustix::fs::statat(top.fd(), &name, AtFlags::SYMLINK_NOFOLLOW)
            }) {
                Ok(st) => st,
                Err(Errno::NOENT) if self.skip_vanished => continue,
                Err(e) => return Err(v.error(&path, e.into())),
            };
            if self.one_file_system && stat::device(&st) != dev {
                continue;
            }
            let Visit::Descend(state) = v.visit(top, &name, &path, &st)? else {
                continue;
            };
            let fd = match open_dir_errno(top.fd(), &name) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) if self.skip_vanished => continue,
                Err(e) => return Err(v.error(&path, e.into())),
            };
            let child = match Frame::new(fd, path.clone(), state) {
                Ok(child) => child,
                Err(e) => return Err(v.error(&path, e)),
            };
            if stat::inode(&child.stat) != stat::inode(&st) {
                if self.skip_vanished {
                    continue;
                }
                let e = io::Error::other("directory was replaced while being walked");
                return Err(v.error(&path, e));
            }
            stack.push(child);
        }
        Ok(())
    }
}

/// Inodes seen so far with more than one name, each with what the caller
/// noted at its first name: the one place a walk deduplicates hard links.
#[derive(Debug)]
pub struct HardLinks<T = ()> {
    seen: HashMap<Inode, T>,
}

impl<T> Default for HardLinks<T> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<T> HardLinks<T> {
    /// No inode seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What was noted for the inode of `st` at an earlier name, if any.
    /// Singly-linked inodes are never remembered.
    pub fn earlier(&self, st: &Stat) -> Option<&T> {
        if stat::is_multiply_linked(st) {
            self.seen.get(&stat::inode(st))
        } else {
            None
        }
    }

    /// Note `value` for the inode of `st` if other names may share it.
    pub fn note(&mut self, st: &Stat, value: T) {
        if stat::is_multiply_linked(st) {
            self.seen.insert(stat::inode(st), value);
        }
    }
}

impl HardLinks<()> {
    /// Whether this is the first name of the inode of `st` the walk met
    /// (always for a singly-linked inode); remembers it.
    pub fn first_visit(&mut self, st: &Stat) -> bool {
        !stat::is_multiply_linked(st) || self.seen.insert(stat::inode(st), ()).is_none()
    }
}

/// `openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)`:
/// open a directory for reading, refusing a symlink in the last component.
///
/// # Errors
///
/// The open failed. The error names the operation and the directory's
/// absolute path (`dirfd`'s path joined with `path`, as `/proc/self/fd`
/// tells it), with the OS error as its source (see [`crate::PathError`]).
pub fn open_dir_nofollow(dirfd: impl AsFd, path: impl AsRef<Path>) -> io::Result<OwnedFd> {
    let (dirfd, path) = (dirfd.as_fd(), path.as_ref());
    open_dir_errno(dirfd, path)
        .map_err(|e| crate::with_path("open directory", &absolute(dirfd, path), e.into()))
}

/// [`open_dir_nofollow`] with the raw errno, for the callers in this crate
/// that tell a vanished directory (`ENOENT`, `ENOTDIR`) from a failure.
pub(crate) fn open_dir_errno(
    dirfd: impl AsFd,
    path: impl AsRef<Path>,
) -> rustix::io::Result<OwnedFd> {
    open_nofollow_errno(dirfd.as_fd(), path.as_ref(), OFlags::DIRECTORY)
}

/// `openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK |
/// O_CLOEXEC)`, retried on `EINTR`: open a file of a walked tree for
/// reading. `O_NONBLOCK`: should the name have become a FIFO since the
/// caller's `lstat`, the open must not hang; the caller checks the type
/// with `fstat` right after. Raw errno, for the callers that tell a
/// vanished or replaced node from a failure.
pub(crate) fn open_file_errno(
    dirfd: impl AsFd,
    name: impl AsRef<Path>,
) -> rustix::io::Result<OwnedFd> {
    open_nofollow_errno(
        dirfd.as_fd(),
        name.as_ref(),
        OFlags::NOCTTY | OFlags::NONBLOCK,
    )
}

/// `openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | extra)`,
/// retried on `EINTR`: the one read-only open of a walked tree's node.
fn open_nofollow_errno(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    extra: OFlags,
) -> rustix::io::Result<OwnedFd> {
    rustix::io::retry_on_intr(|| {
        rustix::fs::openat(
            dirfd,
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | extra,
            Mode::empty(),
        )
    })
}

/// `path` made absolute against `dirfd` for an error message: the
/// directory's path as `/proc/self/fd` names it (the current directory for
/// `AT_FDCWD`); `path` as given when that cannot be read.
fn absolute(dirfd: BorrowedFd<'_>, path: &Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    if path.is_absolute() {
        return path.to_owned();
    }
    let base = if dirfd.as_raw_fd() == rustix::fs::CWD.as_raw_fd() {
        std::env::current_dir()
    } else {
        std::fs::read_link(format!("/proc/self/fd/{}", dirfd.as_raw_fd()))
    };
    match base {
        Ok(base) if path == Path::new(".") => base,
        Ok(base) => base.join(path),
        Err(_) => path.to_owned(),
    }
}

/// The names in the directory `fd`, without `.` and `..`, sorted; read with
/// `getdents64` on `fd` itself (no second open). A directory removed while
/// being read lists as empty.
///
/// # Errors
///
/// Reading the directory failed.
pub fn read_names(fd: &impl AsFd) -> io::Result<Vec<OsString>> {
    let mut buf: Vec<MaybeUninit<u8>> = Vec::with_capacity(16 << 10);
    buf.resize(16 << 10, MaybeUninit::uninit());
    let mut dir = rustix::fs::RawDir::new(fd, &mut buf);
    let mut names = Vec::new();
    while let Some(entry) = dir.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(Errno::NOENT) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Whether `st` is a directory.
pub fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Empty the directory `fd` (at `path`) recursively, never following
/// symlinks, tolerating what vanishes, and giving a directory without
/// owner `rwx` those bits before entering it (a read-only tree must still
/// be removable). The directory itself is left.
pub(crate) fn remove_contents(fd: OwnedFd, path: PathBuf) -> io::Result<()> {
    struct Remover;
    impl Visitor for Remover {
        type State = ();
        fn visit(
            &mut self,
            parent: &mut Frame<()>,
            name: &OsStr,
            _path: &Path,
            st: &Stat,
        ) -> io::Result<Visit<()>> {
            if is_dir(st) {
                if st.st_mode & 0o700 != 0o700 {
                    make_owner_rwx(parent.fd(), name, st)?;
                }
                return Ok(Visit::Descend(()));
            }
            match rustix::io::retry_on_intr(|| {
                rustix::fs::unlinkat(parent.fd(), name, AtFlags::empty())
            }) {
                Ok(()) | Err(Errno::NOENT) => Ok(Visit::Skip),
                Err(e) => Err(e.into()),
            }
        }

        fn leave(&mut self, dir: Frame<()>, parent: Option<&mut Frame<()>>) -> io::Result<()> {
            let (Some(parent), Some(name)) = (parent, dir.path.file_name()) else {
                return Ok(());
            };
            // Close before removing: nothing requires it on Linux, but it
            // keeps at most one descriptor per level.
            drop(dir.fd);
            match rustix::io::retry_on_intr(|| {
                rustix::fs::unlinkat(parent.fd(), name, AtFlags::REMOVEDIR)
            }) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
    let root = Frame::new(fd, path, ())?;
    Walk::new().skip_vanished().run(&mut Remover, root)
}

/// `chmod u+rwx` the directory `name` of `parent` (`st` is its `lstat`),
/// never following a symlink: `fchmod` on the directory opened with
/// `O_NOFOLLOW`; only when it cannot be opened for lack of read permission,
/// `fchmodat` by name, which `st` showed to be a directory an instant ago.
///
/// Not cap-std's `set_permissions`: that goes through `/proc/self/fd`,
/// whose checks panic on an unexpected system call error (seccomp, LSMs,
/// an I/O error).
pub(crate) fn make_owner_rwx(parent: BorrowedFd<'_>, name: &OsStr, st: &Stat) -> io::Result<()> {
    let mode = rustix::fs::Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let done = match rustix::io::retry_on_intr(|| {
        rustix::fs::openat(parent, name, flags, rustix::fs::Mode::empty())
    }) {
        Ok(fd) => rustix::io::retry_on_intr(|| rustix::fs::fchmod(&fd, mode)),
        Err(Errno::ACCESS) => {
            rustix::io::retry_on_intr(|| rustix::fs::chmodat(parent, name, mode, AtFlags::empty()))
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::os::unix::fs::PermissionsExt;

    /// Collects the visited paths, relative to the root.
    struct Names(Vec<PathBuf>, Vec<PathBuf>);

    impl Visitor for Names {
        type State = ();
        fn visit(
            &mut self,
            _: &mut Frame<()>,
            _: &OsStr,
            path: &Path,
            st: &Stat,
        ) -> io::Result<Visit<()>> {
            self.0.push(path.to_owned());
            Ok(if is_dir(st) {
                Visit::Descend(())
            } else {
                Visit::Skip
            })
        }
        fn leave(&mut self, dir: Frame<()>, _: Option<&mut Frame<()>>) -> io::Result<()> {
            self.1.push(dir.path().to_owned());
            Ok(())
        }
    }

    fn root(p: &Path) -> Frame<()> {
        Frame::new(
            open_dir_nofollow(rustix::fs::CWD, p).unwrap(),
            PathBuf::new(),
            (),
        )
        .unwrap()
    }

    #[test]
    fn sorted_depth_first_and_symlinks_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::create_dir_all(t.join("b/c")).unwrap();
        std::fs::write(t.join("b/c/f"), b"").unwrap();
        std::fs::write(t.join("a"), b"").unwrap();
        symlink("/", t.join("z")).unwrap();
        let mut v = Names(Vec::new(), Vec::new());
        Walk::new().run(&mut v, root(t)).unwrap();
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(v.0, [p("a"), p("b"), p("b/c"), p("b/c/f"), p("z")]);
        assert_eq!(v.1, [p("b/c"), p("b"), p("")]);
    }

    #[test]
    fn deep_trees_use_no_native_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = tmp.path().to_owned();
        for _ in 0..300 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        // A small thread stack: a recursive walk would overflow it.
        let t = tmp.path().to_owned();
        let n = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let mut v = Names(Vec::new(), Vec::new());
                Walk::new().run(&mut v, root(&t)).unwrap();
                v.0.len()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(n, 300);
    }

    #[test]
    fn hard_links_are_seen_once() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::write(t.join("a"), b"").unwrap();
        std::fs::hard_link(t.join("a"), t.join("b")).unwrap();
        std::fs::write(t.join("c"), b"").unwrap();
        let st = |n: &str| rustix::fs::stat(t.join(n)).unwrap();
        let mut seen = HardLinks::new();
        assert!(seen.first_visit(&st("a")));
        assert!(!seen.first_visit(&st("b")));
        assert!(seen.first_visit(&st("c")));
        assert!(seen.first_visit(&st("c")), "single links are not kept");
        let mut noted = HardLinks::new();
        noted.note(&st("a"), "first");
        noted.note(&st("c"), "never");
        assert_eq!(noted.earlier(&st("b")), Some(&"first"));
        assert_eq!(noted.earlier(&st("c")), None);
    }

    #[test]
    fn remove_contents_empties_read_only_trees_and_keeps_link_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(t.join("ro/deeper")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"").unwrap();
        std::fs::write(t.join("ro/deeper/f"), b"").unwrap();
        symlink(&outside, t.join("ro/link")).unwrap();
        for d in ["ro/deeper", "ro"] {
            std::fs::set_permissions(t.join(d), std::fs::Permissions::from_mode(0o500)).unwrap();
        }
        let fd = open_dir_nofollow(rustix::fs::CWD, &t).unwrap();
        remove_contents(fd, t.clone()).unwrap();
        assert_eq!(std::fs::read_dir(&t).unwrap().count(), 0);
        assert!(outside.join("keep").exists());
    }
}
