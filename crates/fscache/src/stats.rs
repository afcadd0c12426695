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
use std::time::Duration;

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

/// A handle flushes its counts after this many operations of one kind in
/// one thread's stripe (or a second).
/// A flush is a locked read-modify-write of `cache.stats`, some ten system
/// calls that create and rename a file: every 1,000 operations it cost a
/// load loop about 2 % (measured beside the 1-call miss floor), every
/// 100,000 nothing measurable, and the second bounds what a killed
/// process loses anyway.
pub const FLUSH_EVERY: u64 = 100_000;

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

        /// The unflushed counts of one stripe of a handle (see
        /// [`Counter`]).
        #[derive(Default)]
        pub(crate) struct Pending {
            $( pub(crate) $field: AtomicU64, )*
        }

        impl Pending {
            /// Add the counts to `into`, leaving zeros.
            fn take_into(&self, into: &mut Stats) {
                $( into.$field += self.$field.swap(0, Ordering::Relaxed); )*
            }

            /// Give counts back (a flush failed).
            fn give_back(&self, s: &Stats) {
                $( self.$field.fetch_add(s.$field, Ordering::Relaxed); )*
            }
        }
    };
}

counters! {
    /// Loads, and [`FsCache::load_or_build`](crate::FsCache::load_or_build)
    /// calls, that found their entry (a waiter for another builder counts
    /// here once, when it gets the built entry).
    hits => "hits",
    /// Loads that missed because there is no such entry. (The misses of
    /// `load_or_build` are its builds: [`Stats::built`].)
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
    /// Scans of `objects/` for a new kept eviction list (one serves
    /// many evicting commits, of every process).
    eviction_scans => "eviction-scans",
    /// Prune runs (not dry runs).
    prunes => "prunes",
    /// Entries removed by `remove` and `prune`.
    removals => "removals",
    /// Repairs that ran.
    repairs => "repairs",
    /// `load_or_build` calls that built their entry, which the cache kept.
    built => "built",
    /// `load_or_build` calls that built their entry, which the cache did
    /// not keep (too large, no space, another version's cache): the caller
    /// got an [`Obtained::Uncached`](crate::Obtained::Uncached) tree.
    built_uncached => "built-uncached",
    /// `load_or_build` calls that waited for another thread or process
    /// building the same name (each call counts once, however long).
    build_waits => "build-waits",
    /// Times a process waited for the lock of `cache.size`, `cache.info`
    /// or `cache.stats` that another held. (Loads never wait: a held
    /// entry is a miss; waits for a builder are [`Stats::build_waits`].)
    lock_waits => "lock-waits",
}

impl Stats {
    /// Every call that asked for an entry, counted by what the caller got:
    /// loads (a hit or a miss) and `load_or_build` calls (a hit or a
    /// build).
    pub fn loads(&self) -> u64 {
        self.hits + self.misses() + self.builds()
    }

    /// Every kind of miss of a load.
    pub fn misses(&self) -> u64 {
        self.misses_absent + self.misses_busy + self.misses_invalid + self.misses_incompatible
    }

    /// `load_or_build` calls that built: kept or not.
    pub fn builds(&self) -> u64 {
        self.built + self.built_uncached
    }

    /// Hits per call that asked for an entry ([`Stats::loads`]), 0 to 1;
    /// `None` before the first. 16 callers of `load_or_build` that share
    /// one build make 15 hits and 1 build: 93.75 %.
    pub fn hit_rate(&self) -> Option<f64> {
        let loads = self.loads();
        (loads > 0).then(|| self.hits as f64 / loads as f64)
    }
}

/// How many stripes a handle's counts are spread over (a power of two).
const STRIPES: usize = 8;

/// One stripe of counts, on cache lines of its own: the threads that bump
/// it never share a line with the threads of another stripe.
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    pending: Pending,
}

/// The stripe of the calling thread: threads get stripes round-robin, on
/// first use.
fn stripe_index() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds (see
/// [`fscache_dir::stat::coarse_monotonic_ns`]): all a once-a-second
/// deadline needs.
fn coarse_now() -> u64 {
    fscache_dir::stat::coarse_monotonic_ns()
}

/// One handle's counting: atomics bumped on every operation, flushed into
/// `cache.stats` now and then.
///
/// The hot path (a load) writes only its thread's stripe and reads the
/// flush deadline: no cache line bounces between threads that count at
/// once (a single shared set of atomics made every load of every thread
/// write the same lines).
pub(crate) struct Counter {
    stripes: [Stripe; STRIPES],
    removals_log: Mutex<Vec<Removal>>,
    /// The [`coarse_now`] from which a bump flushes.
    next_flush: AtomicU64,
    /// Held while flushing.
    flushing: Mutex<()>,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            stripes: Default::default(),
            removals_log: Mutex::new(Vec::new()),
            next_flush: AtomicU64::new(coarse_now() + FLUSH_AFTER.as_nanos() as u64),
            flushing: Mutex::new(()),
        }
    }
}

impl Counter {
    /// Count `by` on `field` without ever flushing.
    pub(crate) fn add(&self, field: fn(&Pending) -> &AtomicU64, by: u64) {
        field(&self.stripes[stripe_index()].pending).fetch_add(by, Ordering::Relaxed);
    }

    /// Count one on `field`, and flush when it is time. Never fails: a
    /// flush that fails keeps its counts for the next.
    /// `dir`: where to flush when it is time; `None` keeps the counts in
    /// memory (a cache we may not write into).
    pub(crate) fn bump(&self, dir: Option<&CacheDir>, field: fn(&Pending) -> &AtomicU64, by: u64) {
        let stripe = &self.stripes[stripe_index()];
        // One atomic add: the counter of operations is the field itself
        // (a count of one kind; sizes bump by more and flush by time).
        let now = field(&stripe.pending).fetch_add(by, Ordering::Relaxed) + by;
        if let Some(dir) = dir {
            if (by == 1 && now % FLUSH_EVERY == 0) || self.due() {
                let _ = self.flush(dir);
            }
        }
    }

    /// Whether the flush deadline passed; the one caller that sees it
    /// first moves it on (so threads do not all flush at once). Checking
    /// the clock is a vDSO read, no system call.
    fn due(&self) -> bool {
        let now = coarse_now();
        let deadline = self.next_flush.load(Ordering::Relaxed);
        now >= deadline
            && self
                .next_flush
                .compare_exchange(
                    deadline,
                    now + FLUSH_AFTER.as_nanos() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Take every stripe's counts and the removals noted, leaving zeros.
    fn take(&self) -> Stats {
        let mut out = Stats::default();
        for s in &self.stripes {
            s.pending.take_into(&mut out);
        }
        out.recent_removals =
            std::mem::take(&mut *self.removals_log.lock().unwrap_or_else(|p| p.into_inner()));
        out
    }

    /// Give counts back (a flush failed).
    fn give_back(&self, s: &Stats) {
        self.stripes[stripe_index()].pending.give_back(s);
        let mut log = self.removals_log.lock().unwrap_or_else(|p| p.into_inner());
        let mut back = s.recent_removals.clone();
        back.append(&mut log);
        *log = back;
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
        let mut log = self.removals_log.lock().unwrap_or_else(|p| p.into_inner());
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
        let _ = self.take();
    }

    /// Add this handle's counts to `cache.stats`.
    pub(crate) fn flush(&self, dir: &CacheDir) -> Result<()> {
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        self.next_flush.store(
            coarse_now() + FLUSH_AFTER.as_nanos() as u64,
            Ordering::Relaxed,
        );
        let delta = self.take();
        if delta == Stats::default() {
            return Ok(());
        }
        let result = update(dir, |map| delta.add_into(map));
        if result.is_err() {
            self.give_back(&delta);
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
