//! `PathError`: an `io::Error` payload that names the operation and path.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The payload of every `io::Error` this crate returns: the failed
/// operation, the absolute path it was applied to, and the OS error.
///
/// The `io::Error` wrapping it keeps the source's [`io::ErrorKind`]; use
/// [`raw_os_error`] to get the errno back.
#[derive(Debug)]
pub struct PathError {
    op: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl PathError {
    /// The operation that failed, e.g. `"open"`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The path it failed on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying OS error.
    pub fn source_error(&self) -> &io::Error {
        &self.source
    }

    /// Take `e` apart if it wraps a `PathError`: the operation, the path
    /// and the original OS error (its `raw_os_error` intact). Any other
    /// error comes back unchanged as `Err`.
    ///
    /// # Errors
    ///
    /// `e` names no path.
    pub fn split(e: io::Error) -> Result<(&'static str, PathBuf, io::Error), io::Error> {
        if !e.get_ref().is_some_and(|inner| inner.is::<PathError>()) {
            return Err(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<PathError>()) {
            Some(Ok(p)) => Ok((p.op, p.path, p.source)),
            // Checked above; rebuild rather than panic.
            Some(Err(inner)) => Err(io::Error::new(kind, inner)),
            None => Err(io::Error::from(kind)),
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An `io::Error` is usually printed alone, so the reason is part of
        // the message here rather than only a `source()`.
        write!(
            f,
            "failed to {} `{}`: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for PathError {}

/// Wrap `source` as an `io::Error` of the same kind that names `op` and
/// `path`. An error that already names a path is returned unchanged.
pub fn with_path(op: &'static str, path: &Path, source: io::Error) -> io::Error {
    if source
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<PathError>().is_some())
    {
        return source;
    }
    io::Error::new(
        source.kind(),
        PathError {
            op,
            path: path.to_owned(),
            source,
        },
    )
}

/// Whether `e` says the thing is not there (any more).
pub fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Whether an open or `stat` error means "not there for me now" (a
/// load's miss): gone (`ENOENT`, `ENOTDIR`), a symlink where a protocol
/// file belongs (`ELOOP`), one leading out of the cache (`EXDEV`), or a
/// stale NFS handle (`ESTALE`).
pub fn is_miss(e: &io::Error) -> bool {
    gone(e)
        || matches!(
            raw_os_error(e).map(rustix::io::Errno::from_raw_os_error),
            Some(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::STALE)
        )
}

/// The errno of `e`, looking through a [`PathError`] wrapper.
pub fn raw_os_error(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<PathError>())
            .and_then(|p| p.source.raw_os_error())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_kind_and_errno_and_names_path() {
        let e = with_path(
            "open",
            Path::new("/c/objects/x"),
            io::Error::from_raw_os_error(2),
        );
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(raw_os_error(&e), Some(2));
        let msg = e.to_string();
        assert!(msg.starts_with("failed to open `/c/objects/x`: "), "{msg}");
        let (op, path, source) = PathError::split(with_path(
            "open",
            Path::new("/c/x"),
            io::Error::from_raw_os_error(13),
        ))
        .unwrap();
        assert_eq!((op, path.as_path()), ("open", Path::new("/c/x")));
        assert_eq!(source.raw_os_error(), Some(13));
        assert!(PathError::split(io::Error::from_raw_os_error(2)).is_err());
        // Not wrapped twice.
        let again = with_path("read", Path::new("/other"), e);
        assert!(again.to_string().contains("/c/objects/x"));
    }
}
