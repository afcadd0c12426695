//! The error type of `fscache-remote`.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// An error of a remote operation. A name the remote does not have is
/// never an error (`Ok(None)`), and
/// [`Remote::load_or_pull`](crate::Remote::load_or_pull) turns every remote
/// failure into a miss.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote URL (or `FSCACHE_REMOTE`) is not one this crate can open.
    #[error("invalid remote url `{url}`: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The local cache failed (or the entry name is invalid).
    #[error(transparent)]
    Cache(#[from] fscache::Error),
    /// A request to the object store failed (after OpenDAL's retries).
    #[error("remote {op} of `{key}` failed")]
    Remote {
        /// What was being done: "read", "write", "stat", "list", "delete".
        op: &'static str,
        /// The object key, relative to the remote's root.
        key: String,
        /// OpenDAL's error, as an `io::Error` (its kind survives).
        #[source]
        source: io::Error,
    },
    /// A local file operation failed.
    #[error("failed to {op} `{path}`")]
    Io {
        /// What was being done, e.g. "read".
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The remote was opened read-only and the operation writes.
    #[error("the remote is read-only")]
    ReadOnly,
    /// The remote did not answer within the time allowed.
    #[error("the remote did not answer within {0:?}")]
    Timeout(Duration),
    /// A prune was running on the remote for longer than the push may
    /// wait ([`RemoteBuilder::prune_wait`](crate::RemoteBuilder::prune_wait)):
    /// the push did nothing (but its intent, which a later prune removes).
    #[error("a prune of the remote is in progress (`{key}`); try the push again later")]
    PruneInProgress {
        /// The prune's marker object.
        key: String,
    },
    /// A manifest was refused: unsigned or signed by no trusted key, not
    /// the format this crate reads, naming another entry, inconsistent, or
    /// the tree built from it does not have its digest. Nothing was kept.
    #[error("manifest of `{name}` refused: {why}")]
    Refused {
        /// The entry name.
        name: String,
        /// Why.
        why: String,
    },
    /// A blob's content does not have the hash it is stored under (or does
    /// not decompress to the size the manifest gives). Nothing was kept.
    #[error("blob `{hash}` is corrupt: {why}")]
    CorruptBlob {
        /// The blob's BLAKE3 hash, 64 hex digits.
        hash: String,
        /// What is wrong.
        why: String,
    },
    /// A pack the entry's locator names is not on the remote (a prune
    /// repacked or removed it after the locator was read). A pull reads
    /// the locator once more before it gives up with this error; a push
    /// that finds a pack it relies on removed by a prune that ran
    /// meanwhile publishes nothing (push again).
    #[error("pack `{key}` is missing from the remote")]
    PackMissing {
        /// The pack's key.
        key: String,
    },
    /// The local entry holds something the format cannot carry (a FIFO,
    /// socket or device, or a name that is not UTF-8).
    #[error("`{path}` cannot be pushed: {why}")]
    Unsupported {
        /// The offending path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A blocking method was called inside a tokio runtime (an async
    /// task, or a thread that entered one), where waiting would stall the
    /// executor: call its `*_async` twin instead (e.g.
    /// [`Remote::push_async`](crate::Remote::push_async)).
    #[error("`{0}` is blocking and was called inside an async runtime: use `{0}_async`")]
    InsideRuntime(&'static str),
    /// There is no remote at the URL (a read-only command asked
    /// [`RemoteBuilder::must_exist`](crate::RemoteBuilder::must_exist)).
    #[error("no remote at `{url}`: {why}")]
    NoRemote {
        /// The URL as given.
        url: String,
        /// What is missing.
        why: String,
    },
    /// A key is not in the format [`SecretKey`](crate::SecretKey) or
    /// [`PublicKey`](crate::PublicKey) reads.
    #[error("invalid key: {0}")]
    Key(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn remote(op: &'static str, key: &str, source: opendal::Error) -> Self {
        Error::Remote {
            op,
            key: key.to_string(),
            source: source.into(),
        }
    }

    pub(crate) fn refused(name: &str, why: impl Into<String>) -> Self {
        Error::Refused {
            name: name.to_string(),
            why: why.into(),
        }
    }
}

impl Error {
    /// The cause first, in one line: "connection refused at
    /// 127.0.0.1:9399", "bucket `x` does not exist", "credentials
    /// rejected (SignatureDoesNotMatch)", "no credentials: set …", "no
    /// answer within 30s", then what was being done ("remote list of
    /// `v1/manifests/` failed"). For a request error the whole chain of
    /// OpenDAL's context, HTTP details included, is
    /// [`Error::detail`]; other errors are their message and sources.
    pub fn summary(&self) -> String {
        match self {
            Error::Remote { source, .. } => {
                let cause = cause_of(&detail_of(source));
                format!("{cause} ({self})")
            }
            other => {
                let mut text = other.to_string();
                let mut s = std::error::Error::source(other);
                while let Some(e) = s {
                    text.push_str(": ");
                    text.push_str(&e.to_string());
                    s = e.source();
                }
                text
            }
        }
    }

    /// Everything known about the error: its message and every source's,
    /// with OpenDAL's context (for `-v`).
    pub fn detail(&self) -> String {
        match self {
            Error::Remote { source, .. } => format!("{self}: {}", detail_of(source)),
            other => other.summary(),
        }
    }
}

/// An `io::Error` made from an OpenDAL error, and its sources, as text.
fn detail_of(e: &io::Error) -> String {
    let mut text = match e.get_ref() {
        Some(inner) => format!("{inner}"),
        None => e.to_string(),
    };
    let mut s = e.get_ref().and_then(|i| i.source());
    while let Some(x) = s {
        text.push_str(": ");
        text.push_str(&x.to_string());
        s = x.source();
    }
    text
}

/// The text between `<tag>` and `</tag>`, if any.
fn xml<'t>(text: &'t str, tag: &str) -> Option<&'t str> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&format!("</{tag}>"))?;
    Some(&text[start..start + len])
}

/// The status of an HTTP error response in OpenDAL's context text
/// (`response: Parts { status: 400, …`), if it names one of 400–599.
fn http_status(text: &str) -> Option<u16> {
    let start = text.find("status: ")? + "status: ".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|s| (400..600).contains(s))
}

/// The value of `key: "…"` in OpenDAL's debug text of a parsed S3 error.
fn quoted<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let open = format!("{key}: \"");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len]).filter(|v| !v.is_empty())
}

/// The first path component of the first `http(s)://` URL in `text`: the
/// bucket of a path-style S3 request.
fn bucket_in(text: &str) -> Option<&str> {
    let at = text
        .find("http://")
        .map(|i| i + 7)
        .or_else(|| text.find("https://").map(|i| i + 8))?;
    let rest = &text[at..];
    let path = &rest[rest.find('/')? + 1..];
    let end = path
        .find(|c: char| c == '/' || c == '?' || c == ',' || c.is_whitespace())
        .unwrap_or(path.len());
    Some(&path[..end]).filter(|b| !b.is_empty())
}

/// `host:port` of the first `http(s)://` URL in `text`.
fn host_in(text: &str) -> Option<&str> {
    let at = text
        .find("http://")
        .map(|i| i + 7)
        .or_else(|| text.find("https://").map(|i| i + 8))?;
    let rest = &text[at..];
    let end = rest
        .find(|c: char| c == '/' || c == ')' || c == '?' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The cause of a request's failure, from OpenDAL's text of it.
fn cause_of(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let at = host_in(text)
        .map(|h| format!(" at {h}"))
        .unwrap_or_default();
    if let Some(code) = xml(text, "Code").or_else(|| quoted(text, "code")) {
        let message = xml(text, "Message").or_else(|| quoted(text, "message"));
        return match code {
            "NoSuchBucket" => match xml(text, "BucketName").or_else(|| bucket_in(text)) {
                Some(b) => format!("bucket `{b}` does not exist"),
                None => "the bucket does not exist".into(),
            },
            "InvalidBucketName" => match bucket_in(text) {
                Some(b) => format!("`{b}` is not a valid bucket name (InvalidBucketName)"),
                None => "not a valid bucket name (InvalidBucketName)".into(),
            },
            "SignatureDoesNotMatch"
            | "InvalidAccessKeyId"
            | "AccessDenied"
            | "InvalidToken"
            | "ExpiredToken" => format!("credentials rejected ({code})"),
            "SlowDown" | "ServiceUnavailable" => format!("the server is overloaded ({code}){at}"),
            _ => match message {
                Some(m) => format!("the server said {code}: {m}"),
                None => format!("the server said {code}"),
            },
        };
    }
    if lower.contains("connection refused") {
        format!("connection refused{at}")
    } else if lower.contains("timeout") || lower.contains("timed out") {
        format!("no answer in time{at}")
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        format!("cannot resolve the host{at}")
    } else if lower.contains("no valid credential")
        || lower.contains("credential") && lower.contains("load")
    {
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE".into()
    } else if lower.contains("connection reset")
        || lower.contains("connection closed")
        || lower.contains("broken pipe")
    {
        format!("the connection was cut{at}")
    } else if lower.contains("permission denied") {
        "permission denied".into()
    } else if let Some(status) = http_status(text) {
        // A response without an S3 error body (a HEAD has none): its
        // status is all the server said.
        format!("the server answered HTTP {status}{at}")
    } else {
        // The innermost source is the most specific.
        text.rsplit(": ").next().unwrap_or(text).to_string()
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Cache(c) => c.kind(),
            Error::Remote { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::Url { .. } | Error::Key(_) => io::ErrorKind::InvalidInput,
            Error::NoRemote { .. } => io::ErrorKind::NotFound,
            Error::ReadOnly => io::ErrorKind::PermissionDenied,
            Error::Timeout(_) => io::ErrorKind::TimedOut,
            Error::InsideRuntime(_) => io::ErrorKind::WouldBlock,
            Error::PruneInProgress { .. } => io::ErrorKind::ResourceBusy,
            Error::Refused { .. } | Error::CorruptBlob { .. } => io::ErrorKind::InvalidData,
            Error::PackMissing { .. } => io::ErrorKind::NotFound,
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::cause_of;

    #[test]
    fn causes_come_first_in_one_line() {
        let s3 = |code: &str| {
            format!(
                "Unexpected (persistent) at list, context: {{ uri: http://127.0.0.1:9419/nobucket?list-type=2, \
                 response: Parts {{ status: 404 }} }} => S3Error {{ code: \"{code}\", message: \"\", resource: \"\" }}"
            )
        };
        assert_eq!(
            cause_of(&s3("NoSuchBucket")),
            "bucket `nobucket` does not exist"
        );
        assert_eq!(
            cause_of(&s3("SignatureDoesNotMatch")),
            "credentials rejected (SignatureDoesNotMatch)"
        );
        assert_eq!(
            cause_of(&s3("InvalidAccessKeyId")),
            "credentials rejected (InvalidAccessKeyId)"
        );
        // A HEAD has no error body: the status is the cause, not the
        // tail of OpenDAL's context.
        assert_eq!(
            cause_of(
                "Unexpected (persistent) at stat, context: { uri: http://127.0.0.1:9200/b/x/v1/manifests/share, \
                 response: Parts { status: 400, version: HTTP/1.1, headers: {\"content-length\": \"83\"} }, \
                 service: s3, path: v1/manifests/share }"
            ),
            "the server answered HTTP 400 at 127.0.0.1:9200"
        );
        assert_eq!(
            cause_of("<Error><Code>NoSuchBucket</Code><BucketName>x</BucketName></Error>"),
            "bucket `x` does not exist"
        );
        assert_eq!(
            cause_of(
                "Unexpected at list, context: { uri: http://127.0.0.1:9399/b } => send http request: \
                 error sending request for url (http://127.0.0.1:9399/b): client error (Connect): \
                 tcp connect error: Connection refused (os error 111)"
            ),
            "connection refused at 127.0.0.1:9399"
        );
        assert!(
            cause_of("PermissionDenied at list => no valid credential found")
                .starts_with("no credentials: set AWS_ACCESS_KEY_ID")
        );
        assert_eq!(cause_of("a: b: the innermost"), "the innermost");
    }
}
