//! A remote tier for [`fscache`]: share cache entries across machines
//! through an object store (S3 and S3-compatible servers, a shared file
//! system, memory for tests), content-addressed, deduplicated by
//! content-defined chunks, and signed.
//!
//! Use this when many hosts (CI runners, image builders) build the same
//! entries: what one host [pushes](Remote::push), the others
//! [pull](Remote::pull) into their own local cache, or get in one call with
//! [`Remote::load_or_pull`]. Only `fscache`'s public API is used: the local
//! cache's format, locks, limit and eviction are unchanged.
//!
//! ```
//! use fscache::FsCache;
//! use fscache_remote::{keygen, Remote, ReadThrough};
//!
//! let tmp = tempfile::tempdir()?;
//! let key = keygen()?;                     // keep the secret on pushers
//! let remote = Remote::builder(format!("file://{}", tmp.path().join("bucket").display()))
//!     .signing_key(key.clone())
//!     .trust(key.public_key())             // pullers refuse anything else
//!     .open()?;
//!
//! // Host A builds and pushes.
//! let a = FsCache::open("my-app", tmp.path().join("a"))?;
//! # a.set_info(fscache::CacheInfo { maximum_size: Some(fscache::MaxSize::Unlimited), ..Default::default() })?;
//! let w = a.store("step-1")?;
//! std::fs::write(w.path().join("out.o"), b"object code")?;
//! w.commit()?;
//! remote.push(&a, "step-1")?;
//!
//! // Host B: a local miss, pulled, checked and committed locally.
//! let b = FsCache::open("my-app", tmp.path().join("b"))?;
//! # b.set_info(fscache::CacheInfo { maximum_size: Some(fscache::MaxSize::Unlimited), ..Default::default() })?;
//! match remote.load_or_pull(&b, "step-1")? {
//!     ReadThrough::Local(_) | ReadThrough::Pulled(_) => {}
//!     ReadThrough::Miss { remote_error } => eprintln!("miss: {remote_error:?}"),
//! }
//! assert_eq!(std::fs::read(b.load("step-1")?.unwrap().path().join("out.o"))?, b"object code");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Opening a remote
//!
//! [`Remote::open`] takes a URL; [`RemoteBuilder::from_env`] reads it from
//! `FSCACHE_REMOTE` (and keys from `FSCACHE_REMOTE_SECRET_KEY` and
//! `FSCACHE_REMOTE_TRUSTED_KEYS`).
//!
//! | URL | service |
//! |---|---|
//! | `file:///srv/cache` | a directory (local or a network file system); writes go through `ROOT/.tmp` and a rename |
//! | `s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:9000&region=auto` | S3 or any S3-compatible server; `endpoint`, `region` and `virtual-host=true` are optional |
//! | `memory://` or `memory://NAME` | a store in this process: `memory://` is a new empty one at each open, `memory://NAME` the same one for every open of that name (tests) |
//! | `gs://BUCKET/PREFIX[?endpoint=URL&credential-path=FILE]` | Google Cloud Storage (cargo feature `gcs`); credentials from `GOOGLE_APPLICATION_CREDENTIALS` or the VM's metadata server |
//! | `azblob://CONTAINER/PREFIX?endpoint=https://ACCOUNT.blob.core.windows.net[&account=ACCOUNT]` | Azure Blob Storage (feature `azblob`); account also from `AZURE_STORAGE_ACCOUNT`, key from `AZURE_STORAGE_KEY` or a SAS token from `AZURE_STORAGE_SAS_TOKEN` |
//! | `redis://[USER:PASSWORD@]HOST[:PORT][/DB][?root=PREFIX]`, `rediss://…` | Redis (feature `redis`); it cannot list keys, so `list`, `info` and `prune` fail there: give entries a TTL on the server instead |
//! | `webdav://HOST/PATH` (HTTPS), `webdav+http://HOST/PATH`, `http(s)://HOST/PATH` | a WebDAV server (feature `webdav`); `USER:PASSWORD@` for basic authentication |
//!
//! `s3`, `file` and `memory` are always built; a URL of a service whose
//! feature is off is an [`Error::Url`] that names the feature to turn on.
//!
//! S3 credentials come from the standard `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE` variables and
//! profile files, or [`RemoteBuilder::credentials`]; the region from the
//! URL, else `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
//! [`Access::ReadOnly`] makes a pull-only remote. Each request has a time
//! limit and is retried (OpenDAL's `TimeoutLayer` and `RetryLayer`).
//!
//! Every operation runs on one tokio runtime per [`Remote`] (clones share
//! it). The blocking methods are thin layers over async ones:
//! [`Remote::push_async`], [`Remote::pull_async`],
//! [`Remote::load_or_pull_async`] and [`Remote::prune_async`] return
//! futures that any executor can await (tokio or not), and dropping one
//! cancels its work. A blocking method called inside a tokio runtime
//! returns [`Error::InsideRuntime`] instead of panicking; dropping the
//! last `Remote` is safe anywhere. No tokio or OpenDAL type is in the
//! API.
//!
//! # The remote format (version 1)
//!
//! (Also in `docs/format.md` of the fscache repository, beside the local
//! format.)
//!
//! Every key is relative to the URL's root (the path, or the S3 prefix):
//!
//! ```text
//! v1/blobs/<h[0..2]>/<h>     zstd(chunk), h = lowercase hex BLAKE3 of the chunk
//! v1/manifests/<NAME>        zstd(the manifest envelope of entry NAME, JSON)
//! v1/used/<NAME>             {"used": <Unix seconds>}: when NAME was last pushed or pulled
//! v1/intents/<32 hex>        zstd({"created": <Unix seconds>, "blobs": ["<h>", …]}): a push in progress
//! v1/prunes/<32 hex>         {"started": <Unix seconds>}: a prune in progress
//! ```
//!
//! Manifests and intents are written as one zstd frame of their JSON (a
//! manifest lists every hash of the tree, which compresses about 2:1); a
//! reader takes an object that does not start with zstd's magic number
//! (`28 b5 2f fd`) as the JSON itself, and refuses one that decompresses
//! past 1 GiB.
//!
//! * **Blobs.** A file's content is cut into content-defined chunks with
//!   FastCDC (the `fastcdc` crate's 2020 algorithm, normalization level 1,
//!   minimum 64 KiB, average 256 KiB, maximum 1 MiB); a file below the
//!   minimum is one chunk, an empty file none. Each chunk is stored once,
//!   under the BLAKE3 hash of its uncompressed bytes, as one zstd frame.
//!   Equal chunks anywhere, in any entry, are one blob: a file that changes
//!   a little re-uploads the chunks around the change.
//! * **Manifest envelope.** A JSON object:
//!   `{"format": "fscache-remote-manifest", "version": 1, "manifest": "<the
//!   manifest's JSON, as a string>", "signatures": [{"key":
//!   "ed25519:<64 hex>", "sig": "<128 hex>"}]}`. A signature is ed25519
//!   over the bytes `fscache-remote-manifest-v1` ‖ `0x00` ‖ the UTF-8 bytes
//!   of the `manifest` string, exactly as stored.
//! * **Manifest.** A JSON object with `format`
//!   (`"fscache-remote-manifest"`), `version` (`1`), `name` (the entry's
//!   name, which must equal the one asked for, so a signed manifest cannot
//!   be replayed under another name), `digest` (the tree digest of the
//!   entry's `data/`, `blake3v3:<64 hex>` in what a push writes,
//!   `blake3v2:` or `blake3:` in older manifests, as [`fscache::Digest`]
//!   defines it: the local entry's own digest), `created` (Unix seconds) and `nodes`, a list of the tree's nodes,
//!   each directory before anything in it. A node has `path` (relative,
//!   components joined by `/`, none empty, `.` or `..`), `type` and:
//!   * `"dir"`: `perm` (`st_mode & 0o7777`);
//!   * `"file"`: `perm`, `size`, `hash` (hex content hash of the
//!     digest's version, [`fscache::ContentHasher`]: in version 3 a hole
//!     is counted, never hashed; in versions 1 and 2 BLAKE3 of the whole
//!     content),
//!     `blobs` (the chunks in order, each `{"hash", "size"}`), and for the
//!     second and later names of one inode `link`, the first name (then
//!     `blobs` is empty: it is a hard link);
//!   * `"symlink"`: `perm`, `target`.
//!
//!   A node may also carry `uid`, `gid`, `mtime` and `xattrs`, each
//!   `{"name", "value": "<hex>"}` for a value of at most 1 KiB, else
//!   `{"name", "blob": {"hash", "size"}}`: the value stored as a blob like
//!   a file's chunk (packed, deduplicated, located), referenced from the
//!   signed manifest (`docs/format.md` has every field).
//!
//!   `digest` is recomputed from the nodes on every pull (file `hash` and
//!   `size` feed it), so a manifest whose tree does not match its digest is
//!   refused before any blob is fetched (with xattr blobs: before anything
//!   is written, once those blobs are fetched, as the digest covers their
//!   values).
//! * **Publication.** Blobs are written first, the manifest last (create-only
//!   where the service has a conditional write: S3 `If-None-Match: *`; a
//!   `link(2)` on a `file://` remote), so a manifest is never visible
//!   before a blob it names.
//! * **Use.** A push that publishes (or finds the name published) and a
//!   pull that commits write `v1/used/NAME` with the current time of the
//!   client's clock (best effort: a failure is ignored; a read-only remote
//!   writes nothing; a local hit of [`Remote::load_or_pull`] makes no
//!   request, so it is not recorded). Without a marker, the manifest's
//!   `created` counts.
//! * **Intents.** Before a push looks for any blob, it writes
//!   `v1/intents/<random id>` naming every blob of the tree, and removes
//!   it when done (published, found published, or failed).
//! * **Prune markers.** A prune (not a dry run) writes
//!   `v1/prunes/<random id>` before it lists anything and removes it when
//!   done. A marker older than one hour is a dead prune's and is ignored.
//!
//! # The remote format (version 2: packs)
//!
//! What a push writes since version 2 (`docs/format.md` has every byte);
//! a pull reads both. Manifests, `used` markers, intents and prune
//! markers keep their keys; blobs move into packs:
//!
//! ```text
//! v2/packs/<h[0..2]>/<h>     frames ‖ trailer ‖ trailer length (u64 LE) ‖ "FSCPACK2"; h = BLAKE3 of the pack
//! v2/index/<32 hex>          zstd({"format": "fscache-remote-index", "version": 2, "packs": [{"pack", "blobs": [[h, offset, length, size], …]}]})
//! v2/condemned/<h>           {"condemned": <Unix seconds>}: pack h is to be deleted
//! v1/manifests/<NAME>        the envelope, version 2: as version 1 plus "locator"
//! v1/intents/<32 hex>        zstd({"created": <Unix seconds>, "packs": ["v2/packs/…", …]})
//! ```
//!
//! * **Packs.** About 16 MiB ([`RemoteBuilder::pack_size`]) of blobs, the
//!   chunks of version 1, each one zstd frame, in tree order. The trailer
//!   (one zstd frame of `{"format": "fscache-remote-pack", "version": 2,
//!   "blobs": [[h, offset, length, size], …]}`) makes a pack
//!   self-describing: an index can be rebuilt from the packs alone.
//! * **Locator.** The envelope's `"locator": {"packs": [<pack hash>, …],
//!   "blobs": [[pack index, offset, length], …]}`, one entry per distinct
//!   blob in manifest order (first appearance; the files' blobs, then the
//!   xattr blobs no file has), outside the signed
//!   string: a repack or migration rewrites it without the key. It is not
//!   trusted: a frame longer than zstd's bound for the blob's size, a
//!   count or pack index that does not fit, refuses it; every frame must
//!   decode to its blob's hash, every file to its content hash.
//! * **Index.** Immutable objects, one per push that stored packs
//!   (written after them, before the manifest), listing their blobs for
//!   push-side dedupe. Each pusher keeps a copy of the objects it read
//!   ([`RemoteBuilder::index_cache`]) and reads only new ones: a push
//!   costs one listing of the index, not one of every blob.
//! * **Pull.** One GET of the envelope (manifest and locator); signature,
//!   manifest and digest checked first (xattr blobs fetched into memory
//!   and checked before that digest check); blobs grouped by pack, ranges
//!   merged across gaps up to 1 MiB (at most 8 MiB a read, gap bytes
//!   bounded to half the blobs' own), up to 8 ranged GETs in flight; each
//!   blob checked as decoded and written at its offsets; the tree's
//!   digest handed to the facade ([`fscache::StoreGuard::set_digest`]),
//!   not computed again. A missing pack gets one more read of the
//!   envelope, then [`Error::PackMissing`].
//! * **Push.** Each file read once; closed packs uploaded (up to 4 in
//!   flight) while the tree is still read; then the intent naming every
//!   pack the locator names, the wait for running prunes (and, if there
//!   was one, a `stat` of each of those packs), the index object, and the
//!   envelope last, create-only.
//!
//! # Garbage
//!
//! [`Remote::prune`] (`fscache remote prune --unused-for 30d`) works in
//! this order: list the blobs and the packs (only those can go: one
//! written later is never removed by this run); remove the manifests (and
//! `used` markers) of entries whose last use is older than `unused_for`;
//! collect the blobs and packs the remaining manifests name; list the
//! manifests again and read the new ones, and read the intents younger
//! than the grace period (older ones are removed: their push died); then
//! remove every listed version-1 blob that none of these name and that
//! the service says was written before the grace period (default 1 h).
//! Packs go in two phases: an unnamed pack older than the grace period
//! is condemned (a `v2/condemned/` marker, and the index objects listing
//! it are rewritten without it, so no push starts reusing it); a later
//! prune deletes it if it is still unnamed a grace period after, or
//! pardons it if a push named it meanwhile. Deletes are batched
//! (OpenDAL's deleter: 1000 keys per S3 request).
//!
//! So a push in progress keeps its blobs: those it uploaded are younger
//! than the grace period, and those it found already there are named by
//! its intent, which it writes before it looks for any blob. A prune that
//! started before that intent was written might not read it, so a push,
//! once its intent is written, lists the prune markers and waits until the
//! live ones it saw are gone ([`RemoteBuilder::prune_wait`], default 10
//! minutes; then it fails with [`Error::PruneInProgress`], publishing
//! nothing). A prune whose marker that listing did not show started after
//! it, and reads the intent before it removes anything; so prunes run back
//! to back never starve a push. The grace period must exceed the longest push, and a prune
//! should end within the marker's one-hour lease. This relies on listings
//! that show every object written before them (S3 since 2020, GCS, Azure,
//! a local file system).
//!
//! Ages of blobs come from the service's last-modified time, ages of
//! entries and intents from clients' clocks: keep clocks roughly in sync
//! (skew shortens or lengthens the grace period). The `memory` service
//! gives no times: there, prune removes manifests but never blobs.
//!
//! **Repack.** A live pack older than the grace period whose live share
//! (the bytes the remaining locators point at) is below
//! [`PruneOptions::repack_below`] (default 50 %) has its live blobs
//! checked and copied into new packs; the locators naming it are
//! rewritten (a conditional write where the service has one; the signed
//! manifest unchanged), and it is condemned like an unnamed pack.
//!
//! # Checking, healing and migrating
//!
//! [`Remote::check`] (`fscache remote check [--read-data] [--repair]`)
//! opens every manifest, checks that its locator fits it, that every pack
//! and format-1 blob it needs exists and that each pack's trailer lists
//! each blob where the locator says; with `read_data`, every needed pack
//! is read whole and every hash checked. With `repair`, bad packs leave
//! the index, damaged entries the given local cache holds are pushed again
//! (their blobs uploaded anew), and the others' manifests are removed,
//! each said in the [`CheckReport`]. [`Remote::migrate`] (`fscache remote
//! migrate`) rewrites a remote of version 1 into packs, every signature
//! still valid; a prune after the grace period removes the old blobs.
//!
//! # Errors
//!
//! No error message embeds its source: [`Error::summary`] gives the
//! cause first in one line ("connection refused at 127.0.0.1:9399",
//! "bucket `x` does not exist", "credentials rejected
//! (SignatureDoesNotMatch)"), [`Error::detail`] everything OpenDAL said.
//! [`RemoteBuilder::timeout`] bounds each request, its retries included.
//!
//! # Design
//!
//! [`Remote::push`] holds the local entry's read lock throughout and
//! reads the tree once: a walker thread stats it and hands each file to a
//! few worker threads, which cut it into FastCDC chunks, hash them and
//! (for the chunks the index lacks) compress them, each with one reused
//! zstd context; the packer takes each file's chunks in tree order (then
//! the xattr values over 1 KiB, as blobs) into
//! packs handed over a channel of one to the uploads, so reading,
//! compressing and uploading overlap, and the packs and manifest do not
//! depend on which thread was faster. Then intent, index
//! object and manifest as above. [`Remote::pull`] checks the manifest
//! (signature against the trusted keys, format, name, paths, digest),
//! plans the ranged reads from the locator, decodes and checks each blob
//! on the blocking pool and writes it at its offsets in a
//! [`fscache::StoreGuard`] (a file of one blob is made, written and
//! given its metadata there at once), restores modes, owners, times, xattrs,
//! symlinks, hard links and special files, then commits with
//! [`fscache::StoreGuard::commit_and_load`]. Any failure drops the guard,
//! which removes the partial tree.
//!
//! # Limitations
//!
//! * Names, symlink targets and xattr names that are not UTF-8 cannot be
//!   pushed ([`Error::Unsupported`]). Owners, modification times, xattrs,
//!   FIFOs, sockets, devices and sparse files' holes are carried (see
//!   `docs/format.md`); a pull restores them under the local cache's
//!   policy (owners only as root). A pull holds every xattr value of the
//!   entry in memory at once (those stored as blobs are fetched before
//!   the tree is built), as the manifest held them inline before.
//!   [`Remote::check`] checks the frames of xattr blobs like any blob, but
//!   not the digest of a manifest that has them (a pull does).
//! * A pack stays whole until its live share falls below
//!   [`PruneOptions::repack_below`] (then a prune repacks it): until
//!   then a pack shared by a live and a dead entry keeps the dead one's
//!   blobs. A remote of version 1 is read and [migrated](Remote::migrate)
//!   to packs; until it is, its blobs are not reused by version-2 pushes.
//! * A push whose name the remote already has is a no-op
//!   ([`Pushed::Exists`]); there is no overwrite. A push that failed after
//!   uploading packs leaves them unreferenced until a
//!   [prune](crate#garbage) removes them (the same host's next push
//!   reuses them first).
//! * On services without a conditional write (memory), two racing pushers
//!   of one name can both write the manifest; the last one wins, and each
//!   is complete and checked on pull.
//! * The tree digest of a pulled tree is computed here, as its blobs are
//!   decoded, from the encoding `fscache::Digest` documents, not by
//!   reading the restored tree again with `fscache::tree_digest` (which
//!   computes the same for a directory on disk); a test pins it to the
//!   documented vector, so the two cannot drift apart unseen.

#![forbid(unsafe_code)]

mod asyncapi;
mod check;
mod content;
mod envelope;
mod error;
mod fetch;
mod gc;
mod index;
mod keys;
mod locator;
mod manifest;
mod migrate;
mod node;
mod pack;
mod prune;
mod pull;
mod push;
mod remote;
mod repack;
mod scan;
mod services;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use check::{CheckOptions, CheckReport, Problem};
pub use error::{Error, Result};
pub use keys::{keygen, PublicKey, SecretKey, PUBLIC_PREFIX, SECRET_PREFIX};
pub use migrate::MigrateReport;
pub use prune::{PruneOptions, PruneReport, RemoteInfo};
pub use pull::ReadThrough;
pub use push::{Progress, PushReport, Pushed};
pub use remote::{Access, Remote, RemoteBuilder, ENV_REMOTE, ENV_SECRET_KEY, ENV_TRUSTED_KEYS};
