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
//! or name involved); `2` a miss (`load`, `cat`, `rm` of an absent name).
//! `load` and `stage` exit with the command's status.
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
mod units;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; every usage error is exit 1
            // (clap's own 2 would read as a miss).
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(fail) => {
            eprintln!("{}", fail.message);
            ExitCode::from(fail.code)
        }
    }
}
