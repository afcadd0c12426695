//! The per-path record beside a digest: a [`Listing`] of what versions 2
//! and 3 cover of each node, its text form (`object.tree`), and [`compare`],
//! which names what changed where.

use std::fmt;

/// One node of a [`Listing`]: what versions 2 and 3 of the digest cover of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its path below the root, components joined by `/`.
    pub path: Vec<u8>,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Its extended attributes, sorted: names and the BLAKE3 of each value.
    pub xattrs: Vec<(Vec<u8>, [u8; 32])>,
    /// The body: a file's size and content hash, a symlink's target, a
    /// device's `rdev` (`major:minor`); empty for a directory, FIFO or
    /// socket.
    pub body: Vec<u8>,
}

/// Every node of a tree with what the digest (version 2 or 3) covers of it, in
/// walk order: a per-path record beside the root digest, so a mismatch
/// can name the paths and what changed ([`compare`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing(pub Vec<Record>);

/// One way a node differs between two [`Listing`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// In the first listing only.
    Removed,
    /// In the second listing only.
    Added,
    /// Another file type.
    Type,
    /// Other permission bits.
    Mode,
    /// Another owner or group.
    Owner,
    /// Other extended attributes.
    Xattr,
    /// Other content, symlink target or device number.
    Content,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Removed => "removed",
            Change::Added => "added",
            Change::Type => "type",
            Change::Mode => "mode",
            Change::Owner => "owner",
            Change::Xattr => "xattr",
            Change::Content => "content",
        })
    }
}

/// What differs between the listings `was` and `now`, per path (sorted by
/// path), each path with the ways it differs.
pub fn compare(was: &Listing, now: &Listing) -> Vec<(Vec<u8>, Vec<Change>)> {
    use std::collections::BTreeMap;
    let a: BTreeMap<&[u8], &Record> = was.0.iter().map(|r| (&r.path[..], r)).collect();
    let b: BTreeMap<&[u8], &Record> = now.0.iter().map(|r| (&r.path[..], r)).collect();
    let mut out = Vec::new();
    let mut paths: Vec<&[u8]> = a.keys().chain(b.keys()).copied().collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let changes = match (a.get(p), b.get(p)) {
            (Some(_), None) => vec![Change::Removed],
            (None, Some(_)) => vec![Change::Added],
            (Some(x), Some(y)) => {
                let mut c = Vec::new();
                if x.mode & 0o170000 != y.mode & 0o170000 {
                    c.push(Change::Type);
                }
                if x.mode & 0o7777 != y.mode & 0o7777 {
                    c.push(Change::Mode);
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    c.push(Change::Owner);
                }
                if x.xattrs != y.xattrs {
                    c.push(Change::Xattr);
                }
                if x.body != y.body && x.mode & 0o170000 == y.mode & 0o170000 {
                    c.push(Change::Content);
                }
                c
            }
            (None, None) => Vec::new(),
        };
        if !changes.is_empty() {
            out.push((p.to_vec(), changes));
        }
    }
    out
}

impl Listing {
    /// The listing as text, one node a line: `MODE UID GID PATH BODY
    /// [XATTR=HASH…]` with the path and body hex-free where printable.
    /// What `fscache` stores beside an entry's digest.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for r in &self.0 {
            // Writing to a String cannot fail.
            let _ = write!(s, "{:o} {} {} ", r.mode, r.uid, r.gid);
            push_hex(&mut s, &r.path);
            s.push(' ');
            push_hex(&mut s, &r.body);
            for (n, v) in &r.xattrs {
                s.push(' ');
                push_hex(&mut s, n);
                s.push('=');
                push_hex(&mut s, v);
            }
            s.push('\n');
        }
        s
    }

    /// Parse [`to_text`](Self::to_text); `None` if it is not that.
    pub fn from_text(text: &str) -> Option<Listing> {
        let mut out = Vec::new();
        for line in text.lines() {
            let mut f = line.split(' ');
            let mode = u32::from_str_radix(f.next()?, 8).ok()?;
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            let path = unhex(f.next()?)?;
            let body = unhex(f.next()?)?;
            let mut xattrs = Vec::new();
            for x in f {
                let (n, v) = x.split_once('=')?;
                xattrs.push((unhex(n)?, unhex(v)?.try_into().ok()?));
            }
            out.push(Record {
                path,
                mode,
                uid,
                gid,
                xattrs,
                body,
            });
        }
        Some(Listing(out))
    }
}

/// `b` in lowercase hex onto `s`, `-` for nothing.
fn push_hex(s: &mut String, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    if b.is_empty() {
        s.push('-');
        return;
    }
    s.reserve(2 * b.len());
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? << 4 | d(p[1])?) as u8)
        })
        .collect()
}
