//! Stopping cleanly on SIGINT, SIGTERM and SIGHUP: a handler that only
//! records the signal, and checks at the points where stopping is safe.
//!
//! The work itself is undone by the library's guards in `Drop` (an
//! uncommitted store or a stage removes its `uuid-*` directory, an entry
//! releases its read lock), so a command only has to notice the signal,
//! return normally, and exit 128 + N. A second signal while the first is
//! being handled ends the process at once; its debris is then removed by
//! the next sweep (`info`, `prune`, `ls`, a commit that evicts).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;

use crate::fail::Fail;

/// The signals that stop a command cleanly.
const STOP: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Records which of [`STOP`] arrived, once the handlers are installed.
pub(crate) struct Signals {
    caught: Arc<AtomicUsize>,
}

impl Signals {
    /// Install the handlers: from now on the signals no longer kill the
    /// process (the first of them; a second one does).
    pub(crate) fn catch() -> Result<Self, Fail> {
        let caught = Arc::new(AtomicUsize::new(0));
        let any = Arc::new(AtomicBool::new(false));
        for sig in STOP {
            let fail =
                |e: std::io::Error| Fail::error(format!("failed to handle signal {sig}: {e}"));
            let code = u8::try_from(128 + sig).unwrap_or(1);
            // Registered first, so it sees `any` as the earlier signals
            // left it: only a second signal exits here.
            flag::register_conditional_shutdown(sig, i32::from(code), Arc::clone(&any))
                .map_err(fail)?;
            flag::register(sig, Arc::clone(&any)).map_err(fail)?;
            let n = usize::try_from(sig).unwrap_or(0);
            flag::register_usize(sig, Arc::clone(&caught), n).map_err(fail)?;
        }
        Ok(Self { caught })
    }

    /// The signal that arrived, if any.
    pub(crate) fn caught(&self) -> Option<i32> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            n => i32::try_from(n).ok(),
        }
    }

    /// `Err(Fail)` to stop with if a signal arrived.
    pub(crate) fn check(&self, what: impl FnOnce() -> String) -> Result<(), Fail> {
        match self.caught() {
            None => Ok(()),
            Some(sig) => Err(stopped(sig, what())),
        }
    }
}

/// The name a shell shows for one of [`STOP`].
pub(crate) fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The failure for having stopped on `sig`, saying what was left undone.
pub(crate) fn stopped(sig: i32, what: String) -> Fail {
    Fail::signal(sig, format!("interrupted by {}: {what}", name(sig)))
}

/// The same signal, for forwarding it to a child.
pub(crate) fn to_rustix(sig: i32) -> rustix::process::Signal {
    use rustix::process::Signal;
    match sig {
        SIGTERM => Signal::TERM,
        SIGHUP => Signal::HUP,
        _ => Signal::INT,
    }
}
