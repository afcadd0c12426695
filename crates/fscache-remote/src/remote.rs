//! [`Remote`]: opening an object store from a URL, and the raw object
//! access the push and pull are built on.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fscache::meta::OnDrop;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::Operator;

use crate::error::{Error, Result};
use crate::keys::{PublicKey, SecretKey};

/// The environment variable [`RemoteBuilder::from_env`] reads the URL from.
pub const ENV_REMOTE: &str = "FSCACHE_REMOTE";
/// The environment variable holding the secret key pushes sign with.
pub const ENV_SECRET_KEY: &str = "FSCACHE_REMOTE_SECRET_KEY";
/// The environment variable listing trusted public keys (separated by
/// commas or white space).
pub const ENV_TRUSTED_KEYS: &str = "FSCACHE_REMOTE_TRUSTED_KEYS";

/// Whether a [`Remote`] may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Access {
    /// Push and pull.
    #[default]
    ReadWrite,
    /// Pull only: [`Remote::push`] fails with [`Error::ReadOnly`] before
    /// any request.
    ReadOnly,
}

/// How to open a [`Remote`]: the URL, then options. See the
/// [crate docs](crate) for the URL forms.
#[derive(Clone)]
#[must_use = "a builder does nothing until `open`"]
pub struct RemoteBuilder {
    url: String,
    access: Access,
    signing_key: Option<SecretKey>,
    trusted: Vec<PublicKey>,
    concurrency: usize,
    timeout: Duration,
    miss_timeout: Duration,
    prune_wait: Duration,
    credentials: Option<(String, String)>,
    index_dir: Option<PathBuf>,
    pack_size: usize,
    must_exist: bool,
    on_drop: OnDrop,
}

impl fmt::Debug for RemoteBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteBuilder")
            .field("url", &self.url)
            .field("access", &self.access)
            .field("signing_key", &self.signing_key)
            .field("trusted", &self.trusted)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("miss_timeout", &self.miss_timeout)
            .field("prune_wait", &self.prune_wait)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .field("index_dir", &self.index_dir)
            .field("pack_size", &self.pack_size)
            .field("must_exist", &self.must_exist)
            .field("on_drop", &self.on_drop)
            .finish()
    }
}

impl RemoteBuilder {
    /// Options for the remote at `url`, with the defaults: read-write, no
    /// keys, 16 requests in flight, 60 s per request, 10 s for
    /// [`Remote::load_or_pull`] to reach the manifest.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            access: Access::ReadWrite,
            signing_key: None,
            trusted: Vec::new(),
            concurrency: 16,
            timeout: Duration::from_secs(60),
            miss_timeout: Duration::from_secs(10),
            prune_wait: Duration::from_secs(600),
            credentials: None,
            index_dir: default_index_dir(),
            pack_size: crate::pack::PACK_TARGET,
            must_exist: false,
            on_drop: OnDrop::Count,
        }
    }

    /// Options from the environment: the URL in `FSCACHE_REMOTE` (`None`
    /// when unset or empty), the signing key in
    /// `FSCACHE_REMOTE_SECRET_KEY` and the trusted keys in
    /// `FSCACHE_REMOTE_TRUSTED_KEYS`, when set.
    ///
    /// # Errors
    ///
    /// A key variable is set but does not hold keys.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(url) = std::env::var(ENV_REMOTE).ok().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        Self::new(url).keys_from_env().map(Some)
    }

    /// Take the signing key from `FSCACHE_REMOTE_SECRET_KEY` and the trusted
    /// keys from `FSCACHE_REMOTE_TRUSTED_KEYS` (comma- or space-separated),
    /// when set: for a URL given some other way (a command-line flag).
    ///
    /// # Errors
    ///
    /// A key variable is set but does not hold keys.
    pub fn keys_from_env(mut self) -> Result<Self> {
        // An error names the variable it came from; an empty one is unset.
        let named = |var: &str, e: Error| match e {
            Error::Key(why) => Error::Key(format!("${var}: {why}")),
            other => other,
        };
        if let Ok(k) = std::env::var(ENV_SECRET_KEY) {
            if !k.trim().is_empty() {
                self = self.signing_key(k.trim().parse().map_err(|e| named(ENV_SECRET_KEY, e))?);
            }
        }
        if let Ok(keys) = std::env::var(ENV_TRUSTED_KEYS) {
            for k in keys
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|k| !k.is_empty())
            {
                self = self.trust(k.parse().map_err(|e| named(ENV_TRUSTED_KEYS, e))?);
            }
        }
        Ok(self)
    }

    /// Refuse to open a remote that does not exist yet, instead of
    /// creating it: for commands that only read (list, info, check). On
    /// the `file` service, a missing root directory is then
    /// [`Error::NoRemote`] (otherwise it is made at the first write; the
    /// other services create nothing: a missing bucket is an error of
    /// the first request).
    pub fn must_exist(mut self, yes: bool) -> Self {
        self.must_exist = yes;
        self
    }

    /// Read-write (the default) or read-only.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Sign every manifest this remote pushes with `key`.
    pub fn signing_key(mut self, key: SecretKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// Trust manifests signed by `key`. Once any key is trusted, a pull
    /// refuses every manifest without a valid signature by a trusted key.
    pub fn trust(mut self, key: PublicKey) -> Self {
        self.trusted.push(key);
        self
    }

    /// How many blob requests a push or pull keeps in flight (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The time limit of each request, its retries included (OpenDAL's
    /// `TimeoutLayer` around its `RetryLayer`, which retries a failed
    /// request up to 3 times): a silent server fails a request after
    /// this long (default 60 s). For a read or a write, it bounds each
    /// chunk of I/O, so a long transfer that moves is not cut.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// How long [`Remote::load_or_pull`] waits for the manifest (retries
    /// included) before calling it a miss.
    pub fn miss_timeout(mut self, t: Duration) -> Self {
        self.miss_timeout = t;
        self
    }

    /// How long a push waits for a prune in progress on the remote to end
    /// before it fails with [`Error::PruneInProgress`] (default 10 min;
    /// see the [crate docs](crate#garbage)).
    pub fn prune_wait(mut self, t: Duration) -> Self {
        self.prune_wait = t;
        self
    }

    /// Where a pusher keeps its copy of the remote's index objects (one
    /// subdirectory per remote URL), so each push reads only the ones
    /// new since its last; `None` keeps no copy. Default:
    /// `$XDG_CACHE_HOME/fscache-remote/index`, else
    /// `$HOME/.cache/fscache-remote/index`.
    pub fn index_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.index_dir = dir;
        self
    }

    /// The size at which a push closes a pack (default 16 MiB; at least
    /// 4 KiB). Smaller packs cost more requests; tests use them to get
    /// many packs from a small tree.
    pub fn pack_size(mut self, bytes: usize) -> Self {
        self.pack_size = bytes.max(4096);
        self
    }

    /// What a pull does with node metadata it cannot restore (an owner
    /// as non-root, a set-ID bit on an owner not kept, an xattr the
    /// kernel refuses): drop it and count it, as `tar` and `cp -a` do
    /// ([`OnDrop::Count`], the default), or refuse the pull
    /// ([`OnDrop::Fail`], strict: an [`Error::Io`] naming the path and
    /// what it could not keep, and nothing is stored).
    pub fn on_drop(mut self, on_drop: OnDrop) -> Self {
        self.on_drop = on_drop;
        self
    }

    /// S3 credentials to use instead of the standard `AWS_*` variables and
    /// profiles.
    pub fn credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// Open the remote: parse the URL, build the OpenDAL operator with its
    /// retry and timeout layers, start the internal runtime. No request is
    /// made yet.
    ///
    /// # Errors
    ///
    /// [`Error::Url`] for a URL this crate cannot open; the runtime could
    /// not start.
    pub fn open(self) -> Result<Remote> {
        if self.must_exist {
            if let Some(root) = crate::services::fs_root(&self.url) {
                if !root.is_dir() {
                    return Err(Error::NoRemote {
                        url: self.url.clone(),
                        why: format!("`{}` is not a directory", root.display()),
                    });
                }
            }
        }
        // The time limit is outside the retries: it bounds an operation,
        // retries and all, so a silent server fails it after `timeout`.
        let op = crate::services::operator(&self.url, self.credentials.as_ref())?
            .layer(
                RetryLayer::new()
                    .with_max_times(3)
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_jitter(),
            )
            .layer(
                TimeoutLayer::new()
                    .with_timeout(self.timeout)
                    .with_io_timeout(self.timeout),
            );
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("fscache-remote")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the runtime for", &self.url, e))?;
        Ok(Remote {
            inner: Arc::new(Inner {
                fs_root: crate::services::fs_root(&self.url),
                url: self.url,
                op,
                rt: crate::asyncapi::OwnRuntime::new(rt),
                access: self.access,
                signing_key: self.signing_key,
                trusted: self.trusted,
                concurrency: self.concurrency,
                miss_timeout: self.miss_timeout,
                prune_wait: self.prune_wait,
                index_dir: self.index_dir,
                pack_size: self.pack_size,
                on_drop: self.on_drop,
            }),
        })
    }
}

/// `$XDG_CACHE_HOME/fscache-remote/index`, else
/// `$HOME/.cache/fscache-remote/index` (an empty variable is unset).
fn default_index_dir() -> Option<PathBuf> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("fscache-remote").join("index"))
}

/// A remote tier: an object store holding blobs and signed manifests in
/// the [format](crate#the-remote-format-version-1). A cheap `Clone`,
/// `Send` and `Sync`; clones share one runtime and one connection pool.
///
/// Every operation runs on the remote's own tokio runtime. The `*_async`
/// methods (e.g. [`Remote::push_async`]) work from any executor; the
/// blocking ones refuse to run inside a tokio runtime
/// ([`Error::InsideRuntime`]) instead of panicking. Dropping the last
/// clone is safe anywhere, inside async code too.
#[derive(Clone)]
pub struct Remote {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub url: String,
    pub op: Operator,
    /// The root directory of a `file://` remote: its manifests are
    /// published with `link(2)`, which is create-only where OpenDAL's
    /// `fs` service checks and then renames (two racing pushers would
    /// both "win").
    pub fs_root: Option<PathBuf>,
    pub rt: crate::asyncapi::OwnRuntime,
    pub access: Access,
    pub signing_key: Option<SecretKey>,
    pub trusted: Vec<PublicKey>,
    pub concurrency: usize,
    pub miss_timeout: Duration,
    pub prune_wait: Duration,
    pub index_dir: Option<PathBuf>,
    pub pack_size: usize,
    /// What a pull does with metadata it cannot restore.
    pub on_drop: OnDrop,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.inner.url)
            .field("access", &self.inner.access)
            .field("trusted", &self.inner.trusted)
            .finish_non_exhaustive()
    }
}

/// The key of a blob: `v1/blobs/<first 2 hex>/<64 hex>`.
pub(crate) fn blob_key(hash: &str) -> String {
    format!("v1/blobs/{}/{hash}", &hash[..2])
}

/// The key of a manifest: `v1/manifests/<name>`.
pub(crate) fn manifest_key(name: &str) -> String {
    format!("v1/manifests/{name}")
}

impl Remote {
    /// Open the remote at `url` with default options
    /// ([`RemoteBuilder::new`]`(url).open()`).
    ///
    /// # Errors
    ///
    /// As [`RemoteBuilder::open`].
    pub fn open(url: &str) -> Result<Self> {
        RemoteBuilder::new(url).open()
    }

    /// Options for the remote at `url`.
    pub fn builder(url: impl Into<String>) -> RemoteBuilder {
        RemoteBuilder::new(url)
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether it may write.
    pub fn access(&self) -> Access {
        self.inner.access
    }

    /// Whether pushes are signed (a signing key is set).
    pub fn signs(&self) -> bool {
        self.inner.signing_key.is_some()
    }

    /// The names of every entry the remote holds a manifest for, sorted.
    ///
    /// # Errors
    ///
    /// The listing failed.
    pub fn list(&self) -> Result<Vec<String>> {
        let prefix = "v1/manifests/";
        let op = &self.inner.op;
        let mut names: Vec<String> = self
            .inner
            .block("list", op.list(prefix))?
            .map_err(|e| Error::remote("list", prefix, e))?
            .into_iter()
            .filter_map(|e| e.path().strip_prefix(prefix).map(str::to_string))
            .filter(|n| !n.is_empty() && !n.ends_with('/'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Read one object of the layout as stored, e.g.
    /// `v1/manifests/NAME`; `None` when absent. For tools that inspect
    /// the bucket (and tests that damage it).
    ///
    /// # Errors
    ///
    /// The request failed.
    pub fn read_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.block("read_object", self.inner.read(key))?
    }

    /// Write one object as given, bypassing every check of the format and
    /// the read-only mode. For repair tools and tests that damage a bucket
    /// on purpose.
    ///
    /// # Errors
    ///
    /// The request failed.
    pub fn write_object_unchecked(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.inner
            .block("write_object_unchecked", self.inner.op.write(key, bytes))?
            .map(drop)
            .map_err(|e| Error::remote("write", key, e))
    }

    /// The keys of every object under `prefix` (recursively), sorted.
    ///
    /// # Errors
    ///
    /// The listing failed.
    pub fn list_objects(&self, prefix: &str) -> Result<Vec<String>> {
        let op = &self.inner.op;
        let mut keys: Vec<String> = self
            .inner
            .block("list_objects", async {
                op.list_with(prefix).recursive(true).await
            })?
            .map_err(|e| Error::remote("list", prefix, e))?
            .into_iter()
            .map(|e| e.path().to_string())
            .filter(|k| !k.ends_with('/'))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

impl Inner {
    pub(crate) async fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.op.read(key).await {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::remote("read", key, e)),
        }
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        match self.op.stat(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::remote("stat", key, e)),
        }
    }
}
