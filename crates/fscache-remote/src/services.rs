//! From a remote URL to an OpenDAL operator: the schemes, their query
//! parameters, and the services behind optional features (see
//! [`RemoteBuilder::open`](crate::RemoteBuilder::open) for the list).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use opendal::Operator;

use crate::error::{Error, Result};

/// The root directory of a `file://` URL (`None` for other schemes or a
/// URL that does not parse: `operator` says why).
pub(crate) fn fs_root(url: &str) -> Option<PathBuf> {
    let u = url::Url::parse(url).ok()?;
    (u.scheme() == "file" && url.contains("://"))
        .then(|| u.to_file_path().ok())
        .flatten()
}

fn bad(url: &str, why: impl Into<String>) -> Error {
    Error::Url {
        url: url.into(),
        why: why.into(),
    }
}

/// The OpenDAL operator for a URL (without layers).
pub(crate) fn operator(url_str: &str, credentials: Option<&(String, String)>) -> Result<Operator> {
    let url = url::Url::parse(url_str).map_err(|e| bad(url_str, e.to_string()))?;
    // `file:relative` parses (as `/relative`), and would quietly use a
    // path at the root of the file system: every form here has `//`.
    if !url_str.contains("://") {
        return Err(bad(
            url_str,
            format!(
                "expected {}://… (`//` is missing; a file URL is file:///ABSOLUTE/PATH)",
                url.scheme()
            ),
        ));
    }
    let built = match url.scheme() {
        "file" => {
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(bad(url_str, "a file URL must name a local path"));
            }
            let path = url
                .to_file_path()
                .map_err(|()| bad(url_str, "not an absolute path"))?;
            let root = path.to_str().ok_or_else(|| bad(url_str, "not UTF-8"))?;
            // Every write goes to a temporary file in the same file system
            // and is renamed into place, so no reader sees half a blob or
            // half a manifest.
            let tmp = path.join(".tmp");
            let tmp = tmp.to_str().ok_or_else(|| bad(url_str, "not UTF-8"))?;
            Operator::new(
                opendal::services::Fs::default()
                    .root(root)
                    .atomic_write_dir(tmp),
            )
            .map(|b| b.finish())
        }
        "memory" => {
            let fresh = || Operator::new(opendal::services::Memory::default()).map(|b| b.finish());
            match url.host_str().filter(|h| !h.is_empty()) {
                None => fresh(),
                // A named store lives as long as the process, so two opens
                // of one name (two "hosts" in a test) share it.
                Some(name) => {
                    static NAMED: OnceLock<Mutex<HashMap<String, Operator>>> = OnceLock::new();
                    let mut named = NAMED
                        .get_or_init(Default::default)
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    match named.get(name) {
                        Some(op) => Ok(op.clone()),
                        None => fresh().inspect(|op| {
                            named.insert(name.to_string(), op.clone());
                        }),
                    }
                }
            }
        }
        "s3" => {
            let bucket = url
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad(url_str, "no bucket: expected s3://BUCKET/PREFIX"))?;
            let mut b = opendal::services::S3::default()
                .bucket(bucket)
                .root(url.path());
            let mut region = None;
            for (k, v) in url.query_pairs() {
                match &*k {
                    "endpoint" => b = b.endpoint(&v),
                    "region" => region = Some(v.into_owned()),
                    "virtual-host" if v == "true" || v == "1" => b = b.enable_virtual_host_style(),
                    other => return Err(bad(url_str, format!("unknown parameter `{other}`"))),
                }
            }
            let region = region
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into());
            b = b.region(&region);
            if let Some((id, secret)) = credentials {
                b = b
                    .access_key_id(id)
                    .secret_access_key(secret)
                    .disable_config_load();
            }
            Operator::new(b).map(|b| b.finish())
        }
        "gs" | "gcs" => gcs(url_str, &url)?,
        "azblob" => azblob(url_str, &url)?,
        "redis" | "rediss" => redis(url_str, &url)?,
        "webdav" | "webdav+http" | "webdav+https" | "http" | "https" => webdav(url_str, &url)?,
        other => {
            return Err(bad(
                url_str,
                format!(
                    "unsupported scheme `{other}` (file, s3, memory; gs, azblob, redis, \
                     webdav with their cargo features)"
                ),
            ))
        }
    };
    built.map_err(|e| bad(url_str, e.to_string()))
}

/// The error for a URL whose service's cargo feature is off.
#[allow(dead_code)] // unused when every feature is on
fn feature_off(url_str: &str, feature: &str) -> Error {
    bad(
        url_str,
        format!(
            "this build has no `{feature}` service: rebuild fscache-remote with \
             `--features {feature}`"
        ),
    )
}

/// The bucket (host) and prefix (path) of `scheme://BUCKET/PREFIX`.
#[allow(dead_code)] // unused when no feature needs it
fn bucket_and_root<'u>(url_str: &str, url: &'u url::Url, what: &str) -> Result<(&'u str, &'u str)> {
    let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
        bad(
            url_str,
            format!(
                "no {what}: expected {}://{}/PREFIX",
                url.scheme(),
                what.to_uppercase()
            ),
        )
    })?;
    Ok((bucket, url.path()))
}

/// `gs://BUCKET/PREFIX[?endpoint=URL]`: Google Cloud Storage, credentials
/// from `GOOGLE_APPLICATION_CREDENTIALS` or the VM's metadata server.
#[cfg(feature = "gcs")]
fn gcs(url_str: &str, url: &url::Url) -> Result<opendal::Result<Operator>> {
    let (bucket, root) = bucket_and_root(url_str, url, "bucket")?;
    let mut b = opendal::services::Gcs::default().bucket(bucket).root(root);
    for (k, v) in url.query_pairs() {
        match &*k {
            "endpoint" => b = b.endpoint(&v),
            "credential-path" => b = b.credential_path(&v),
            other => return Err(bad(url_str, format!("unknown parameter `{other}`"))),
        }
    }
    Ok(Operator::new(b).map(|b| b.finish()))
}

#[cfg(not(feature = "gcs"))]
fn gcs(url_str: &str, _: &url::Url) -> Result<opendal::Result<Operator>> {
    Err(feature_off(url_str, "gcs"))
}

/// `azblob://CONTAINER/PREFIX?endpoint=https://ACCOUNT.blob.core.windows.net`:
/// Azure Blob Storage; the account from `account=` or
/// `AZURE_STORAGE_ACCOUNT`, the key from `AZURE_STORAGE_KEY` or a SAS
/// token from `AZURE_STORAGE_SAS_TOKEN`.
#[cfg(feature = "azblob")]
fn azblob(url_str: &str, url: &url::Url) -> Result<opendal::Result<Operator>> {
    let (container, root) = bucket_and_root(url_str, url, "container")?;
    let mut b = opendal::services::Azblob::default()
        .container(container)
        .root(root);
    let mut endpoint = false;
    let mut account = std::env::var("AZURE_STORAGE_ACCOUNT").ok();
    for (k, v) in url.query_pairs() {
        match &*k {
            "endpoint" => {
                b = b.endpoint(&v);
                endpoint = true;
            }
            "account" => account = Some(v.into_owned()),
            other => return Err(bad(url_str, format!("unknown parameter `{other}`"))),
        }
    }
    if !endpoint {
        return Err(bad(
            url_str,
            "no endpoint: add ?endpoint=https://ACCOUNT.blob.core.windows.net",
        ));
    }
    if let Some(a) = account {
        b = b.account_name(&a);
    }
    if let Ok(k) = std::env::var("AZURE_STORAGE_KEY") {
        b = b.account_key(&k);
    }
    if let Ok(t) = std::env::var("AZURE_STORAGE_SAS_TOKEN") {
        b = b.sas_token(&t);
    }
    Ok(Operator::new(b).map(|b| b.finish()))
}

#[cfg(not(feature = "azblob"))]
fn azblob(url_str: &str, _: &url::Url) -> Result<opendal::Result<Operator>> {
    Err(feature_off(url_str, "azblob"))
}

/// `redis://[USER:PASSWORD@]HOST[:PORT][/DB][?root=PREFIX]` (`rediss://`
/// for TLS).
#[cfg(feature = "redis")]
fn redis(url_str: &str, url: &url::Url) -> Result<opendal::Result<Operator>> {
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad(url_str, "no host: expected redis://HOST:PORT/DB"))?;
    let port = url.port().unwrap_or(6379);
    let tls = if url.scheme() == "rediss" {
        "rediss"
    } else {
        "redis"
    };
    let mut b = opendal::services::Redis::default().endpoint(&format!("{tls}://{host}:{port}"));
    if !url.username().is_empty() {
        b = b.username(url.username());
    }
    if let Some(p) = url.password() {
        b = b.password(p);
    }
    match url.path().trim_matches('/') {
        "" => {}
        db => {
            let db: i64 = db
                .parse()
                .map_err(|_| bad(url_str, "the path must be a database number"))?;
            b = b.db(db);
        }
    }
    for (k, v) in url.query_pairs() {
        match &*k {
            "root" => b = b.root(&v),
            other => return Err(bad(url_str, format!("unknown parameter `{other}`"))),
        }
    }
    Ok(Operator::new(b).map(|b| b.finish()))
}

#[cfg(not(feature = "redis"))]
fn redis(url_str: &str, _: &url::Url) -> Result<opendal::Result<Operator>> {
    Err(feature_off(url_str, "redis"))
}

/// `webdav://HOST/PATH` (HTTPS), `webdav+http://HOST/PATH`, or a plain
/// `http(s)://HOST/PATH`: a WebDAV server; `USER:PASSWORD@` in the URL for
/// basic authentication.
#[cfg(feature = "webdav")]
fn webdav(url_str: &str, url: &url::Url) -> Result<opendal::Result<Operator>> {
    let scheme = match url.scheme() {
        "webdav" | "webdav+https" | "https" => "https",
        _ => "http",
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad(url_str, "no host"))?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut b = opendal::services::Webdav::default()
        .endpoint(&format!("{scheme}://{host}{port}"))
        .root(url.path());
    if !url.username().is_empty() {
        b = b.username(url.username());
    }
    if let Some(p) = url.password() {
        b = b.password(p);
    }
    if url.query().is_some_and(|q| !q.is_empty()) {
        return Err(bad(url_str, "a webdav URL takes no parameters"));
    }
    Ok(Operator::new(b).map(|b| b.finish()))
}

#[cfg(not(feature = "webdav"))]
fn webdav(url_str: &str, _: &url::Url) -> Result<opendal::Result<Operator>> {
    Err(feature_off(url_str, "webdav"))
}

/// Publish `bytes` at `root/key` only if nothing is there: written whole
/// and synced under `root/.tmp`, then `link`ed into place (`EEXIST`: the
/// name is taken, `Ok(Some(false))`). `Ok(None)`: this file system has no
/// hard links, so the caller falls back to the service's own write.
pub(crate) fn link_create_only(
    root: &Path,
    key: &str,
    bytes: &[u8],
) -> std::io::Result<Option<bool>> {
    use std::io::Write;
    let target = root.join(key);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp_dir = root.join(".tmp");
    fs::create_dir_all(&tmp_dir)?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = tmp_dir.join(format!("manifest-{}", crate::keys::hex(&id)));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| match fs::hard_link(&tmp, &target) {
        Ok(()) => Ok(Some(true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Some(false)),
        Err(e)
            if matches!(
                rustix::io::Errno::from_io_error(&e),
                Some(
                    rustix::io::Errno::PERM
                        | rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::XDEV
                )
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    });
    let _ = fs::remove_file(&tmp);
    if let Some(parent) = target.parent() {
        if matches!(linked, Ok(Some(true))) {
            // The new name durable, as OpenDAL's own writes are synced.
            File::open(parent).and_then(|d| d.sync_all())?;
        }
    }
    linked
}

#[cfg(test)]
mod tests {
    use crate::Remote;

    /// Each optional service's URL opens when its feature is on (no
    /// request is made at open), and says which feature to turn on when
    /// it is off.
    #[test]
    fn optional_services_open_or_name_their_feature() {
        let cases = [
            ("gcs", cfg!(feature = "gcs"), "gs://bucket/prefix"),
            (
                "azblob",
                cfg!(feature = "azblob"),
                "azblob://container/prefix?endpoint=http://127.0.0.1:10000/devstoreaccount1&account=devstoreaccount1",
            ),
            ("redis", cfg!(feature = "redis"), "redis://127.0.0.1:6379/2?root=/cache"),
            ("webdav", cfg!(feature = "webdav"), "webdav+http://127.0.0.1:8080/dav/cache"),
            ("webdav", cfg!(feature = "webdav"), "https://dav.example.com/cache"),
        ];
        for (feature, on, url) in cases {
            match Remote::open(url) {
                Ok(r) => assert!(on, "{url} opened without the `{feature}` feature: {r:?}"),
                Err(e) => {
                    assert!(!on, "{url}: {e}");
                    assert!(
                        e.to_string().contains(&format!("--features {feature}")),
                        "{e}"
                    );
                }
            }
        }
        assert!(Remote::open("ftp://host/x")
            .unwrap_err()
            .to_string()
            .contains("unsupported scheme `ftp`"));
        // Without `//`: refused before anything is created anywhere.
        for url in ["file:relative", "file:/abs/path", "s3:bucket/x", "memory:"] {
            let e = Remote::open(url).unwrap_err();
            assert!(e.to_string().contains("`//` is missing"), "{url}: {e}");
        }
        assert!(!std::path::Path::new("/relative").exists());
    }
}
