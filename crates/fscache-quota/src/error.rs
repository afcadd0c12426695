//! The errors of `fscache-quota`: `io::Error`s with the operation and the
//! path folded in, as the lower layers return them
//! ([`fscache_dir::PathError`], errno and kind intact). A protocol file
//! that holds something the format does not allow is
//! [`io::ErrorKind::InvalidData`] whose source is a
//! [`fscache_dir::Corrupt`].

use std::io;
use std::path::Path;

use fscache_dir::with_path;

/// `Result` with `io::Error`.
pub type Result<T, E = io::Error> = std::result::Result<T, E>;

/// `source`, naming `op` and `path`.
pub(crate) fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> io::Error {
    with_path(op, path.as_ref(), source)
}

/// The operation a corruption error names (see [`fscache_dir::Corrupt`],
/// its typed source, by which the layer above recognises it).
pub const PARSE: &str = "parse";

/// `path` holds something the format does not allow: `what`.
pub(crate) fn corrupt(path: impl AsRef<Path>, what: String) -> io::Error {
    fscache_dir::Corrupt::error(path.as_ref(), what)
}
