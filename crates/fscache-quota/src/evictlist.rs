//! The kept eviction list shared across processes: `cache.evict`, the
//! candidates one scan of `objects/` planned, and how far the stores of
//! every process have consumed them.
//!
//! One scan of `objects/` costs a `stat` per entry; a process that stores
//! once (a `fscache store`, a build step run as its own process) would pay
//! it on its first store into a full cache. So the scan's plan is written
//! to `ROOT/cache.evict`, a file of fscache's own beside osbuild's (osbuild
//! ignores files it does not know), and any handle of any process pops
//! from it. Nothing on the list is trusted: every candidate is checked
//! again under its own exclusive lock before it is removed
//! ([`evict_candidate`](crate::evict_candidate): held, used since the scan,
//! replaced or gone means skip), so a stale or hostile list costs failed
//! tries, never a wrong removal.
//!
//! # Format (version 1)
//!
//! The format is part of the on-disk contract, written down in the
//! repository's `docs/format.md` ("`cache.evict`"). In short: a magic
//! line, a fixed 235-byte state slot (`state NEXT HOLES CHECK`, the only
//! part written in place), a header `list cutoff CUTOFF count N sum SUM`,
//! and `N` records `SECS.NSECS DEV:INO SIZE NAME`, oldest first. `SUM`
//! (BLAKE3 of the records) and `CHECK` (BLAKE3 of `SUM` and the slot)
//! make damage visible: a list that does not check is ignored, a state
//! that does not check reads as "nothing consumed".
//!
//! A record below `NEXT` and not a hole was removed, or found gone,
//! replaced or used since the scan, by some store; that is permanent (a
//! removed name that is stored again gets a new `object.lock` with a new
//! atime), so any state a store wrote stays true, and one store's write
//! overwriting another's more advanced one only costs tries.
//!
//! The file is replaced (temporary file, `rename`) by the store that finds
//! it used up, damaged or missing, after its rescan; every reconcile of
//! `cache.size` (a [`recount`](crate::recount), or the live reconcile of
//! suspect books) unlinks it, so a list planned from books that were
//! wrong is not used after they are fixed.

use std::fmt::Write as _;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use fscache_dir::stat::{Inode, Stamp};
use fscache_dir::{CacheDir, Publish, OBJECTS};
use fscache_lock::{LockKind, RangeLock};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{self, Result};
use crate::lru::Candidate;

/// The file name of the kept eviction list, in the cache root.
pub const EVICT_LIST: &str = "cache.evict";

const MAGIC: &str = "fscache-evict-list 1\n";
/// Where the state slot starts, and its length (including its `\n`).
const STATE_AT: u64 = MAGIC.len() as u64;
const STATE_LEN: usize = 256 - MAGIC.len();
/// The most holes a state slot records: the first record held beyond them
/// stops `NEXT`.
pub const MAX_HOLES: usize = 8;
/// The most records a list holds; a plan that is longer is cut there (the
/// rest is found by the next scan).
pub const MAX_RECORDS: usize = 16_384;
/// The largest list file read (anything larger is damaged).
const MAX_FILE: u64 = 8 << 20;

/// How far the stores of every process have consumed a list: records
/// `0..next` are used up, except the `holes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListState {
    /// The first record no store has consumed.
    pub next: usize,
    /// Records below `next` that are still candidates (held or failing
    /// when they were passed), ascending.
    pub holes: Vec<usize>,
}

impl ListState {
    /// The indices still to try, in LRU order: the holes, then `next..len`.
    pub fn pending(&self, len: usize) -> impl Iterator<Item = usize> + '_ {
        self.holes
            .iter()
            .copied()
            .filter(move |&i| i < len)
            .chain(self.next.min(len)..len)
    }

    /// The state after trying the records in `tried` (each with whether it
    /// was used up), starting from this state. Only a prefix of the
    /// pending records advances `next`; a record still a candidate becomes
    /// a hole, up to [`MAX_HOLES`].
    pub fn advance(&self, tried: &[(usize, bool)], len: usize) -> ListState {
        let mut holes: Vec<usize> = self
            .holes
            .iter()
            .copied()
            .filter(|h| !tried.iter().any(|&(i, done)| i == *h && done))
            .collect();
        let mut next = self.next.min(len);
        // The records at `next…` that were tried, in order.
        loop {
            match tried.iter().find(|&&(i, _)| i == next) {
                Some(&(_, true)) => next += 1,
                Some(&(_, false)) if holes.len() < MAX_HOLES => {
                    holes.push(next);
                    next += 1;
                }
                _ => break,
            }
        }
        holes.sort_unstable();
        holes.dedup();
        ListState { next, holes }
    }

    fn text(&self, sum: &str) -> String {
        let holes = if self.holes.is_empty() {
            "-".to_owned()
        } else {
            let v: Vec<String> = self.holes.iter().map(usize::to_string).collect();
            v.join(",")
        };
        let body = format!("state {} {holes}", self.next);
        let check = check(sum, &body);
        let mut line = format!("{body} {check}");
        while line.len() < STATE_LEN - 1 {
            line.push(' ');
        }
        line.push('\n');
        line
    }

    fn parse(slot: &[u8], sum: &str) -> Option<ListState> {
        let text = std::str::from_utf8(slot).ok()?;
        let text = text.strip_suffix('\n')?.trim_end_matches(' ');
        let (body, check_hex) = text.rsplit_once(' ')?;
        if check(sum, body) != check_hex {
            return None;
        }
        let mut f = body.split(' ');
        (f.next()? == "state").then_some(())?;
        let next = f.next()?.parse().ok()?;
        let holes = match f.next()? {
            "-" => Vec::new(),
            h => h
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<usize>>>()?,
        };
        if f.next().is_some() || holes.len() > MAX_HOLES || holes.iter().any(|&h| h >= next) {
            return None;
        }
        Some(ListState { next, holes })
    }
}

fn check(sum: &str, body: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(sum.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex(&h.finalize().as_bytes()[..4])
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A kept eviction list as read from `cache.evict`, with the descriptor
/// it was read through (for the state, and to notice its replacement).
#[derive(Debug)]
pub struct EvictList {
    fd: OwnedFd,
    writable: bool,
    inode: Inode,
    sum: String,
    /// No candidate on the list was used at or after this time.
    pub cutoff: Option<Stamp>,
    /// The candidates, least recently used first.
    pub candidates: Vec<Candidate>,
}

impl EvictList {
    /// Read `cache.evict`. `Ok(None)` when it is absent or damaged (it is
    /// then ignored, never trusted).
    ///
    /// # Errors
    ///
    /// Opening or reading it failed for a reason other than its absence.
    pub fn open(cache: &CacheDir) -> Result<Option<EvictList>> {
        let rel = Path::new(EVICT_LIST);
        let flags = OFlags::NONBLOCK;
        let (fd, writable) = match cache.open_raw(rel, OFlags::RDWR | flags, Mode::empty()) {
            Ok(fd) => (fd, true),
            // Another user's list, or a read-only cache: read it, and
            // leave the state to those who may write it.
            Err(e) if matches!(errno(&e), Some(Errno::ACCESS | Errno::ROFS | Errno::PERM)) => {
                match cache.open_raw(rel, OFlags::RDONLY | flags, Mode::empty()) {
                    Ok(fd) => (fd, false),
                    Err(e) => return open_failed(cache, rel, e),
                }
            }
            Err(e) => return open_failed(cache, rel, e),
        };
        let st = rustix::io::retry_on_intr(|| rustix::fs::fstat(&fd))
            .map_err(|e| error::io("stat", cache.abs(rel), e.into()))?;
        if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_file()
            || fscache_dir::stat::size(&st) > MAX_FILE
        {
            return Ok(None);
        }
        let bytes = read_all(&fd, fscache_dir::stat::size(&st) as usize)
            .map_err(|e| error::io("read", cache.abs(rel), e))?;
        Ok(parse(&bytes).map(|(cutoff, candidates, sum)| EvictList {
            fd,
            writable,
            inode: fscache_dir::stat::inode(&st),
            sum,
            cutoff,
            candidates,
        }))
    }

    /// The device and inode of the list file: which list this is.
    pub fn inode(&self) -> Inode {
        self.inode
    }

    /// Whether this is still the list `cache.evict` names: its descriptor
    /// is still linked (the file is only ever replaced by `rename` or
    /// unlinked, never moved). One `fstat`.
    pub fn is_current(&self) -> bool {
        rustix::io::retry_on_intr(|| rustix::fs::fstat(&self.fd))
            .is_ok_and(|st| st.st_nlink > 0 && fscache_dir::stat::inode(&st) == self.inode)
    }

    /// The state slot as it is now; one that does not check reads as the
    /// start (every record pending), which is always safe.
    pub fn state(&self) -> ListState {
        let mut slot = [0u8; STATE_LEN];
        match pread_exact(&self.fd, &mut slot, STATE_AT) {
            Ok(()) => ListState::parse(&slot, &self.sum).unwrap_or_default(),
            Err(_) => ListState::default(),
        }
    }

    /// Write `state` into the slot (best effort: a list we may not write,
    /// or a failed write, only costs other stores tries).
    pub fn set_state(&self, state: &ListState) {
        if !self.writable {
            return;
        }
        let text = state.text(&self.sum);
        if text.len() == STATE_LEN {
            let _ = pwrite_all(&self.fd, text.as_bytes(), STATE_AT);
        }
    }
}

fn open_failed(cache: &CacheDir, rel: &Path, e: std::io::Error) -> Result<Option<EvictList>> {
    match errno(&e) {
        Some(
            Errno::NOENT | Errno::NOTDIR | Errno::ISDIR | Errno::LOOP | Errno::XDEV | Errno::NXIO,
        ) => Ok(None),
        _ => Err(error::io("open", cache.abs(rel), e)),
    }
}

/// The errno of an error of `CacheDir::open_raw` (through its path).
fn errno(e: &std::io::Error) -> Option<Errno> {
    fscache_dir::raw_os_error(e).map(Errno::from_raw_os_error)
}

/// Write `candidates` (least recently used first; at most
/// [`MAX_RECORDS`] are kept) as the new kept list, replacing any other
/// by `rename`, with the state at the start. The list is read back
/// through the new file's own descriptor.
///
/// # Errors
///
/// Creating or renaming the temporary file failed.
pub fn write_list(
    cache: &CacheDir,
    candidates: &[Candidate],
    cutoff: Option<Stamp>,
) -> Result<EvictList> {
    let rel = Path::new(EVICT_LIST);
    let candidates = &candidates[..candidates.len().min(MAX_RECORDS)];
    let mut records = String::with_capacity(candidates.len() * 64);
    for c in candidates {
        let (dev, ino) = c.inode.unwrap_or((0, 0));
        let _ = write!(records, "{}.{:09} {dev}:{ino} ", c.last_use.0, c.last_use.1);
        match c.size {
            Some(s) => {
                let _ = write!(records, "{s} ");
            }
            None => records.push_str("- "),
        }
        escape_into(&mut records, &c.name);
        records.push('\n');
    }
    let sum = hex(&blake3::hash(records.as_bytes()).as_bytes()[..8]);
    let mut text = String::with_capacity(records.len() + 320);
    text.push_str(MAGIC);
    text.push_str(&ListState::default().text(&sum));
    let _ = writeln!(
        text,
        "list cutoff {} count {} sum {sum}",
        stamp_text(cutoff),
        candidates.len()
    );
    text.push_str(&records);
    let (_, lock) = cache
        .atomic_file_locked(Path::new(OBJECTS), rel, text.as_bytes(), Publish::Replace)
        .map_err(|e| error::io("replace", cache.abs(rel), e))?;
    // The temporary file's own descriptor, now the list's.
    let fd = lock
        .unlock()
        .map_err(|e| error::io("unlock", cache.abs(rel), e))?;
    let st = rustix::io::retry_on_intr(|| rustix::fs::fstat(&fd))
        .map_err(|e| error::io("stat", cache.abs(rel), e.into()))?;
    Ok(EvictList {
        fd,
        writable: true,
        inode: fscache_dir::stat::inode(&st),
        sum,
        cutoff,
        candidates: candidates.to_vec(),
    })
}

/// The byte of `books.lock` held exclusively by the commit that scans
/// `objects/` to write a new list: bytes 0 and 1 are the books' (see
/// `books.rs`), so the rescan never meets a recount's gate.
pub const RESCAN_BYTE: u64 = 2;

/// The hold of the rescan lock, from [`lock_rescan`]: while it is held no
/// other fscache commit scans for a new list; it waits, then uses the
/// list this one wrote. Released when dropped.
#[derive(Debug)]
#[must_use = "the rescan lock is released as soon as this drops"]
pub struct RescanLock {
    _lock: Option<RangeLock<OwnedFd>>,
    /// Whether another commit held it when it was asked for (so the list
    /// may be new now: read it again before scanning).
    pub waited: bool,
}

/// `fcntl(F_OFD_SETLKW)` of byte [`RESCAN_BYTE`] of `books.lock`,
/// exclusive—take the rescan lock, waiting while another commit (of any
/// process) scans for a new list.
///
/// When the list runs out, the commits of many processes find that at
/// once; each scanning `objects/` (a `stat` per entry) would multiply
/// the very cost the list exists to avoid. With the lock one scans, the
/// others wait for it and then read the list it wrote (the caller checks
/// [`EvictList::open`] again after taking the lock, and scans only if the
/// list there is still the one it found used up, or none).
///
/// Best effort: where `books.lock` cannot be opened for writing (a
/// read-only cache, another user's file) the scan goes ahead without the
/// lock, as before it existed.
///
/// # Errors
///
/// Taking the lock failed for a reason other than the file being
/// unavailable.
#[doc(alias = "F_OFD_SETLKW")]
pub fn lock_rescan(cache: &CacheDir) -> Result<RescanLock> {
    let Ok(fd) = crate::books::open_lock(cache) else {
        return Ok(RescanLock {
            _lock: None,
            waited: false,
        });
    };
    let rel = Path::new(crate::books::BOOKS_LOCK);
    let lock_err = |e| error::io("lock", cache.abs(rel), e);
    let (lock, waited) =
        match RangeLock::try_lock_or_return(fd, LockKind::Exclusive, RESCAN_BYTE, 1)
            .map_err(lock_err)?
        {
            Ok(lock) => (lock, false),
            Err(fd) => (
                RangeLock::lock(fd, LockKind::Exclusive, RESCAN_BYTE, 1).map_err(lock_err)?,
                true,
            ),
        };
    Ok(RescanLock {
        _lock: Some(lock),
        waited,
    })
}

/// Unlink `cache.evict`, so no store uses it again: after the books were
/// recounted, a list planned from the old books is stale.
///
/// # Errors
///
/// The unlink failed for a reason other than absence.
pub fn invalidate(cache: &CacheDir) -> Result<()> {
    let rel = Path::new(EVICT_LIST);
    match fscache_dir::retry_io(|| cache.dir().remove_file(rel)) {
        Err(e) if !fscache_dir::gone(&e) => Err(error::io("remove", cache.abs(rel), e)),
        _ => Ok(()),
    }
}

fn stamp_text(s: Option<Stamp>) -> String {
    match s {
        Some((secs, nsecs)) => format!("{secs}.{nsecs:09}"),
        None => "-".to_owned(),
    }
}

fn parse_stamp(s: &str) -> Option<Stamp> {
    let (secs, nsecs) = s.split_once('.')?;
    let nsecs: i64 = (nsecs.len() == 9).then(|| nsecs.parse().ok())??;
    Some((secs.parse().ok()?, nsecs))
}

fn escape_into(out: &mut String, name: &str) {
    for ch in name.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at + 1..at + 3)? {
            "25" => out.push('%'),
            "0A" => out.push('\n'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Parse a whole list file: `None` if anything does not match.
fn parse(bytes: &[u8]) -> Option<(Option<Stamp>, Vec<Candidate>, String)> {
    let rest = bytes.strip_prefix(MAGIC.as_bytes())?;
    let rest = rest.get(STATE_LEN..)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&rest[..nl]).ok()?;
    let records = &rest[nl + 1..];
    let f: Vec<&str> = header.split(' ').collect();
    let ["list", "cutoff", cutoff, "count", count, "sum", sum] = f[..] else {
        return None;
    };
    let cutoff = match cutoff {
        "-" => None,
        c => Some(parse_stamp(c)?),
    };
    let count: usize = count.parse().ok()?;
    if count > MAX_RECORDS || hex(&blake3::hash(records).as_bytes()[..8]) != sum {
        return None;
    }
    let text = std::str::from_utf8(records).ok()?;
    let mut candidates = Vec::with_capacity(count);
    for line in text.split_terminator('\n') {
        let mut f = line.splitn(4, ' ');
        let last_use = parse_stamp(f.next()?)?;
        let (dev, ino) = f.next()?.split_once(':')?;
        let inode = (dev.parse().ok()?, ino.parse().ok()?);
        let size = match f.next()? {
            "-" => None,
            s => Some(s.parse().ok()?),
        };
        let name = unescape(f.next()?)?;
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return None;
        }
        let mut c = Candidate::new(name, last_use, size);
        c.inode = Some(inode);
        candidates.push(c);
    }
    (candidates.len() == count && text.ends_with('\n') || count == 0 && text.is_empty())
        .then_some((cutoff, candidates, sum.to_owned()))
}

fn read_all(fd: &OwnedFd, hint: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; hint.max(4096) + 1];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if buf.len() as u64 > MAX_FILE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "eviction list too large",
                ));
            }
            buf.resize(buf.len() * 2, 0);
        }
        match rustix::io::read(fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

fn pread_exact(fd: &OwnedFd, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pread(fd, &mut *buf, at) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                at += n as u64;
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn pwrite_all(fd: &OwnedFd, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pwrite(fd, buf, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, t: i64, size: Option<u64>) -> Candidate {
        let mut c = Candidate::new(name, (t, 7), size);
        c.inode = Some((1, t as u64));
        c
    }

    use crate::test_cache as cache;

    #[test]
    fn a_list_reads_back_as_written() {
        let (_tmp, cache) = cache();
        let cands = vec![
            cand("a", 1, Some(10)),
            cand("odd name %0A\nwith newline", 2, None),
            cand("c", 3, Some(30)),
        ];
        let written = write_list(&cache, &cands, Some((9, 1))).unwrap();
        let read = EvictList::open(&cache).unwrap().expect("valid");
        assert_eq!(read.candidates, cands);
        assert_eq!(read.cutoff, Some((9, 1)));
        assert_eq!(read.state(), ListState::default());
        let st = ListState {
            next: 2,
            holes: vec![0],
        };
        written.set_state(&st);
        assert_eq!(read.state(), st);
        assert!(read.is_current());
        write_list(&cache, &cands[..1], None).unwrap();
        assert!(!read.is_current(), "replaced");
        let again = EvictList::open(&cache).unwrap().unwrap();
        assert_eq!(again.candidates.len(), 1);
        assert_eq!(again.cutoff, None);
        invalidate(&cache).unwrap();
        assert!(!again.is_current());
        assert!(EvictList::open(&cache).unwrap().is_none());
        invalidate(&cache).unwrap();
    }

    #[test]
    fn a_damaged_list_or_state_is_never_trusted() {
        let (_tmp, cache) = cache();
        let cands: Vec<Candidate> = (0..5).map(|i| cand(&format!("e{i}"), i, Some(1))).collect();
        let list = write_list(&cache, &cands, None).unwrap();
        list.set_state(&ListState {
            next: 3,
            holes: vec![1],
        });
        let path = cache.abs(Path::new(EVICT_LIST));
        let good = std::fs::read(&path).unwrap();
        // Any byte changed outside the state slot: the list is ignored.
        for at in (0..good.len()).filter(|&i| !(21..256).contains(&i)) {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(EvictList::open(&cache).unwrap().is_none(), "byte {at}");
        }
        // Cut short: ignored.
        for len in [0, 10, 100, 300, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(EvictList::open(&cache).unwrap().is_none(), "length {len}");
        }
        // A damaged state slot: the list is used from the start.
        for at in 21..256 {
            let mut bad = good.clone();
            bad[at] = if bad[at] == b'7' { b'8' } else { b'7' };
            std::fs::write(&path, &bad).unwrap();
            let l = EvictList::open(&cache)
                .unwrap()
                .expect("the records are intact");
            let s = l.state();
            assert!(
                s == ListState::default()
                    || s == ListState {
                        next: 3,
                        holes: vec![1]
                    },
                "byte {at}: {s:?}"
            );
        }
        // Not a regular file: ignored.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(EvictList::open(&cache).unwrap().is_none());
    }

    #[test]
    fn the_state_advances_over_a_prefix_and_keeps_holes() {
        let s = ListState::default();
        // 0 held, 1 and 2 done, 4 done but 3 untried.
        let t = s.advance(&[(0, false), (1, true), (2, true), (4, true)], 10);
        assert_eq!(
            t,
            ListState {
                next: 3,
                holes: vec![0]
            }
        );
        assert_eq!(t.pending(10).collect::<Vec<_>>(), [0, 3, 4, 5, 6, 7, 8, 9]);
        // The hole resolves.
        let u = t.advance(&[(0, true), (3, true)], 10);
        assert_eq!(
            u,
            ListState {
                next: 4,
                holes: vec![]
            }
        );
        // More held records than holes: `next` stops at the first extra.
        let tried: Vec<(usize, bool)> = (0..12).map(|i| (i, false)).collect();
        let v = s.advance(&tried, 12);
        assert_eq!(v.next, MAX_HOLES);
        assert_eq!(v.holes, (0..MAX_HOLES).collect::<Vec<_>>());
        assert_eq!(v.pending(12).count(), 12);
    }
}
