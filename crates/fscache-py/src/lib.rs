//! `fscache._native`: the Python extension module under the `fscache`
//! package, a thin binding of the `fscache` facade (and `fscache-remote`).
//!
//! Use the Python package, not this module: `python/fscache/__init__.py`
//! builds osbuild's `FsCache` API (context managers, relative paths,
//! `MissError`, the info tuples) on top of the handles here. This module
//! only moves calls across the language boundary:
//!
//! * [`Cache`] owns an open [`fscache::FsCache`] (scaffolded, its shared
//!   `cache.lock` held) until `close()`.
//! * [`LoadContext`], [`StoreContext`] and [`StageContext`] are osbuild's
//!   `load(name)`, `store(name)` and `stage()` context managers whole:
//!   the Python layer returns them as they are, so on a hit only the
//!   `with` statement itself runs as Python code (a generator-based
//!   context manager cost more than the load's system calls).
//! * [`Entry`], [`Store`] and [`Stage`] own the facade's guards; `release`,
//!   `commit`/`discard` and `close` end them explicitly (Python's context
//!   managers call those), and dropping the Python object ends them too.
//!
//! # Design
//!
//! Every call that does I/O runs with the GIL released (`Python::detach`):
//! a commit, a `store_tree`, an eviction, a verify or a push never stops
//! the caller's other threads. The one exception is the hot path, the
//! load context's hit or miss and its release: a few system calls that
//! never wait (the entry's lock is only tried), microseconds on a local
//! file system, where releasing and retaking the GIL cost a tenth of a
//! hit. (Once a second, a load also writes the statistics it counted.)
//! A `load_or_build` builder is Python code:
//! it runs with the GIL taken back, inside the facade's single flight.
//!
//! Errors: an invalid name is `ValueError`; a failed system call is
//! `OSError` with its `errno` (and the path in the message); anything else
//! (an incompatible or corrupt cache, a remote failure) is
//! `fscache._native.Error`, a `RuntimeError`.
//!
//! # Limitations
//!
//! A `Cache` is one handle: osbuild's `FsCache` takes its lock in
//! `__enter__` and drops it in `__exit__`, and so does the Python layer,
//! by opening and closing one. Entries still held after `close` keep the
//! cache open until they are released.
//!
//! No `unsafe` here: pyo3's macros keep their FFI glue inside pyo3, so
//! this crate stays `#![forbid(unsafe_code)]` like every other.
#![forbid(unsafe_code)]

#[cfg(feature = "remote")]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
#[cfg(feature = "remote")]
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use fscache::{
    CacheInfo, FsCache, MaxSize, Obtained, PruneOptions, Removed, StageGuard, StoreGuard, Stored,
    Verified,
};
#[cfg(feature = "remote")]
use fscache_remote::{ReadThrough, Remote, RemoteBuilder};
use pyo3::exceptions::{PyAssertionError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyString, PyType};

mod contexts;
mod guards;

pub use contexts::{LoadContext, StageContext, StoreContext};
use guards::Held;
pub use guards::{Entry, Stage, Store};

pyo3::create_exception!(
    _native,
    Error,
    PyRuntimeError,
    "An fscache failure that is not a system call's (an incompatible or corrupt cache, a remote)."
);

/// A `Mutex`'s content, poisoned or not (a panic elsewhere leaves plain
/// data behind).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Take what `slot` holds (a guard, an entry) and drop it with the GIL
/// released: dropping one unlocks, removes a tree or writes statistics.
fn drop_detached<T: Send>(py: Python<'_>, slot: &Mutex<Option<T>>) {
    let held = locked(slot).take();
    py.detach(move || drop(held));
}

/// The Python exception for a facade error.
fn py_err(e: fscache::Error) -> PyErr {
    let msg = chain(&e);
    match &e {
        fscache::Error::InvalidName(_) => PyValueError::new_err(msg),
        fscache::Error::Io { source, .. } => match source.raw_os_error() {
            Some(errno) => PyOSError::new_err((errno, msg)),
            None => PyOSError::new_err(msg),
        },
        _ => Error::new_err(msg),
    }
}

/// The Python exception for a remote error.
#[cfg(feature = "remote")]
fn remote_err(e: fscache_remote::Error) -> PyErr {
    Error::new_err(chain(&e))
}

/// `error: source: source…`, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// `path` relative to the cache root, as osbuild yields it
/// (`objects/NAME/data`); absolute if it is not below the root.
fn relative(cache: &FsCache, path: &Path) -> String {
    path.strip_prefix(cache.path())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// What a commit did, as a word: `committed`, `exists`, `too-large`,
/// `no-space`, `incompatible`.
fn stored_word(s: Stored) -> &'static str {
    match s {
        Stored::Committed => "committed",
        Stored::Exists => "exists",
        Stored::TooLarge => "too-large",
        Stored::NoSpace => "no-space",
        Stored::Incompatible => "incompatible",
    }
}

/// An open cache: scaffolded, its shared `cache.lock` held until `close`.
#[pyclass(frozen, module = "fscache._native")]
pub struct Cache {
    handle: Mutex<Option<FsCache>>,
    /// The exception class a load's miss raises (`FsCache.MissError`).
    miss: Py<PyType>,
    /// The last hit's name and the `objects/NAME/data` string it returned:
    /// a load of the same name again returns the same string object
    /// instead of formatting and building a new one.
    last_rel: Mutex<Option<(String, Py<PyString>)>>,
    /// Remotes opened by URL, kept for the handle's life (each has its
    /// own runtime and connection pool).
    #[cfg(feature = "remote")]
    remotes: Mutex<HashMap<String, Arc<Remote>>>,
}

impl Cache {
    /// The open handle for a context being entered: after `close`, the
    /// `AssertionError` osbuild's methods raise outside the context.
    fn entered(&self) -> PyResult<FsCache> {
        locked(&self.handle)
            .clone()
            .ok_or_else(|| PyAssertionError::new_err("the cache is not entered: use `with cache:`"))
    }

    /// `f` on the open handle, borrowed under its lock (no clone: the
    /// load's hot path), or the `AssertionError` of [`Cache::entered`].
    /// `f` must be short and must not release the GIL: `close` waits.
    fn with_entered<T>(&self, f: impl FnOnce(&FsCache) -> T) -> PyResult<T> {
        match &*locked(&self.handle) {
            Some(cache) => Ok(f(cache)),
            None => Err(PyAssertionError::new_err(
                "the cache is not entered: use `with cache:`",
            )),
        }
    }

    /// `objects/NAME/data` as a Python string: the one of the last call
    /// for the same `name`, else a new one, kept for the next call.
    fn rel_of(&self, py: Python<'_>, name: &str) -> Py<PyString> {
        let mut last = locked(&self.last_rel);
        if let Some((n, rel)) = &*last {
            if n == name {
                return rel.clone_ref(py);
            }
        }
        let mut s = String::with_capacity(name.len() + 13);
        s.push_str("objects/");
        s.push_str(name);
        s.push_str("/data");
        let rel = PyString::new(py, &s).unbind();
        *last = Some((name.to_owned(), rel.clone_ref(py)));
        rel
    }

    /// The open handle (a cheap clone), or an error after `close`.
    fn get(&self) -> PyResult<FsCache> {
        locked(&self.handle)
            .clone()
            .ok_or_else(|| Error::new_err("the cache is closed"))
    }

    /// The remote at `url`, opened once (keys from the environment, as
    /// the CLI takes them).
    #[cfg(feature = "remote")]
    fn remote(&self, url: &str) -> PyResult<Arc<Remote>> {
        if let Some(r) = locked(&self.remotes).get(url) {
            return Ok(r.clone());
        }
        let remote = RemoteBuilder::new(url)
            .keys_from_env()
            .and_then(RemoteBuilder::open)
            .map_err(remote_err)?;
        let remote = Arc::new(remote);
        locked(&self.remotes).insert(url.to_owned(), remote.clone());
        Ok(remote)
    }
}

/// What `load_or_build`'s builder can fail with: the cache, or the Python
/// callable.
enum BuildError {
    Cache(fscache::Error),
    Python(PyErr),
}

impl From<fscache::Error> for BuildError {
    fn from(e: fscache::Error) -> Self {
        BuildError::Cache(e)
    }
}

#[pymethods]
impl Cache {
    /// Open (scaffolding it if needed) the cache at `path` for `appid`
    /// and take its shared `cache.lock`; a load's miss raises `miss`.
    #[staticmethod]
    fn open(py: Python<'_>, appid: &str, path: PathBuf, miss: Py<PyType>) -> PyResult<Cache> {
        let handle = py.detach(|| FsCache::open(appid, &path)).map_err(py_err)?;
        Ok(Cache {
            handle: Mutex::new(Some(handle)),
            miss,
            last_rel: Mutex::new(None),
            #[cfg(feature = "remote")]
            remotes: Mutex::new(HashMap::new()),
        })
    }

    /// Drop this handle: its `cache.lock` is released once the entries,
    /// stores and stages it handed out are released too.
    fn close(&self) {
        #[cfg(feature = "remote")]
        locked(&self.remotes).clear();
        locked(&self.handle).take();
        locked(&self.last_rel).take();
    }

    /// The cache root, as the facade holds it (absolute).
    #[getter]
    fn path(&self) -> PyResult<PathBuf> {
        Ok(self.get()?.path().to_owned())
    }

    /// Whether the cache's format version is one this implementation
    /// modifies (as last read).
    fn compatible(&self) -> PyResult<bool> {
        Ok(self.get()?.info().is_compatible())
    }

    /// Update `cache.info` with the given fields (`None`: leave alone),
    /// every other key kept. `maximum_size` is bytes, a negative int or
    /// `"unlimited"` (both written as `"unlimited"`).
    #[pyo3(signature = (maximum_size=None, creation_boot_id=None, version=None))]
    fn set_info(
        &self,
        py: Python<'_>,
        maximum_size: Option<Bound<'_, PyAny>>,
        creation_boot_id: Option<String>,
        version: Option<u64>,
    ) -> PyResult<()> {
        let maximum_size = match maximum_size {
            None => None,
            Some(v) => Some(if let Ok(s) = v.extract::<String>() {
                if s != "unlimited" {
                    return Err(PyValueError::new_err(format!(
                        "maximum-size can only be an integer or 'unlimited', got {s:?}"
                    )));
                }
                MaxSize::Unlimited
            } else if let Ok(n) = v.extract::<i128>() {
                match u64::try_from(n) {
                    Ok(n) => MaxSize::Bytes(n),
                    Err(_) if n < 0 => MaxSize::Unlimited,
                    Err(_) => MaxSize::Unlimited,
                }
            } else {
                return Err(PyTypeError::new_err(
                    "maximum-size can only be an integer or 'unlimited'",
                ));
            }),
        };
        let info = CacheInfo {
            creation_boot_id,
            maximum_size,
            version,
        };
        let cache = self.get()?;
        py.detach(|| cache.set_info(info)).map_err(py_err)
    }

    /// Load `name`: a read-locked entry, or `None` for a miss.
    fn load(&self, py: Python<'_>, name: &str) -> PyResult<Option<Entry>> {
        let cache = self.get()?;
        let got = py.detach(|| cache.load(name)).map_err(py_err)?;
        Ok(got.map(|e| Entry::new(&cache, e.path().to_owned(), Held::Entry(e))))
    }

    /// `with cache.load(name) as rpath:` in one native object: the load
    /// happens in `__enter__` (as in osbuild's generator), a miss raises
    /// the class given to `open` (`FsCache.MissError`), `__exit__` drops
    /// the read lock. The hot path of the Python package: no Python frame
    /// runs between the `with` and the system calls.
    fn load_context(slf: &Bound<'_, Self>, name: PyBackedStr) -> LoadContext {
        LoadContext {
            cache: slf.clone().unbind(),
            name,
            held: Mutex::new(None),
        }
    }

    /// `with cache.store(name) as rpath:` in one native object: `__enter__`
    /// makes the private entry (an empty name is `ValueError`), a clean
    /// `__exit__` commits it, an exception discards it.
    fn store_context(slf: &Bound<'_, Self>, name: String) -> StoreContext {
        StoreContext {
            cache: slf.clone().unbind(),
            name,
            guard: Mutex::new(None),
        }
    }

    /// `with cache.stage() as rpath:` in one native object: `__enter__`
    /// makes the scratch directory, `__exit__` removes it.
    fn stage_context(slf: &Bound<'_, Self>) -> StageContext {
        StageContext {
            cache: slf.clone().unbind(),
            guard: Mutex::new(None),
        }
    }

    /// Whether `name` is committed now (no lock taken, no use counted).
    fn contains(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        let cache = self.get()?;
        py.detach(|| cache.contains(name)).map_err(py_err)
    }

    /// Start storing `name`: an empty private `data/` to fill.
    fn store(&self, py: Python<'_>, name: &str) -> PyResult<Store> {
        let cache = self.get()?;
        let guard = py.detach(|| cache.store(name)).map_err(py_err)?;
        Ok(Store {
            rel: relative(&cache, guard.path()),
            path: guard.path().to_owned(),
            guard: Mutex::new(Some(guard)),
        })
    }

    /// A private scratch `data/`, removed on `close`.
    fn stage(&self, py: Python<'_>) -> PyResult<Stage> {
        let cache = self.get()?;
        let guard = py.detach(|| cache.stage()).map_err(py_err)?;
        Ok(Stage {
            rel: relative(&cache, guard.path()),
            path: guard.path().to_owned(),
            guard: Mutex::new(Some(guard)),
        })
    }

    /// Store a copy of `src` as `name` and commit it: its contents become
    /// `data/` (`contents=True`), or it becomes `data/<its name>`
    /// (osbuild's rule without a trailing `/.`). Returns the commit's word.
    fn store_tree(
        &self,
        py: Python<'_>,
        name: &str,
        src: PathBuf,
        contents: bool,
    ) -> PyResult<&'static str> {
        let cache = self.get()?;
        py.detach(|| {
            if contents {
                return cache.store_tree(name, &src);
            }
            let guard = cache.store(name)?;
            guard.copy_as_child(&src, &mut |_| Ok(()))?;
            guard.commit()
        })
        .map(stored_word)
        .map_err(py_err)
    }

    /// Check `name` against its recorded digest: `(state, missing)`, the
    /// state one of `ok`, `mismatch`, `unverified`, `incomplete`, `miss`,
    /// and for `incomplete` the parts that are gone.
    fn verify(&self, py: Python<'_>, name: &str) -> PyResult<(&'static str, Vec<&'static str>)> {
        let cache = self.get()?;
        let v = py.detach(|| cache.verify(name)).map_err(py_err)?;
        Ok(match v {
            Verified::Ok(_) => ("ok", vec![]),
            Verified::Mismatch { .. } => ("mismatch", vec![]),
            Verified::Unverified => ("unverified", vec![]),
            Verified::Incomplete { missing } => ("incomplete", missing.names()),
            _ => ("miss", vec![]),
        })
    }

    /// The cache's statistics (summed over every process), as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cache = self.get()?;
        let stats = py.detach(|| cache.stats()).map_err(py_err)?;
        let d = PyDict::new(py);
        for (k, v) in stats.fields() {
            d.set_item(k, v)?;
        }
        d.set_item("loads", stats.loads())?;
        d.set_item("misses", stats.misses())?;
        d.set_item("hit_rate", stats.hit_rate())?;
        Ok(d)
    }

    /// Remove least-recently-used entries down to `to` bytes and/or those
    /// unused for `unused_for` seconds: `(removed, skipped, freed,
    /// accounted)`.
    #[pyo3(signature = (to=None, unused_for=None, dry_run=false))]
    fn prune(
        &self,
        py: Python<'_>,
        to: Option<u64>,
        unused_for: Option<f64>,
        dry_run: bool,
    ) -> PyResult<(Vec<String>, Vec<String>, u64, u64)> {
        let unused_for = unused_for
            .map(|s| Duration::try_from_secs_f64(s.max(0.0)))
            .transpose()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let cache = self.get()?;
        let r = py
            .detach(|| {
                let mut opts = PruneOptions::new().dry_run(dry_run);
                if let Some(to) = to {
                    opts = opts.to(to);
                }
                if let Some(age) = unused_for {
                    opts = opts.unused_for(age);
                }
                cache.prune(opts)
            })
            .map_err(py_err)?;
        Ok((r.removed, r.skipped, r.freed, r.accounted))
    }

    /// The committed entries: `(name, size or None, last use as a Unix
    /// time, in use now)`, sorted by name.
    #[allow(clippy::type_complexity)]
    fn entries(&self, py: Python<'_>) -> PyResult<Vec<(String, Option<u64>, f64, bool)>> {
        let cache = self.get()?;
        let list = py.detach(|| cache.entries()).map_err(py_err)?;
        Ok(list
            .into_iter()
            .map(|e| {
                let t = e
                    .last_use
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                (e.name, e.size, t, e.in_use)
            })
            .collect())
    }

    /// Remove `name` unless someone holds it: `removed`, `in-use` or
    /// `missing`.
    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<&'static str> {
        let cache = self.get()?;
        Ok(match py.detach(|| cache.remove(name)).map_err(py_err)? {
            Removed::Removed { .. } => "removed",
            Removed::InUse => "in-use",
            Removed::Missing => "missing",
        })
    }

    /// Remove the debris of dead writers: `(removed names, freed bytes)`.
    fn sweep(&self, py: Python<'_>) -> PyResult<(Vec<String>, u64)> {
        let cache = self.get()?;
        let s = py.detach(|| cache.sweep()).map_err(py_err)?;
        Ok((s.removed, s.freed))
    }

    /// Whole-cache repair (debris removed, `cache.size` recounted), only
    /// while no other handle has the cache open: `(removed names,
    /// accounted before, accounted after)`, or `None` if others have it.
    #[allow(clippy::type_complexity)]
    fn repair(&self, py: Python<'_>) -> PyResult<Option<(Vec<String>, Option<u64>, u64)>> {
        let cache = self.get()?;
        let r = py.detach(|| cache.repair()).map_err(py_err)?;
        Ok(r.map(|r| (r.removed, r.accounted_before, r.accounted)))
    }

    /// `(accounted bytes, bytes on disk, entries)`.
    fn usage(&self, py: Python<'_>) -> PyResult<(u64, u64, usize)> {
        let cache = self.get()?;
        let u = py.detach(|| cache.usage()).map_err(py_err)?;
        Ok((u.accounted, u.on_disk, u.entries))
    }

    /// Load `name`, or build it once across every process: `build(path)`
    /// fills the absolute `data/` path it is given. The entry held (or,
    /// when the cache could not keep it, the built tree).
    fn load_or_build(&self, py: Python<'_>, name: &str, build: Py<PyAny>) -> PyResult<Entry> {
        let cache = self.get()?;
        let got = py.detach(|| {
            cache.load_or_build(name, |path: &Path| -> Result<(), BuildError> {
                Python::attach(|py| build.call1(py, (path.to_owned(),)).map(drop))
                    .map_err(BuildError::Python)
            })
        });
        match got {
            Ok(o) => Ok(Entry::new(&cache, o.path().to_owned(), Held::Obtained(o))),
            Err(BuildError::Cache(e)) => Err(py_err(e)),
            Err(BuildError::Python(e)) => Err(e),
        }
    }

    #[cfg(feature = "remote")]
    /// Push `name` to the remote at `url`: a dict of what the push did, or
    /// `None` when the entry is not here.
    fn push<'py>(
        &self,
        py: Python<'py>,
        url: &str,
        name: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let cache = self.get()?;
        let remote = self.remote(url)?;
        let report = py
            .detach(|| remote.push(&cache, name))
            .map_err(remote_err)?;
        let Some(r) = report else { return Ok(None) };
        let d = PyDict::new(py);
        d.set_item("published", format!("{:?}", r.outcome))?;
        d.set_item("digest", r.digest.to_string())?;
        d.set_item("nodes", r.nodes)?;
        d.set_item("blobs", r.blobs)?;
        d.set_item("blobs_uploaded", r.blobs_uploaded)?;
        d.set_item("bytes_uploaded", r.bytes_uploaded)?;
        d.set_item("bytes_total", r.bytes_total)?;
        Ok(Some(d))
    }

    #[cfg(feature = "remote")]
    /// Pull `name` from the remote at `url` into this cache: the entry
    /// held, or `None` when the remote lacks it.
    fn pull(&self, py: Python<'_>, url: &str, name: &str) -> PyResult<Option<Entry>> {
        let cache = self.get()?;
        let remote = self.remote(url)?;
        let got = py
            .detach(|| remote.pull(&cache, name))
            .map_err(remote_err)?;
        Ok(got.map(|o| Entry::new(&cache, o.path().to_owned(), Held::Obtained(o))))
    }

    #[cfg(feature = "remote")]
    /// Load `name` locally, else pull it from the remote at `url`; a miss
    /// of both (or a remote that fails) is `None`.
    fn load_or_pull(&self, py: Python<'_>, url: &str, name: &str) -> PyResult<Option<Entry>> {
        let cache = self.get()?;
        let remote = self.remote(url)?;
        let got = py
            .detach(|| remote.load_or_pull(&cache, name))
            .map_err(remote_err)?;
        let Some(path) = got.path().map(Path::to_owned) else {
            return Ok(None);
        };
        Ok(Some(Entry::new(&cache, path, Held::ReadThrough(got))))
    }
}

/// The application boot id of `appid` in this boot (osbuild's
/// `creation-boot-id`).
#[pyfunction]
fn app_boot_id(appid: &str) -> PyResult<String> {
    fscache::current_app_boot_id(appid).map_err(|e| PyOSError::new_err(e.to_string()))
}

/// The tree digest (`blake3v3:<hex>`, version 3) of the directory at `path`.
#[pyfunction]
fn tree_digest(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    py.detach(|| fscache::tree_digest(&path))
        .map(|d| d.to_string())
        .map_err(py_err)
}

/// The module `fscache._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Cache>()?;
    m.add_class::<Entry>()?;
    m.add_class::<Store>()?;
    m.add_class::<Stage>()?;
    m.add_class::<LoadContext>()?;
    m.add_class::<StoreContext>()?;
    m.add_class::<StageContext>()?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add_function(wrap_pyfunction!(app_boot_id, m)?)?;
    m.add_function(wrap_pyfunction!(tree_digest, m)?)?;
    m.add("VERSION", fscache::VERSION)?;
    m.add("HAS_REMOTE", cfg!(feature = "remote"))?;
    Ok(())
}
