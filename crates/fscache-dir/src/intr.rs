//! `EINTR` retried: an interrupted system call is made again, wherever it
//! is made (rustix's `retry_on_intr` covers its own calls; this covers the
//! `io::Result` ones of cap-std and std).

use std::io;

/// Call `f` until it returns anything but [`io::ErrorKind::Interrupted`]
/// (`EINTR`: a signal arrived before the call did anything).
///
/// # Errors
///
/// Whatever `f` returns last.
pub fn retry_io<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_calls_are_made_again() {
        let mut left = 3;
        let r = retry_io(|| {
            if left > 0 {
                left -= 1;
                Err(io::Error::from(io::ErrorKind::Interrupted))
            } else {
                Ok(7)
            }
        });
        assert_eq!((r.unwrap(), left), (7, 0));
        let e = retry_io::<()>(|| Err(io::Error::from(io::ErrorKind::NotFound)));
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
