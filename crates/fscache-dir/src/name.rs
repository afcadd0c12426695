//! `EntryName`: the validated name of a cache entry.

use std::fmt;
use std::io;

/// Why a string is not a valid entry name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidName {
    name: String,
    reason: &'static str,
}

impl InvalidName {
    /// The rejected name (lossless).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why it was rejected, in a few lowercase words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid entry name {:?}: {}", self.name, self.reason)
    }
}

impl std::error::Error for InvalidName {}

impl From<InvalidName> for io::Error {
    fn from(e: InvalidName) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// The longest name a Linux file system takes as one path component.
pub const MAX_NAME_LEN: usize = 255;

/// The prefix reserved for anonymous entries and temporary files.
pub const RESERVED_PREFIX: &str = "uuid-";

/// A valid entry name: one path component, non-empty, at most 255 bytes, no
/// `/` or NUL, not `.` or `..`, and not starting with `uuid-`.
///
/// Validation happens before any I/O, so a hostile name never reaches the
/// file system.
///
/// ```
/// use fscache_dir::EntryName;
/// assert!(EntryName::new("rpm-abc123").is_ok());
/// assert!(EntryName::new("../escape").is_err());
/// assert!(EntryName::new("uuid-0").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryName(String);

impl EntryName {
    /// Validate `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] saying which rule `name` breaks.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let reason = if name.is_empty() {
            "empty"
        } else if name.len() > MAX_NAME_LEN {
            "longer than 255 bytes"
        } else if name.contains('/') {
            "contains `/`"
        } else if name.contains('\0') {
            "contains NUL"
        } else if name == "." || name == ".." {
            "is `.` or `..`"
        } else if name.starts_with(RESERVED_PREFIX) {
            "starts with the reserved prefix `uuid-`"
        } else {
            return Ok(Self(name.to_owned()));
        };
        Err(InvalidName {
            name: name.to_owned(),
            reason,
        })
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EntryName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A fresh `uuid-<32 hex>` name (random, version-4 layout), unique enough to
/// create with `O_EXCL` without coordination.
pub fn anonymous_name() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back to time and pid, still unique per
        // process and instant; O_EXCL catches the rest.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b[..12].copy_from_slice(&t.to_le_bytes()[..12]);
        b[12..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(RESERVED_PREFIX.len() + 32);
    s.push_str(RESERVED_PREFIX);
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "key",
            "a.b",
            "...",
            "uuid",
            "UUID-x",
            "ü",
            &"x".repeat(255),
        ] {
            assert_eq!(EntryName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", "a\0b", "uuid-1", "uuid-",
        ] {
            let e = EntryName::new(bad).unwrap_err();
            assert_eq!(e.name(), bad);
        }
        assert!(EntryName::new(&"x".repeat(256)).is_err());
        // 255 bytes of multi-byte characters is the limit in bytes, not chars.
        assert!(EntryName::new(&"ü".repeat(128)).is_err());
    }

    #[test]
    fn anonymous_names_are_reserved_and_unique() {
        let a = anonymous_name();
        let b = anonymous_name();
        assert_ne!(a, b);
        assert_eq!(a.len(), 37);
        assert!(a.starts_with("uuid-"));
        assert!(a[5..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(EntryName::new(&a).is_err());
    }
}
