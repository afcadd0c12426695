//! The one error path of the low layers: `io::Error`s whose payload is a
//! [`PathError`] (the operation and the path, the OS error as its
//! source), [`Corrupt`] as the typed source of a protocol file that holds
//! garbage, and the classifications every layer shares ([`gone`],
//! [`is_miss`]). No message repeats its source: print an error with its
//! `source()` chain.

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
        // The reason is the source: `io::Error::source` hands it on, so a
        // chain printer says "failed to open `p`: No such file…" once.
        write!(f, "failed to {} `{}`", self.op, self.path.display())
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The source of an [`io::ErrorKind::InvalidData`] error whose file holds
/// something the format does not allow (a `cache.size` that is not a
/// non-negative integer, say) and no recovery applied. The layer above
/// recognises it by downcast ([`Corrupt::find`]), never by a message or
/// an operation name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    what: String,
}

impl Corrupt {
    /// An `InvalidData` error naming `path` whose source says `what` is
    /// wrong with it.
    pub fn error(path: &Path, what: impl Into<String>) -> io::Error {
        with_path(
            "parse",
            path,
            io::Error::new(io::ErrorKind::InvalidData, Corrupt { what: what.into() }),
        )
    }

    /// What is wrong with the file.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The `Corrupt` in `e`, looking through a [`PathError`] wrapper.
    pub fn find(e: &io::Error) -> Option<&Corrupt> {
        let inner = e.get_ref()?;
        if let Some(c) = inner.downcast_ref::<Corrupt>() {
            return Some(c);
        }
        inner
            .downcast_ref::<PathError>()?
            .source
            .get_ref()?
            .downcast_ref::<Corrupt>()
    }
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Corrupt {}

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
        // The message names the operation and path; the reason is the
        // source, not repeated in the message.
        assert_eq!(e.to_string(), "failed to open `/c/objects/x`");
        let source = std::error::Error::source(&e).expect("the OS error");
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(2).to_string()
        );
        let (op, path, source) = PathError::split(with_path(
            "open",
            Path::new("/c/x"),
            io::Error::from_raw_os_error(13),
        ))
        .unwrap();
        assert_eq!((op, path.as_path()), ("open", Path::new("/c/x")));
        assert_eq!(source.raw_os_error(), Some(13));
        assert!(PathError::split(io::Error::from_raw_os_error(2)).is_err());
        let c = Corrupt::error(Path::new("/c/cache.size"), "not a number");
        assert_eq!(c.kind(), io::ErrorKind::InvalidData);
        assert_eq!(Corrupt::find(&c).map(Corrupt::what), Some("not a number"));
        assert!(Corrupt::find(&io::Error::from_raw_os_error(2)).is_none());
        // Not wrapped twice.
        let again = with_path("read", Path::new("/other"), e);
        assert!(again.to_string().contains("/c/objects/x"));
    }
}
