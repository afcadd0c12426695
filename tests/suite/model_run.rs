//! The model-based tests: random cases of [`Op`]s run against the real
//! cache through 3–4 handles and the reference [`Model`], with every
//! report and the on-disk state checked after every step. Two drivers run
//! the same cases: handles in this process, and handles each in its own
//! `fscache-test-helper serve` process, driven over a pipe.
//!
//! A failure shrinks to a short case, printed as `vec![Op::…]`: paste it
//! into [`regressions`] below.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use fscache::FsCache;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use crate::cache_util::{entry_space, fresh};
use crate::inspect::{debris, entries, recorded, recorded_sum, size_file};
use crate::model::*;
use crate::util::{Reporter, HELPER};
use fscache_workspace::model::{read_seed, Handle};

/// The handles of a case, as the runner sees them.
pub trait Driver {
    /// Open handle `h` (closed now).
    fn open(&mut self, h: usize);
    /// Close handle `h` (open now), dropping what it holds.
    fn close(&mut self, h: usize);
    /// Run a handle's operation on handle `h` (open now).
    fn run(&mut self, h: usize, op: &Op) -> Outcome;
    /// The seed of the content each thing handle `h` holds shows now.
    fn held(&mut self, h: usize) -> Vec<Option<u64>>;
}

/// Handles in this process, each its own `FsCache::open`.
pub struct InProcess {
    root: PathBuf,
    slots: Vec<Option<Handle>>,
}

impl InProcess {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            slots: (0..HANDLES).map(|_| None).collect(),
        }
    }
}

impl Driver for InProcess {
    fn open(&mut self, h: usize) {
        let cache = FsCache::open(&format!("model-{h}"), &self.root).expect("open a handle");
        self.slots[h] = Some(Handle::new(cache));
    }

    fn close(&mut self, h: usize) {
        self.slots[h] = None;
    }

    fn run(&mut self, h: usize, op: &Op) -> Outcome {
        let slot = self.slots[h].as_mut().expect("an open handle");
        slot.run(&op.request())
    }

    fn held(&mut self, h: usize) -> Vec<Option<u64>> {
        self.slots[h].as_ref().expect("an open handle").held()
    }
}

/// Handles each in its own `fscache-test-helper serve` process.
pub struct Processes {
    root: PathBuf,
    kids: Vec<Option<Reporter>>,
}

impl Processes {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            kids: (0..HANDLES).map(|_| None).collect(),
        }
    }
}

impl Driver for Processes {
    fn open(&mut self, h: usize) {
        let mut command = Command::new(HELPER);
        command
            .arg("serve")
            .arg(&self.root)
            .arg(format!("model-{h}"));
        let mut kid = Reporter::spawn(command);
        // Only once it says so does the child hold its handle open.
        kid.expect_line("ready");
        self.kids[h] = Some(kid);
    }

    fn close(&mut self, h: usize) {
        self.kids[h].take().expect("an open handle").finish();
    }

    fn run(&mut self, h: usize, op: &Op) -> Outcome {
        let kid = self.kids[h].as_mut().expect("an open handle");
        let line = kid.ask(&op.request().to_string());
        Outcome::parse(&line).unwrap_or_else(Outcome::Error)
    }

    fn held(&mut self, h: usize) -> Vec<Option<u64>> {
        let kid = self.kids[h].as_mut().expect("an open handle");
        let line = kid.ask(&Request::Held.to_string());
        match Outcome::parse(&line) {
            Ok(Outcome::Seeds(seeds)) => seeds,
            _ => panic!("not a `seeds` answer: {line:?}"),
        }
    }
}

/// The space a directory takes on the test file system (0 on tmpfs).
fn dir_space() -> u64 {
    static SPACE: OnceLock<u64> = OnceLock::new();
    *SPACE.get_or_init(|| entry_space(BLOCK as usize) - BLOCK)
}

/// Wait until the file system clock (the coarse one that stamps atimes)
/// has advanced, stamping `probe` to see it.
fn tick(probe: &Path) {
    use rustix::fs::{futimens, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(probe)
        .expect("create the clock probe");
    let touch = || {
        let now = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_NOW,
            },
            last_modification: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
        };
        futimens(&f, &now).expect("stamp the clock probe");
        let m = f.metadata().expect("stat the clock probe");
        (m.atime(), m.atime_nsec())
    };
    let start = touch();
    while touch() <= start {
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Set entry `name`'s last use to `secs` seconds ago.
fn age(root: &Path, name: &str, secs: u64) {
    let lock = root.join("objects").join(name).join("object.lock");
    let f = fs::File::open(&lock).expect("open object.lock");
    let t = SystemTime::now() - Duration::from_secs(secs);
    f.set_times(fs::FileTimes::new().set_accessed(t))
        .expect("set the atime");
}

/// Damage the kept eviction list `cache.evict` (if there is one) as `how`
/// says.
fn damage_list(root: &Path, how: ListDamage) {
    let path = root.join("cache.evict");
    let Ok(mut bytes) = fs::read(&path) else {
        return;
    };
    match how {
        ListDamage::Truncate => bytes.truncate(bytes.len() / 2),
        ListDamage::Flip => {
            if let Some(b) = bytes.len().checked_sub(2).and_then(|i| bytes.get_mut(i)) {
                *b ^= 0x01;
            }
        }
        ListDamage::State => {
            for b in bytes.iter_mut().take(120).skip(21) {
                *b = b'9';
            }
        }
        ListDamage::Remove => {
            fs::remove_file(&path).expect("remove cache.evict");
            return;
        }
    }
    // In place, as a torn write would leave it.
    fs::write(&path, bytes).expect("damage cache.evict");
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// The committed entries on disk: named directories with an
/// `object.info` (an empty one a crashed removal left is debris).
fn on_disk(root: &Path) -> BTreeSet<String> {
    entries(root)
        .into_iter()
        .filter(|n| root.join("objects").join(n).join("object.info").exists())
        .collect()
}

/// Named directories in `objects/` that are no entries: the debris of
/// crashed removals.
fn named_debris(root: &Path) -> BTreeSet<String> {
    let valid = on_disk(root);
    entries(root)
        .into_iter()
        .filter(|n| !valid.contains(n))
        .collect()
}

/// Whether strace can inject faults here (`cargo xtask ci` installs it);
/// without it, [`Op::Fault`] is skipped, and said so once.
fn strace_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let works = Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=none", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !works {
            eprintln!(
                "model: strace is missing or cannot trace here: Fault operations are skipped"
            );
        }
        works
    })
}

/// What a faulty store left under its name: the content's seed (`None`:
/// not content this test made) and the recorded size; `None` if nothing.
type AfterFault = Option<(Option<u64>, u64)>;

/// Run a store in a process of its own with one system call failing, then
/// check what it left, and that the books are exact or marked suspect, and
/// reconcile them live as the next prune does. What the model needs:
/// the outcome reported (`None`: the store failed) and the seed and
/// recorded size under `name` afterwards.
fn fault(
    root: &Path,
    (call, nth, errno): (usize, u32, usize),
    name: &str,
    seed: u64,
    blocks: u64,
) -> Result<(Option<fscache::Stored>, AfterFault), String> {
    let errno = FAULT_ERRNOS[errno];
    let what = format!("{}#{nth} → {errno}", FAULT_CALLS[call]);
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!(
            "inject={}:error={errno}:when={nth}",
            FAULT_CALLS[call]
        ))
        .arg(HELPER)
        .arg("store-model")
        .arg(root)
        .arg(name)
        .arg(seed.to_string())
        .arg(blocks.to_string())
        .output()
        .map_err(|e| format!("spawn strace: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reported = match out.status.code() {
        Some(0) => match Outcome::parse(stdout.lines().last().unwrap_or("")) {
            Ok(Outcome::Stored { stored, .. }) => Some(stored),
            _ => return Err(format!("{what}: the store printed {stdout:?}")),
        },
        // 1: an I/O error of the helper itself, 4: an error of the library,
        // 127: the dynamic loader failed (the call failed before `main`).
        // An interrupted call is retried, by the helper and the library
        // alike (the dynamic loader aside, which fails before `main`).
        Some(1 | 4) if errno == "EINTR" => {
            return Err(format!(
                "{what}: an interrupted call was not retried: {stdout}{stderr}"
            ))
        }
        Some(1 | 4 | 127) => None,
        _ => {
            return Err(format!(
                "{what}: the store ended with {} (a panic or a signal): {stdout}{stderr}",
                out.status
            ))
        }
    };
    let (size, sum) = (size_file(root), recorded_sum(root));
    ensure!(
        size >= sum,
        "{what}: the books are under-counted: cache.size {size}, object.info sum {sum}"
    );
    // What the next prune does, live (the handles of the case stay open):
    // sweep the debris, then settle the books if the failure marked them
    // suspect. The check after this step wants them exact: an over-count
    // that no marker announced would stay.
    let dir = fscache_dir::CacheDir::open(root).map_err(|e| e.to_string())?;
    fscache_quota::sweep(&dir).map_err(|e| format!("{what}: the sweep after it: {e}"))?;
    let (size, sum) = (size_file(root), recorded_sum_all(root));
    ensure!(
        size == sum || fscache_quota::is_suspect(&dir),
        "{what}: the books are over (cache.size {size}, recorded {sum}) and not marked suspect"
    );
    fscache_quota::reconcile(
        &dir,
        fscache_quota::Patience::Upto(std::time::Duration::from_secs(10)),
    )
    .map_err(|e| format!("{what}: the reconcile after it: {e}"))?;
    let now = on_disk(root).contains(name).then(|| {
        (
            read_seed(&root.join("objects").join(name).join("data")),
            recorded(root, name),
        )
    });
    Ok((reported, now))
}

/// The sizes every `objects/*/object.info` records, `uuid-*` ones of
/// crashed commits included (on the books until a sweep).
fn recorded_sum_all(root: &Path) -> u64 {
    let Ok(list) = std::fs::read_dir(root.join("objects")) else {
        return 0;
    };
    list.flatten()
        .filter_map(|e| std::fs::read(e.path().join("object.info")).ok())
        .filter_map(|b| fscache_quota::ObjectInfo::parse(&b).size)
        .sum()
}

/// Run a crash: a helper process of its own stores (or removes) and is
/// killed at the point. `Err` if it was not killed there.
fn crash(root: &Path, point: CrashPoint, name: &str, seed: u64, blocks: u64) -> Verdict {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(HELPER)
        .arg("crash-model")
        .arg(point.name())
        .arg(root)
        .arg(name)
        .arg(seed.to_string())
        .arg(blocks.to_string())
        .output()
        .map_err(|e| format!("spawn {HELPER}: {e}"))?;
    ensure!(
        out.status.signal() == Some(9),
        "the crash at {} was not reached ({}): {}{}",
        point.name(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What must hold after every step: the disk is the model's, the books
/// balance, the limit holds, held content is intact, and no debris.
fn check(model: &mut Model, root: &Path, driver: &mut dyn Driver) -> Verdict {
    if model.debris_unsure {
        let anon = debris(root)
            .iter()
            .filter(|n| n.starts_with("objects/"))
            .count();
        model.settle_debris(anon == model.anon_in_objects() && named_debris(root).is_empty());
    }
    let disk = on_disk(root);
    let want: BTreeSet<String> = model.entries.keys().cloned().collect();
    ensure!(
        disk == want,
        "the disk has entries {disk:?}, the model {want:?}"
    );
    for (name, e) in &model.entries {
        let dir = root.join("objects").join(name);
        ensure!(
            recorded(root, name) == e.size,
            "{name} records size {}, the model {}",
            recorded(root, name),
            e.size
        );
        let seed = read_seed(&dir.join("data"));
        ensure!(
            seed == Some(e.seed),
            "{name} holds content {seed:?}, last committed was {}",
            e.seed
        );
    }
    let (size, sum) = (size_file(root), recorded_sum(root));
    ensure!(
        size == sum + model.debris_charge() && sum == model.total(),
        "books: cache.size {size}, object.info sum {sum}, model {} + crash debris {}",
        model.total(),
        model.debris_charge()
    );
    model.check_limit(size)?;
    for (h, holding) in model.held.iter().enumerate() {
        if !model.open[h] {
            continue;
        }
        let seen = driver.held(h);
        let want: Vec<Option<u64>> = holding.iter().map(|x| Some(x.seed())).collect();
        ensure!(
            seen == want,
            "handle {h} holds content {seen:?}, the model {want:?}"
        );
    }
    let d = debris(root);
    let anon = d.iter().filter(|n| n.starts_with("objects/")).count();
    ensure!(
        anon == model.anon_in_objects() + model.debris.len()
            && d.iter().all(|n| n.starts_with("objects/")),
        "debris {d:?}: the handles own {} anonymous entries, crashes left {}",
        model.anon_in_objects(),
        model.debris.len()
    );
    let named = named_debris(root);
    ensure!(
        named == model.named_debris,
        "named directories without object.info {named:?}, crashed removals left {:?}",
        model.named_debris
    );
    Ok(())
}

/// Run `ops` on a fresh cache through the driver `make` builds, against
/// the model. `Err` names the step and what the model did not allow.
pub fn run_case<D: Driver>(ops: &[Op], make: impl FnOnce(&Path) -> D) -> Verdict {
    let (tmp, root) = fresh();
    let probe = tmp.path().join("clock-probe");
    let mut driver = make(&root);
    let mut model = Model::new(dir_space());
    for h in 0..OPEN_AT_START {
        driver.open(h);
    }
    let start = Op::SetLimit {
        h: 0,
        blocks: Some(START_LIMIT_BLOCKS),
    };
    let out = driver.run(0, &start);
    ensure!(out == Outcome::Done, "setting the first limit: {out}");
    let result = (|| {
        for (step, op) in ops.iter().enumerate() {
            let fail = |msg: String, model: &Model| {
                format!("step {step} ({op:?}): {msg}\n  model: {model:?}")
            };
            if !model.applies(op) {
                continue;
            }
            let before = on_disk(&root);
            match *op {
                Op::Tick => {
                    tick(&probe);
                    model.epoch += 1;
                }
                Op::Age { name, secs } => {
                    age(&root, NAMES[name], secs);
                    let e = model.entries.get_mut(NAMES[name]).expect("applies");
                    e.used = Use::Aged(std::cmp::Reverse(secs));
                }
                Op::DamageList { how } => damage_list(&root, how),
                Op::Open { h } => {
                    driver.open(h);
                    model.open[h] = true;
                }
                Op::Close { h } => {
                    driver.close(h);
                    model.close(h);
                }
                Op::Crash {
                    point,
                    name,
                    seed,
                    blocks,
                } => {
                    if let Err(m) = crash(&root, point, NAMES[name], seed, blocks) {
                        return Err(fail(m, &model));
                    }
                    let after = on_disk(&root);
                    let lost: BTreeSet<String> = before.difference(&after).cloned().collect();
                    let expect: BTreeSet<String> = match point {
                        CrashPoint::Rmdir => [NAMES[name].to_owned()].into(),
                        _ => BTreeSet::new(),
                    };
                    if lost != expect {
                        return Err(fail(format!("the crash removed {lost:?}"), &model));
                    }
                    model.crash(point, NAMES[name], blocks);
                }
                Op::Fault {
                    call,
                    nth,
                    errno,
                    name,
                    seed,
                    blocks,
                } => {
                    if !strace_works() {
                        continue;
                    }
                    let seed = FAULT_SEEDS + seed;
                    let (reported, now) =
                        match fault(&root, (call, nth, errno), NAMES[name], seed, blocks) {
                            Ok(r) => r,
                            Err(m) => return Err(fail(m, &model)),
                        };
                    let after = on_disk(&root);
                    let lost: BTreeSet<String> = before.difference(&after).cloned().collect();
                    if let Err(m) = model.fault(NAMES[name], seed, blocks, reported, &lost, now) {
                        return Err(fail(format!("{m} (reported: {reported:?})"), &model));
                    }
                }
                _ => {
                    let h = op.handle().expect("a handle's operation");
                    let committing = match *op {
                        Op::Store { name, .. } | Op::LoadOrBuild { name, .. } => {
                            Some(NAMES[name].to_owned())
                        }
                        Op::Commit { .. } | Op::CommitAndLoad { .. } => {
                            model.pending[h].as_ref().map(|p| p.name.clone())
                        }
                        _ => None,
                    };
                    let out = driver.run(h, op);
                    let after = on_disk(&root);
                    let mut removed: BTreeSet<String> =
                        before.difference(&after).cloned().collect();
                    // A commit under a name that was there evicted the old
                    // entry first: the name is on disk before and after.
                    let replaced = matches!(
                        out,
                        Outcome::Stored {
                            stored: fscache::Stored::Committed,
                            ..
                        } | Outcome::Got {
                            got: Got::Built,
                            ..
                        }
                    );
                    if let Some(name) = committing.filter(|n| replaced && before.contains(n)) {
                        removed.insert(name);
                    }
                    let verdict = model.apply(op, &out, &removed);
                    if let Err(m) = verdict {
                        return Err(fail(format!("{m} (reported: {out})"), &model));
                    }
                }
            }
            if let Err(m) = check(&mut model, &root, &mut driver) {
                return Err(fail(m, &model));
            }
        }
        for h in 0..HANDLES {
            if model.open[h] {
                driver.close(h);
                model.close(h);
            }
        }
        // Crash debris stays until a sweep: one more handle sweeps it.
        if !model.debris.is_empty() || !model.named_debris.is_empty() {
            driver.open(0);
            model.open[0] = true;
            let sweep = Op::Sweep { h: 0 };
            let out = driver.run(0, &sweep);
            model
                .apply(&sweep, &out, &BTreeSet::new())
                .map_err(|m| format!("the final sweep: {m} (reported: {out})"))?;
            driver.close(0);
            model.close(0);
        }
        let d = debris(&root);
        ensure!(d.is_empty(), "after closing every handle: debris {d:?}");
        check(&mut model, &root, &mut driver)
            .map_err(|m| format!("after closing every handle: {m}"))
    })();
    drop(driver);
    result
}

/// The operations, weighted toward what interacts: stores and holds on
/// few names, with sizes that sometimes trip the limit. Injected I/O errors
/// ([`Op::Fault`], a strace-run process each) only where `faults`.
fn op(faults: bool) -> BoxedStrategy<Op> {
    let h = || 0..HANDLES;
    let name = || 0..NAMES.len();
    let seed = || 1..1000u64;
    let blocks = || prop_oneof![6 => 1..4u64, 1 => 4..12u64];
    let base = prop_oneof![
        1 => h().prop_map(|h| Op::Open { h }),
        1 => h().prop_map(|h| Op::Close { h }),
        6 => (h(), name(), seed(), blocks())
            .prop_map(|(h, name, seed, blocks)| Op::Store { h, name, seed, blocks }),
        1 => (h(), name(), seed(), blocks())
            .prop_map(|(h, name, seed, blocks)| Op::StoreDrop { h, name, seed, blocks }),
        2 => (h(), name(), seed(), blocks())
            .prop_map(|(h, name, seed, blocks)| Op::Begin { h, name, seed, blocks }),
        2 => h().prop_map(|h| Op::Commit { h }),
        1 => (h(), any::<bool>()).prop_map(|(h, keep)| Op::CommitAndLoad { h, keep }),
        1 => h().prop_map(|h| Op::Abandon { h }),
        3 => (h(), name(), seed(), blocks(), any::<bool>()).prop_map(
            |(h, name, seed, blocks, keep)| Op::LoadOrBuild { h, name, seed, blocks, keep }
        ),
        3 => (h(), name()).prop_map(|(h, name)| Op::Hold { h, name }),
        2 => (h(), 0..4usize).prop_map(|(h, slot)| Op::Release { h, slot }),
        1 => (h(), name()).prop_map(|(h, name)| Op::Contains { h, name }),
        1 => h().prop_map(|h| Op::Stage { h }),
        2 => (h(), proptest::option::weighted(0.9, 0..16u64))
            .prop_map(|(h, blocks)| Op::SetLimit { h, blocks }),
        1 => (h(), 0..12u64).prop_map(|(h, blocks)| Op::PruneTo { h, blocks }),
        1 => (h(), prop_oneof![Just(100u64), Just(1000)])
            .prop_map(|(h, secs)| Op::PruneAge { h, secs }),
        1 => (name(), prop_oneof![Just(50u64), Just(500), Just(5000)])
            .prop_map(|(name, secs)| Op::Age { name, secs }),
        1 => (h(), name()).prop_map(|(h, name)| Op::Remove { h, name }),
        1 => h().prop_map(|h| Op::Sweep { h }),
        1 => h().prop_map(|h| Op::Repair { h }),
        1 => h().prop_map(|h| Op::Verify { h }),
        2 => (
            prop_oneof![
                Just(CrashPoint::Fill),
                Just(CrashPoint::Link),
                Just(CrashPoint::Rename),
                Just(CrashPoint::Rmdir),
            ],
            name(),
            seed(),
            blocks()
        )
            .prop_map(|(point, name, seed, blocks)| Op::Crash { point, name, seed, blocks }),
        2 => Just(Op::Tick),
        1 => prop_oneof![
            Just(ListDamage::Truncate),
            Just(ListDamage::Flip),
            Just(ListDamage::State),
            Just(ListDamage::Remove),
        ]
        .prop_map(|how| Op::DamageList { how }),
    ];
    if !faults {
        return base.boxed();
    }
    let fault = (
        0..FAULT_CALLS.len(),
        1..48u32,
        0..FAULT_ERRNOS.len(),
        name(),
        seed(),
        blocks(),
    )
        .prop_map(|(call, nth, errno, name, seed, blocks)| Op::Fault {
            call,
            nth,
            errno,
            name,
            seed,
            blocks,
        });
    prop_oneof![12 => base, 1 => fault].boxed()
}

/// Cases of up to `len` operations.
fn ops(len: usize, faults: bool) -> impl Strategy<Value = Ops> {
    proptest::collection::vec(op(faults), 1..len).prop_map(Ops)
}

/// `cases` cases; failing seeds are kept in `proptest-regressions/FILE`
/// (relative to the package root, where `cargo test` runs tests).
/// `FSCACHE_MODEL_CASES` overrides `cases` (for long runs).
fn config(cases: u32, file: &'static str) -> ProptestConfig {
    let cases = std::env::var("FSCACHE_MODEL_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

/// Remove ops from a failing case while it still fails: single ops, then
/// pairs (proptest's shrinker removes one at a time, so it stops where two
/// ops only matter together), until nothing more goes; a bounded number of
/// runs.
fn minimize(ops: &[Op], fails: impl Fn(&[Op]) -> bool) -> Vec<Op> {
    let mut best = ops.to_vec();
    let mut budget = 400;
    'again: loop {
        let n = best.len();
        let mut tries: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        tries.extend((0..n).flat_map(|i| (i + 1..n).map(move |j| vec![i, j])));
        for drop in tries {
            if budget == 0 {
                break 'again;
            }
            budget -= 1;
            let candidate: Vec<Op> = best
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, op)| op.clone())
                .collect();
            if fails(&candidate) {
                best = candidate;
                continue 'again;
            }
        }
        break;
    }
    best
}

/// Held by the model tests for each case, so that helper processes are
/// never spawned (by another test thread) while an in-process case runs.
/// Unexplained so far: with both tests running at once, a prune by age
/// was seen, about once in 3 runs, to skip an aged entry no handle held
/// (`pruned - a 0`); never in 3000 cases of the in-process test alone.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run a generated case; on failure, shrink it further with [`minimize`]
/// and report the smallest case as Rust to paste into [`regressions`].
fn check_case<D: Driver>(ops: &Ops, make: fn(&Path) -> D) -> Result<(), TestCaseError> {
    let Err(e) = run_case(&ops.0, make) else {
        return Ok(());
    };
    let small = minimize(&ops.0, |c| run_case(c, make).is_err());
    if small.len() < ops.0.len() {
        if let Err(e) = run_case(&small, make) {
            return Err(TestCaseError::fail(format!(
                "{e}\nshrunk further, to {} steps (paste into `regressions`):\n{:?}",
                small.len(),
                Ops(small)
            )));
        }
    }
    Err(TestCaseError::fail(e))
}

proptest! {
    #![proptest_config(config(1024, "proptest-regressions/model_in_process.txt"))]

    /// Handles in this process.
    #[test]
    fn model_in_process(ops in ops(48, false)) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        check_case(&ops, InProcess::new)?;
    }
}

proptest! {
    #![proptest_config(config(64, "proptest-regressions/model_processes.txt"))]

    /// Each handle in its own helper process.
    #[test]
    fn model_processes(ops in ops(32, false)) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        check_case(&ops, Processes::new)?;
    }
}

proptest! {
    #![proptest_config(config(96, "proptest-regressions/model_faults.txt"))]

    /// Handles in this process, and stores in processes of their own
    /// under injected I/O errors (fewer cases: each fault is a strace run).
    #[test]
    fn model_with_io_errors(ops in ops(40, true)) {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        check_case(&ops, InProcess::new)?;
    }
}

/// Shrunk cases of failures found so far (planted bugs included), run
/// through both drivers.
#[test]
fn regressions() {
    let cases: Vec<Vec<Op>> = vec![
        // A commit must stamp its entry as used now, not when its store
        // began: else `b` looks older than the held `d` used after it, and
        // a prune to one block takes `b` and then `d` (skipped) instead of
        // `d` alone.
        vec![
            Op::Store {
                h: 0,
                name: 3,
                seed: 1,
                blocks: 4,
            },
            Op::Begin {
                h: 2,
                name: 1,
                seed: 1,
                blocks: 1,
            },
            Op::Hold { h: 0, name: 3 },
            Op::Tick,
            Op::Commit { h: 2 },
            Op::PruneTo { h: 0, blocks: 1 },
        ],
        // A commit that loses the name to another writer uncharges once.
        vec![
            Op::Store {
                h: 0,
                name: 0,
                seed: 1,
                blocks: 1,
            },
            Op::Store {
                h: 0,
                name: 0,
                seed: 1,
                blocks: 1,
            },
        ],
        // Eviction never removes what a reader holds.
        vec![
            Op::Store {
                h: 0,
                name: 0,
                seed: 1,
                blocks: 1,
            },
            Op::Store {
                h: 0,
                name: 3,
                seed: 1,
                blocks: 4,
            },
            Op::Hold { h: 0, name: 3 },
            Op::Store {
                h: 0,
                name: 1,
                seed: 1,
                blocks: 2,
            },
            Op::LoadOrBuild {
                h: 0,
                name: 2,
                seed: 1,
                blocks: 4,
                keep: false,
            },
        ],
        // Crash debris: an emptied directory under `a`'s name (a removal
        // killed before its rmdir), then a half-committed `b` charged on
        // the books; the next store finds the cache full, sweeps both
        // (uncharging `b`), and renames over nothing; a store killed
        // before linking its lock file leaves two pieces verify sweeps.
        vec![
            Op::Store {
                h: 0,
                name: 0,
                seed: 1,
                blocks: 1,
            },
            Op::Crash {
                point: CrashPoint::Rmdir,
                name: 0,
                seed: 1,
                blocks: 1,
            },
            Op::Crash {
                point: CrashPoint::Rename,
                name: 1,
                seed: 2,
                blocks: 8,
            },
            Op::Store {
                h: 1,
                name: 0,
                seed: 3,
                blocks: 3,
            },
            Op::Crash {
                point: CrashPoint::Link,
                name: 2,
                seed: 4,
                blocks: 1,
            },
            Op::Verify { h: 2 },
        ],
        // A removal killed before its rmdir leaves an empty directory a
        // store then renames over (rename(2) replaces an empty directory).
        vec![
            Op::Store {
                h: 0,
                name: 0,
                seed: 1,
                blocks: 1,
            },
            Op::Crash {
                point: CrashPoint::Rmdir,
                name: 0,
                seed: 1,
                blocks: 1,
            },
            Op::Store {
                h: 1,
                name: 0,
                seed: 2,
                blocks: 1,
            },
            Op::Hold { h: 2, name: 0 },
        ],
        // Nor does prune.
        vec![
            Op::LoadOrBuild {
                h: 0,
                name: 0,
                seed: 1,
                blocks: 1,
                keep: true,
            },
            Op::PruneTo { h: 0, blocks: 0 },
        ],
    ];
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for ops in cases {
        if let Err(e) = run_case(&ops, InProcess::new) {
            panic!("in process: {e}\ncase: {:?}", Ops(ops.clone()));
        }
        if let Err(e) = run_case(&ops, Processes::new) {
            panic!("in processes: {e}\ncase: {:?}", Ops(ops.clone()));
        }
    }
}

/// The device, inode and state slot of `cache.evict`.
fn list_file(root: &Path) -> Option<((u64, u64), String)> {
    let path = root.join("cache.evict");
    let m = fs::symlink_metadata(&path).ok()?;
    let bytes = fs::read(&path).ok()?;
    let state = String::from_utf8_lossy(bytes.get(21..256)?).into_owned();
    let state = state.split(' ').take(3).collect::<Vec<_>>().join(" ");
    Some(((m.dev(), m.ino()), state))
}

/// The kept eviction list is shared by processes: a process that never
/// scanned evicts from the list another one wrote (the file is not
/// rewritten: no scan), skipping what a reader holds (it stays a
/// candidate, and goes first once released), what was loaded since and
/// what had its atime set back by hand; a damaged list is ignored and
/// rebuilt. Every handle is its own `serve` process; every eviction is
/// checked against the atimes the test set.
#[test]
fn processes_share_the_kept_eviction_list() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (tmp, root) = fresh();
    let probe = tmp.path().join("clock-probe");
    let mut d = Processes::new(&root);
    for h in 0..3 {
        d.open(h);
    }
    let one = entry_space(BLOCK as usize);
    let ask = |d: &mut Processes, h: usize, line: &str| -> String {
        d.kids[h].as_mut().expect("open").ask(line)
    };
    // 40 entries fill the cache; a scan plans 5 of them (down to 90 %).
    assert_eq!(ask(&mut d, 0, &format!("set-limit {}", 40 * one)), "done");
    let names: Vec<String> = (0..40).map(|i| format!("e{i:02}")).collect();
    for n in &names {
        assert_eq!(
            ask(&mut d, 0, &format!("store {n} 1 1")),
            "stored committed -"
        );
        tick(&probe);
    }
    assert!(list_file(&root).is_none(), "no eviction yet, no list");
    // e01 is held, and set back by hand to be the oldest.
    assert!(ask(&mut d, 2, "hold e01").starts_with("held "));
    age(&root, "e01", 200 * 86_400);
    // Process 1 stores into the full cache: it scans, keeps the plan in
    // cache.evict, passes the held e01 and removes only the oldest idle.
    assert_eq!(ask(&mut d, 1, "store n0 1 1"), "stored committed e00");
    let (id, state) = list_file(&root).expect("the kept list");
    assert_eq!(state, "state 2 0", "e01 stays a candidate");
    // e02 loaded since, e03 set back by hand (by a day: older than every
    // idle entry but e01, and not where the list has it).
    assert!(ask(&mut d, 0, "hold e02").starts_with("held "));
    assert_eq!(ask(&mut d, 0, "release 0"), "done");
    age(&root, "e03", 86_400);
    // Process 0 never scanned: it pops from process 1's list, passing the
    // held e01, the used e02 and the moved e03, and removes e04.
    assert_eq!(ask(&mut d, 0, "store n1 1 1"), "stored committed e04");
    assert_eq!(list_file(&root), Some((id, "state 5 0".to_owned())));
    // Released, e01 is the list's oldest candidate again, for a process
    // that opened only now.
    assert_eq!(ask(&mut d, 2, "release 0"), "done");
    d.open(3);
    assert_eq!(ask(&mut d, 3, "store n2 1 1"), "stored committed e01");
    assert_eq!(list_file(&root), Some((id, "state 5 -".to_owned())));
    // A damaged list is never trusted: the next store scans again and
    // removes the oldest by the disk's atimes (e03, set back by hand).
    damage_list(&root, ListDamage::Flip);
    assert_eq!(ask(&mut d, 2, "store n3 1 1"), "stored committed e03");
    let (rebuilt, state) = list_file(&root).expect("rebuilt");
    assert_ne!(rebuilt, id, "the damaged list was replaced");
    assert_eq!(state, "state 1 -");
    // A torn state slot reads as "nothing consumed": gone records are
    // tried again (and found gone), nothing is skipped.
    damage_list(&root, ListDamage::State);
    assert_eq!(ask(&mut d, 1, "store n4 1 1"), "stored committed e05");
    assert_eq!(list_file(&root).map(|l| l.0), Some(rebuilt));
    for h in 0..HANDLES {
        d.close(h);
    }
}
