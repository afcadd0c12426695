//! The error type of the `fscache` facade.

use std::io;
use std::path::PathBuf;

pub use fscache_dir::InvalidName;
use fscache_dir::PathError;

/// An error of a cache operation. A miss is never an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name is not a valid entry name; nothing was touched.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A system call failed.
    #[error("failed to {op} `{path}`")]
    Io {
        /// What was being done, e.g. "lock".
        op: &'static str,
        /// The path involved: the innermost one the failing call used.
        path: PathBuf,
        /// The OS error, as the system call returned it
        /// ([`io::Error::raw_os_error`] works on it).
        #[source]
        source: io::Error,
    },
    /// A system call failed, and no path is known for it (an `io::Error`
    /// from outside the cache's layers).
    #[error("an I/O operation failed")]
    Os {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A protocol file holds something the format does not allow, and no
    /// recovery applies.
    #[error("`{path}` is corrupt: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The cache has a format version this implementation does not use
    /// (newer, or missing), so it refuses to modify it. Loads of such a
    /// cache miss and stores act as stages instead of failing.
    #[error("cache `{path}` has format version {}, this implementation uses {}; refusing to modify it", .version.map_or("none".to_string(), |v| v.to_string()), crate::VERSION)]
    Incompatible {
        /// The cache root.
        path: PathBuf,
        /// The version its `cache.info` declares, if any.
        version: Option<u64>,
    },
    /// A wait was cancelled by the caller (see
    /// [`BuildOptions::cancel_on`](crate::BuildOptions::cancel_on)).
    #[error("cancelled while waiting for `{name}` to be built")]
    Cancelled {
        /// The entry that was being waited for.
        name: String,
    },
    /// `load_or_build` of a name was called from inside that name's own
    /// build, on the same thread: it would wait for itself forever.
    #[error(
        "`load_or_build` of `{name}` called from inside its own build: it would wait for itself"
    )]
    Reentrant {
        /// The entry being built.
        name: String,
    },
}

impl Error {
    /// An I/O error of `op` on `path`. When the lower layers already named
    /// a path in `source`, that innermost operation and path are kept (and
    /// the original OS error becomes the source), so a message never says
    /// the same thing twice.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        match PathError::split(source) {
            Ok((op, path, source)) => Error::Io { op, path, source },
            Err(source) => Error::Io {
                op,
                path: path.into(),
                source,
            },
        }
    }

    /// The OS error behind this error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } | Error::Os { source } => Some(source),
            _ => None,
        }
    }

    /// The kind of error, as `io::Error` would classify it.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::InvalidName(_) => io::ErrorKind::InvalidInput,
            Error::Io { source, .. } | Error::Os { source } => source.kind(),
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
            Error::Incompatible { .. } => io::ErrorKind::Unsupported,
            Error::Cancelled { .. } => io::ErrorKind::Interrupted,
            Error::Reentrant { .. } => io::ErrorKind::Deadlock,
        }
    }
}

/// The lower layers' errors (with the path folded in): one whose source
/// is a [`fscache_dir::Corrupt`] is [`Error::Corrupt`], anything else
/// [`Error::Io`] with the original OS error, or [`Error::Os`] when it names
/// no path.
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match PathError::split(e) {
            Ok((op, path, source)) => match fscache_dir::Corrupt::find(&source) {
                Some(c) => Error::Corrupt {
                    path,
                    what: c.what().to_owned(),
                },
                None => Error::Io { op, path, source },
            },
            Err(source) => Error::Os { source },
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::new(e.kind(), e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn io_errors_keep_the_os_error_and_name_the_innermost_path_once() {
        let inner = fscache_dir::with_path(
            "open",
            Path::new("/c/objects/x"),
            io::Error::from_raw_os_error(13),
        );
        let e = Error::io("store into", "/c", inner);
        assert_eq!(e.io_error().and_then(io::Error::raw_os_error), Some(13));
        assert_eq!(e.to_string(), "failed to open `/c/objects/x`");
        let chain = format!("{}: {}", e, std::error::Error::source(&e).unwrap());
        assert_eq!(chain.matches("/c/objects/x").count(), 1, "{chain}");
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_protocol_file_that_does_not_parse_is_corrupt() {
        let parse = fscache_dir::Corrupt::error(Path::new("/c/cache.size"), "expected an integer");
        let e = Error::from(parse);
        assert!(matches!(&e, Error::Corrupt { path, .. } if path == Path::new("/c/cache.size")));
        assert_eq!(
            e.to_string(),
            "`/c/cache.size` is corrupt: expected an integer"
        );
        let other =
            fscache_dir::with_path("read", Path::new("/c/x"), io::Error::from_raw_os_error(5));
        assert_eq!(
            Error::from(other)
                .io_error()
                .and_then(io::Error::raw_os_error),
            Some(5)
        );
        // Recognised by its type, not by the operation it names.
        let not_corrupt = fscache_dir::with_path(
            fscache_quota::PARSE,
            Path::new("/c/cache.size"),
            io::Error::new(io::ErrorKind::InvalidData, "expected an integer"),
        );
        assert!(matches!(Error::from(not_corrupt), Error::Io { .. }));
        // An error without a path is its own variant, not a made-up path.
        let bare = Error::from(io::Error::from_raw_os_error(5));
        assert!(matches!(&bare, Error::Os { .. }), "{bare:?}");
        assert_eq!(bare.io_error().and_then(io::Error::raw_os_error), Some(5));
    }

    #[test]
    fn an_incompatible_cache_is_not_called_corrupt() {
        let e = Error::Incompatible {
            path: "/c".into(),
            version: Some(2),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("version 2") && !msg.contains("corrupt"),
            "{msg}"
        );
    }
}
