//! The wire format and the handle of the model-based tests, written once:
//! the [`Request`] a test sends, the [`Outcome`] a handle answers (each
//! one line of text, [`fmt::Display`] and `parse` side by side), the entry
//! content whose bytes name their seed, and [`Handle::run`], which does
//! what a request asks on one `FsCache` handle.
//!
//! Both drivers of `tests/suite/model_run.rs` use it: handles in the test
//! process call [`Handle::run`] directly, and `fscache-test-helper serve`
//! runs the same [`Handle::run`] on each request line it reads. So the two
//! cannot drift apart: a request means the same in both, and an answer
//! parses back to what the handle reported.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use fscache::{
    CacheInfo, FsCache, MaxSize, Obtained, PruneOptions, PruneReport, Removed, StoreGuard, Stored,
};

/// One block of the model: entry sizes are multiples of it.
pub const BLOCK: u64 = 4096;

/// The content of entry file `f`: `len` bytes repeating `seed` (so the
/// content names its seed; `len` is a positive multiple of 8).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut v = seed.to_le_bytes().repeat(len / 8 + 1);
    v.truncate(len);
    v
}

/// The seed that `bytes` were made from by [`content`], if they were.
pub fn seed_of(bytes: &[u8]) -> Option<u64> {
    let first: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let seed = u64::from_le_bytes(first);
    (bytes.len() as u64 % BLOCK == 0 && content(seed, bytes.len()) == bytes).then_some(seed)
}

/// Write entry content `seed` of `blocks` blocks into `dir/f`.
///
/// # Errors
///
/// The write failed.
pub fn fill(dir: &Path, seed: u64, blocks: u64) -> io::Result<()> {
    fs::write(dir.join("f"), content(seed, (blocks * BLOCK) as usize))
}

/// The seed of the content in `dir`, if it is content [`fill`] wrote.
pub fn read_seed(dir: &Path) -> Option<u64> {
    seed_of(&fs::read(dir.join("f")).ok()?)
}

/// What a test asks of one handle. Names are entry names, sizes bytes,
/// `blocks` counts of [`BLOCK`].
///
/// ```text
/// store NAME SEED BLOCKS         → stored OUTCOME EVICTED
/// store-drop NAME SEED BLOCKS    → done
/// begin NAME SEED BLOCKS         → done            (keeps the store pending)
/// commit                         → stored OUTCOME EVICTED
/// commit-and-load keep|drop      → got hit|built|uncached:OUTCOME SEED
/// abandon                        → done
/// load-or-build NAME SEED BLOCKS keep|drop → got …
/// hold NAME                      → held SEED | held miss
/// release SLOT                   → done            (slot modulo the held count)
/// contains NAME                  → contains true|false
/// stage                          → done
/// set-limit BYTES|unlimited      → done
/// prune-to BYTES                 → pruned REMOVED SKIPPED FREED
/// prune-age SECS                 → pruned …
/// remove NAME                    → removed FREED | removed in-use | removed missing
/// sweep                          → swept COUNT FREED
/// repair                         → repaired busy | repaired COUNT ACCOUNTED
/// verify                         → verified OK UNVERIFIED MISS BAD
/// held                           → seeds SEED,… | seeds -
/// ```
///
/// Lists are comma-separated, `-` when empty; a seed is `?` when the
/// content is not what [`fill`] wrote. A library error answers
/// `error MESSAGE`, and the handle goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Store and commit.
    Store {
        /// The entry name.
        name: String,
        /// The content seed ([`content`]).
        seed: u64,
        /// The content size in [`BLOCK`]s.
        blocks: u64,
    },
    /// Store, then drop the guard uncommitted.
    StoreDrop {
        /// The entry name.
        name: String,
        /// The content seed ([`content`]).
        seed: u64,
        /// The content size in [`BLOCK`]s.
        blocks: u64,
    },
    /// Store and keep the guard pending.
    Begin {
        /// The entry name.
        name: String,
        /// The content seed ([`content`]).
        seed: u64,
        /// The content size in [`BLOCK`]s.
        blocks: u64,
    },
    /// Commit the pending store.
    Commit,
    /// `commit_and_load` the pending store; `keep` holds the result.
    CommitAndLoad {
        /// Whether the handle keeps holding the result.
        keep: bool,
    },
    /// Drop the pending store.
    Abandon,
    /// `load_or_build`; `keep` holds the result.
    LoadOrBuild {
        /// The entry name.
        name: String,
        /// The content seed ([`content`]).
        seed: u64,
        /// The content size in [`BLOCK`]s.
        blocks: u64,
        /// Whether the handle keeps holding the result.
        keep: bool,
    },
    /// `load` and hold the entry.
    Hold {
        /// The entry name.
        name: String,
    },
    /// Drop what the handle holds at `slot` (modulo the held count).
    Release {
        /// The slot, modulo the held count.
        slot: usize,
    },
    /// `contains`.
    Contains {
        /// The entry name.
        name: String,
    },
    /// A scratch directory, written to and dropped.
    Stage,
    /// Set the maximum size (`None`: unlimited), in bytes.
    SetLimit(Option<u64>),
    /// Prune to a size in bytes.
    PruneTo(u64),
    /// Prune what was unused for so many seconds.
    PruneAge(u64),
    /// `remove`.
    Remove {
        /// The entry name.
        name: String,
    },
    /// `sweep`.
    Sweep,
    /// `repair`.
    Repair,
    /// `verify_all`.
    Verify,
    /// The seeds of what the handle holds.
    Held,
}

fn keep_word(keep: bool) -> &'static str {
    if keep {
        "keep"
    } else {
        "drop"
    }
}

impl fmt::Display for Request {
    /// The request line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Request::*;
        match self {
            Store { name, seed, blocks } => write!(f, "store {name} {seed} {blocks}"),
            StoreDrop { name, seed, blocks } => write!(f, "store-drop {name} {seed} {blocks}"),
            Begin { name, seed, blocks } => write!(f, "begin {name} {seed} {blocks}"),
            Commit => write!(f, "commit"),
            CommitAndLoad { keep } => write!(f, "commit-and-load {}", keep_word(*keep)),
            Abandon => write!(f, "abandon"),
            LoadOrBuild {
                name,
                seed,
                blocks,
                keep,
            } => write!(
                f,
                "load-or-build {name} {seed} {blocks} {}",
                keep_word(*keep)
            ),
            Hold { name } => write!(f, "hold {name}"),
            Release { slot } => write!(f, "release {slot}"),
            Contains { name } => write!(f, "contains {name}"),
            Stage => write!(f, "stage"),
            SetLimit(Some(bytes)) => write!(f, "set-limit {bytes}"),
            SetLimit(None) => write!(f, "set-limit unlimited"),
            PruneTo(bytes) => write!(f, "prune-to {bytes}"),
            PruneAge(secs) => write!(f, "prune-age {secs}"),
            Remove { name } => write!(f, "remove {name}"),
            Sweep => write!(f, "sweep"),
            Repair => write!(f, "repair"),
            Verify => write!(f, "verify"),
            Held => write!(f, "held"),
        }
    }
}

impl Request {
    /// Parse a request line.
    ///
    /// # Errors
    ///
    /// The line is no request of this protocol.
    pub fn parse(line: &str) -> Result<Request, String> {
        use Request::*;
        let bad = || format!("unknown request {line:?}");
        let num = |w: &str| w.parse::<u64>().map_err(|_| format!("not a number: {w}"));
        let keep = |w: &str| match w {
            "keep" => Ok(true),
            "drop" => Ok(false),
            _ => Err(bad()),
        };
        let words: Vec<&str> = line.split(' ').collect();
        Ok(match words.as_slice() {
            ["store", name, seed, blocks] => Store {
                name: (*name).into(),
                seed: num(seed)?,
                blocks: num(blocks)?,
            },
            ["store-drop", name, seed, blocks] => StoreDrop {
                name: (*name).into(),
                seed: num(seed)?,
                blocks: num(blocks)?,
            },
            ["begin", name, seed, blocks] => Begin {
                name: (*name).into(),
                seed: num(seed)?,
                blocks: num(blocks)?,
            },
            ["commit"] => Commit,
            ["commit-and-load", k] => CommitAndLoad { keep: keep(k)? },
            ["abandon"] => Abandon,
            ["load-or-build", name, seed, blocks, k] => LoadOrBuild {
                name: (*name).into(),
                seed: num(seed)?,
                blocks: num(blocks)?,
                keep: keep(k)?,
            },
            ["hold", name] => Hold {
                name: (*name).into(),
            },
            ["release", slot] => Release {
                slot: num(slot)? as usize,
            },
            ["contains", name] => Contains {
                name: (*name).into(),
            },
            ["stage"] => Stage,
            ["set-limit", "unlimited"] => SetLimit(None),
            ["set-limit", bytes] => SetLimit(Some(num(bytes)?)),
            ["prune-to", bytes] => PruneTo(num(bytes)?),
            ["prune-age", secs] => PruneAge(num(secs)?),
            ["remove", name] => Remove {
                name: (*name).into(),
            },
            ["sweep"] => Sweep,
            ["repair"] => Repair,
            ["verify"] => Verify,
            ["held"] => Held,
            _ => return Err(bad()),
        })
    }
}

/// How a `load_or_build` or `commit_and_load` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Got {
    /// A hit.
    Hit,
    /// Built and committed.
    Built,
    /// Built, not kept, for this reason.
    Uncached(Stored),
}

/// What a handle reported for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report.
    Done,
    /// A commit: its outcome and what eviction removed.
    Stored {
        /// The commit's outcome.
        stored: Stored,
        /// The names eviction removed.
        evicted: Vec<String>,
    },
    /// `load_or_build`/`commit_and_load`: how, and the seed of the content
    /// handed out (`None`: not content this test made).
    Got {
        /// How it ended.
        got: Got,
        /// The seed of the content.
        seed: Option<u64>,
    },
    /// `load`: the seed of the hit, or a miss.
    Held(Option<Option<u64>>),
    /// `contains`.
    Contains(bool),
    /// `remove`.
    Removed(Removed),
    /// `prune`.
    Pruned {
        /// The names removed.
        removed: Vec<String>,
        /// The names skipped (in use).
        skipped: Vec<String>,
        /// Bytes freed.
        freed: u64,
    },
    /// `sweep`: how many were removed, bytes freed.
    Swept {
        /// How many were removed.
        removed: usize,
        /// Bytes freed.
        freed: u64,
    },
    /// `repair`: `None` when others had the cache open, else how many were
    /// removed and the books afterwards.
    Repaired(Option<(usize, u64)>),
    /// `verify_all`: how many entries were intact, had no digest, were
    /// gone, and were damaged.
    Verified {
        /// Intact.
        ok: usize,
        /// Without a digest.
        unverified: usize,
        /// Gone.
        miss: usize,
        /// Damaged.
        bad: usize,
    },
    /// The seeds of what the handle holds (the answer to `held`).
    Seeds(Vec<Option<u64>>),
    /// An error of the library (always a failure).
    Error(String),
}

fn stored_word(s: Stored) -> &'static str {
    match s {
        Stored::Committed => "committed",
        Stored::Exists => "exists",
        Stored::TooLarge => "toolarge",
        Stored::NoSpace => "nospace",
        Stored::Incompatible => "incompatible",
    }
}

fn parse_stored(w: &str) -> Option<Stored> {
    Some(match w {
        "committed" => Stored::Committed,
        "exists" => Stored::Exists,
        "toolarge" => Stored::TooLarge,
        "nospace" => Stored::NoSpace,
        "incompatible" => Stored::Incompatible,
        _ => return None,
    })
}

fn list<T: AsRef<str>>(v: &[T]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",")
    }
}

fn parse_list(w: &str) -> Vec<String> {
    if w == "-" {
        Vec::new()
    } else {
        w.split(',').map(str::to_owned).collect()
    }
}

fn seed_word(s: Option<u64>) -> String {
    s.map_or("?".into(), |s| s.to_string())
}

impl fmt::Display for Outcome {
    /// The answer line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done => write!(f, "done"),
            Outcome::Stored { stored, evicted } => {
                write!(f, "stored {} {}", stored_word(*stored), list(evicted))
            }
            Outcome::Got { got, seed } => {
                let how = match got {
                    Got::Hit => "hit".into(),
                    Got::Built => "built".into(),
                    Got::Uncached(s) => format!("uncached:{}", stored_word(*s)),
                };
                write!(f, "got {how} {}", seed_word(*seed))
            }
            Outcome::Held(None) => write!(f, "held miss"),
            Outcome::Held(Some(s)) => write!(f, "held {}", seed_word(*s)),
            Outcome::Contains(b) => write!(f, "contains {b}"),
            Outcome::Removed(Removed::Removed { freed }) => write!(f, "removed {freed}"),
            Outcome::Removed(Removed::InUse) => write!(f, "removed in-use"),
            Outcome::Removed(Removed::Missing) => write!(f, "removed missing"),
            Outcome::Pruned {
                removed,
                skipped,
                freed,
            } => write!(f, "pruned {} {} {freed}", list(removed), list(skipped)),
            Outcome::Swept { removed, freed } => write!(f, "swept {removed} {freed}"),
            Outcome::Repaired(None) => write!(f, "repaired busy"),
            Outcome::Repaired(Some((n, accounted))) => write!(f, "repaired {n} {accounted}"),
            Outcome::Verified {
                ok,
                unverified,
                miss,
                bad,
            } => write!(f, "verified {ok} {unverified} {miss} {bad}"),
            Outcome::Seeds(seeds) => {
                let seeds: Vec<String> = seeds.iter().map(|s| seed_word(*s)).collect();
                write!(f, "seeds {}", list(&seeds))
            }
            Outcome::Error(e) => write!(f, "error {e}"),
        }
    }
}

impl Outcome {
    /// Parse an answer line.
    ///
    /// # Errors
    ///
    /// The line is no answer of this protocol.
    pub fn parse(line: &str) -> Result<Outcome, String> {
        let w: Vec<&str> = line.split(' ').collect();
        let bad = || format!("unexpected answer {line:?}");
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let seed = |s: &str| if s == "?" { Ok(None) } else { num(s).map(Some) };
        Ok(match w.as_slice() {
            ["done"] => Outcome::Done,
            ["stored", s, ev] => Outcome::Stored {
                stored: parse_stored(s).ok_or_else(bad)?,
                evicted: parse_list(ev),
            },
            ["got", how, s] => {
                let got = match *how {
                    "hit" => Got::Hit,
                    "built" => Got::Built,
                    other => Got::Uncached(
                        other
                            .strip_prefix("uncached:")
                            .and_then(parse_stored)
                            .ok_or_else(bad)?,
                    ),
                };
                Outcome::Got {
                    got,
                    seed: seed(s)?,
                }
            }
            ["held", "miss"] => Outcome::Held(None),
            ["held", s] => Outcome::Held(Some(seed(s)?)),
            ["contains", b] => Outcome::Contains(*b == "true"),
            ["removed", "in-use"] => Outcome::Removed(Removed::InUse),
            ["removed", "missing"] => Outcome::Removed(Removed::Missing),
            ["removed", n] => Outcome::Removed(Removed::Removed { freed: num(n)? }),
            ["pruned", r, s, n] => Outcome::Pruned {
                removed: parse_list(r),
                skipped: parse_list(s),
                freed: num(n)?,
            },
            ["swept", r, n] => Outcome::Swept {
                removed: num(r)? as usize,
                freed: num(n)?,
            },
            ["repaired", "busy"] => Outcome::Repaired(None),
            ["repaired", r, n] => Outcome::Repaired(Some((num(r)? as usize, num(n)?))),
            ["verified", o, u, m, b] => Outcome::Verified {
                ok: num(o)? as usize,
                unverified: num(u)? as usize,
                miss: num(m)? as usize,
                bad: num(b)? as usize,
            },
            ["seeds", s] => Outcome::Seeds(
                parse_list(s)
                    .iter()
                    .map(|s| seed(s))
                    .collect::<Result<_, _>>()?,
            ),
            ["error", ..] => Outcome::Error(line["error ".len()..].to_owned()),
            _ => return Err(bad()),
        })
    }
}

/// One handle of the model tests: an `FsCache`, the store it has begun
/// and not finished, and what it holds.
pub struct Handle {
    cache: FsCache,
    pending: Option<StoreGuard>,
    held: Vec<Obtained>,
}

impl Handle {
    /// A handle over `cache`, holding nothing.
    pub fn new(cache: FsCache) -> Self {
        Self {
            cache,
            pending: None,
            held: Vec::new(),
        }
    }

    /// The seeds of what the handle holds, in slot order.
    pub fn held(&self) -> Vec<Option<u64>> {
        self.held.iter().map(|o| read_seed(o.path())).collect()
    }

    /// Do what `request` asks; a library error is [`Outcome::Error`].
    pub fn run(&mut self, request: &Request) -> Outcome {
        self.exec(request).unwrap_or_else(Outcome::Error)
    }

    fn exec(&mut self, request: &Request) -> Result<Outcome, String> {
        use Request::*;
        let c = &self.cache;
        let e = |e: fscache::Error| e.to_string();
        let io = |e: io::Error| e.to_string();
        let got = |o: &Obtained| {
            let got = match o {
                Obtained::Hit(_) => Got::Hit,
                Obtained::Built(_) => Got::Built,
                Obtained::Uncached(u) => Got::Uncached(u.reason()),
            };
            Outcome::Got {
                got,
                seed: read_seed(o.path()),
            }
        };
        let pruned = |r: PruneReport| Outcome::Pruned {
            removed: r.removed,
            skipped: r.skipped,
            freed: r.freed,
        };
        Ok(match request {
            Store { name, seed, blocks } => {
                let w = c.store(name).map_err(e)?;
                fill(w.path(), *seed, *blocks).map_err(io)?;
                let r = w.commit_report().map_err(e)?;
                Outcome::Stored {
                    stored: r.stored,
                    evicted: r.evicted,
                }
            }
            StoreDrop { name, seed, blocks } => {
                let w = c.store(name).map_err(e)?;
                fill(w.path(), *seed, *blocks).map_err(io)?;
                drop(w);
                Outcome::Done
            }
            Begin { name, seed, blocks } => {
                let w = c.store(name).map_err(e)?;
                fill(w.path(), *seed, *blocks).map_err(io)?;
                self.pending = Some(w);
                Outcome::Done
            }
            Commit => {
                let w = self.pending.take().ok_or("no pending store")?;
                let r = w.commit_report().map_err(e)?;
                Outcome::Stored {
                    stored: r.stored,
                    evicted: r.evicted,
                }
            }
            CommitAndLoad { keep } => {
                let w = self.pending.take().ok_or("no pending store")?;
                let o = w.commit_and_load().map_err(e)?;
                let answer = got(&o);
                if *keep {
                    self.held.push(o);
                }
                answer
            }
            Abandon => {
                self.pending = None;
                Outcome::Done
            }
            LoadOrBuild {
                name,
                seed,
                blocks,
                keep,
            } => {
                let o = c
                    .load_or_build(name, |dir| fill(dir, *seed, *blocks))
                    .map_err(io)?;
                let answer = got(&o);
                if *keep {
                    self.held.push(o);
                }
                answer
            }
            Hold { name } => match c.load(name).map_err(e)? {
                Some(entry) => {
                    let seed = read_seed(entry.path());
                    self.held.push(Obtained::Hit(entry));
                    Outcome::Held(Some(seed))
                }
                None => Outcome::Held(None),
            },
            Release { slot } => {
                if self.held.is_empty() {
                    return Err("nothing held".into());
                }
                let i = slot % self.held.len();
                drop(self.held.remove(i));
                Outcome::Done
            }
            Contains { name } => Outcome::Contains(c.contains(name).map_err(e)?),
            Stage => {
                let s = c.stage().map_err(e)?;
                fs::write(s.path().join("scratch"), b"scratch").map_err(io)?;
                drop(s);
                Outcome::Done
            }
            SetLimit(max) => {
                let max = max.map_or(MaxSize::Unlimited, MaxSize::Bytes);
                c.set_info(CacheInfo {
                    maximum_size: Some(max),
                    ..Default::default()
                })
                .map_err(e)?;
                Outcome::Done
            }
            PruneTo(bytes) => pruned(c.prune(PruneOptions::new().to(*bytes)).map_err(e)?),
            PruneAge(secs) => pruned(
                c.prune(PruneOptions::new().unused_for(Duration::from_secs(*secs)))
                    .map_err(e)?,
            ),
            Remove { name } => Outcome::Removed(c.remove(name).map_err(e)?),
            Sweep => {
                let s = c.sweep().map_err(e)?;
                Outcome::Swept {
                    removed: s.removed.len(),
                    freed: s.freed,
                }
            }
            Repair => Outcome::Repaired(
                c.repair()
                    .map_err(e)?
                    .map(|r| (r.removed.len(), r.accounted)),
            ),
            Verify => {
                let (mut ok, mut unverified, mut miss, mut bad) = (0, 0, 0, 0);
                for (_, v) in c.verify_all(&|_| {}).map_err(e)? {
                    match v.map_err(e)? {
                        fscache::Verified::Ok(_) => ok += 1,
                        fscache::Verified::Unverified => unverified += 1,
                        fscache::Verified::Miss => miss += 1,
                        // Mismatch, and whatever else a newer version reports.
                        _ => bad += 1,
                    }
                }
                Outcome::Verified {
                    ok,
                    unverified,
                    miss,
                    bad,
                }
            }
            Held => Outcome::Seeds(self.held()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_and_answer_parses_back_to_itself() {
        let name = || "a".to_owned();
        let requests = [
            Request::Store {
                name: name(),
                seed: 7,
                blocks: 2,
            },
            Request::StoreDrop {
                name: name(),
                seed: 1,
                blocks: 1,
            },
            Request::Begin {
                name: name(),
                seed: 0,
                blocks: 3,
            },
            Request::Commit,
            Request::CommitAndLoad { keep: true },
            Request::CommitAndLoad { keep: false },
            Request::Abandon,
            Request::LoadOrBuild {
                name: name(),
                seed: 9,
                blocks: 1,
                keep: true,
            },
            Request::Hold { name: name() },
            Request::Release { slot: 5 },
            Request::Contains { name: name() },
            Request::Stage,
            Request::SetLimit(Some(40960)),
            Request::SetLimit(None),
            Request::PruneTo(0),
            Request::PruneAge(60),
            Request::Remove { name: name() },
            Request::Sweep,
            Request::Repair,
            Request::Verify,
            Request::Held,
        ];
        for r in requests {
            assert_eq!(Request::parse(&r.to_string()), Ok(r.clone()), "{r}");
        }
        let outcomes = [
            Outcome::Done,
            Outcome::Stored {
                stored: Stored::Committed,
                evicted: vec!["a".into(), "b".into()],
            },
            Outcome::Stored {
                stored: Stored::NoSpace,
                evicted: vec![],
            },
            Outcome::Got {
                got: Got::Uncached(Stored::TooLarge),
                seed: None,
            },
            Outcome::Got {
                got: Got::Hit,
                seed: Some(3),
            },
            Outcome::Held(None),
            Outcome::Held(Some(None)),
            Outcome::Held(Some(Some(4))),
            Outcome::Contains(true),
            Outcome::Removed(Removed::Removed { freed: 4096 }),
            Outcome::Removed(Removed::InUse),
            Outcome::Removed(Removed::Missing),
            Outcome::Pruned {
                removed: vec!["c".into()],
                skipped: vec![],
                freed: 8192,
            },
            Outcome::Swept {
                removed: 2,
                freed: 1,
            },
            Outcome::Repaired(None),
            Outcome::Repaired(Some((1, 4096))),
            Outcome::Verified {
                ok: 1,
                unverified: 2,
                miss: 3,
                bad: 4,
            },
            Outcome::Seeds(vec![Some(1), None]),
            Outcome::Seeds(vec![]),
            Outcome::Error("failed to open `x`: gone".into()),
        ];
        for o in outcomes {
            assert_eq!(Outcome::parse(&o.to_string()), Ok(o.clone()), "{o}");
        }
    }

    #[test]
    fn content_names_its_seed_and_nothing_else_does() {
        let c = content(42, 2 * BLOCK as usize);
        assert_eq!(seed_of(&c), Some(42));
        assert_eq!(seed_of(&content(43, 2 * BLOCK as usize)), Some(43));
        let mut damaged = c.clone();
        damaged[100] ^= 1;
        assert_eq!(seed_of(&damaged), None);
        assert_eq!(seed_of(&c[..100]), None);
    }
}
