//! osbuild's `load(name)`, `store(name)` and `stage()` context managers,
//! native so that a hit runs no Python frame but the `with` itself.

use super::*;

/// osbuild's `load(name)` context manager, made by `Cache.load_context`.
// A free list: a hit allocates no new object (and so brings the cyclic
// collector's next run no closer).
#[pyclass(frozen, freelist = 16, module = "fscache._native")]
pub struct LoadContext {
    pub(crate) cache: Py<Cache>,
    /// The name, borrowed from the Python string where the ABI allows
    /// (else from its UTF-8 bytes): no copy of it is made.
    pub(crate) name: PyBackedStr,
    pub(crate) held: Mutex<Option<fscache::Entry>>,
}

#[pymethods]
impl LoadContext {
    /// Load the entry: its `data/` relative to the cache root
    /// (`objects/NAME/data`), or the miss exception. An empty name is
    /// `ValueError`, as osbuild has it; any other invalid name cannot be
    /// an entry, so it is a miss.
    ///
    /// The GIL stays held: a load is a few system calls that do not wait
    /// (the entry's lock is only tried), microseconds on a local file
    /// system, and releasing and retaking the GIL around them cost a
    /// tenth of a hit.
    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyString>> {
        if self.name.is_empty() {
            return Err(PyValueError::new_err(()));
        }
        let mut held = locked(&self.held);
        if held.is_some() {
            return Err(Error::new_err("this load is already entered"));
        }
        let cache = self.cache.get();
        let got = match cache.with_entered(|c| c.load(&self.name))? {
            Ok(got) => got,
            Err(fscache::Error::InvalidName(_)) => None,
            Err(e) => return Err(py_err(e)),
        };
        let Some(entry) = got else {
            return Err(PyErr::from_type(cache.miss.bind(py).clone(), ()));
        };
        *held = Some(entry);
        Ok(cache.rel_of(py, &self.name))
    }

    /// Release the read lock (one `close`, with the GIL held, unless the
    /// cache was closed meanwhile: then this may be its last user, whose
    /// drop flushes its statistics); never swallows the exception. (Three
    /// plain parameters, not `*args`: a tuple per call would count
    /// towards the cyclic collector's next run.)
    #[pyo3(signature = (_exc_type=None, _exc_value=None, _traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let held = locked(&self.held).take();
        if locked(&self.cache.get().handle).is_some() {
            drop(held);
        } else {
            py.detach(move || drop(held));
        }
        false
    }
}

/// osbuild's `store(name)` context manager, made by `Cache.store_context`.
// A free list: a hit allocates no new object (and so brings the cyclic
// collector's next run no closer).
#[pyclass(frozen, freelist = 16, module = "fscache._native")]
pub struct StoreContext {
    pub(crate) cache: Py<Cache>,
    pub(crate) name: String,
    pub(crate) guard: Mutex<Option<StoreGuard>>,
}

#[pymethods]
impl StoreContext {
    /// Make the private entry: its empty `data/`, relative to the cache
    /// root. An incompatible cache gives a stage, discarded at the end.
    fn __enter__(&self, py: Python<'_>) -> PyResult<String> {
        if self.name.is_empty() {
            return Err(PyValueError::new_err(()));
        }
        if locked(&self.guard).is_some() {
            return Err(Error::new_err("this store is already entered"));
        }
        let cache = self.cache.get().entered()?;
        let guard = py.detach(|| cache.store(&self.name)).map_err(py_err)?;
        let rel = relative(&cache, guard.path());
        *locked(&self.guard) = Some(guard);
        Ok(rel)
    }

    /// Commit on a clean exit (whatever the cache then keeps), discard on
    /// an exception (which goes on).
    #[pyo3(signature = (exc_type=None, _exc_value=None, _traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let guard = locked(&self.guard).take();
        match (guard, exc_type) {
            (Some(guard), None) => py.detach(|| guard.commit()).map(drop).map_err(py_err)?,
            (guard, _) => py.detach(move || drop(guard)),
        }
        Ok(false)
    }
}

/// osbuild's `stage()` context manager, made by `Cache.stage_context`.
// A free list: a hit allocates no new object (and so brings the cyclic
// collector's next run no closer).
#[pyclass(frozen, freelist = 16, module = "fscache._native")]
pub struct StageContext {
    pub(crate) cache: Py<Cache>,
    pub(crate) guard: Mutex<Option<StageGuard>>,
}

#[pymethods]
impl StageContext {
    /// Make the scratch directory: its `data/`, relative to the cache root.
    fn __enter__(&self, py: Python<'_>) -> PyResult<String> {
        if locked(&self.guard).is_some() {
            return Err(Error::new_err("this stage is already entered"));
        }
        let cache = self.cache.get().entered()?;
        let guard = py.detach(|| cache.stage()).map_err(py_err)?;
        let rel = relative(&cache, guard.path());
        *locked(&self.guard) = Some(guard);
        Ok(rel)
    }

    /// Remove the scratch directory completely; never swallows the
    /// exception.
    #[pyo3(signature = (_exc_type=None, _exc_value=None, _traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        drop_detached(py, &self.guard);
        false
    }
}
