//! The digest of a copy whose files are hashed on a second thread, from
//! the copies themselves, while the copy goes on.
//!
//! Each file is copied the cheapest way (reflink, `copy_file_range`: its
//! data never passes through the process), opened for reading too, with
//! `O_NOATIME`, and once its metadata is given handed to a hashing
//! thread, in batches. The copy is ours and nobody else writes it, so its
//! hash is the hash of what was stored, and reading it back changes none
//! of its times. The entries of each directory are encoded as they come
//! into a buffer with a 40-byte hole (`u64le(size) ‖ content hash`) per
//! file still being hashed; a directory whose holes are all known when
//! the walk leaves it is hashed at once and its buffer dropped, the rest
//! once the walk is over and the thread has answered for every file. The
//! digest is the one [`DirHasher`](crate::digest::DirHasher) computes,
//! byte for byte (the copy tests check it against `digest_tree`). The
//! first files of a copy, and every file where no thread can be started,
//! are hashed in passing instead (each buffer between its `read` and its
//! `write`): a copy of a few files does not pay for a thread.
//!
//! On the Debian minbase tree (6,768 nodes, 200 MB) on tmpfs this makes
//! `store_tree` (digest on) 1.02–1.03× `cp -a`, from 1.22× when every
//! buffer was hashed between its read and its write.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use rustix::fs::SeekFrom;
use rustix::io::retry_on_intr;

use crate::digest::{self, Body, Digest, NodeMeta, Version};

/// Where a file's size and content hash are (or will be).
#[derive(Clone, Copy, Debug)]
pub(super) struct FileSlot(usize);

/// Where a directory's digest is (or will be).
#[derive(Clone, Copy, Debug)]
pub(super) struct DirSlot(usize);

/// The entries of one directory so far, encoded, with holes.
#[derive(Debug)]
pub(super) struct PendingDir {
    version: Version,
    bytes: Vec<u8>,
    holes: Vec<(usize, Hole)>,
}

#[derive(Clone, Copy, Debug)]
enum Hole {
    /// 40 bytes: a file's `u64le(size) ‖ content hash`.
    File(FileSlot),
    /// 32 bytes: a directory's digest.
    Dir(DirSlot),
}

/// A body whose hash may not be known yet.
pub(super) enum LazyBody<'a> {
    /// Known now.
    Now(Body<'a>),
    /// A regular file's size and content hash, in this slot.
    File(FileSlot),
    /// A directory's digest, in this slot.
    Dir(DirSlot),
}

impl PendingDir {
    /// An empty directory so far, in `version`.
    pub(super) fn new(version: Version) -> Self {
        PendingDir {
            version,
            bytes: Vec::new(),
            holes: Vec::new(),
        }
    }

    /// The version this directory's digest is of.
    pub(super) fn version(&self) -> Version {
        self.version
    }

    /// One child, fed in name order.
    pub(super) fn entry(
        &mut self,
        hashes: &Hashes,
        name: &OsStr,
        meta: NodeMeta<'_>,
        body: LazyBody<'_>,
    ) {
        let zeros = [0u8; 32];
        // A slot already known is written as a known body.
        let known_file;
        let known_dir;
        let (body, hole) = match body {
            LazyBody::Now(b) => (b, None),
            LazyBody::File(s) => match hashes.file(s) {
                Some((size, hash)) => {
                    known_file = (size, *hash.as_bytes());
                    let (size, hash) = (known_file.0, &known_file.1);
                    (Body::File { size, hash }, None)
                }
                None => (
                    Body::File {
                        size: 0,
                        hash: &zeros,
                    },
                    Some(Hole::File(s)),
                ),
            },
            LazyBody::Dir(s) => match hashes.dir(s) {
                Some(d) => {
                    known_dir = d;
                    (Body::Dir(&known_dir), None)
                }
                None => (Body::Dir(&hashes.placeholder), Some(Hole::Dir(s))),
            },
        };
        let bytes = &mut self.bytes;
        digest::encode_entry(self.version, name, meta, body, &mut |b| {
            bytes.extend_from_slice(b)
        });
        match hole {
            Some(h @ Hole::File(_)) => self.holes.push((self.bytes.len() - 40, h)),
            Some(h @ Hole::Dir(_)) => self.holes.push((self.bytes.len() - 32, h)),
            None => {}
        }
    }

    /// Fill every hole from `hashes`; false (nothing changed) while one is
    /// not known yet.
    fn fill(&mut self, hashes: &Hashes) -> bool {
        let known = |h: &Hole| match *h {
            Hole::File(s) => hashes.file(s).is_some(),
            Hole::Dir(s) => hashes.dir(s).is_some(),
        };
        if !self.holes.iter().all(|(_, h)| known(h)) {
            return false;
        }
        for (at, h) in std::mem::take(&mut self.holes) {
            match h {
                Hole::File(s) => {
                    if let Some((size, hash)) = hashes.file(s) {
                        self.bytes[at..at + 8].copy_from_slice(&size.to_le_bytes());
                        self.bytes[at + 8..at + 40].copy_from_slice(hash.as_bytes());
                    }
                }
                Hole::Dir(s) => {
                    if let Some(d) = hashes.dir(s) {
                        self.bytes[at..at + 32].copy_from_slice(d.as_bytes());
                    }
                }
            }
        }
        true
    }
}

/// A directory's digest, or what it waits for.
#[derive(Debug)]
enum DirState {
    Done(Digest),
    Waiting(PendingDir),
}

/// The content hashes and directory digests of one copy, and the thread
/// that hashes big files.
pub(super) struct Hashes {
    files: Vec<Option<(u64, blake3::Hash)>>,
    dirs: Vec<DirState>,
    /// What a directory hole holds until it is filled.
    placeholder: Digest,
    worker: Option<Worker>,
    /// No thread could be started: hash everything in passing.
    no_thread: bool,
    /// Act as if no thread could be started (the tests' way to take that
    /// path).
    refuse_thread: bool,
    /// Bytes hashed in passing so far.
    passing_bytes: u64,
    /// Listing records whose body is a file still being hashed.
    pub(super) record_holes: Vec<(usize, FileSlot)>,
}

/// The hashing thread starts once a copy has hashed this many files or
/// bytes in passing: below that, its start (tens of microseconds) costs
/// more than it saves.
const START_FILES: usize = 16;
const START_BYTES: u64 = 1 << 20;

/// A batch is sent to the hashing thread once it holds this many files
/// or bytes (or when the copy waits for it).
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 4 << 20;

/// The hashing thread and its two channels.
struct Worker {
    jobs: Option<mpsc::Sender<Vec<Job>>>,
    /// Jobs not sent yet, and their bytes.
    batch: Vec<Job>,
    batch_bytes: u64,
    done: mpsc::Receiver<(usize, io::Result<(u64, blake3::Hash)>)>,
    thread: Option<thread::JoinHandle<()>>,
    /// Jobs sent and not answered yet.
    outstanding: usize,
}

/// One file to hash: its copy (read from its start), for this slot.
struct Job {
    slot: usize,
    file: File,
    version: Version,
    path: PathBuf,
}

impl Default for Hashes {
    fn default() -> Self {
        Hashes {
            files: Vec::new(),
            dirs: Vec::new(),
            placeholder: Digest::new(Version::V1, [0; 32]),
            worker: None,
            no_thread: false,
            refuse_thread: false,
            passing_bytes: 0,
            record_holes: Vec::new(),
        }
    }
}

impl Hashes {
    /// A file whose size and hash are known now.
    pub(super) fn known(&mut self, size: u64, hash: blake3::Hash) -> FileSlot {
        self.passing_bytes += size;
        self.files.push(Some((size, hash)));
        FileSlot(self.files.len() - 1)
    }

    /// The size and hash in `s`, once known.
    pub(super) fn file(&self, s: FileSlot) -> Option<(u64, blake3::Hash)> {
        self.files[s.0]
    }

    /// The digest in `s`, once known.
    fn dir(&self, s: DirSlot) -> Option<Digest> {
        match &self.dirs[s.0] {
            DirState::Done(d) => Some(*d),
            DirState::Waiting(_) => None,
        }
    }

    /// Fail to start the hashing thread, as when none can be started.
    #[cfg(test)]
    pub(super) fn without_thread(&mut self) {
        self.refuse_thread = true;
    }

    /// Whether a hashing thread runs or may be started.
    /// Not before the copy has hashed [`START_FILES`] files or
    /// [`START_BYTES`] in passing: a small copy (one file, a few) is not
    /// worth a thread.
    pub(super) fn can_hash_elsewhere(&self) -> bool {
        !self.no_thread
            && (self.worker.is_some()
                || self.files.len() >= START_FILES
                || self.passing_bytes >= START_BYTES)
    }

    /// Hand `file` (the finished copy at `path`, of `size` bytes, opened
    /// for reading with `O_NOATIME`) to the hashing thread, starting it
    /// first if need be. Jobs go in batches (one wake-up of the thread for
    /// many small files). `Ok(Err(file))`: no thread could be started; the
    /// caller hashes it.
    pub(super) fn elsewhere(
        &mut self,
        file: File,
        version: Version,
        path: &Path,
        size: u64,
    ) -> io::Result<Result<FileSlot, File>> {
        if self.worker.is_none() {
            let started = if self.refuse_thread {
                Err(io::Error::other("refused"))
            } else {
                Worker::start()
            };
            match started {
                Ok(w) => self.worker = Some(w),
                Err(_) => {
                    self.no_thread = true;
                    return Ok(Err(file));
                }
            }
        }
        let Some(w) = self.worker.as_mut() else {
            return Ok(Err(file));
        };
        self.files.push(None);
        let slot = self.files.len() - 1;
        w.batch.push(Job {
            slot,
            file,
            version,
            path: path.to_path_buf(),
        });
        w.batch_bytes += size;
        if w.batch.len() >= BATCH_FILES || w.batch_bytes >= BATCH_BYTES {
            w.send()?;
        }
        Ok(Ok(FileSlot(slot)))
    }

    /// Take the answers the thread has given so far, without waiting
    /// (`wait`: until every file is answered).
    fn collect(&mut self, wait: bool) -> io::Result<()> {
        let Some(w) = self.worker.as_mut() else {
            return Ok(());
        };
        if wait {
            w.send()?;
        }
        while w.outstanding > 0 {
            let got = if wait {
                w.done
                    .recv()
                    .map_err(|_| io::Error::other("the hashing thread is gone"))?
            } else {
                match w.done.try_recv() {
                    Ok(got) => got,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return Err(io::Error::other("the hashing thread is gone"))
                    }
                }
            };
            w.outstanding -= 1;
            let (slot, result) = got;
            self.files[slot] = Some(result?);
        }
        Ok(())
    }

    /// A directory whose entries are all fed: its digest now if every
    /// hole is known, else later.
    pub(super) fn finish_dir(&mut self, mut dir: PendingDir) -> io::Result<DirSlot> {
        if !dir.holes.is_empty() {
            self.collect(false)?;
        }
        let state = if dir.fill(self) {
            DirState::Done(digest::digest_of_encoded(dir.version, &dir.bytes))
        } else {
            DirState::Waiting(dir)
        };
        self.dirs.push(state);
        Ok(DirSlot(self.dirs.len() - 1))
    }

    /// Wait for every file and give every directory its digest; the
    /// digest in `root`.
    pub(super) fn finish(&mut self, root: DirSlot) -> io::Result<Digest> {
        self.collect(true)?;
        // A directory was left after its subdirectories: in slot order,
        // every hole refers to a slot already done.
        for i in 0..self.dirs.len() {
            if matches!(self.dirs[i], DirState::Done(_)) {
                continue;
            }
            let DirState::Waiting(mut dir) =
                std::mem::replace(&mut self.dirs[i], DirState::Done(self.placeholder))
            else {
                continue;
            };
            if !dir.fill(self) {
                return Err(io::Error::other(
                    "a directory's digest waits on a later one",
                ));
            }
            self.dirs[i] = DirState::Done(digest::digest_of_encoded(dir.version, &dir.bytes));
        }
        self.dir(root)
            .ok_or_else(|| io::Error::other("the root's digest is not known"))
    }
}

/// The size and content hash of the finished copy `file`, read from its
/// start through `buf`.
pub(super) fn hash_copy(
    file: &File,
    buf: &mut Vec<u8>,
    version: Version,
) -> io::Result<(u64, blake3::Hash)> {
    retry_on_intr(|| rustix::fs::seek(file, SeekFrom::Start(0)))?;
    digest::hash_content(file, buf, version)
}

impl Worker {
    /// Send the batch.
    fn send(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let n = batch.len();
        self.batch_bytes = 0;
        match self.jobs.as_ref().map(|tx| tx.send(batch)) {
            Some(Ok(())) => {
                self.outstanding += n;
                Ok(())
            }
            _ => Err(io::Error::other("the hashing thread is gone")),
        }
    }

    fn start() -> io::Result<Worker> {
        let (jobs, rx) = mpsc::channel::<Vec<Job>>();
        let (tx, done) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("fscache-hash".into())
            .spawn(move || {
                let mut buf = Vec::new();
                for job in rx.iter().flatten() {
                    let got = hash_copy(&job.file, &mut buf, job.version)
                        .map_err(|e| crate::with_path("hash", &job.path, e));
                    if tx.send((job.slot, got)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            batch: Vec::new(),
            batch_bytes: 0,
            done,
            thread: Some(thread),
            outstanding: 0,
        })
    }
}

impl Drop for Worker {
    /// No more jobs: the thread ends after the one it holds, and is
    /// joined, so no copy leaves a thread behind.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
