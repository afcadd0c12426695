//! The reference model of the model-based tests: the operations over
//! several handles, what each handle reports (the same line protocol as
//! `fscache-test-helper serve`), and an in-memory cache that says which
//! reports and which on-disk states are allowed after each step.
//!
//! The model is exact where the cache is deterministic (hits, misses,
//! commit outcomes, the books) and checks a *rule* where the cache may
//! choose: eviction and pruning remove a least-recently-used prefix, where
//! entries used within one clock tick tie (the model only orders uses
//! separated by an [`Op::Tick`]), free what the store needs and no
//! more, and never touch an entry a handle holds. The cache's choice,
//! once checked, is adopted.
//!
//! Faults are operations too: [`Op::Crash`] kills a process of its own
//! with `SIGKILL` at a protocol step, and the model says what debris that
//! leaves, what stays on the books until a sweep, and which operations
//! sweep it (a sweep, a removal, a prune, a repair, `verify_all`, and a
//! commit that finds the cache full).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use fscache::{Removed, Stored};
pub use fscache_workspace::model::{Got, Outcome, Request};

/// The entry names the operations use (few, so they collide often).
pub const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// How many handles a case has.
pub const HANDLES: usize = 4;
/// Handles `0..OPEN_AT_START` are open when a case starts.
pub const OPEN_AT_START: usize = 3;
/// The size unit of entries and limits (one page).
pub use fscache_workspace::model::BLOCK;
/// The maximum size a case starts with, in blocks.
pub const START_LIMIT_BLOCKS: u64 = 10;

/// One step of a case. Every operation is valid in every state: one on a
/// closed handle, or that needs something the handle does not have (a
/// pending store, a held entry), does nothing. So any subsequence of a
/// case is a case, which is what shrinking needs.
///
/// An entry's content is the file `f` of `blocks` blocks filled from
/// `seed` (see [`content`]); `name` indexes [`NAMES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Open handle `h` (its own `FsCache`, appid `model-H`).
    Open { h: usize },
    /// Close handle `h`, dropping everything it holds.
    Close { h: usize },
    /// `store` + fill + `commit_report`.
    Store {
        h: usize,
        name: usize,
        seed: u64,
        blocks: u64,
    },
    /// `store` + fill, then drop the guard without commit.
    StoreDrop {
        h: usize,
        name: usize,
        seed: u64,
        blocks: u64,
    },
    /// `store` + fill, keeping the guard (one pending store per handle).
    Begin {
        h: usize,
        name: usize,
        seed: u64,
        blocks: u64,
    },
    /// `commit_report` of the pending store.
    Commit { h: usize },
    /// `commit_and_load` of the pending store; `keep` holds the result.
    CommitAndLoad { h: usize, keep: bool },
    /// Drop the pending store's guard.
    Abandon { h: usize },
    /// `load_or_build`; `keep` holds the result.
    LoadOrBuild {
        h: usize,
        name: usize,
        seed: u64,
        blocks: u64,
        keep: bool,
    },
    /// `load`, holding the entry on a hit.
    Hold { h: usize, name: usize },
    /// Drop what handle `h` holds in slot `slot % held`.
    Release { h: usize, slot: usize },
    /// `contains`.
    Contains { h: usize, name: usize },
    /// `stage`, write a file, drop.
    Stage { h: usize },
    /// `set_info` with a maximum size of `blocks` blocks (`None`:
    /// unlimited), also below the usage.
    SetLimit { h: usize, blocks: Option<u64> },
    /// `prune` down to `blocks` blocks.
    PruneTo { h: usize, blocks: u64 },
    /// `prune` of the entries unused for `secs` seconds.
    PruneAge { h: usize, secs: u64 },
    /// `remove`.
    Remove { h: usize, name: usize },
    /// `sweep`.
    Sweep { h: usize },
    /// `repair`: `None` while another handle is open.
    Repair { h: usize },
    /// The test sets the entry's last use (`object.lock` atime) to `secs`
    /// seconds ago.
    Age { name: usize, secs: u64 },
    /// Wait until the file system clock has advanced: every use after
    /// this step is later than every use before it.
    Tick,
    /// The test damages the kept eviction list `cache.evict` shared by
    /// every process ([`ListDamage`]). Nothing the model allows changes:
    /// the list is never trusted.
    DamageList { how: ListDamage },
    /// `verify_all`: every entry has its recorded digest.
    Verify { h: usize },
    /// A process of its own (not a handle of the case) stores `name` with
    /// this content, or removes it, and is killed with `SIGKILL` at
    /// `point`. Skipped where the point would not be reached
    /// deterministically (see [`Model::applies`]).
    Crash {
        point: CrashPoint,
        name: usize,
        seed: u64,
        blocks: u64,
    },
    /// A process of its own stores `name` (content seed
    /// `FAULT_SEEDS + seed`) while the `nth` call of `FAULT_CALLS[call]`
    /// fails with `FAULT_ERRNOS[errno]`, injected by strace (among them
    /// the counter's updates: its `openat2`, `fcntl`, `fstat`, `write` and
    /// `renameat`). Then the test checks the books: never under; over only
    /// if the failure marked them suspect; and exact again after the sweep
    /// and live reconcile that the next prune runs. An interrupted call
    /// (`EINTR`) is retried: that store must succeed.
    Fault {
        call: usize,
        nth: u32,
        errno: usize,
        name: usize,
        seed: u64,
        blocks: u64,
    },
}

/// How [`Op::DamageList`] damages `cache.evict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListDamage {
    /// Cut it to half its length.
    Truncate,
    /// Flip a bit in the last record.
    Flip,
    /// Garbage in the state slot (how far the list is consumed).
    State,
    /// Remove it.
    Remove,
}

/// The errors an [`Op::Fault`] injects.
pub const FAULT_ERRNOS: [&str; 4] = ["EIO", "ENOSPC", "ENOLCK", "EINTR"];

/// The system calls an [`Op::Fault`] fails, as strace names them. Not
/// `close`: strace fails it by not making the call, so the descriptor and
/// its OFD lock stay (Linux releases the descriptor even when close(2)
/// reports an error), and the store would wait for its own lock. The CLI
/// sweep (`crates/fscache-cli/tests/cli/io_errors.rs`) injects it, under a
/// time limit.
pub const FAULT_CALLS: [&str; 15] = [
    "openat",
    "openat2",
    "read",
    "write",
    "renameat",
    "renameat2",
    "unlinkat",
    "mkdirat",
    "linkat",
    "fcntl",
    "newfstatat",
    "statx",
    "fstat",
    "getdents64",
    "utimensat",
];

/// The seeds of [`Op::Fault`] stores start here, above every other
/// store's: what a fault leaves under a name is told apart by its seed.
pub const FAULT_SEEDS: u64 = 1_000_000;

/// Where an [`Op::Crash`] kills its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// A store's data written, before the commit: an unlocked
    /// `objects/uuid-*` with no `object.info`, nothing charged.
    Fill,
    /// A store's directory made, before its lock file is linked in: a
    /// lock-less `objects/uuid-*`, and the unlocked temporary lock file
    /// (`objects/uuid-*` too) that was to be linked.
    Link,
    /// A commit charged and wrote `object.info`, before the rename: an
    /// unlocked `objects/uuid-*` whose recorded size is on the books.
    Rename,
    /// A removal of an idle entry, after it was uncharged and emptied,
    /// before the `rmdir`: an empty directory under the entry's name.
    Rmdir,
}

impl CrashPoint {
    /// The point as `fscache-test-helper crash-model` names it.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::Fill => "fill",
            CrashPoint::Link => "atomic_dir:link",
            CrashPoint::Rename => "commit:rename",
            CrashPoint::Rmdir => "remove:rmdir",
        }
    }
}

impl Op {
    /// The handle the operation runs on (`None`: the test itself).
    pub fn handle(&self) -> Option<usize> {
        use Op::*;
        match *self {
            Open { h }
            | Close { h }
            | Store { h, .. }
            | StoreDrop { h, .. }
            | Begin { h, .. }
            | Commit { h }
            | CommitAndLoad { h, .. }
            | Abandon { h }
            | LoadOrBuild { h, .. }
            | Hold { h, .. }
            | Release { h, .. }
            | Contains { h, .. }
            | Stage { h }
            | SetLimit { h, .. }
            | PruneTo { h, .. }
            | PruneAge { h, .. }
            | Remove { h, .. }
            | Sweep { h }
            | Repair { h }
            | Verify { h } => Some(h),
            Age { .. } | Tick | DamageList { .. } | Crash { .. } | Fault { .. } => None,
        }
    }

    /// The request of a handle's operation (not `Open`, `Close`, `Age`,
    /// `Tick`, `DamageList`, `Crash`, `Fault`), as both drivers send it.
    pub fn request(&self) -> Request {
        use Op::*;
        let name = |n: usize| NAMES[n].to_owned();
        match *self {
            Store {
                name: n,
                seed,
                blocks,
                ..
            } => Request::Store {
                name: name(n),
                seed,
                blocks,
            },
            StoreDrop {
                name: n,
                seed,
                blocks,
                ..
            } => Request::StoreDrop {
                name: name(n),
                seed,
                blocks,
            },
            Begin {
                name: n,
                seed,
                blocks,
                ..
            } => Request::Begin {
                name: name(n),
                seed,
                blocks,
            },
            Commit { .. } => Request::Commit,
            CommitAndLoad { keep, .. } => Request::CommitAndLoad { keep },
            Abandon { .. } => Request::Abandon,
            LoadOrBuild {
                name: n,
                seed,
                blocks,
                keep,
                ..
            } => Request::LoadOrBuild {
                name: name(n),
                seed,
                blocks,
                keep,
            },
            Hold { name: n, .. } => Request::Hold { name: name(n) },
            Release { slot, .. } => Request::Release { slot },
            Contains { name: n, .. } => Request::Contains { name: name(n) },
            Stage { .. } => Request::Stage,
            SetLimit { blocks, .. } => Request::SetLimit(blocks.map(|b| b * BLOCK)),
            PruneTo { blocks, .. } => Request::PruneTo(blocks * BLOCK),
            PruneAge { secs, .. } => Request::PruneAge(secs),
            Remove { name: n, .. } => Request::Remove { name: name(n) },
            Sweep { .. } => Request::Sweep,
            Repair { .. } => Request::Repair,
            Verify { .. } => Request::Verify,
            Open { .. }
            | Close { .. }
            | Age { .. }
            | Tick
            | DamageList { .. }
            | Crash { .. }
            | Fault { .. } => {
                unreachable!("{self:?} is not a handle's request")
            }
        }
    }
}

/// A case: its `Debug` is Rust that rebuilds it (`vec![Op::…, …]`), so a
/// shrunk failure pastes into a regression test as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct Ops(pub Vec<Op>);

impl fmt::Debug for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vec![")?;
        for op in &self.0 {
            writeln!(f, "    Op::{op:?},")?;
        }
        write!(f, "]")
    }
}

/// An entry's last use as the model knows it. Uses in different epochs
/// (separated by a [`Op::Tick`]) are ordered; uses in one epoch tie. An
/// aged entry is older than every use of the case, and the more seconds,
/// the older.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    Aged(Reverse<u64>),
    Epoch(u64),
}

/// A committed entry of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ent {
    pub seed: u64,
    pub size: u64,
    pub used: Use,
}

/// What a handle holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holding {
    /// A committed entry, read-locked.
    Entry { name: String, seed: u64 },
    /// A tree the cache did not keep (`objects/uuid-*`), with its seed.
    Tree { seed: u64 },
}

impl Holding {
    pub fn seed(&self) -> u64 {
        match self {
            Holding::Entry { seed, .. } | Holding::Tree { seed } => *seed,
        }
    }
}

/// A store a handle has begun and not finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub name: String,
    pub seed: u64,
    pub blocks: u64,
}

/// The reference model: what the cache must hold and what each handle
/// holds.
#[derive(Clone, Debug)]
pub struct Model {
    pub entries: BTreeMap<String, Ent>,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub epoch: u64,
    pub open: [bool; HANDLES],
    pub held: [Vec<Holding>; HANDLES],
    pub pending: [Option<Pending>; HANDLES],
    /// The space a directory takes on this file system (0 on tmpfs): an
    /// entry of `b` blocks takes `b * BLOCK + dir_space`.
    pub dir_space: u64,
    /// Whether the usage may exceed the limit: only a `set_info` below the
    /// usage puts it there (commits refuse to pass the limit), until
    /// removals bring it back under.
    pub lowered: bool,
    /// The `objects/uuid-*` debris crashed stores left, each with the bytes
    /// it keeps on the books (its recorded size after a crash between the
    /// charge and the rename, else 0). A sweep removes and uncharges it.
    pub debris: Vec<u64>,
    /// Entry names whose removal crashed before the `rmdir`: empty
    /// directories, no entries. A sweep removes them; a commit under the
    /// name replaces one.
    pub named_debris: BTreeSet<String>,
    /// A commit that found the cache full while crash debris was there:
    /// it sweeps only when the kept eviction list runs out (state the
    /// model does not follow), so the disk says whether it did (see
    /// [`Model::settle_debris`]).
    pub debris_unsure: bool,
}

/// The model's verdict on one step.
pub type Verdict = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

impl Model {
    pub fn new(dir_space: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            limit: Some(START_LIMIT_BLOCKS * BLOCK),
            epoch: 0,
            open: std::array::from_fn(|h| h < OPEN_AT_START),
            held: Default::default(),
            pending: Default::default(),
            dir_space,
            lowered: false,
            debris: Vec::new(),
            named_debris: BTreeSet::new(),
            debris_unsure: false,
        }
    }

    /// The books: the sum of the entries' sizes.
    pub fn total(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    /// What crash debris keeps on the books, beyond [`Model::total`].
    pub fn debris_charge(&self) -> u64 {
        self.debris.iter().sum()
    }

    /// A sweep ran: every piece of crash debris is gone, and uncharged.
    /// What it removed and freed.
    pub fn sweep(&mut self) -> (usize, u64) {
        let n = self.debris.len() + self.named_debris.len();
        let freed = self.debris_charge();
        self.debris.clear();
        self.named_debris.clear();
        (n, freed)
    }

    /// After a commit that may or may not have swept: `swept` says whether
    /// the crash debris is gone from disk (a sweep takes all of it).
    pub fn settle_debris(&mut self, swept: bool) {
        if std::mem::take(&mut self.debris_unsure) && swept {
            self.sweep();
        }
    }

    /// Apply a crash (the test's own operation): what it leaves behind.
    pub fn crash(&mut self, point: CrashPoint, name: &str, blocks: u64) {
        match point {
            CrashPoint::Fill => self.debris.push(0),
            CrashPoint::Link => self.debris.extend([0, 0]),
            CrashPoint::Rename => self.debris.push(self.size(blocks)),
            CrashPoint::Rmdir => {
                self.entries.remove(name);
                self.named_debris.insert(name.to_owned());
            }
        }
    }

    pub fn size(&self, blocks: u64) -> u64 {
        blocks * BLOCK + self.dir_space
    }

    /// Names some handle holds read-locked.
    pub fn held_names(&self) -> BTreeSet<String> {
        self.held
            .iter()
            .flatten()
            .filter_map(|h| match h {
                Holding::Entry { name, .. } => Some(name.clone()),
                Holding::Tree { .. } => None,
            })
            .collect()
    }

    /// How many `objects/uuid-*` directories the handles own now: pending
    /// stores and trees the cache did not keep.
    pub fn anon_in_objects(&self) -> usize {
        let pending = self.pending.iter().flatten().count();
        let trees = self
            .held
            .iter()
            .flatten()
            .filter(|h| matches!(h, Holding::Tree { .. }))
            .count();
        pending + trees
    }

    /// Whether the test runs `op` at all: an operation on a closed handle,
    /// or needing what the handle lacks, is skipped.
    pub fn applies(&self, op: &Op) -> bool {
        use Op::*;
        match *op {
            Open { h } => !self.open[h],
            Age { name, .. } => self.entries.contains_key(NAMES[name]),
            Tick | DamageList { .. } | Fault { .. } => true,
            Crash {
                point,
                name,
                blocks,
                ..
            } => match point {
                CrashPoint::Fill | CrashPoint::Link => true,
                // Only where the charge is accepted at once: no sweep, no
                // eviction, no refusal before the point.
                CrashPoint::Rename => {
                    let size = self.size(blocks);
                    self.limit
                        .is_none_or(|l| l > 0 && self.total() + self.debris_charge() + size <= l)
                }
                // Only an idle entry, and no debris for the removal's own
                // sweep to remove first (its removals would die instead).
                CrashPoint::Rmdir => {
                    self.entries.contains_key(NAMES[name])
                        && !self.held_names().contains(NAMES[name])
                        && self.debris.is_empty()
                        && self.named_debris.is_empty()
                }
            },
            _ => {
                let h = op.handle().expect("a handle's operation");
                self.open[h]
                    && match *op {
                        Begin { .. } => self.pending[h].is_none(),
                        Commit { .. } | CommitAndLoad { .. } | Abandon { .. } => {
                            self.pending[h].is_some()
                        }
                        Release { .. } => !self.held[h].is_empty(),
                        _ => true,
                    }
            }
        }
    }

    /// The usage is over the limit where the model does not allow it.
    pub fn check_limit(&mut self, accounted: u64) -> Verdict {
        match self.limit {
            Some(l) if accounted > l => {
                ensure!(
                    self.lowered,
                    "cache.size {accounted} over the limit {l}, which was never lowered below it"
                );
            }
            _ => self.lowered = false,
        }
        Ok(())
    }

    /// Close handle `h`: everything it holds is released.
    pub fn close(&mut self, h: usize) {
        self.open[h] = false;
        self.held[h].clear();
        self.pending[h] = None;
    }

    /// A store of `seed` under `name` ran under an injected I/O error and
    /// reported `reported` (`None`: it failed); `removed` are the entries
    /// that vanished, `now` the seed and recorded size under `name` on disk
    /// afterwards. Eviction may have removed idle entries (an injected
    /// failure may skip one, so the order is not checked), and the name
    /// holds its old entry, the new one, or nothing: never anything else.
    /// The test sweeps and reconciles afterwards, as the next prune does:
    /// crash debris is gone, and the books, which a failed counter update
    /// may leave over (never under) only while it marked them suspect, are
    /// exact again.
    pub fn fault(
        &mut self,
        name: &str,
        seed: u64,
        blocks: u64,
        reported: Option<Stored>,
        removed: &BTreeSet<String>,
        now: Option<(Option<u64>, u64)>,
    ) -> Verdict {
        self.sweep();
        let held = self.held_names();
        for r in removed {
            ensure!(
                self.entries.contains_key(r),
                "the faulty store removed {r}, which the model does not have"
            );
            ensure!(
                !held.contains(r),
                "the faulty store removed {r}, which a handle holds"
            );
        }
        // Content is told apart by its seed and size together.
        let old = self.entries.get(name).map(|e| (e.seed, e.size));
        self.remove_all(removed);
        let size = self.size(blocks);
        match now {
            None => {
                ensure!(
                    !matches!(reported, Some(Stored::Committed | Stored::Exists)),
                    "{name} is not on disk, yet the store reported {reported:?}"
                );
            }
            // The same content was there already (an earlier fault store
            // of the same seed): kept, or replaced by its twin.
            Some((Some(s), recorded))
                if (s, recorded) == (seed, size) && old == Some((s, recorded)) =>
            {
                ensure!(
                    matches!(reported, None | Some(Stored::Committed | Stored::Exists)),
                    "{name} holds the same content, yet the store reported {reported:?}"
                );
                if reported == Some(Stored::Committed) {
                    let used = Use::Epoch(self.epoch);
                    self.entries
                        .insert(name.to_owned(), Ent { seed, size, used });
                }
            }
            Some((Some(s), recorded)) if (s, recorded) == (seed, size) => {
                ensure!(
                    matches!(reported, None | Some(Stored::Committed)),
                    "the new {name} is on disk, yet the store reported {reported:?}"
                );
                let used = Use::Epoch(self.epoch);
                self.entries
                    .insert(name.to_owned(), Ent { seed, size, used });
            }
            Some((s, recorded)) => {
                ensure!(
                    s.is_some_and(|s| Some((s, recorded)) == old) && !removed.contains(name),
                    "{name} holds content {s:?} of {recorded} bytes: neither the old {old:?} \
                     nor the new ({seed}, {size})"
                );
                ensure!(
                    reported != Some(Stored::Committed),
                    "the store reported Committed, yet {name} holds the old content"
                );
            }
        }
        Ok(())
    }

    /// Check a removal the cache chose (by eviction or prune) against the
    /// LRU rule and adopt it: `removed` must be idle, and no idle entry
    /// that stays may be older than one removed.
    fn check_lru(&self, removed: &BTreeSet<String>, what: &str) -> Verdict {
        let held = self.held_names();
        for r in removed {
            ensure!(
                self.entries.contains_key(r),
                "{what} removed {r}, which the model does not have"
            );
            ensure!(
                !held.contains(r),
                "{what} removed {r}, which a handle holds"
            );
        }
        for (k, ke) in &self.entries {
            if removed.contains(k) || held.contains(k) {
                continue;
            }
            // Eviction pops from a candidate list some handle, of any
            // process, scanned earlier (kept in `cache.evict`); an entry
            // whose atime was set back by hand since (`Age`) is not where
            // that list has it.
            if what == "eviction" && matches!(ke.used, Use::Aged(_)) {
                continue;
            }
            for r in removed {
                let re = &self.entries[r];
                ensure!(
                    re.used <= ke.used,
                    "{what} removed {r} (last used {:?}) but kept the older idle {k} ({:?})",
                    re.used,
                    ke.used
                );
            }
        }
        Ok(())
    }

    /// Whether `chosen` frees enough and no more: at least `needed` bytes
    /// (or everything there is), and not once the last (newest) chosen
    /// entry was unnecessary.
    fn check_amount(&self, chosen: &BTreeSet<String>, needed: u64, what: &str) -> Verdict {
        let freed: u64 = chosen.iter().map(|n| self.entries[n].size).sum();
        ensure!(
            freed >= needed || chosen.len() == self.entries.len(),
            "{what} chose {chosen:?}, {freed} bytes, short of {needed} while more was idle"
        );
        if let Some(newest) = chosen.iter().map(|n| self.entries[n].used).max() {
            let needed_last = chosen
                .iter()
                .filter(|n| self.entries[*n].used == newest)
                .any(|n| freed - self.entries[n].size < needed);
            ensure!(
                needed_last,
                "{what} chose {chosen:?}, {freed} bytes, more than the {needed} needed"
            );
        }
        Ok(())
    }

    fn remove_all(&mut self, removed: &BTreeSet<String>) {
        for r in removed {
            self.entries.remove(r);
        }
    }

    /// A commit of `blocks` blocks of `seed` as `name`, which reported
    /// `stored` and removed `removed` from disk. On success the entry is
    /// in the model.
    fn commit(
        &mut self,
        name: &str,
        seed: u64,
        blocks: u64,
        stored: Stored,
        removed: &BTreeSet<String>,
    ) -> Verdict {
        let size = self.size(blocks);
        let too_large = match self.limit {
            Some(l) => l == 0 || size > l,
            None => false,
        };
        if too_large {
            ensure!(removed.is_empty(), "a too-large entry evicted {removed:?}");
            ensure!(
                stored == Stored::TooLarge,
                "{size} bytes under limit {:?}: expected TooLarge, got {stored:?}",
                self.limit
            );
            return Ok(());
        }
        let fits = |m: &Model| m.limit.is_none_or(|l| m.total() + size <= l);
        // Crash debris charged on the books counts against the limit until
        // a sweep: the refused charge sweeps first, then evicts.
        let full = self
            .limit
            .is_some_and(|l| self.total() + self.debris_charge() + size > l);
        if !full {
            ensure!(
                removed.is_empty(),
                "{size} bytes fit ({} of {:?} used) but eviction removed {removed:?}",
                self.total(),
                self.limit
            );
        } else {
            // Crash debris is swept when the commit scans; a handle with
            // a kept eviction list may evict from it first instead.
            let debris = !self.debris.is_empty() || !self.named_debris.is_empty();
            self.debris_unsure = debris;
            let limit = self.limit.expect("a limit, since it does not fit");
            self.check_lru(removed, "eviction")?;
            // With nothing held (and no debris whose sweep may or may not
            // have freed its charge first), the amount is exact.
            if self.held_names().is_empty() && !debris {
                let needed = (self.total() + size).saturating_sub(limit);
                self.check_amount(removed, needed, "eviction")?;
            }
            self.remove_all(removed);
        }
        if !fits(self) {
            let held = self.held_names();
            let idle: Vec<&String> = self.entries.keys().filter(|n| !held.contains(*n)).collect();
            ensure!(
                idle.is_empty(),
                "NoSpace expected only once every idle entry is gone, but {idle:?} stay"
            );
            ensure!(
                stored == Stored::NoSpace,
                "expected NoSpace, got {stored:?}"
            );
        } else if self.entries.contains_key(name) {
            ensure!(
                stored == Stored::Exists,
                "{name} is committed: expected Exists, got {stored:?}"
            );
        } else {
            ensure!(
                stored == Stored::Committed,
                "expected Committed, got {stored:?}"
            );
            let used = Use::Epoch(self.epoch);
            self.entries
                .insert(name.to_owned(), Ent { seed, size, used });
            // The rename replaced an empty directory a crashed removal left.
            self.named_debris.remove(name);
        }
        Ok(())
    }

    /// What a commit-and-load or a build must report, given the commit
    /// part's outcome as the model decided it: `Ok(expected got, seed)`.
    #[allow(clippy::too_many_arguments)]
    fn obtained(
        &mut self,
        h: usize,
        name: &str,
        seed: u64,
        blocks: u64,
        got: (Got, Option<u64>),
        keep: bool,
        removed: &BTreeSet<String>,
    ) -> Verdict {
        let stored = match got.0 {
            Got::Built => Stored::Committed,
            Got::Hit => Stored::Exists,
            Got::Uncached(s) => s,
        };
        self.commit(name, seed, blocks, stored, removed)?;
        let expect_seed = match got.0 {
            Got::Hit => {
                let e = self.entries.get_mut(name).expect("Exists: committed");
                e.used = Use::Epoch(self.epoch);
                e.seed
            }
            Got::Built | Got::Uncached(_) => seed,
        };
        ensure!(
            got.1 == Some(expect_seed),
            "content of seed {expect_seed} expected, handed out {:?}",
            got.1
        );
        if keep {
            self.held[h].push(match got.0 {
                Got::Hit | Got::Built => Holding::Entry {
                    name: name.to_owned(),
                    seed: expect_seed,
                },
                Got::Uncached(_) => Holding::Tree { seed },
            });
        }
        Ok(())
    }

    /// Apply a handle's operation that reported `out`, with `removed` the
    /// committed entries that vanished from disk during it. The verdict
    /// says whether the report and the removal are allowed.
    pub fn apply(&mut self, op: &Op, out: &Outcome, removed: &BTreeSet<String>) -> Verdict {
        use Op::*;
        if let Outcome::Error(e) = out {
            return Err(format!("library error: {e}"));
        }
        let h = op.handle().expect("a handle's operation");
        let removes_nothing = |what: &str| -> Verdict {
            ensure!(removed.is_empty(), "{what} removed {removed:?}");
            Ok(())
        };
        match (op, out) {
            (
                Store {
                    name, seed, blocks, ..
                },
                Outcome::Stored { stored, evicted },
            ) => {
                let ev: BTreeSet<String> = evicted.iter().cloned().collect();
                ensure!(
                    &ev == removed,
                    "the report says evicted {evicted:?}, the disk lost {removed:?}"
                );
                self.commit(NAMES[*name], *seed, *blocks, *stored, removed)
            }
            (Commit { .. }, Outcome::Stored { stored, evicted }) => {
                let p = self.pending[h].take().expect("applies: pending");
                let ev: BTreeSet<String> = evicted.iter().cloned().collect();
                ensure!(
                    &ev == removed,
                    "the report says evicted {evicted:?}, the disk lost {removed:?}"
                );
                self.commit(&p.name, p.seed, p.blocks, *stored, removed)
            }
            (StoreDrop { .. }, Outcome::Done) => removes_nothing("a dropped store"),
            (
                Begin {
                    name, seed, blocks, ..
                },
                Outcome::Done,
            ) => {
                self.pending[h] = Some(Pending {
                    name: NAMES[*name].to_owned(),
                    seed: *seed,
                    blocks: *blocks,
                });
                removes_nothing("begin")
            }
            (Abandon { .. }, Outcome::Done) => {
                self.pending[h] = None;
                removes_nothing("abandon")
            }
            (CommitAndLoad { keep, .. }, Outcome::Got { got, seed }) => {
                let p = self.pending[h].take().expect("applies: pending");
                self.obtained(h, &p.name, p.seed, p.blocks, (*got, *seed), *keep, removed)
            }
            (
                LoadOrBuild {
                    name,
                    seed,
                    blocks,
                    keep,
                    ..
                },
                Outcome::Got {
                    got,
                    seed: got_seed,
                },
            ) => {
                let n = NAMES[*name];
                if let Some(e) = self.entries.get_mut(n) {
                    // A hit at once: nothing is built.
                    ensure!(
                        *got == Got::Hit,
                        "{n} is committed: expected a hit, got {got:?}"
                    );
                    removes_nothing("a load_or_build hit")?;
                    e.used = Use::Epoch(self.epoch);
                    let expect = e.seed;
                    ensure!(
                        *got_seed == Some(expect),
                        "a hit on {n} handed out {got_seed:?}, the model has seed {expect}"
                    );
                    if *keep {
                        self.held[h].push(Holding::Entry {
                            name: n.to_owned(),
                            seed: expect,
                        });
                    }
                    return Ok(());
                }
                ensure!(
                    *got != Got::Hit,
                    "{n} is not committed, yet load_or_build hit"
                );
                self.obtained(h, n, *seed, *blocks, (*got, *got_seed), *keep, removed)
            }
            (Hold { name, .. }, Outcome::Held(got)) => {
                removes_nothing("load")?;
                let n = NAMES[*name];
                match (self.entries.get_mut(n), got) {
                    (Some(e), Some(seed)) => {
                        ensure!(
                            *seed == Some(e.seed),
                            "a hit on {n} handed out seed {seed:?}, the model has {}",
                            e.seed
                        );
                        e.used = Use::Epoch(self.epoch);
                        self.held[h].push(Holding::Entry {
                            name: n.to_owned(),
                            seed: e.seed,
                        });
                        Ok(())
                    }
                    (None, None) => Ok(()),
                    (Some(_), None) => Err(format!("{n} is committed and idle, yet load missed")),
                    (None, Some(s)) => Err(format!("{n} is not committed, yet load hit ({s:?})")),
                }
            }
            (Release { slot, .. }, Outcome::Done) => {
                let i = slot % self.held[h].len();
                self.held[h].remove(i);
                removes_nothing("release")
            }
            (Contains { name, .. }, Outcome::Contains(b)) => {
                let n = NAMES[*name];
                ensure!(
                    *b == self.entries.contains_key(n),
                    "contains({n}) = {b}, the model disagrees"
                );
                removes_nothing("contains")
            }
            (Stage { .. }, Outcome::Done) => removes_nothing("stage"),
            (SetLimit { blocks, .. }, Outcome::Done) => {
                self.limit = blocks.map(|b| b * BLOCK);
                self.lowered = self
                    .limit
                    .is_some_and(|l| self.total() + self.debris_charge() > l);
                removes_nothing("set_info")
            }
            (
                PruneTo { blocks, .. },
                Outcome::Pruned {
                    removed: r,
                    skipped,
                    freed,
                },
            ) => {
                // A prune sweeps first.
                self.sweep();
                let r: BTreeSet<String> = r.iter().cloned().collect();
                ensure!(
                    &r == removed,
                    "prune reports {r:?}, the disk lost {removed:?}"
                );
                let held = self.held_names();
                let skipped: BTreeSet<String> = skipped.iter().cloned().collect();
                ensure!(
                    skipped.is_subset(&held),
                    "prune skipped {skipped:?}, but only {held:?} are held"
                );
                // The plan runs over every entry, held or not: the chosen
                // ones are an LRU prefix of all of them.
                let chosen: BTreeSet<String> = r.union(&skipped).cloned().collect();
                for c in &chosen {
                    ensure!(
                        self.entries.contains_key(c),
                        "prune chose {c}, which the model does not have"
                    );
                }
                for (k, ke) in &self.entries {
                    if chosen.contains(k) {
                        continue;
                    }
                    ensure!(
                        !chosen.iter().any(|c| self.entries[c].used > ke.used),
                        "prune chose {chosen:?} over the older {k}"
                    );
                }
                ensure!(
                    chosen.iter().filter(|c| held.contains(*c)).count() == skipped.len(),
                    "prune removed a held entry: chose {chosen:?}, held {held:?}"
                );
                let needed = self.total().saturating_sub(blocks * BLOCK);
                self.check_amount(&chosen, needed, "prune")?;
                let expect_freed: u64 = r.iter().map(|n| self.entries[n].size).sum();
                ensure!(
                    *freed == expect_freed,
                    "prune freed {freed}, the removed entries recorded {expect_freed}"
                );
                self.remove_all(&r);
                Ok(())
            }
            (
                PruneAge { secs, .. },
                Outcome::Pruned {
                    removed: r,
                    skipped,
                    freed,
                },
            ) => {
                self.sweep();
                let held = self.held_names();
                let old: BTreeSet<String> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| matches!(e.used, Use::Aged(Reverse(s)) if s > *secs))
                    .map(|(n, _)| n.clone())
                    .collect();
                let expect_removed: BTreeSet<String> = old.difference(&held).cloned().collect();
                let expect_skipped: BTreeSet<String> = old.intersection(&held).cloned().collect();
                let r: BTreeSet<String> = r.iter().cloned().collect();
                let s: BTreeSet<String> = skipped.iter().cloned().collect();
                ensure!(
                    r == expect_removed && s == expect_skipped && &r == removed,
                    "prune of entries unused for {secs} s: removed {r:?} skipped {s:?} \
                     (disk lost {removed:?}); expected {expect_removed:?} and {expect_skipped:?}"
                );
                let expect_freed: u64 = r.iter().map(|n| self.entries[n].size).sum();
                ensure!(
                    *freed == expect_freed,
                    "prune freed {freed}, expected {expect_freed}"
                );
                self.remove_all(&r);
                Ok(())
            }
            (Remove { name, .. }, Outcome::Removed(got)) => {
                // A removal sweeps first; a half-removed directory of the
                // name is what the sweep removed for it.
                let n = NAMES[*name];
                let half_removed = self.named_debris.contains(n);
                self.sweep();
                let expect = match self.entries.get(n) {
                    None if half_removed => Removed::Removed { freed: 0 },
                    None => Removed::Missing,
                    Some(_) if self.held_names().contains(n) => Removed::InUse,
                    Some(e) => Removed::Removed { freed: e.size },
                };
                ensure!(
                    *got == expect,
                    "remove({n}): expected {expect:?}, got {got:?}"
                );
                let expect_gone: BTreeSet<String> = match expect {
                    Removed::Removed { .. } if !half_removed => [n.to_owned()].into(),
                    _ => BTreeSet::new(),
                };
                ensure!(removed == &expect_gone, "remove({n}) removed {removed:?}");
                if !expect_gone.is_empty() {
                    self.entries.remove(n);
                }
                Ok(())
            }
            (Sweep { .. }, Outcome::Swept { removed: n, freed }) => {
                // Only crash debris goes: a live writer's entry survives.
                let expect = self.sweep();
                ensure!(
                    (*n, *freed) == expect,
                    "sweep removed {n} and freed {freed}; the crash debris was {} pieces of {} bytes",
                    expect.0,
                    expect.1
                );
                removes_nothing("sweep")
            }
            (
                Verify { .. },
                Outcome::Verified {
                    ok,
                    unverified,
                    miss,
                    bad,
                },
            ) => {
                // A removal that crashed half-way left a named directory
                // without its parts: verify reports it incomplete (damaged)
                // before its listing sweeps it away.
                let named = self.named_debris.len();
                self.sweep();
                ensure!(
                    *bad == named && *miss == 0 && ok + unverified == self.entries.len(),
                    "verify: {ok} intact, {unverified} without digest, {miss} gone, {bad} \
                     damaged; the model has {} entries, all intact, and {named} half-removed",
                    self.entries.len()
                );
                removes_nothing("verify")
            }
            (Repair { .. }, Outcome::Repaired(r)) => {
                let others = (0..HANDLES).any(|g| g != h && self.open[g]);
                match r {
                    None => ensure!(others, "repair refused though no other handle is open"),
                    Some((n, accounted)) => {
                        ensure!(!others, "repair ran while another handle was open");
                        let (expect, _) = self.sweep();
                        ensure!(
                            *n == expect,
                            "repair removed {n}, the crash debris was {expect} pieces"
                        );
                        ensure!(
                            *accounted == self.total(),
                            "repair counted {accounted}, the model {}",
                            self.total()
                        );
                    }
                }
                removes_nothing("repair")
            }
            _ => Err(format!("unexpected report {out} for {op:?}")),
        }
    }
}
