//! `ThreadCpu`: a criterion measurement of the calling thread's CPU time
//! (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`), user and kernel, instead of
//! wall time.
//!
//! On a machine shared with other work, wall time counts whatever ran
//! while the benchmark was preempted; a benchmark that never blocks (a
//! load of a cached entry, a miss, an open) spends all its time on the
//! CPU, so its CPU time is its cost, and ratios to a baseline stay
//! repeatable under load. Not for benchmarks that wait (on a disk, a lock
//! or another process): there wall time is the cost.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::Throughput;
use rustix::time::{clock_gettime, ClockId, Timespec};

/// The calling thread's CPU time.
pub struct ThreadCpu;

fn now() -> Timespec {
    clock_gettime(ClockId::ThreadCPUTime)
}

impl Measurement for ThreadCpu {
    type Intermediate = Timespec;
    type Value = Duration;

    fn start(&self) -> Timespec {
        now()
    }

    fn end(&self, start: Timespec) -> Duration {
        let end = now();
        let ns = (end.tv_sec - start.tv_sec) * 1_000_000_000 + (end.tv_nsec - start.tv_nsec);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds, scaled like criterion's wall-time formatter.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns (cpu)")
        } else if ns < 1e6 {
            (1e-3, "µs (cpu)")
        } else if ns < 1e9 {
            (1e-6, "ms (cpu)")
        } else {
            (1e-9, "s (cpu)")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per = match *t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Elements(n) => {
                n as f64
            }
        };
        for v in values {
            *v = per * 1e9 / *v;
        }
        "per cpu second"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
