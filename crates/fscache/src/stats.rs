//! Statistics shared by every process that uses a cache: counted in memory
//! (a load hit adds no system call), flushed into `cache.stats` under its
//! lock, at most every second or every [`FLUSH_EVERY`] operations, and when
//! the handle drops.
//!
//! `cache.stats` is a JSON object of counters beside osbuild's files, which
//! osbuild never opens; it is replaced like `cache.size` (locked read →
//! temp file → rename), so a crash never leaves a partial value, and a
//! killed process loses at most its unflushed window.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fscache_dir::{CacheDir, IfMissing};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The file of the counters, in the cache root.
pub const CACHE_STATS: &str = "cache.stats";

/// How many removals [`Stats::recent_removals`] keeps.
pub const RECENT_REMOVALS: usize = 100;

const RECENT_KEY: &str = "recent-removals";

/// An entry that eviction or prune removed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removal {
    /// The entry's name.
    pub name: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    /// Why: `"evicted"` (to make room for a store) or `"pruned"`.
    pub why: String,
}

impl Removal {
    fn to_json(&self) -> Value {
        serde_json::json!({"name": self.name, "at": self.at, "why": self.why})
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            name: v.get("name")?.as_str()?.to_owned(),
            at: v.get("at")?.as_u64()?,
            why: v.get("why")?.as_str()?.to_owned(),
        })
    }
}

/// A handle flushes its counts after this many operations (or a second).
pub const FLUSH_EVERY: u64 = 1000;

const FLUSH_AFTER: Duration = Duration::from_secs(1);

macro_rules! counters {
    ($( $(#[$doc:meta])* $field:ident => $key:literal ),* $(,)?) => {
        /// The counters of a cache, summed over every process that used it
        /// since they were last zeroed.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[$doc])* pub $field: u64, )*
            /// The entries eviction and prune removed most recently, oldest
            /// first (at most [`RECENT_REMOVALS`]).
            pub recent_removals: Vec<Removal>,
        }

        impl Stats {
            /// Every counter with its key in `cache.stats`.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( ($key, self.$field), )*]
            }

            fn from_map(map: &Map<String, Value>) -> Self {
                Self {
                    $( $field: map.get($key).and_then(Value::as_u64).unwrap_or(0), )*
                    recent_removals: map
                        .get(RECENT_KEY)
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Removal::from_json).collect())
                        .unwrap_or_default(),
                }
            }

            fn add_into(&self, map: &mut Map<String, Value>) {
                $(
                    if self.$field > 0 {
                        let old = map.get($key).and_then(Value::as_u64).unwrap_or(0);
                        map.insert($key.into(), Value::from(old.saturating_add(self.$field)));
                    }
                )*
                if !self.recent_removals.is_empty() {
                    let mut list = map
                        .get(RECENT_KEY)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    list.extend(self.recent_removals.iter().map(Removal::to_json));
                    let excess = list.len().saturating_sub(RECENT_REMOVALS);
                    list.drain(..excess);
                    map.insert(RECENT_KEY.into(), Value::Array(list));
                }
            }
        }

        /// The unflushed counts of one handle.
        #[derive(Default)]
        pub(crate) struct Pending {
            $( pub(crate) $field: AtomicU64, )*
            removals_log: Mutex<Vec<Removal>>,
        }

        impl Pending {
            /// Take the counts, leaving zeros.
            fn take(&self) -> Stats {
                Stats {
                    $( $field: self.$field.swap(0, Ordering::Relaxed), )*
                    recent_removals: std::mem::take(
                        &mut *self.removals_log.lock().unwrap_or_else(|p| p.into_inner()),
                    ),
                }
            }

            /// Give counts back (a flush failed).
            fn give_back(&self, s: &Stats) {
                $( self.$field.fetch_add(s.$field, Ordering::Relaxed); )*
                let mut log = self.removals_log.lock().unwrap_or_else(|p| p.into_inner());
                let mut back = s.recent_removals.clone();
                back.append(&mut log);
                *log = back;
            }
        }
    };
}

counters! {
    /// Loads that found their entry.
    hits => "hits",
    /// Loads that missed because there is no such entry.
    misses_absent => "misses-absent",
    /// Loads that missed because a writer or remover held the entry.
    misses_busy => "misses-busy",
    /// Loads that missed because the entry was invalid (being removed, or
    /// debris).
    misses_invalid => "misses-invalid",
    /// Loads that missed because the cache's version is not ours.
    misses_incompatible => "misses-incompatible",
    /// Stores committed.
    stored => "stored",
    /// Stores discarded: another writer committed the name first.
    stored_exists => "stored-exists",
    /// Stores discarded: larger than the limit.
    stored_too_large => "stored-too-large",
    /// Stores discarded: no space even after eviction.
    stored_no_space => "stored-no-space",
    /// Stores into a cache of another version (acted as stages).
    stored_incompatible => "stored-incompatible",
    /// Bytes of committed stores (their accounted size).
    bytes_stored => "bytes-stored",
    /// Entries eviction removed to make room.
    evictions => "evictions",
    /// Bytes eviction freed.
    evicted_bytes => "evicted-bytes",
    /// Prune runs (not dry runs).
    prunes => "prunes",
    /// Entries removed by `remove` and `prune`.
    removals => "removals",
    /// Repairs that ran.
    repairs => "repairs",
    /// Times a process waited for a lock another held: the build lock of
    /// a name (`load_or_build`), or the lock of `cache.size`, `cache.info`
    /// or `cache.stats`. (Loads never wait: a held entry is a miss.)
    lock_waits => "lock-waits",
}

impl Stats {
    /// All loads: hits and every kind of miss.
    pub fn loads(&self) -> u64 {
        self.hits + self.misses()
    }

    /// Every kind of miss.
    pub fn misses(&self) -> u64 {
        self.misses_absent + self.misses_busy + self.misses_invalid + self.misses_incompatible
    }

    /// Hits per load, 0 to 1; `None` before the first load.
    pub fn hit_rate(&self) -> Option<f64> {
        let loads = self.loads();
        (loads > 0).then(|| self.hits as f64 / loads as f64)
    }
}

/// One handle's counting: atomics bumped on every operation, flushed into
/// `cache.stats` now and then.
pub(crate) struct Counter {
    pub(crate) pending: Pending,
    ops: AtomicU64,
    last_flush: Mutex<Instant>,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            pending: Pending::default(),
            ops: AtomicU64::new(0),
            last_flush: Mutex::new(Instant::now()),
        }
    }
}

impl Counter {
    /// Count one on `field`, and flush when it is time. Never fails: a
    /// flush that fails keeps its counts for the next.
    /// `dir`: where to flush when it is time; `None` keeps the counts in
    /// memory (a cache we may not write into).
    pub(crate) fn bump(&self, dir: Option<&CacheDir>, field: fn(&Pending) -> &AtomicU64, by: u64) {
        field(&self.pending).fetch_add(by, Ordering::Relaxed);
        let ops = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        // Checking the clock is a vDSO read, no system call.
        if let Some(dir) = dir {
            if ops % FLUSH_EVERY == 0 || self.due() {
                let _ = self.flush(dir);
            }
        }
    }

    fn due(&self) -> bool {
        self.last_flush
            .try_lock()
            .is_ok_and(|t| t.elapsed() >= FLUSH_AFTER)
    }

    /// Note removals by eviction or prune (`why`), for
    /// [`Stats::recent_removals`].
    pub(crate) fn note_removals(&self, names: &[String], why: &str) {
        if names.is_empty() {
            return;
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut log = self
            .pending
            .removals_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        log.extend(names.iter().map(|n| Removal {
            name: n.clone(),
            at,
            why: why.to_owned(),
        }));
        let excess = log.len().saturating_sub(RECENT_REMOVALS);
        log.drain(..excess);
    }

    /// Forget this handle's unflushed counts.
    pub(crate) fn discard(&self) {
        let _ = self.pending.take();
    }

    /// Add this handle's counts to `cache.stats`.
    pub(crate) fn flush(&self, dir: &CacheDir) -> Result<()> {
        let mut last = self.last_flush.lock().unwrap_or_else(|p| p.into_inner());
        *last = Instant::now();
        let delta = self.pending.take();
        if delta == Stats::default() {
            return Ok(());
        }
        let result = update(dir, |map| delta.add_into(map));
        if result.is_err() {
            self.pending.give_back(&delta);
        }
        result
    }
}

/// Read `cache.stats` (all zeros when it does not exist yet).
pub(crate) fn read(dir: &CacheDir) -> Result<Stats> {
    let rel = Path::new(CACHE_STATS);
    match dir.read_small(rel) {
        Ok(bytes) => Ok(match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Stats::from_map(&map),
            _ => Stats::default(),
        }),
        Err(e) if fscache_dir::gone(&e) => Ok(Stats::default()),
        Err(e) => Err(Error::io("read", dir.abs(rel), e)),
    }
}

/// Zero `cache.stats`.
pub(crate) fn zero(dir: &CacheDir) -> Result<()> {
    update(dir, Map::clear)
}

/// Read-modify-write `cache.stats` under its exclusive lock, creating it
/// first if needed; keys this version does not know are kept.
fn update(dir: &CacheDir, change: impl FnOnce(&mut Map<String, Value>)) -> Result<()> {
    let rel = Path::new(CACHE_STATS);
    let empty = || Ok(b"{}".to_vec());
    dir.update(rel, IfMissing::Create(&empty), |bytes| {
        // Garbage starts over: counters are not worth an error.
        let mut map = match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        change(&mut map);
        Ok((Some(Value::Object(map).to_string().into_bytes()), ()))
    })
    .map_err(|e| Error::io("update", dir.abs(rel), e))
}
