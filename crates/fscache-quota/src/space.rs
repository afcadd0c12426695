//! Space of a tree: `st_blocks × 512`, symlinks not followed, hard links once.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use cap_std::fs::Dir;
use fscache_dir::stat;
use fscache_dir::walk::{is_dir, Frame, HardLinks, Visit, Visitor, Walk};
use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;

/// `st_blocks × 512` of `rel` below `dir` and of everything beneath it:
/// files, directories and symlinks, never following a symlink, counting a
/// hard-linked inode once and never crossing into another file system
/// (nothing of a file system mounted below `rel` is counted).
///
/// The walk is [`fscache_dir::walk`]: each directory is read once through
/// its own descriptor (`getdents64`) and each child `fstatat`ed by name, so
/// one `stat` per inode, and an open, the reads and a close per directory.
///
/// # Errors
///
/// A `stat` or directory read failed. An entry that vanishes during the
/// walk is skipped (racing removals are legal).
pub fn tree_space(dir: &Dir, rel: &Path) -> io::Result<u64> {
    let mut space = Space {
        links: HardLinks::new(),
        total: 0,
    };
    // A directory (the common case: an entry's `data/`) is opened first,
    // beneath `dir` as every open of the cache is, and `fstat`ed through
    // its descriptor: no separate `stat` of the path. Anything else
    // (`ENOTDIR`; `ELOOP` for a symlink, never followed) is `stat`ed.
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    match fscache_dir::open_beneath(dir, rel, flags, Mode::empty()) {
        Ok(fd) => {
            let root = Frame::new(fd, rel.to_owned(), ())?;
            space.count(root.stat());
            Walk::new()
                .one_file_system()
                .skip_vanished()
                .run(&mut space, root)?;
        }
        Err(e)
            if matches!(
                e.raw_os_error().map(Errno::from_raw_os_error),
                Some(Errno::NOTDIR | Errno::LOOP)
            ) =>
        {
            let st = rustix::io::retry_on_intr(|| {
                rustix::fs::statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW)
            })?;
            space.count(&st);
        }
        Err(e) => return Err(e),
    }
    Ok(space.total)
}

/// The sum of a [`tree_space`] walk.
struct Space {
    links: HardLinks,
    total: u64,
}

impl Space {
    fn count(&mut self, st: &Stat) {
        if self.links.first_visit(st) {
            self.total = self.total.saturating_add(stat::space(st));
        }
    }
}

impl Visitor for Space {
    type State = ();

    fn visit(
        &mut self,
        _parent: &mut Frame<()>,
        _name: &OsStr,
        _path: &Path,
        st: &Stat,
    ) -> io::Result<Visit<()>> {
        self.count(st);
        Ok(if is_dir(st) {
            Visit::Descend(())
        } else {
            Visit::Skip
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn blocks(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p).unwrap().blocks() * 512
    }

    #[test]
    fn counts_dirs_files_symlinks_and_hard_links_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        fscache_dir::retry_io(|| std::fs::create_dir_all(root.join("sub"))).unwrap();
        std::fs::write(root.join("sub/a"), vec![7u8; 10_000]).unwrap();
        std::fs::hard_link(root.join("sub/a"), root.join("b")).unwrap();
        symlink("sub/a", root.join("link")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        let expect = blocks(&root)
            + blocks(&root.join("sub"))
            + blocks(&root.join("sub/a"))
            + blocks(&root.join("link"))
            + blocks(&root.join("escape"));
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        assert_eq!(tree_space(&dir, Path::new("t")).unwrap(), expect);
        assert!(expect >= 10_000);
    }

    #[test]
    fn a_file_alone_and_a_missing_path() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        assert_eq!(
            tree_space(&dir, Path::new("f")).unwrap(),
            blocks(&tmp.path().join("f"))
        );
        let e = tree_space(&dir, Path::new("nope")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn never_leaves_the_directory() {
        // `rel` reaching outside `dir` through a symlinked parent is refused,
        // with or without openat2.
        let tmp = tempfile::tempdir().unwrap();
        fscache_dir::retry_io(|| std::fs::create_dir_all(tmp.path().join("in"))).unwrap();
        fscache_dir::retry_io(|| std::fs::create_dir_all(tmp.path().join("out/d"))).unwrap();
        symlink(tmp.path().join("out"), tmp.path().join("in/link")).unwrap();
        let dir =
            Dir::open_ambient_dir(tmp.path().join("in"), cap_std::ambient_authority()).unwrap();
        assert!(tree_space(&dir, Path::new("link/d")).is_err());
    }
}
