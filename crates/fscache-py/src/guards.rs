//! The Python objects that own the facade's guards: [`Entry`] (a read-locked
//! entry), [`Store`] (an entry being written) and [`Stage`] (a scratch
//! directory), each ended explicitly or by being dropped.

use super::*;

/// What an [`Entry`] holds: one of the facade's read-locked results.
pub(crate) enum Held {
    Entry(fscache::Entry),
    Obtained(Obtained),
    #[cfg(feature = "remote")]
    ReadThrough(ReadThrough),
}

/// A loaded (read-locked) entry; `release` drops the lock.
#[pyclass(frozen, module = "fscache._native")]
pub struct Entry {
    pub(crate) held: Mutex<Option<Held>>,
    pub(crate) rel: String,
    pub(crate) path: PathBuf,
    pub(crate) cached: bool,
}

impl Held {
    /// The content's directory.
    fn path(&self) -> Option<&Path> {
        match self {
            Held::Entry(e) => Some(e.path()),
            Held::Obtained(o) => Some(o.path()),
            #[cfg(feature = "remote")]
            Held::ReadThrough(r) => r.path(),
        }
    }
}

impl Entry {
    pub(crate) fn new(cache: &FsCache, path: PathBuf, held: Held) -> Self {
        debug_assert_eq!(held.path(), Some(path.as_path()));
        let cached = match &held {
            Held::Entry(_) => true,
            Held::Obtained(o) => o.is_cached(),
            #[cfg(feature = "remote")]
            Held::ReadThrough(ReadThrough::Local(_)) => true,
            #[cfg(feature = "remote")]
            Held::ReadThrough(ReadThrough::Pulled(o)) => o.is_cached(),
            #[cfg(feature = "remote")]
            Held::ReadThrough(ReadThrough::Miss { .. }) => false,
        };
        Entry {
            rel: relative(cache, &path),
            path,
            held: Mutex::new(Some(held)),
            cached,
        }
    }
}

#[pymethods]
impl Entry {
    /// `data/` relative to the cache root (`objects/NAME/data`).
    #[getter]
    fn rel(&self) -> &str {
        &self.rel
    }

    /// `data/`, absolute.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether the content is a cache entry (not a tree the cache could
    /// not keep, handed out until release).
    #[getter]
    fn cached(&self) -> bool {
        self.cached
    }

    /// Release the read lock (or remove a tree the cache did not keep).
    fn release(&self, py: Python<'_>) {
        drop_detached(py, &self.held);
    }
}

/// An entry being stored; `commit` or `discard` ends it.
#[pyclass(frozen, module = "fscache._native")]
pub struct Store {
    pub(crate) guard: Mutex<Option<StoreGuard>>,
    pub(crate) rel: String,
    pub(crate) path: PathBuf,
}

impl Store {
    fn take(&self) -> PyResult<StoreGuard> {
        locked(&self.guard)
            .take()
            .ok_or_else(|| Error::new_err("the store was already committed or discarded"))
    }
}

#[pymethods]
impl Store {
    /// The private `data/`, relative to the cache root.
    #[getter]
    fn rel(&self) -> &str {
        &self.rel
    }

    /// The private `data/`, absolute.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Commit: measure, charge (evicting when full), rename to the name.
    /// Returns what happened: `committed`, `exists`, `too-large`,
    /// `no-space` or `incompatible`.
    fn commit(&self, py: Python<'_>) -> PyResult<&'static str> {
        let guard = self.take()?;
        py.detach(|| guard.commit())
            .map(stored_word)
            .map_err(py_err)
    }

    /// Discard the entry and its content (a no-op once committed).
    fn discard(&self, py: Python<'_>) {
        drop_detached(py, &self.guard);
    }
}

/// A scratch directory; `close` removes it.
#[pyclass(frozen, module = "fscache._native")]
pub struct Stage {
    pub(crate) guard: Mutex<Option<StageGuard>>,
    pub(crate) rel: String,
    pub(crate) path: PathBuf,
}

#[pymethods]
impl Stage {
    /// The scratch `data/`, relative to the cache root.
    #[getter]
    fn rel(&self) -> &str {
        &self.rel
    }

    /// The scratch `data/`, absolute.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Remove the scratch directory completely.
    fn close(&self, py: Python<'_>) {
        drop_detached(py, &self.guard);
    }
}
