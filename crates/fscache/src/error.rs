//! The error type of the `fscache` facade.

use std::io;
use std::path::PathBuf;

pub use fscache_dir::InvalidName;

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
        /// The path involved.
        path: PathBuf,
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
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        // The low layers already fold the path into their io::Error; keep
        // the innermost cause as the source so messages do not repeat.
        let source = match source
            .get_ref()
            .and_then(|i| i.downcast_ref::<fscache_dir::PathError>())
        {
            Some(p) => io::Error::new(p.source_error().kind(), p.source_error().to_string()),
            None => source,
        };
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The OS error behind this error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<fscache_quota::Error> for Error {
    fn from(e: fscache_quota::Error) -> Self {
        match e {
            fscache_quota::Error::Io { op, path, source } => Error::io(op, path, source),
            fscache_quota::Error::Corrupt { path, what } => Error::Corrupt { path, what },
            other => Error::Corrupt {
                path: PathBuf::new(),
                what: other.to_string(),
            },
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::InvalidName(_) => io::ErrorKind::InvalidInput,
            Error::Io { source, .. } => source.kind(),
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
