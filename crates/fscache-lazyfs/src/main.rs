//! `fscache-lazyfs BACKING MOUNTPOINT`: mount the lazy file system by hand
//! and drive it from stdin, one command a line:
//!
//! * `sync` — make everything durable (what `sync(2)` would);
//! * `pending` — how many metadata operations and dirty files are pending;
//! * `lose all OUT` / `lose random SEED OUT` — the power loss: write the
//!   durable state to `OUT`, print the report, unmount and exit.
//!
//! End of input unmounts without a loss.

#![forbid(unsafe_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use fscache_lazyfs::{LazyFs, Loss};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: fscache-lazyfs BACKING MOUNTPOINT (commands on stdin: sync, pending, lose all OUT, lose random SEED OUT)");
        return ExitCode::from(2);
    };
    let fs = match LazyFs::mount(Path::new(backing), Path::new(mountpoint)) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("fscache-lazyfs: failed to mount `{mountpoint}`: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("mounted");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let loss = match words.as_slice() {
            ["sync"] => {
                fs.sync();
                println!("ok");
                continue;
            }
            ["pending"] => {
                let p = fs.pending();
                println!("pending {} {}", p.ops, p.dirty_files);
                continue;
            }
            ["lose", "all", out] => (Loss::AllUnsynced, *out),
            ["lose", "random", seed, out] => match seed.parse() {
                Ok(seed) => (Loss::Random { seed }, *out),
                Err(_) => {
                    println!("error: not a seed: {seed}");
                    continue;
                }
            },
            _ => {
                println!("error: unknown command {line:?}");
                continue;
            }
        };
        return match fs.power_loss(loss.0, Path::new(loss.1)) {
            Ok(report) => {
                print!("{report}");
                if let Err(e) = fs.unmount() {
                    eprintln!("fscache-lazyfs: {e}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fscache-lazyfs: power loss failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match fs.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fscache-lazyfs: {e}");
            ExitCode::FAILURE
        }
    }
}
