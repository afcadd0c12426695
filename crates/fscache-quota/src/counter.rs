//! The `cache.size` counter: locked read → temp file → rename.

use std::path::Path;

use fscache_dir::{CacheDir, IfMissing, CACHE_SIZE, OBJECTS, OBJECT_INFO, RESERVED_PREFIX};

use crate::error::{self, Result};
use crate::MaxSize;

/// What a charge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// The bytes are accounted; the counter now holds `total`.
    Accepted {
        /// The counter after the charge.
        total: u64,
    },
    /// The charge would pass the limit; nothing changed.
    Refused {
        /// The counter as it stands.
        total: u64,
    },
}

/// Read `cache.size` without a lock (it is only ever replaced atomically).
///
/// # Errors
///
/// Reading failed, or the file is not a non-negative JSON integer
/// (`InvalidData`).
pub fn read_size(cache: &CacheDir) -> Result<u64> {
    let rel = Path::new(CACHE_SIZE);
    let bytes = cache
        .read_small(rel)
        .map_err(|e| error::io("read", cache.abs(rel), e))?;
    parse_size(&bytes).ok_or_else(|| {
        error::corrupt(
            cache.abs(rel),
            format!(
                "expected a non-negative JSON integer, found {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
            ),
        )
    })
}

fn parse_size(bytes: &[u8]) -> Option<u64> {
    match serde_json::from_slice::<serde_json::Value>(bytes).ok()? {
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Charge `bytes` to `cache.size` unless the total would pass `limit`.
///
/// Runs under the counter's exclusive lock. A counter that is missing or
/// corrupt (not a non-negative integer) is rebuilt from the `object.info`
/// sizes of the committed entries first: documented recovery, not an
/// error.
///
/// # Errors
///
/// The locked open, read or replacement failed.
pub fn charge(cache: &CacheDir, bytes: u64, limit: MaxSize) -> Result<Charge> {
    booked(cache, |total| {
        let new = total.saturating_add(bytes);
        Ok(if limit.admits(new) {
            (Some(new), Charge::Accepted { total: new })
        } else {
            (None, Charge::Refused { total })
        })
    })
}

/// Uncharge `bytes` from `cache.size`, flooring at 0. Returns the new
/// total.
///
/// # Errors
///
/// As [`charge`].
pub fn uncharge(cache: &CacheDir, bytes: u64) -> Result<u64> {
    booked(cache, |total| {
        let new = total.saturating_sub(bytes);
        Ok((Some(new), new))
    })
}

/// Rebuild `cache.size` from the sizes recorded in committed entries'
/// `object.info`. Returns the new total.
///
/// Use it to repair a counter after a crash between a charge and its
/// commit (the counter is then too high, never too low).
///
/// # Errors
///
/// As [`charge`].
pub fn recount(cache: &CacheDir) -> Result<u64> {
    let total = set_to(cache, || sum_recorded(cache, Entries::Committed))?;
    // Exact now: a marker of failed updates has nothing left to say.
    match fscache_dir::retry_io(|| cache.dir().remove_file(crate::books::BOOKS_SUSPECT)) {
        Err(e) if !fscache_dir::gone(&e) => Err(error::io(
            "remove",
            cache.abs(Path::new(crate::books::BOOKS_SUSPECT)),
            e,
        )),
        _ => Ok(total),
    }
}

/// Set the counter to what `sum` computes under its lock. A kept eviction
/// list was planned from the books before: it is unlinked, so the next
/// eviction plans from the reconciled ones.
pub(crate) fn set_to(cache: &CacheDir, sum: impl FnOnce() -> Result<u64>) -> Result<u64> {
    let total = booked(cache, |_| {
        let total = sum()?;
        Ok((Some(total), total))
    })?;
    crate::evictlist::invalidate(cache)?;
    Ok(total)
}

/// [`update`], marking the books suspect when it fails: a failed update
/// may or may not have changed the counter, and what the caller does next
/// (an entry already unlinked, a charge it cannot undo) is off the books
/// either way.
fn booked<T>(cache: &CacheDir, f: impl FnOnce(u64) -> Result<(Option<u64>, T)>) -> Result<T> {
    update(cache, f).map_err(|e| crate::books::suspect_after(cache, e))
}

/// Which entries' records a sum of the books takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entries {
    /// Committed entries only (a repair, which has the cache to itself and
    /// sweeps the rest first).
    Committed,
    /// Also the `uuid-*` ones of commits that charged and then crashed (or
    /// of osbuild commits between their `object.info` and their rename),
    /// which are on the books until a sweep uncharges them (a live
    /// recount).
    All,
}

/// The sum of the sizes recorded in the `objects/*/object.info` of
/// `which` entries.
pub(crate) fn sum_recorded(cache: &CacheDir, which: Entries) -> Result<u64> {
    let objects = Path::new(OBJECTS);
    let list = cache
        .list_dir(objects)
        .map_err(|e| error::io("read directory", cache.abs(objects), e))?;
    let mut total = 0u64;
    for entry in list {
        let name = entry.file_name();
        if which == Entries::Committed
            && name.to_str().is_none_or(|n| n.starts_with(RESERVED_PREFIX))
        {
            continue;
        }
        let info = objects.join(name).join(OBJECT_INFO);
        // Gone (a racing removal) or no record: nothing recorded; an
        // unreadable one leaves the sum unknown.
        total = total.saturating_add(crate::books::recorded(cache, &info)?.unwrap_or(0));
    }
    Ok(total)
}

/// Locked read → compute → temp file → rename, by
/// [`CacheDir::update`]. `f` gets the current total and returns the value
/// to write (`None`: leave the file alone) and the result.
///
/// A missing counter is created from the entries' records (0 would
/// undercount and let the cache outgrow its limit); a corrupt one is
/// rebuilt the same way, under the lock (so no charge or uncharge runs
/// meanwhile).
fn update<T>(cache: &CacheDir, f: impl FnOnce(u64) -> Result<(Option<u64>, T)>) -> Result<T> {
    let initial = || {
        Ok(sum_recorded(cache, Entries::Committed)?
            .to_string()
            .into_bytes())
    };
    cache.update(
        Path::new(CACHE_SIZE),
        IfMissing::Create(&initial),
        |bytes| {
            let current = match parse_size(bytes) {
                Some(n) => n,
                None => sum_recorded(cache, Entries::Committed)?,
            };
            let (new, out) = f(current)?;
            Ok((new.map(|n| n.to_string().into_bytes()), out))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_cache as cache;

    #[test]
    fn charge_refuse_uncharge_floor() {
        let (_t, c) = cache();
        assert_eq!(read_size(&c).unwrap(), 0);
        assert_eq!(
            charge(&c, 60, MaxSize::Bytes(100)).unwrap(),
            Charge::Accepted { total: 60 }
        );
        assert_eq!(
            charge(&c, 41, MaxSize::Bytes(100)).unwrap(),
            Charge::Refused { total: 60 }
        );
        assert_eq!(
            charge(&c, 40, MaxSize::Bytes(100)).unwrap(),
            Charge::Accepted { total: 100 }
        );
        assert_eq!(
            charge(&c, 1 << 40, MaxSize::Unlimited).unwrap(),
            Charge::Accepted {
                total: 100 + (1 << 40)
            }
        );
        assert_eq!(uncharge(&c, u64::MAX).unwrap(), 0);
        assert_eq!(read_size(&c).unwrap(), 0);
        assert_eq!(
            charge(&c, 1, MaxSize::default()).unwrap(),
            Charge::Refused { total: 0 }
        );
        // No temporary files are left behind.
        let debris: Vec<_> = std::fs::read_dir(c.abs(Path::new(OBJECTS)))
            .unwrap()
            .collect();
        assert!(debris.is_empty(), "{debris:?}");
    }

    #[test]
    fn corrupt_or_missing_counter_is_rebuilt() {
        let (_t, c) = cache();
        let objects = c.abs(Path::new(OBJECTS));
        fscache_dir::retry_io(|| std::fs::create_dir_all(objects.join("a"))).unwrap();
        std::fs::write(objects.join("a/object.info"), br#"{"size": 300}"#).unwrap();
        fscache_dir::retry_io(|| std::fs::create_dir_all(objects.join("b"))).unwrap();
        std::fs::write(objects.join("b/object.info"), b"garbage").unwrap();
        for garbage in [&b"not json"[..], b"-5", b"1.5", b"\"7\"", b"[]", b""] {
            std::fs::write(c.abs(Path::new(CACHE_SIZE)), garbage).unwrap();
            assert_eq!(
                read_size(&c).unwrap_err().kind(),
                std::io::ErrorKind::InvalidData
            );
            assert_eq!(
                uncharge(&c, 100).unwrap(),
                200,
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        std::fs::remove_file(c.abs(Path::new(CACHE_SIZE))).unwrap();
        assert_eq!(
            charge(&c, 5, MaxSize::Unlimited).unwrap(),
            Charge::Accepted { total: 305 }
        );
        assert_eq!(recount(&c).unwrap(), 300);
        assert_eq!(read_size(&c).unwrap(), 300);
    }

    #[test]
    fn parallel_charges_are_not_lost() {
        let (_t, c) = cache();
        let c = std::sync::Arc::new(c);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        charge(&c, 1, MaxSize::Unlimited).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read_size(&c).unwrap(), 100);
    }
}
