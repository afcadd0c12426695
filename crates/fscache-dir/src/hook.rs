//! Test hooks: named points of the protocols where a test can act, so races
//! can be forced deterministically (osbuild's `_trace` hooks do the same).
//!
//! Installing a hook ([`CacheDir::set_hook`](crate::CacheDir)) needs the
//! cargo feature `test-hooks`; without it [`CacheDir::hook`](crate::CacheDir::hook)
//! is an empty inline function and a `CacheDir` carries no hook field, as
//! cap-primitives keeps its race checks under a cfg.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A named point of a protocol where a [`Hook`] fires, with the relative
/// path involved.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Locked open: before the open (`"locked_open:open"`).
    LockedOpenOpen,
    /// Locked open: after the open, before the lock (`"locked_open:lock"`).
    LockedOpenLock,
    /// Atomic anonymous dir: after the `mkdir`, before the lock file is
    /// linked in (`"atomic_dir:link"`).
    AtomicDirLink,
    /// Entry removal: before the emptied entry directory is removed
    /// (`"remove:rmdir"`).
    RemoveRmdir,
    /// Fired by the `fscache` facade: commit, before the new entry's
    /// `data/` is measured (`"commit:measure"`).
    CommitMeasure,
    /// Fired by the `fscache` facade: commit, after the measurement, before
    /// `cache.size` is charged (`"commit:charge"`).
    CommitCharge,
    /// Fired by the `fscache` facade: commit, after the charge and
    /// `object.info`, before the rename to the entry's name
    /// (`"commit:rename"`).
    CommitRename,
    /// Fired by the `fscache` facade: an evicting commit holds the rescan
    /// lock and is about to scan `objects/` for a new kept list
    /// (`"evict:scan"`).
    EvictScan,
}

impl HookPoint {
    /// Every point, in protocol order.
    pub const ALL: [HookPoint; 8] = [
        HookPoint::LockedOpenOpen,
        HookPoint::LockedOpenLock,
        HookPoint::AtomicDirLink,
        HookPoint::RemoveRmdir,
        HookPoint::CommitMeasure,
        HookPoint::CommitCharge,
        HookPoint::CommitRename,
        HookPoint::EvictScan,
    ];

    /// The point's stable name, e.g. `"locked_open:lock"`, for command
    /// lines and logs.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::LockedOpenOpen => "locked_open:open",
            HookPoint::LockedOpenLock => "locked_open:lock",
            HookPoint::AtomicDirLink => "atomic_dir:link",
            HookPoint::RemoveRmdir => "remove:rmdir",
            HookPoint::CommitMeasure => "commit:measure",
            HookPoint::CommitCharge => "commit:charge",
            HookPoint::CommitRename => "commit:rename",
            HookPoint::EvictScan => "evict:scan",
        }
    }

    /// The point named `name` (see [`HookPoint::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A test hook: called with the point and the relative path involved at
/// each [`HookPoint`].
pub type Hook = Arc<dyn Fn(HookPoint, &Path) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in HookPoint::ALL {
            assert_eq!(HookPoint::from_name(p.name()), Some(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!(HookPoint::from_name("nope"), None);
    }
}
