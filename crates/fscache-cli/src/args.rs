//! The command line: clap's definition of every command and its values.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use fscache::{parse_bytes, MaxSize};

use crate::units::parse_duration;

/// The application id the tool opens caches with (it seeds the boot id
/// written into the entries it stores).
pub(crate) const APPID: &str = "fscache-cli";

pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error: one line `error: …` on stderr naming the path or name involved
  2  miss: `load`, `cat` or `rm` of a name that is not in the cache
`load` and `stage` exit with the status of their command.

Every command takes the same locks as the fscache library, so it is safe
on a cache that builds are using right now.";

/// Inspect, feed and maintain an fscache directory (osbuild FsCache v1).
#[derive(Debug, Parser)]
#[command(name = "fscache", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Show version, maximum size, accounted size, entries, size on disk
    /// and creation boot id.
    Info {
        /// The cache directory.
        cache: PathBuf,
        /// Print JSON (sizes in bytes).
        #[arg(long)]
        json: bool,
    },
    /// List entries: name, size, last use and whether a reader holds it now.
    Ls {
        /// The cache directory.
        cache: PathBuf,
        /// Order: `lru` (next to be evicted first), `size` (largest
        /// first) or `name`.
        #[arg(long, value_enum, default_value_t = Sort::Lru)]
        sort: Sort,
        /// Print JSON (sizes in bytes, times in seconds).
        #[arg(long)]
        json: bool,
    },
    /// Set the maximum size in `cache.info` (other keys kept); creates the
    /// cache if it does not exist.
    Set {
        /// The cache directory.
        cache: PathBuf,
        /// The new limit: `10G`, `512MiB`, `1.5GB`, `4096` or `unlimited`.
        #[arg(long, value_name = "SIZE", value_parser = parse_max_size, allow_hyphen_values = true)]
        max_size: MaxSize,
    },
    /// Store a copy of PATH as NAME; exits 0 only when it was stored.
    Store {
        /// The cache directory.
        cache: PathBuf,
        /// The entry's name.
        name: String,
        /// A directory (its contents become the entry's) or a file.
        path: PathBuf,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run CMD in NAME's data directory (also in $FSCACHE_ENTRY), holding
    /// the entry's read lock until CMD exits; exit with CMD's status.
    Load {
        /// The cache directory.
        cache: PathBuf,
        /// The entry's name.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Write one file of entry NAME to stdout, under the entry's read lock.
    Cat {
        /// The cache directory.
        cache: PathBuf,
        /// The entry's name.
        name: String,
        /// The file, relative to the entry's data directory.
        path: PathBuf,
    },
    /// Remove entries; an entry a reader holds is skipped, never removed.
    Rm {
        /// The cache directory.
        cache: PathBuf,
        /// The entries' names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove least-recently-used entries down to a size and/or entries
    /// unused for a while. Without --to or --unused-for: down to the
    /// maximum size in force.
    Prune {
        /// The cache directory.
        cache: PathBuf,
        /// Evict least-recently-used entries until at most SIZE is
        /// accounted (`10G`, `512MiB`).
        #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
        to: Option<u64>,
        /// Remove entries last used longer ago than DURATION (`30s`, `90m`,
        /// `12h`, `3d`, `1w`, `1h30m`).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
        unused_for: Option<Duration>,
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run CMD in a fresh scratch directory of the cache (also in
    /// $FSCACHE_STAGE), removed afterwards; exit with CMD's status.
    Stage {
        /// The cache directory.
        cache: PathBuf,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

/// The order of `ls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Sort {
    /// Least recently used first: the order eviction takes.
    Lru,
    /// Largest first.
    Size,
    /// By name.
    Name,
}

fn parse_max_size(s: &str) -> Result<MaxSize, String> {
    s.parse()
        .map_err(|e: fscache::ParseSizeError| e.to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_bytes(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
