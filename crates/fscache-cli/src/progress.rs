//! The progress line of a long `store`: the content bytes copied of the
//! tree's total, the rate over the last few seconds, and the time left at
//! that rate.
//!
//! The bar counts file content (what is copied), while the line `store`
//! prints at the end gives the entry's disk usage (what the cache charges,
//! directories and blocks included), so each figure says which it is, in
//! the same units. The rate and the time left are those of the last
//! [`WINDOW`], not of the whole copy: a tree of small files after large
//! ones slows down, and the time left grows with it.

use std::collections::VecDeque;
use std::io::{self, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use fscache::format_bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;
use crate::units::format_age;

/// How far back the rate looks.
pub(crate) const WINDOW: Duration = Duration::from_secs(5);

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);

/// A copy only this long earns a bar; a shorter one stays silent.
const SHOW_AFTER: Duration = Duration::from_millis(500);

/// The progress of one copy: counted always, drawn on a terminal once the
/// copy takes a while.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    shown: bool,
    drawn: Instant,
    rate: Rate,
}

impl Progress {
    /// The progress of copying `src` (its total content is measured only
    /// when stderr is a terminal and notes are wanted).
    pub(crate) fn new(src: &Path, name: &str) -> Self {
        let now = Instant::now();
        let mut p = Self {
            bar: None,
            total: 0,
            done: 0,
            started: now,
            shown: false,
            drawn: now,
            rate: Rate::default(),
        };
        if io::stderr().is_terminal() && output::chatty() {
            if let Ok(total) = fscache::tree_content_bytes(src) {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
                if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {msg}") {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(format!("storing {name}"));
                p.total = total;
                p.bar = Some(bar);
            }
        }
        p
    }

    /// `n` more bytes of content copied.
    pub(crate) fn add(&mut self, n: u64) {
        self.done += n;
        let Some(bar) = &self.bar else { return };
        let now = Instant::now();
        bar.set_position(self.done);
        if now.duration_since(self.drawn) < REDRAW {
            return;
        }
        self.drawn = now;
        self.rate.push(now, self.done);
        bar.set_message(line(self.done, self.total, self.rate.per_sec()));
        if !self.shown && now.duration_since(self.started) > SHOW_AFTER {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    /// The content bytes copied so far.
    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    /// Take the bar off the terminal.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The text beside the bar: `120.0MiB of 572.0MiB content, 45.0MiB/s,
/// 10s left` (the rate and time left once there is a rate).
pub(crate) fn line(done: u64, total: u64, rate: Option<f64>) -> String {
    let mut s = format!("{} of {} content", format_bytes(done), format_bytes(total));
    if let Some(r) = rate.filter(|r| *r > 0.0) {
        let left = total.saturating_sub(done) as f64 / r;
        s += &format!(
            ", {}/s, {} left",
            format_bytes(r as u64),
            format_age(Duration::from_secs_f64(left.min(1e9)))
        );
    }
    s
}

/// The copy's rate over the last [`WINDOW`]: samples of (time, bytes done).
#[derive(Default)]
pub(crate) struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Note `done` bytes at `at`, forgetting samples older than the window
    /// (but the one just before it, the window's start).
    pub(crate) fn push(&mut self, at: Instant, done: u64) {
        self.samples.push_back((at, done));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| at.duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second between the window's first and last samples.
    pub(crate) fn per_sec(&self) -> Option<f64> {
        let (t0, d0) = self.samples.front()?;
        let (t1, d1) = self.samples.back()?;
        let secs = t1.duration_since(*t0).as_secs_f64();
        (secs > 0.0).then(|| (d1 - d0) as f64 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_content_in_the_units_of_the_result_line() {
        let mib = 1 << 20;
        assert_eq!(
            line(120 * mib, 572 * mib, Some(46.0 * mib as f64)),
            "120.0MiB of 572.0MiB content, 46.0MiB/s, 9s left"
        );
        assert_eq!(line(0, 572 * mib, None), "0B of 572.0MiB content");
        // The same formatter as `stored NAME: … on disk`.
        assert_eq!(format_bytes(716 * mib), "716.0MiB");
    }

    /// The user trial's ETA stayed at 8 s while the throughput fell: the
    /// time left follows the recent rate.
    #[test]
    fn the_time_left_grows_when_the_copy_slows_down() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        let mib = 1u64 << 20;
        let total = 600 * mib;
        let left = |r: &Rate, done: u64| total.saturating_sub(done) as f64 / r.per_sec().unwrap();
        // 100 MiB/s for 3 s.
        for s in 0..=3 {
            r.push(t0 + Duration::from_secs(s), s * 100 * mib);
        }
        assert_eq!(r.per_sec(), Some(100.0 * mib as f64));
        let fast = left(&r, 300 * mib);
        // Then 5 MiB/s for 10 s: the rate is the last window's only.
        let mut done = 300 * mib;
        for s in 4..=13 {
            done += 5 * mib;
            r.push(t0 + Duration::from_secs(s), done);
        }
        assert_eq!(r.per_sec(), Some(5.0 * mib as f64));
        assert!(
            left(&r, done) > 10.0 * fast,
            "{fast} then {}",
            left(&r, done)
        );
    }
}
