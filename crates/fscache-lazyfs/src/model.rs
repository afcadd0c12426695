//! The durability model: what a power loss keeps of the operations the file
//! system forwarded. Pure bookkeeping, no I/O: the file system layer feeds
//! it and supplies file contents.
//!
//! # The rules it applies
//!
//! * A directory's entries are durable as of its last `fsync`. Every
//!   operation that changes entries (create, `mkdir`, `link`, `unlink`,
//!   `rmdir`, `rename`, `symlink`, `mknod`) is one pending *metadata
//!   operation*, listed with each directory it touches (a `rename` between
//!   two directories touches both, and is applied whole or not at all).
//! * `fsync` of a directory makes durable every pending operation that
//!   touches it, and everything that precedes one of those in any
//!   directory it touches (transitively): per directory, the durable
//!   operations are always a prefix of what happened there.
//! * A file's data is durable as of its last `fsync`/`fdatasync`; writes
//!   and truncations since then dirty whole pages ([`PAGE`] bytes).
//! * [`Loss::AllUnsynced`] keeps exactly what was made durable;
//!   [`Loss::Random`] also keeps a seeded random subset of the rest that
//!   respects the per-directory prefix order (an operation kept in a
//!   directory implies every earlier one there), any subset of a file's
//!   dirty pages, and either its durable or its current size.
//! * Inode attributes (mode, owner, times, xattrs) are taken as they are
//!   at the loss: the model does not roll them back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};

/// The page size at which unsynced file data is lost.
pub const PAGE: u64 = 4096;

/// The model's identity of an inode (the FUSE inode number).
pub type NodeId = u64;

/// What a power loss forgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Everything that was not made durable by an `fsync`.
    AllUnsynced,
    /// A random subset of what was not made durable, chosen from `seed`,
    /// respecting the `fsync` barriers (see the module docs).
    Random {
        /// The seed of the choice: the same operations and seed lose the
        /// same things.
        seed: u64,
    },
}

/// One change to a directory entry: `dir/name` now names `node`, or
/// nothing.
#[derive(Clone, Debug)]
struct Effect {
    dir: NodeId,
    name: OsString,
    node: Option<NodeId>,
}

/// A pending metadata operation.
#[derive(Clone, Debug)]
struct MetaOp {
    effects: Vec<Effect>,
    what: String,
}

impl MetaOp {
    fn dirs(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.effects.iter().map(|e| e.dir)
    }
}

/// A file's data durability.
#[derive(Clone, Debug, Default)]
struct FileState {
    /// The durable content; `None`: unchanged since the mount (the live
    /// file is its durable content).
    durable: Option<Vec<u8>>,
    /// Pages written or truncated since the last sync.
    dirty: BTreeSet<u64>,
}

/// Where the durable state is, after a loss.
#[derive(Debug, Default)]
pub struct Durable {
    /// The durable entries of every directory that changed since the
    /// mount; a directory not listed is as it is live.
    pub dirs: HashMap<NodeId, BTreeMap<OsString, NodeId>>,
    /// The durable content of every file that changed since the mount; a
    /// file not listed is as it is live.
    pub files: HashMap<NodeId, Vec<u8>>,
    /// What was lost: one line per metadata operation or file.
    pub lost: Vec<String>,
    /// How many pending metadata operations a random loss kept anyway.
    pub kept: usize,
}

/// A small seeded generator (splitmix64): the loss must replay from its
/// seed, and needs no cryptographic quality.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// The pending (not yet durable) state of the file system since its mount.
#[derive(Debug, Default)]
pub struct Model {
    next_op: u64,
    /// Pending metadata operations by their order.
    pending: BTreeMap<u64, MetaOp>,
    /// The pending operations touching each directory.
    by_dir: HashMap<NodeId, BTreeSet<u64>>,
    /// The durable entries of each directory changed since the mount.
    dirs: HashMap<NodeId, BTreeMap<OsString, NodeId>>,
    files: HashMap<NodeId, FileState>,
    durable_ops: u64,
}

impl Model {
    /// An empty model: everything on the backing directory is durable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `dir`'s durable entries must be recorded (with
    /// [`Model::record_dir`]) before it is first changed.
    pub fn needs_dir(&self, dir: NodeId) -> bool {
        !self.dirs.contains_key(&dir)
    }

    /// Record the durable entries of `dir` (its live entries before its
    /// first change since the mount; none for a new directory).
    pub fn record_dir(&mut self, dir: NodeId, entries: BTreeMap<OsString, NodeId>) {
        self.dirs.entry(dir).or_insert(entries);
    }

    /// Whether the durable content of `file` must be recorded (with
    /// [`Model::record_file`]) before it is first changed.
    pub fn needs_file(&self, file: NodeId) -> bool {
        !self.files.contains_key(&file)
    }

    /// Record the durable content of `file` (its live content before its
    /// first change since the mount; empty for a new file).
    pub fn record_file(&mut self, file: NodeId, content: Vec<u8>) {
        self.files.entry(file).or_insert(FileState {
            durable: Some(content),
            dirty: BTreeSet::new(),
        });
    }

    /// Bytes `off..off + len` of `file` were written (or deallocated).
    pub fn write(&mut self, file: NodeId, off: u64, len: u64) {
        let st = self.files.entry(file).or_default();
        if len == 0 {
            return;
        }
        let first = off / PAGE;
        let last = (off + len - 1) / PAGE;
        st.dirty.extend(first..=last);
    }

    /// `file` was truncated or extended from `old` to `new` bytes.
    pub fn resize(&mut self, file: NodeId, old: u64, new: u64) {
        let (lo, hi) = if old < new { (old, new) } else { (new, old) };
        self.write(file, lo, (hi - lo).max(1));
    }

    /// `fsync`/`fdatasync` of `file`, whose content is now `content`.
    pub fn sync_file(&mut self, file: NodeId, content: Vec<u8>) {
        let st = self.files.entry(file).or_default();
        st.durable = Some(content);
        st.dirty.clear();
    }

    /// Files with unsynced data.
    pub fn dirty_files(&self) -> Vec<NodeId> {
        self.files
            .iter()
            .filter(|(_, s)| !s.dirty.is_empty())
            .map(|(&n, _)| n)
            .collect()
    }

    /// How many metadata operations are pending.
    pub fn pending_ops(&self) -> usize {
        self.pending.len()
    }

    /// How many metadata operations were made durable by an `fsync`.
    pub fn durable_ops(&self) -> u64 {
        self.durable_ops
    }

    /// Descriptions of the pending metadata operations, oldest first.
    pub fn pending_log(&self) -> Vec<String> {
        self.pending.values().map(|o| o.what.clone()).collect()
    }

    fn push(&mut self, effects: Vec<Effect>, what: String) {
        let id = self.next_op;
        self.next_op += 1;
        let op = MetaOp { effects, what };
        for d in op.dirs() {
            self.by_dir.entry(d).or_default().insert(id);
        }
        self.pending.insert(id, op);
    }

    /// `dir/name` now names `node` (create, `mkdir`, `link`, `symlink`,
    /// `mknod`).
    pub fn add(&mut self, dir: NodeId, name: &OsStr, node: NodeId, what: String) {
        let effects = vec![Effect {
            dir,
            name: name.to_owned(),
            node: Some(node),
        }];
        self.push(effects, what);
    }

    /// `dir/name` was removed (`unlink`, `rmdir`).
    pub fn remove(&mut self, dir: NodeId, name: &OsStr, what: String) {
        let effects = vec![Effect {
            dir,
            name: name.to_owned(),
            node: None,
        }];
        self.push(effects, what);
    }

    /// `from/name` (naming `node`) was renamed to `to/new_name`, replacing
    /// what was there; with `exchanged`, that target (`exchanged`) now has
    /// the old name.
    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &mut self,
        from: NodeId,
        name: &OsStr,
        node: NodeId,
        to: NodeId,
        new_name: &OsStr,
        exchanged: Option<NodeId>,
        what: String,
    ) {
        let effects = vec![
            Effect {
                dir: from,
                name: name.to_owned(),
                node: exchanged,
            },
            Effect {
                dir: to,
                name: new_name.to_owned(),
                node: Some(node),
            },
        ];
        self.push(effects, what);
    }

    fn apply(&mut self, id: u64) {
        let Some(op) = self.pending.remove(&id) else {
            return;
        };
        for d in op.dirs() {
            if let Some(set) = self.by_dir.get_mut(&d) {
                set.remove(&id);
            }
        }
        for e in op.effects {
            let entries = self.dirs.entry(e.dir).or_default();
            match e.node {
                Some(n) => {
                    entries.insert(e.name, n);
                }
                None => {
                    entries.remove(&e.name);
                }
            }
        }
    }

    /// `fsync` of directory `dir`: its pending operations and all that
    /// precede them (see the module docs) become durable.
    pub fn sync_dir(&mut self, dir: NodeId) {
        let mut need: BTreeSet<u64> = BTreeSet::new();
        let mut work: Vec<u64> = self
            .by_dir
            .get(&dir)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        while let Some(id) = work.pop() {
            if !need.insert(id) {
                continue;
            }
            let Some(op) = self.pending.get(&id) else {
                continue;
            };
            for d in op.dirs() {
                if let Some(set) = self.by_dir.get(&d) {
                    work.extend(set.range(..id).filter(|i| !need.contains(i)));
                }
            }
        }
        self.durable_ops += need.len() as u64;
        for id in need {
            self.apply(id);
        }
    }

    /// `sync`/`syncfs`: everything becomes durable; `content` gives the
    /// live content of each dirty file.
    pub fn sync_all(&mut self, content: &mut dyn FnMut(NodeId) -> Option<Vec<u8>>) {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        self.durable_ops += ids.len() as u64;
        for id in ids {
            self.apply(id);
        }
        for f in self.dirty_files() {
            match content(f) {
                Some(c) => self.sync_file(f, c),
                // Gone live: what it had stays lost (nothing can name it).
                None => {
                    if let Some(s) = self.files.get_mut(&f) {
                        s.dirty.clear();
                    }
                }
            }
        }
    }

    /// The power loss: what survives. `content` gives the live content of
    /// a file (for the pages a random loss keeps).
    pub fn lose(
        mut self,
        loss: Loss,
        content: &mut dyn FnMut(NodeId) -> Option<Vec<u8>>,
    ) -> Durable {
        let mut rng = match loss {
            Loss::AllUnsynced => None,
            Loss::Random { seed } => Some(Rng::new(seed)),
        };
        let mut lost = Vec::new();
        let mut kept = 0;
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        let mut blocked: HashSet<NodeId> = HashSet::new();
        for id in ids {
            let op = &self.pending[&id];
            let free = op.dirs().all(|d| !blocked.contains(&d));
            let keep = free && rng.as_mut().is_some_and(Rng::coin);
            if keep {
                kept += 1;
                self.apply(id);
            } else {
                lost.push(format!("lost: {}", op.what));
                let dirs: Vec<NodeId> = op.dirs().collect();
                blocked.extend(dirs);
            }
        }
        let mut files = HashMap::new();
        for (node, st) in self.files {
            let Some(mut data) = st.durable else {
                // Unchanged since the mount.
                continue;
            };
            if !st.dirty.is_empty() {
                let live = match rng.as_mut() {
                    Some(_) => content(node),
                    None => None,
                };
                match (live, rng.as_mut()) {
                    (Some(live), Some(rng)) => {
                        let before = data.clone();
                        if rng.coin() {
                            data.resize(live.len(), 0);
                        }
                        let mut lost_pages = 0;
                        for &page in &st.dirty {
                            let lo = (page * PAGE) as usize;
                            if lo >= data.len() {
                                continue;
                            }
                            let hi = (lo + PAGE as usize).min(data.len());
                            if rng.coin() {
                                let src = |i: usize| live.get(i).copied().unwrap_or(0);
                                for (i, b) in data[lo..hi].iter_mut().enumerate() {
                                    *b = src(lo + i);
                                }
                            } else {
                                lost_pages += 1;
                            }
                        }
                        if data != live {
                            lost.push(format!(
                                "lost: node {node}: {} of {} dirty pages, size {} of {} (was {})",
                                lost_pages,
                                st.dirty.len(),
                                data.len(),
                                live.len(),
                                before.len()
                            ));
                        }
                    }
                    _ => lost.push(format!(
                        "lost: node {node}: {} dirty pages, size back to {}",
                        st.dirty.len(),
                        data.len()
                    )),
                }
            }
            files.insert(node, data);
        }
        Durable {
            dirs: self.dirs,
            files,
            lost,
            kept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(d: &Durable, dir: NodeId) -> Vec<String> {
        d.dirs
            .get(&dir)
            .map(|m| m.keys().map(|k| k.to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    fn none(_: NodeId) -> Option<Vec<u8>> {
        None
    }

    #[test]
    fn unsynced_entries_and_data_are_lost() {
        let mut m = Model::new();
        m.record_dir(1, BTreeMap::new());
        m.record_file(2, Vec::new());
        m.add(1, OsStr::new("f"), 2, "create f".into());
        m.write(2, 0, 10);
        let d = m.lose(Loss::AllUnsynced, &mut none);
        assert!(names(&d, 1).is_empty());
        assert_eq!(d.files[&2], b"");
        assert_eq!(d.lost.len(), 2);
    }

    #[test]
    fn dir_fsync_keeps_names_not_data() {
        let mut m = Model::new();
        m.record_dir(1, BTreeMap::new());
        m.record_file(2, Vec::new());
        m.add(1, OsStr::new("f"), 2, "create f".into());
        m.write(2, 0, 10);
        m.sync_dir(1);
        let d = m.lose(Loss::AllUnsynced, &mut none);
        assert_eq!(names(&d, 1), ["f"]);
        assert_eq!(d.files[&2], b"", "the data was never synced");
    }

    #[test]
    fn rename_is_whole_and_pulls_earlier_ops_of_both_dirs() {
        let mut m = Model::new();
        for d in [1, 3] {
            m.record_dir(d, BTreeMap::new());
        }
        m.add(1, OsStr::new("a"), 2, "create 1/a".into());
        m.add(3, OsStr::new("x"), 4, "create 3/x".into());
        m.rename(
            1,
            OsStr::new("a"),
            2,
            3,
            OsStr::new("b"),
            None,
            "rename".into(),
        );
        m.add(1, OsStr::new("later"), 5, "create 1/later".into());
        m.sync_dir(3);
        let d = m.lose(Loss::AllUnsynced, &mut none);
        assert_eq!(names(&d, 3), ["b", "x"]);
        assert!(names(&d, 1).is_empty(), "created, renamed away; later lost");
    }

    #[test]
    fn random_loss_keeps_a_prefix_per_directory() {
        for seed in 0..200 {
            let mut m = Model::new();
            m.record_dir(1, BTreeMap::new());
            for i in 0..8u64 {
                m.add(
                    1,
                    OsStr::new(&format!("{i}")),
                    10 + i,
                    format!("create {i}"),
                );
            }
            let d = m.lose(Loss::Random { seed }, &mut none);
            let mut kept: Vec<u64> = names(&d, 1).iter().map(|n| n.parse().unwrap()).collect();
            kept.sort();
            let want: Vec<u64> = (0..kept.len() as u64).collect();
            assert_eq!(kept, want, "seed {seed}: not a prefix");
        }
    }

    #[test]
    fn random_loss_mixes_pages() {
        let mut m = Model::new();
        m.record_file(2, vec![b'a'; 3 * PAGE as usize]);
        m.write(2, 0, 3 * PAGE);
        let live = vec![b'b'; 3 * PAGE as usize];
        let mut saw = HashSet::new();
        for seed in 0..64 {
            let mut m2 = Model::new();
            m2.record_file(2, vec![b'a'; 3 * PAGE as usize]);
            m2.write(2, 0, 3 * PAGE);
            let d = m2.lose(Loss::Random { seed }, &mut |_| Some(live.clone()));
            let data = &d.files[&2];
            let pages: Vec<u8> = data.chunks(PAGE as usize).map(|c| c[0]).collect();
            for c in data.chunks(PAGE as usize) {
                assert!(c.iter().all(|&b| b == c[0]), "a page is all old or all new");
            }
            saw.insert(pages);
        }
        assert!(saw.len() > 4, "random losses differ: {saw:?}");
        m.sync_file(2, live.clone());
        let d = m.lose(Loss::AllUnsynced, &mut none);
        assert_eq!(d.files[&2], live);
    }
}
