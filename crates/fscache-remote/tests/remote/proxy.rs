//! A latency proxy for HTTP/1.1 object stores, on 127.0.0.1 only: this
//! kernel has no netem, so the tests and the remote benchmark put this in
//! front of the S3 server to get a round trip like a real one's, and to
//! count the requests.
//!
//! It reads each request's head from the client (and its body, by
//! `Content-Length` or chunked encoding, so requests on a kept-alive
//! connection are told apart), counts it by method, holds it for the
//! delay and passes it on: so each response's first byte reaches the
//! client the delay later than it would. Responses can be capped to a
//! bandwidth (bytes per second, per connection, paced per read). Shared by the test
//! binary (`mod proxy`) and `benches/remote.rs` (`#[path]`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy counted since it started (or the last [`LatencyProxy::reset`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests, by method and kind: `GET`, `GET range`, `GET list`, `PUT`,
    /// `HEAD`, `DELETE`, `POST` (S3 batch delete), ...
    pub by_kind: BTreeMap<String, u64>,
    /// Bytes the client sent (heads and bodies).
    pub up: u64,
    /// Bytes the server answered.
    pub down: u64,
}

impl Counts {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Requests of the kinds starting with `prefix` (e.g. `"GET"`).
    pub fn of(&self, prefix: &str) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Counts) -> Counts {
        let mut by_kind = self.by_kind.clone();
        for (k, n) in &before.by_kind {
            if let Some(v) = by_kind.get_mut(k) {
                *v -= n;
            }
        }
        by_kind.retain(|_, n| *n > 0);
        Counts {
            by_kind,
            up: self.up - before.up,
            down: self.down - before.down,
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests (", self.requests())?;
        for (i, (k, n)) in self.by_kind.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{n} {k}")?;
        }
        write!(f, ")")
    }
}

#[derive(Default)]
struct Shared {
    counts: Mutex<Counts>,
    stop: AtomicBool,
    delay_us: AtomicU64,
}

/// The proxy: listening on 127.0.0.1 until dropped.
pub struct LatencyProxy {
    /// The port to point clients at.
    pub port: u16,
    shared: Arc<Shared>,
}

impl LatencyProxy {
    /// A proxy to the server on 127.0.0.1:`upstream` that holds each
    /// request `delay` and (with `bandwidth` bytes per second) paces each
    /// connection's responses.
    pub fn start(upstream: u16, delay: Duration, bandwidth: Option<u64>) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c_in, s_out) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let s1 = s.clone();
                std::thread::spawn(move || {
                    let _ = requests(c_in, s_out.try_clone().unwrap(), &s1);
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                let s2 = s.clone();
                std::thread::spawn(move || {
                    let _ = responses(server, client.try_clone().unwrap(), bandwidth, &s2);
                    let _ = client.shutdown(Shutdown::Write);
                });
            }
        });
        Ok(Self { port, shared })
    }

    /// What it counted so far.
    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }

    /// Count from zero again.
    pub fn reset(&self) {
        *self.shared.counts.lock().unwrap() = Counts::default();
    }

    /// Change the delay for requests from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// The client's side: one request at a time (head, then body), each
/// counted and held for the delay before it goes on.
fn requests(client: TcpStream, mut server: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 << 10, client);
    loop {
        let mut head = Vec::new();
        loop {
            let n = r.read_until(b'\n', &mut head)?;
            if n == 0 {
                return Ok(());
            }
            if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
                break;
            }
            if head.len() > 1 << 20 {
                return Err(invalid("request head over 1 MiB"));
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let mut words = first.split(' ');
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let mut length = 0u64;
        let mut chunked = false;
        let mut ranged = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => length = v.parse().map_err(|_| invalid("content-length"))?,
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "range" => ranged = true,
                _ => {}
            }
        }
        let kind = if method == "GET" && ranged {
            "GET range".to_string()
        } else if method == "GET" && (target.contains("list-type") || target.contains("prefix=")) {
            "GET list".to_string()
        } else {
            method
        };
        {
            let mut c = shared.counts.lock().unwrap();
            *c.by_kind.entry(kind).or_default() += 1;
            c.up += head.len() as u64;
        }
        let delay = Duration::from_micros(shared.delay_us.load(Ordering::SeqCst));
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        server.write_all(&head)?;
        let body = if chunked {
            copy_chunked(&mut r, &mut server)?
        } else {
            let n = io::copy(&mut (&mut r).take(length), &mut server)?;
            if n < length {
                return Ok(());
            }
            n
        };
        shared.counts.lock().unwrap().up += body;
    }
}

/// Pass a chunked body on as it is; returns its bytes.
fn copy_chunked(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        w.write_all(&line)?;
        total += line.len() as u64;
        let text = String::from_utf8_lossy(&line);
        let size = text.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size, 16).map_err(|_| invalid("chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = Vec::new();
                r.read_until(b'\n', &mut t)?;
                w.write_all(&t)?;
                total += t.len() as u64;
                if t == b"\r\n" || t.is_empty() {
                    return Ok(total);
                }
            }
        }
        // The chunk and its CRLF.
        total += io::copy(&mut r.take(size + 2), w)?;
    }
}

/// The server's side: passed on as it comes, paced to `bandwidth`.
fn responses(
    mut server: TcpStream,
    mut client: TcpStream,
    bandwidth: Option<u64>,
    shared: &Shared,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = server.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let t = Instant::now();
        client.write_all(&buf[..n])?;
        shared.counts.lock().unwrap().down += n as u64;
        if let Some(bw) = bandwidth.filter(|b| *b > 0) {
            let due = Duration::from_secs_f64(n as f64 / bw as f64);
            if let Some(wait) = due.checked_sub(t.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}
