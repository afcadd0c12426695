//! Space of a tree: `st_blocks × 512`, symlinks not followed, hard links once.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// `st_blocks × 512` of `rel` below `dir` and of everything beneath it:
/// files, directories and symlinks, never following a symlink, counting a
/// hard-linked inode once and never crossing into another file system
/// (nothing of a file system mounted below `rel` is counted).
///
/// The walk reads each directory once through its own descriptor
/// (`getdents64`) and `fstatat`s each child by name: one `stat` per inode,
/// and an open, the reads and a close per directory.
///
/// # Errors
///
/// A `stat` or directory read failed. An entry that vanishes during the
/// walk is skipped (racing removals are legal).
pub fn tree_space(dir: &Dir, rel: &Path) -> io::Result<u64> {
    let st = rustix::fs::statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW)?;
    let mut walk = Walk {
        dev: st.st_dev,
        seen: HashSet::new(),
        total: 0,
    };
    walk.count(&st);
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Beneath `dir`, as every open of the cache is.
        let fd = match rustix::fs::openat2(dir, rel, flags, Mode::empty(), ResolveFlags::BENEATH) {
            Err(Errno::NOSYS) => rustix::fs::openat(dir, rel, flags, Mode::empty())?,
            other => other?,
        };
        walk.dir(fd, 0)?;
    }
    Ok(walk.total)
}

struct Walk {
    dev: u64,
    seen: HashSet<(u64, u64)>,
    total: u64,
}

/// Deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 4096;

impl Walk {
    fn count(&mut self, st: &Stat) {
        if st.st_nlink > 1 && !self.seen.insert((st.st_dev, st.st_ino)) {
            return;
        }
        self.total = self
            .total
            .saturating_add((st.st_blocks as u64).saturating_mul(512));
    }

    fn dir(&mut self, fd: OwnedFd, depth: usize) -> io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(io::Error::other("directory tree deeper than 4096 levels"));
        }
        let mut entries = rustix::fs::Dir::new(fd)?;
        while let Some(entry) = entries.read() {
            let entry = match entry {
                Ok(e) => e,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let parent = entries.fd()?;
            let st = match rustix::fs::statat(parent.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if st.st_dev != self.dev {
                continue;
            }
            self.count(&st);
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = match rustix::fs::openat(
                    parent.as_fd(),
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(sub) => sub,
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                    Err(e) => return Err(e.into()),
                };
                self.dir(sub, depth + 1)?;
            }
        }
        Ok(())
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
        std::fs::create_dir_all(root.join("sub")).unwrap();
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
}
