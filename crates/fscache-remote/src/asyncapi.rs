//! The async API ([`Remote::push_async`], [`Remote::pull_async`],
//! [`Remote::load_or_pull_async`], [`Remote::prune_async`]) and the two
//! bridges every operation goes through: `spawn` (an async method runs its
//! work on the remote's own runtime and awaits it from any executor) and
//! `block` (a blocking method, refused inside a runtime instead of
//! panicking). `OwnRuntime` makes dropping the last [`Remote`] safe
//! anywhere.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use fscache::{FsCache, Obtained};

use crate::error::{Error, Result};
use crate::prune::{PruneOptions, PruneReport};
use crate::pull::ReadThrough;
use crate::push::PushReport;
use crate::remote::{Inner, Remote};

/// The remote's tokio runtime, shut down without blocking when it is
/// dropped where blocking is not allowed.
///
/// Dropping a `tokio::runtime::Runtime` waits for its blocking tasks, and
/// tokio panics when that happens inside another runtime ("Cannot drop a
/// runtime in a context where blocking is not allowed"): an application
/// that keeps a `Remote` in its async state would crash at shutdown. So
/// inside a runtime (or on one of our own threads, when a detached task
/// held the last clone) the runtime is shut down in the background: its
/// blocking tasks (a file being read or written) finish on their own.
pub(crate) struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    pub(crate) fn new(rt: tokio::runtime::Runtime) -> Self {
        Self(Some(rt))
    }

    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime is only taken in drop")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                drop(rt);
            }
        }
    }
}

/// A task on the remote's runtime, aborted when its handle is dropped
/// (a cancelled `*_async` call stops its work: a push publishes nothing
/// more, a pull's guard removes its partial tree).
struct Spawned<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Spawned<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.map_err(|e| {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
                Error::io(
                    "finish",
                    "a remote task",
                    std::io::Error::other("the task was cancelled"),
                )
            })
        })
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Inner {
    /// Run `fut` to completion on the remote's runtime, for a blocking
    /// method named `what`.
    ///
    /// # Errors
    ///
    /// [`Error::InsideRuntime`] when called inside a tokio runtime, where
    /// `block_on` would panic (or stall an executor thread). That includes
    /// a `spawn_blocking` closure: tokio gives no way to tell it from a
    /// task, so there too use the `*_async` method (with
    /// `Handle::current().block_on`).
    pub(crate) fn block<F: Future>(&self, what: &'static str, fut: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InsideRuntime(what));
        }
        Ok(self.rt.get().block_on(fut))
    }

    /// Run `fut` on the remote's runtime and await it from whatever
    /// executor the caller uses (the returned future needs no tokio
    /// context of its own).
    pub(crate) fn spawn<F>(
        &self,
        fut: F,
    ) -> impl Future<Output = Result<F::Output>> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Spawned(self.rt.get().spawn(fut))
    }
}

/// Run blocking file work (a tree walk, a commit) off the runtime's
/// worker threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::io(
            "finish",
            "local file work",
            std::io::Error::other(e),
        )),
    }
}

impl Remote {
    /// [`Remote::push`], as a future that runs on the remote's runtime and
    /// may be awaited from any executor. Dropping the future cancels the
    /// push (nothing more is published).
    ///
    /// # Errors
    ///
    /// As [`Remote::push`].
    pub async fn push_async(&self, cache: &FsCache, name: &str) -> Result<Option<PushReport>> {
        let (inner, cache, name) = (self.inner.clone(), cache.clone(), name.to_owned());
        self.inner
            .spawn(async move { inner.push(&cache, &name, &|_| {}).await })
            .await?
    }

    /// [`Remote::pull`], as a future that runs on the remote's runtime.
    /// Dropping the future cancels the pull (its partial tree is removed).
    ///
    /// # Errors
    ///
    /// As [`Remote::pull`].
    pub async fn pull_async(&self, cache: &FsCache, name: &str) -> Result<Option<Obtained>> {
        let (inner, cache, name) = (self.inner.clone(), cache.clone(), name.to_owned());
        self.inner
            .spawn(async move { inner.pull(&cache, &name, &|_| {}).await })
            .await?
    }

    /// [`Remote::load_or_pull`], as a future that runs on the remote's
    /// runtime. A local hit makes no request.
    ///
    /// # Errors
    ///
    /// As [`Remote::load_or_pull`].
    pub async fn load_or_pull_async(&self, cache: &FsCache, name: &str) -> Result<ReadThrough> {
        if let Some(e) = cache.load(name)? {
            return Ok(ReadThrough::Local(e));
        }
        let (inner, cache, name) = (self.inner.clone(), cache.clone(), name.to_owned());
        self.inner
            .spawn(async move { inner.load_or_pull(&cache, &name).await })
            .await?
    }

    /// [`Remote::prune`], as a future that runs on the remote's runtime.
    ///
    /// # Errors
    ///
    /// As [`Remote::prune`].
    pub async fn prune_async(&self, opts: PruneOptions) -> Result<PruneReport> {
        let inner = self.inner.clone();
        self.inner
            .spawn(async move { inner.prune_checked(opts).await })
            .await?
    }
}
