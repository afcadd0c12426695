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
        Self::check(name).map(|n| Self(n.to_owned()))
    }

    /// Validate `name` without keeping it: `name` itself when valid. For
    /// hot paths that need the owned [`EntryName`] only on success (a
    /// load that misses allocates nothing).
    ///
    /// # Errors
    ///
    /// [`InvalidName`] saying which rule `name` breaks.
    pub fn check(name: &str) -> Result<&str, InvalidName> {
        // One pass for both forbidden bytes (the load's hot path).
        let bad = name.bytes().find(|&b| b == b'/' || b == 0);
        let reason = if name.is_empty() {
            "empty"
        } else if name.len() > MAX_NAME_LEN {
            "longer than 255 bytes"
        } else if bad == Some(b'/') {
            "contains `/`"
        } else if bad == Some(0) {
            "contains NUL"
        } else if name == "." || name == ".." {
            "is `.` or `..`"
        } else if name.starts_with(RESERVED_PREFIX) {
            "starts with the reserved prefix `uuid-`"
        } else {
            return Ok(name);
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
///
/// The bytes are a keyed BLAKE3 hash of a counter, under a key drawn from
/// the system's entropy (`getrandom`) once per process: a store makes
/// several of these names, and each would otherwise be a system call. A
/// forked child starts with its parent's key and counter, so the two may
/// pick the same names; the `O_EXCL` create (or `mkdir`) that then fails
/// with `EEXIST` calls [`reseed_anonymous_names`] before it retries.
pub fn anonymous_name() -> String {
    let b = {
        let mut state = names_state();
        let st = state.get_or_insert_with(NameState::new);
        st.counter = st.counter.wrapping_add(1);
        let h = blake3::keyed_hash(&st.key, &st.counter.to_le_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&h.as_bytes()[..16]);
        b
    };
    format_uuid(b)
}

/// Draw a new key for [`anonymous_name`] from the system's entropy: after
/// a collision, which means another process (a forked child or parent)
/// shares our sequence.
pub fn reseed_anonymous_names() {
    *names_state() = Some(NameState::new());
}

struct NameState {
    key: [u8; 32],
    counter: u64,
}

impl NameState {
    fn new() -> Self {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No entropy source: fall back to time and pid, still unique per
            // process and instant; O_EXCL catches the rest.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            key[..16].copy_from_slice(&t.to_le_bytes());
            key[16..20].copy_from_slice(&std::process::id().to_le_bytes());
        }
        Self { key, counter: 0 }
    }
}

fn names_state() -> std::sync::MutexGuard<'static, Option<NameState>> {
    static STATE: std::sync::Mutex<Option<NameState>> = std::sync::Mutex::new(None);
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn format_uuid(mut b: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(RESERVED_PREFIX.len() + 32);
    s.push_str(RESERVED_PREFIX);
    for byte in b {
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0xf)]));
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
        reseed_anonymous_names();
        let c = anonymous_name();
        assert!(c != a && c != b && c.len() == 37);
    }
}
