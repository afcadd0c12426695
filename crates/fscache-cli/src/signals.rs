//! Stopping cleanly on SIGINT, SIGTERM and SIGHUP: the signals are only
//! recorded, and checked at the points where stopping is safe.
//!
//! The work itself is undone by the library's guards in `Drop` (an
//! uncommitted store or a stage removes its `uuid-*` directory, an entry
//! releases its read lock), so a command only has to notice the signal,
//! return normally, and exit 128 + N.
//!
//! Signals that arrive together are one request: `timeout(1)` signals its
//! child and then its process group, a CI runner signals every process of
//! a job, a terminal's Ctrl-C reaches the whole foreground group; the
//! copies come microseconds apart. Only a signal [`FORCE_AFTER`] or more
//! after the first one means "stop at once" (a second Ctrl-C by a person):
//! the process exits there, and the next sweep (`info`, `prune`, `ls`, a
//! commit that evicts) removes what it left.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::fail::Fail;

/// The signals that stop a command cleanly.
const STOP: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// How long after the first signal another one still belongs to it (is the
/// same request, not a second Ctrl-C).
pub(crate) const FORCE_AFTER: Duration = Duration::from_secs(1);

/// Records which of [`STOP`] arrived, once the handlers are installed.
pub(crate) struct Signals {
    /// The first signal, as the watcher thread saw it.
    caught: Arc<AtomicUsize>,
    /// The latest signal, set inside the handler itself: before the
    /// thread that runs the handler goes back to what it was doing, so a
    /// command that sees its child die of the same signal (a group kill)
    /// knows it was signalled too, however late the watcher runs.
    raised: Arc<AtomicUsize>,
}

impl Signals {
    /// Install the handlers: from now on the signals no longer kill the
    /// process; a watcher thread records the first and ends the process
    /// on one that comes [`FORCE_AFTER`] or more later.
    pub(crate) fn catch() -> Result<Self, Fail> {
        let caught = Arc::new(AtomicUsize::new(0));
        let raised = Arc::new(AtomicUsize::new(0));
        for sig in STOP {
            let value = usize::try_from(sig).unwrap_or(0);
            signal_hook::flag::register_usize(sig, Arc::clone(&raised), value)
                .map_err(|e| Fail::error(format!("failed to handle signals: {e}")))?;
        }
        let mut incoming = signal_hook::iterator::Signals::new(STOP)
            .map_err(|e| Fail::error(format!("failed to handle signals: {e}")))?;
        let seen = Arc::clone(&caught);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut first: Option<Instant> = None;
                for sig in incoming.forever() {
                    match first {
                        None => {
                            first = Some(Instant::now());
                            seen.store(usize::try_from(sig).unwrap_or(0), Ordering::SeqCst);
                        }
                        Some(at) if at.elapsed() >= FORCE_AFTER => {
                            std::process::exit(128 + sig);
                        }
                        // Part of the first request.
                        Some(_) => {}
                    }
                }
            })
            .map_err(|e| Fail::error(format!("failed to handle signals: {e}")))?;
        Ok(Self { caught, raised })
    }

    /// The signal that arrived (the first, once the watcher has seen it),
    /// if any.
    pub(crate) fn caught(&self) -> Option<i32> {
        match self.caught.load(Ordering::SeqCst) {
            0 => match self.raised.load(Ordering::SeqCst) {
                0 => None,
                n => i32::try_from(n).ok(),
            },
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
