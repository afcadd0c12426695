//! `fscache`: inspect, feed and maintain an fscache directory, safely
//! beside the builds that are using it right now.
//!
//! Every command goes through the public `fscache` facade and takes the
//! same locks as the library: `load`, `cat` and `stage` hold what a library
//! caller would hold, `rm` and `prune` never remove an entry a reader
//! holds, `set` updates `cache.info` under its lock and keeps unknown keys.
//!
//! ```text
//! fscache set  /var/cache/app --max-size 10G
//! fscache store /var/cache/app rpms ./rpms
//! fscache ls   /var/cache/app --sort size
//! fscache load /var/cache/app rpms -- ls -l
//! fscache prune /var/cache/app --unused-for 3d
//! ```
//!
//! # Exit codes
//!
//! `0` success; `1` an error (one line `error: …` on stderr naming the path
//! or name involved); `2` a miss (`load`, `cat`, `rm` of an absent name);
//! `128 + N` stopped by signal N (SIGINT, SIGTERM or SIGHUP) after removing
//! the command's unfinished work. `load` and `stage` exit with the
//! command's status. A failure to write to stdout is an error too, except
//! a reader that went away (`fscache ls | head`): that is a quiet success.
//!
//! # Which cache
//!
//! The first argument, or when it is left out `--cache`, or else
//! `$FSCACHE_DIR` (see `args::split_cache`).
//!
//! # Limitations
//!
//! * If `fscache load` itself is killed (`SIGKILL`), its read lock goes
//!   with it while the command it started may still run.
//! * `ls` reports "in use" as a snapshot: it may change the moment after.

#![forbid(unsafe_code)]

mod args;
mod commands;
mod fail;
mod output;
mod progress;
mod signals;
mod units;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

/// The library's `tracing` events (evictions, sweeps, repairs, commits,
/// waits for a builder) on stderr, filtered by `FSCACHE_LOG` (`info`,
/// `debug`, `fscache=debug`…); nothing without it.
fn init_log() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("FSCACHE_LOG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let printed = e.print();
            // Help and version are successes; every usage error is exit 1
            // (clap's own 2 would read as a miss).
            if e.use_stderr() {
                return ExitCode::from(1);
            }
            return match printed {
                Err(e) => finish(output::stdout_failed(&e)),
                Ok(()) => ExitCode::SUCCESS,
            };
        }
    };
    output::set_verbosity(cli.global.quiet, cli.global.verbose);
    init_log();
    match commands::run(cli) {
        Ok(code) => code,
        Err(fail) => finish(fail),
    }
}

/// Print the failure's one line, if it has one, and its exit code.
fn finish(fail: fail::Fail) -> ExitCode {
    if !fail.message.is_empty() {
        output::eline(format_args!("{}", fail.message));
    }
    ExitCode::from(fail.code)
}
