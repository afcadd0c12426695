//! The command line: clap's definition of every command and its values,
//! and which cache a command means when its path is left out.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use fscache::{parse_bytes, MaxSize};

use crate::fail::Fail;
use crate::output::Format;
use crate::units::parse_duration;

/// The application id the tool opens caches with (it seeds the boot id
/// written into the entries it stores).
pub(crate) const APPID: &str = "fscache-cli";

/// The environment variable naming the default cache.
pub(crate) const CACHE_ENV: &str = "FSCACHE_DIR";

pub(crate) const EXIT_CODES: &str = "\
The cache: every command takes the cache directory as its first argument,
or, when that is left out, from --cache or else $FSCACHE_DIR.

Exit codes:
  0    success (also `store` of a name that exists, unless
       --fail-if-exists)
  1    error: one line `error: …` on stderr naming the path or name
  2    miss: `load`, `cat`, `rm` or `verify` of a name that is not in
       the cache
  129  stopped by SIGHUP, 130 by SIGINT (Ctrl-C), 143 by SIGTERM: the
       command's unfinished work is removed and its locks released
`load` and `stage` exit with the status of their command; 127 when it is
not found, 126 when it cannot be run (as shells and env(1) do).

Every command takes the same locks as the fscache library, so it is safe
on a cache that builds are using right now.";

/// The help of a command whose leading CACHE is optional (`[CACHE] NAME
/// PATH`): clap can only leave out trailing positionals, so one list
/// takes them all, hidden from clap's own "Arguments:" section (but in
/// the man page), and the command's `before_help` lists each by name.
const NAMED_ARGS: &str =
    "{about-with-newline}\n{usage-heading} {usage}\n\n{before-help}{all-args}{after-help}";

const STORE_ARGS: &str = concat!(
    "Arguments:\n",
    "  [CACHE]  The cache directory (default: --cache, else $FSCACHE_DIR)\n",
    "  NAME     The entry's name\n",
    "  PATH     A directory (its contents become the entry's; a symlink is stored as\n",
    "           a symlink, give `PATH/` for its target's contents) or a file"
);

const LOAD_ARGS: &str = concat!(
    "Arguments:\n",
    "  [CACHE]  The cache directory (default: --cache, else $FSCACHE_DIR)\n",
    "  NAME     The entry's name\n",
    "  CMD...   The command and its arguments, after `--`"
);

const CAT_ARGS: &str = concat!(
    "Arguments:\n",
    "  [CACHE]  The cache directory (default: --cache, else $FSCACHE_DIR)\n",
    "  NAME     The entry's name\n",
    "  PATH     The file, relative to the entry's data directory"
);

const NAMES_ARGS: &str = concat!(
    "Arguments:\n",
    "  [CACHE]  The cache directory. Without --cache, a first argument is the cache\n",
    "           when $FSCACHE_DIR is not set, or it has a `/` (names never do), or it\n",
    "           is a cache directory\n",
    "  NAME...  The entries' names"
);

const VERIFY_ARGS: &str = concat!(
    "Arguments:\n",
    "  [CACHE]    The cache directory. Without --cache, a first argument is the cache\n",
    "             when $FSCACHE_DIR is not set, or it has a `/` (names never do), or it\n",
    "             is a cache directory\n",
    "  [NAME]...  The entries to check (default: all, in parallel)"
);

/// Inspect, feed and maintain an fscache directory (osbuild FsCache v1).
#[derive(Debug, Parser)]
#[command(name = "fscache", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// The cache directory, for commands given no CACHE argument
    /// (default: $FSCACHE_DIR).
    #[arg(long = "cache", global = true, value_name = "CACHE")]
    pub(crate) cache_flag: Option<PathBuf>,
    /// Print only what was asked for (listings, JSON) and errors, no
    /// confirmations or notes.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Say more: the debris removed by name, timings.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub(crate) verbose: u8,
}

/// The global options where they mean nothing (`completions`, `manpage`,
/// `remote keygen`): still accepted, so a script may pass them to every
/// command, but hidden from help and completion. (clap propagates a
/// global option only into a subcommand without an argument of its id.)
#[derive(Debug, Args)]
pub(crate) struct NoGlobals {
    #[arg(long = "cache", hide = true, value_name = "CACHE")]
    cache_flag: Option<PathBuf>,
    #[arg(short, long, hide = true, conflicts_with = "verbose")]
    quiet: bool,
    #[arg(short, long, hide = true, action = ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Show version, maximum size, accounted size, entries, size on disk
    /// and creation boot id; removes the debris of dead writers and says
    /// how much.
    Info {
        /// The cache directory.
        cache: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List entries: name, size, last use and whether a reader holds it now.
    Ls {
        /// The cache directory.
        cache: Option<PathBuf>,
        /// Order: `lru` (next to be evicted first), `size` (largest
        /// first) or `name`.
        #[arg(long, value_enum, default_value_t = Sort::Lru)]
        sort: Sort,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Set the maximum size in `cache.info` (other keys kept); creates the
    /// cache if it does not exist.
    Set {
        /// The cache directory.
        cache: Option<PathBuf>,
        /// The new limit: `10G`, `512MiB`, `1.5GB`, `4096` or `unlimited`
        /// (not 0: osbuild reads it as "keep nothing").
        #[arg(long, value_name = "SIZE", value_parser = parse_max_size, allow_hyphen_values = true)]
        max_size: MaxSize,
        /// If the cache is over the new limit, prune it down to it now.
        #[arg(long)]
        prune: bool,
        /// Make a cache of a directory that holds other files (refused
        /// without it, so that a mistyped path never becomes a cache).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Store a copy of PATH as NAME. A NAME that exists already is left
    /// as it is, without copying, and is a success (exit 0) unless
    /// --fail-if-exists.
    #[command(
        override_usage = "fscache store [OPTIONS] [CACHE] NAME PATH",
        help_template = NAMED_ARGS,
        before_help = STORE_ARGS
    )]
    Store {
        /// [CACHE] NAME PATH: the cache directory, the entry's name, and a
        /// directory (its contents become the entry's) or a file.
        #[arg(value_names = ["NAME", "PATH"], num_args = 2..=3, required = true, hide_short_help = true, hide_long_help = true)]
        args: Vec<OsString>,
        /// Exit 1 if an entry of that name exists already.
        #[arg(long)]
        fail_if_exists: bool,
        /// Fail, storing nothing, where the copy cannot keep some of the
        /// source's metadata: as non-root, another user's ownership (and
        /// a set-ID bit on it) or an xattr the kernel refuses. Without
        /// it, those are dropped as `cp -a` drops them, and counted in a
        /// note.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Run CMD in NAME's data directory (also in $FSCACHE_ENTRY), holding
    /// the entry's read lock until CMD exits; exit with CMD's status.
    #[command(
        override_usage = "fscache load [OPTIONS] [CACHE] NAME -- CMD...",
        help_template = NAMED_ARGS,
        before_help = LOAD_ARGS
    )]
    Load {
        /// [CACHE] NAME: the cache directory and the entry's name.
        #[arg(value_name = "NAME", num_args = 1..=2, required = true, hide_short_help = true, hide_long_help = true)]
        args: Vec<OsString>,
        /// The command and its arguments, after `--`.
        #[arg(
            last = true,
            required = true,
            value_name = "CMD",
            hide_short_help = true,
            hide_long_help = true
        )]
        command: Vec<OsString>,
        /// On a local miss, pull NAME from this remote (checked, then
        /// stored in the cache); a remote that is down or refused is a
        /// miss, said on stderr. Also $FSCACHE_REMOTE.
        #[arg(long, env = "FSCACHE_REMOTE", value_name = "URL")]
        remote: Option<String>,
        /// With a remote: give up on a request it has not answered after
        /// DURATION (then it is a miss).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
        timeout: Duration,
    },
    /// Write one file of entry NAME to stdout, under the entry's read lock.
    #[command(
        override_usage = "fscache cat [OPTIONS] [CACHE] NAME PATH",
        help_template = NAMED_ARGS,
        before_help = CAT_ARGS
    )]
    Cat {
        /// [CACHE] NAME PATH: the cache directory, the entry's name and
        /// the file, relative to the entry's data directory.
        #[arg(value_names = ["NAME", "PATH"], num_args = 2..=3, required = true, hide_short_help = true, hide_long_help = true)]
        args: Vec<OsString>,
    },
    /// Remove entries; an entry a reader holds is skipped, never removed.
    #[command(
        override_usage = "fscache rm [OPTIONS] [CACHE] NAME...",
        help_template = NAMED_ARGS,
        before_help = NAMES_ARGS
    )]
    Rm {
        /// [CACHE] NAME...: the cache directory and the entries' names.
        /// Without --cache, a first argument is the cache when no other
        /// is set, or it has a `/` (names never do), or it is a cache
        /// directory.
        #[arg(
            value_name = "NAME",
            required = true,
            hide_short_help = true,
            hide_long_help = true
        )]
        args: Vec<OsString>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove every entry that no reader holds (like `ccache -C`), and
    /// say which were skipped.
    Clear {
        /// The cache directory.
        cache: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove least-recently-used entries down to a size and/or entries
    /// unused for a while, and the debris of dead writers. Without --to
    /// or --unused-for: down to the maximum size in force.
    Prune {
        /// The cache directory.
        cache: Option<PathBuf>,
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
        #[command(flatten)]
        output: OutputArg,
    },
    /// Upload entries to a remote (content-addressed, deduplicated: only
    /// what the remote lacks is sent; signed with
    /// $FSCACHE_REMOTE_SECRET_KEY when set).
    #[command(
        override_usage = "fscache push [OPTIONS] --remote <URL> [CACHE] NAME...",
        help_template = NAMED_ARGS,
        before_help = NAMES_ARGS
    )]
    Push(TransferArgs),
    /// Download entries from a remote into the cache (checked against
    /// their digest, and their signature when $FSCACHE_REMOTE_TRUSTED_KEYS
    /// is set); a name the remote lacks is a miss (exit 2).
    #[command(
        override_usage = "fscache pull [OPTIONS] --remote <URL> [CACHE] NAME...",
        help_template = NAMED_ARGS,
        before_help = NAMES_ARGS
    )]
    Pull(PullArgs),
    /// The remote itself: list its entries, show what it holds, prune it,
    /// or make a signing key pair.
    Remote {
        #[command(subcommand)]
        command: RemoteCmd,
    },
    /// Show the cache's statistics, summed over every process that used
    /// it: hit rate, loads and misses by cause, stores by outcome,
    /// evictions, removals, repairs, lock waits.
    Stats {
        /// The cache directory.
        cache: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
        /// Reset every counter to zero (after showing them).
        #[arg(long)]
        zero: bool,
    },
    /// Check entries against the tree digest recorded when they were
    /// stored; exits 1 if any is damaged, 2 if a NAME has no entry.
    /// Entries without a digest are reported unverified, not bad: those
    /// osbuild stored, and those the library stored without
    /// `Builder::record_digests(true)` (`fscache store` always records
    /// one).
    #[command(
        override_usage = "fscache verify [OPTIONS] [CACHE] [NAME]...",
        help_template = NAMED_ARGS,
        before_help = VERIFY_ARGS
    )]
    Verify {
        /// [CACHE] [NAME...]: the cache directory and the entries to check
        /// (default: all, in parallel). Without --cache, a first argument
        /// is the cache when no $FSCACHE_DIR is set, or it has a `/`, or it
        /// is a cache directory.
        #[arg(value_name = "NAME", hide_short_help = true, hide_long_help = true)]
        args: Vec<OsString>,
        /// Remove damaged entries (one a reader holds is kept and said so).
        #[arg(long)]
        remove_bad: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Repair after crashes: remove the debris of dead writers and
    /// rebuild the accounted size from the entries. Needs the cache to
    /// itself: if other processes have it open, says so and exits 1.
    Repair {
        /// The cache directory.
        cache: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Run CMD in a fresh scratch directory of the cache (also in
    /// $FSCACHE_STAGE), removed afterwards; exit with CMD's status.
    #[command(override_usage = "fscache stage [OPTIONS] [CACHE] -- CMD...")]
    Stage {
        /// The cache directory.
        cache: Option<PathBuf>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Print a completion script for SHELL to stdout
    /// (`fscache completions bash > /etc/bash_completion.d/fscache`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
        #[command(flatten)]
        globals: NoGlobals,
    },
    /// Print the man page fscache(1) in roff to stdout, or with DIR write
    /// it and one page per command (fscache-store(1), …) into DIR.
    #[command(hide = true)]
    Manpage {
        /// Where to write the pages.
        dir: Option<PathBuf>,
        #[command(flatten)]
        globals: NoGlobals,
    },
    /// The entry names to offer for the word being completed, one a line:
    /// called by the bash completion script with the words before it.
    #[command(hide = true, name = COMPLETE)]
    Complete {
        /// The words after `fscache`, before the one being completed.
        #[arg(last = true)]
        words: Vec<OsString>,
        #[command(flatten)]
        globals: NoGlobals,
    },
}

/// The name of the hidden command the completion script asks for entry
/// names ([`Cmd::Complete`]).
pub(crate) const COMPLETE: &str = "__complete";

/// `fscache remote …`.
#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCmd {
    /// List the entries the remote has.
    Ls {
        #[command(flatten)]
        remote: RemoteArg,
        #[command(flatten)]
        output: OutputArg,
    },
    /// What the remote holds: entries, blobs and their stored size, push
    /// intents and prune markers (pushes and prunes in progress, or debris
    /// of dead ones).
    Info {
        #[command(flatten)]
        remote: RemoteArg,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove the entries not pushed or pulled for DURATION, then the
    /// blobs no remaining entry (and no push in progress) names, except
    /// blobs younger than the grace period.
    Prune {
        #[command(flatten)]
        remote: RemoteArg,
        /// Remove entries last pushed or pulled longer ago than DURATION
        /// (`12h`, `30d`, `1w`).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
        unused_for: Duration,
        /// Keep unreferenced blobs written less than DURATION ago: a push
        /// in progress may need them. Longer than the longest push.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h", allow_hyphen_values = true)]
        grace: Duration,
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Check the remote, as `restic check` does: every manifest opens
    /// (signature, format, digest), every pack and blob it needs is
    /// there and its pack's trailer lists it; exits 1 if anything is
    /// wrong, naming the entries that would not pull.
    Check {
        #[command(flatten)]
        remote: RemoteArg,
        /// Also read every pack and blob whole and check every hash.
        #[arg(long)]
        read_data: bool,
        /// Heal: take bad packs out of the index, push again the damaged
        /// entries the local cache (--cache, $FSCACHE_DIR) still has, and
        /// remove the manifests of those it cannot heal, saying so.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Rewrite a remote of format 1 (a blob per object) into format 2
    /// (packs): every signature stays valid. Prune after the grace period
    /// to remove the old blobs.
    Migrate {
        #[command(flatten)]
        remote: RemoteArg,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Make an ed25519 key pair: the secret goes in
    /// $FSCACHE_REMOTE_SECRET_KEY of pushers, the public key in
    /// $FSCACHE_REMOTE_TRUSTED_KEYS of pullers. With --json:
    /// `{"secret_key": …, "public_key": …}`.
    Keygen {
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        globals: NoGlobals,
    },
}

/// The arguments of `push` and `pull`.
#[derive(Debug, Args)]
pub(crate) struct TransferArgs {
    /// [CACHE] NAME...: the cache directory (as for `rm`) and the
    /// entries' names.
    #[arg(
        value_name = "NAME",
        required = true,
        hide_short_help = true,
        hide_long_help = true
    )]
    pub(crate) args: Vec<OsString>,
    #[command(flatten)]
    pub(crate) remote: RemoteArg,
    #[command(flatten)]
    pub(crate) output: OutputArg,
}

/// A remote URL: not empty (an empty `$FSCACHE_REMOTE` is no remote,
/// as for `load`).
fn remote_url(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("no remote given: pass --remote URL or set $FSCACHE_REMOTE".into());
    }
    Ok(s.to_string())
}

/// `--remote URL` and `--timeout`, which every remote command takes.
#[derive(Clone, Debug, Args)]
pub(crate) struct RemoteArg {
    /// The remote: `s3://bucket/prefix?endpoint=…`, `file:///dir`
    /// (an empty $FSCACHE_REMOTE is unset).
    #[arg(long, env = "FSCACHE_REMOTE", value_name = "URL", value_parser = remote_url)]
    pub(crate) remote: String,
    /// Give up on a request the remote has not answered after DURATION,
    /// its retries included (`10s`, `2m`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub(crate) timeout: Duration,
}

/// The arguments of `pull`.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    #[command(flatten)]
    pub(crate) transfer: TransferArgs,
    /// Fail, storing nothing, where the pull cannot restore a node's
    /// metadata: as non-root, another user's ownership (and a set-ID bit
    /// on it) or an xattr the kernel refuses. Without it, those are
    /// dropped as `tar` drops them for a non-root user.
    #[arg(long)]
    pub(crate) strict: bool,
}

/// `--json`, which every reporting command takes.
#[derive(Clone, Copy, Debug, Args)]
pub(crate) struct OutputArg {
    /// Print JSON (sizes in bytes, times in seconds) instead of text.
    #[arg(long)]
    json: bool,
}

impl OutputArg {
    /// The format asked for.
    pub(crate) fn format(self) -> Format {
        if self.json {
            Format::Json
        } else {
            Format::Text
        }
    }
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
    match s.parse() {
        // osbuild's 0 keeps nothing; ccache's `-M 0` means unlimited. Ask
        // which one is meant rather than guess.
        Ok(MaxSize::Bytes(0)) => Err(
            "0 means \"keep nothing\" in osbuild's format (unlike `ccache -M 0`, \
             which means unlimited): give `unlimited` or a size such as 10G"
                .to_owned(),
        ),
        Ok(m) => Ok(m),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    if s.trim().eq_ignore_ascii_case("unlimited") {
        return Err(
            "pruning to `unlimited` removes nothing: give a size such as 10G, \
                    or leave out --to to prune down to the maximum size in force"
                .to_owned(),
        );
    }
    parse_bytes(s).map_err(|_| {
        format!(
            "invalid size {s:?}: expected a number with an optional unit (K, M, G, T, KiB, MB, …)"
        )
    })
}

/// The cache a command works on, from its arguments (`fixed` more after
/// the optional CACHE), `--cache` and `$FSCACHE_DIR`, in that order; the
/// remaining arguments are returned.
pub(crate) fn split_cache(
    global: &Global,
    mut args: Vec<OsString>,
    fixed: usize,
) -> Result<(PathBuf, Vec<OsString>), Fail> {
    if args.len() > fixed {
        let cache = PathBuf::from(args.remove(0));
        return Ok((given_once(global, Some(cache))?, args));
    }
    Ok((default_cache(global)?, args))
}

/// As [`split_cache`], for a command taking any number of names (`rm`):
/// with `--cache`, every argument is a name; else the first is the cache
/// when there is no `$FSCACHE_DIR`, or it could not be a name (it has a
/// `/`), or it is a cache directory.
pub(crate) fn split_cache_variadic(
    global: &Global,
    mut args: Vec<OsString>,
) -> Result<(PathBuf, Vec<OsString>), Fail> {
    if global.cache_flag.is_some() {
        return Ok((default_cache(global)?, args));
    }
    let first_is_cache = args.len() > 1
        && (env_cache().is_none() || {
            let p = Path::new(&args[0]);
            args[0].as_encoded_bytes().contains(&b'/') || p.join("cache.info").exists()
        });
    if first_is_cache {
        let cache = PathBuf::from(args.remove(0));
        return Ok((cache, args));
    }
    Ok((default_cache(global)?, args))
}

/// As [`split_cache_variadic`], for a command whose names may all be left
/// out (`verify`): a lone argument may be the cache too.
pub(crate) fn split_cache_optional(
    global: &Global,
    mut args: Vec<OsString>,
) -> Result<(PathBuf, Vec<OsString>), Fail> {
    if global.cache_flag.is_some() || args.is_empty() {
        return Ok((default_cache(global)?, args));
    }
    let first_is_cache = env_cache().is_none() || {
        let p = Path::new(&args[0]);
        args[0].as_encoded_bytes().contains(&b'/') || p.join("cache.info").exists()
    };
    if first_is_cache {
        let cache = PathBuf::from(args.remove(0));
        return Ok((cache, args));
    }
    Ok((default_cache(global)?, args))
}

/// A positional CACHE, refused if `--cache` says the same thing too.
pub(crate) fn given_once(global: &Global, positional: Option<PathBuf>) -> Result<PathBuf, Fail> {
    match (positional, &global.cache_flag) {
        (Some(_), Some(flag)) => Err(Fail::error(format!(
            "the cache is given twice: as an argument and as --cache `{}`",
            flag.display()
        ))),
        (Some(p), None) => Ok(p),
        (None, _) => default_cache(global),
    }
}

fn env_cache() -> Option<PathBuf> {
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub(crate) fn default_cache(global: &Global) -> Result<PathBuf, Fail> {
    global.cache_flag.clone().or_else(env_cache).ok_or_else(|| {
        Fail::error(format!(
            "no cache given: name its directory as the first argument, with --cache, or in ${CACHE_ENV}"
        ))
    })
}

/// An entry name from the command line (names are UTF-8).
pub(crate) fn name_arg(arg: OsString) -> Result<String, Fail> {
    arg.into_string().map_err(|a| {
        Fail::error(format!(
            "`{}` is not a valid entry name: not UTF-8",
            a.to_string_lossy()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn zero_and_unlimited_are_refused_where_they_mislead() {
        assert!(parse_max_size("0").unwrap_err().contains("unlimited"));
        assert!(parse_max_size("0G").is_err());
        assert_eq!(parse_max_size("unlimited"), Ok(MaxSize::Unlimited));
        let e = parse_size("unlimited").unwrap_err();
        assert!(e.contains("leave out --to"), "{e}");
        assert!(!parse_size("x").unwrap_err().contains("unlimited"));
        assert!(parse_size("1K").is_ok_and(|n| n == 1000 || n == 1024));
    }
}
