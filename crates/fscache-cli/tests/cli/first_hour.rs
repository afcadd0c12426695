//! What a new user meets in the first hour, each run the way the report
//! that found it did: `verify NAME` with the cache from `$FSCACHE_DIR` or
//! `--cache`, `set` on a directory that is no cache, exit codes of
//! `verify` and of a command `load` cannot run, `repair --json` while
//! busy; and the books after a prune that could not update them.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{
    expect_code, expect_error, hold, json, new_cache, stderr, stdout, stop, store, tree, BIN,
};

fn with_env(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("FSCACHE_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn verify_takes_its_cache_from_fscache_dir_or_cache_and_misses_exit_2() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "locale", &src), 0);
    // FSCACHE_DIR=$C fscache verify locale
    let o = with_env(&cache, &["verify", "locale"]);
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "locale: ok");
    // fscache --cache $C verify locale
    let o = fsc!("--cache", cache, "verify", "locale");
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "locale: ok");
    // The whole cache, from the environment or as the one argument.
    expect_code(&with_env(&cache, &["verify"]), 0);
    expect_code(&fsc!("verify", cache), 0);
    // A name without an entry is a miss.
    let o = with_env(&cache, &["verify", "nonexist"]);
    expect_code(&o, 2);
    assert!(stdout(&o).contains("nonexist: missing"), "{}", stdout(&o));
    assert!(stderr(&o).starts_with("miss: "), "{}", stderr(&o));
}

#[test]
fn damaged_entries_are_counted_in_good_grammar_with_a_hint() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "a", &src), 0);
    std::fs::write(cache.join("objects/a/data/hello.txt"), b"tampered\n").unwrap();
    let o = fsc!("verify", cache);
    expect_error(&o, "1 damaged entry; `fscache verify --remove-bad` removes");
    let o = fsc!("verify", cache, "--remove-bad");
    expect_error(&o, "1 damaged entry (removed)");
    assert!(
        stdout(&o).contains("a: damaged (removed)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn set_refuses_a_directory_of_other_files_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("important.txt"), b"keep me").unwrap();
    let o = fsc!("set", home, "--max-size", "1G");
    expect_error(&o, "is not empty and not a cache");
    assert!(!home.join("CACHEDIR.TAG").exists());
    assert!(!home.join("cache.info").exists());
    // An empty or new directory, or a cache, is fine; --force overrides.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    expect_code(&fsc!("set", empty, "--max-size", "1G"), 0);
    expect_code(&fsc!("set", empty, "--max-size", "2G"), 0);
    expect_code(&fsc!("set", tmp.path().join("new"), "--max-size", "1G"), 0);
    expect_code(&fsc!("set", home, "--max-size", "1G", "--force"), 0);
    assert!(home.join("cache.info").exists());
    assert_eq!(
        std::fs::read(home.join("important.txt")).unwrap(),
        b"keep me"
    );
}

#[test]
fn load_of_a_command_that_cannot_run_exits_127_or_126() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "a", &src), 0);
    let o = fsc!("load", cache, "a", "--", "no-such-command");
    expect_code(&o, 127);
    assert!(stderr(&o).starts_with("error: failed to run `no-such-command`"));
    let script = tmp.path().join("not-executable");
    std::fs::write(&script, b"#!/bin/sh\n").unwrap();
    let o = fsc!("load", cache, "a", "--", script);
    expect_code(&o, 126);
}

#[test]
fn repair_json_while_busy_still_prints_a_document() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "a", &src), 0);
    let mut holder = hold(&cache, "a", "30");
    let o = fsc!("repair", cache, "--json");
    expect_code(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["repaired"], false, "{v}");
    assert_eq!(v["busy"], true, "{v}");
    stop(&mut holder).unwrap();
    let v = json(&fsc!("repair", cache, "--json"));
    assert_eq!(v["repaired"], true, "{v}");
}

fn size_file(cache: &Path) -> u64 {
    std::fs::read_to_string(cache.join("cache.size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=none", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The report's reproduction: `strace -f -e
/// inject=write:error=ENOSPC:when=1 fscache prune C --to 0` on a cache of
/// 4 entries. The entries go, the failed counter write is reported with
/// what was removed (exit 1), and a second, clean prune makes the books
/// exact.
#[test]
fn a_prune_whose_counter_write_fails_says_so_and_the_next_heals_the_books() {
    if !strace_works() {
        eprintln!("skipping: strace is missing or cannot trace here (cargo xtask ci installs it)");
        return;
    }
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 50_000);
    for n in ["a", "b", "c", "d"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    let o = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg("inject=write:error=ENOSPC:when=1")
        .arg(BIN)
        .args([
            OsStr::new("prune"),
            cache.as_os_str(),
            OsStr::new("--to"),
            OsStr::new("0"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // The first write of the process is the counter's (prune prints after).
    expect_code(&o, 1);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("failed to uncharge") && err.contains("removed `a`"),
        "{err}"
    );
    // The prune's own reconcile may have healed the books already; one
    // clean prune surely does.
    expect_code(&fsc!("prune", cache, "--to", "0"), 0);
    assert!(std::fs::read_dir(cache.join("objects"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(size_file(&cache), 0);
    assert!(!cache.join("cache.size.suspect").exists());
}

#[test]
fn stats_list_removals_by_rm_clear_and_remove_bad() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    for n in ["a", "b", "c"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    expect_code(&fsc!("rm", cache, "a"), 0);
    std::fs::write(cache.join("objects/b/data/hello.txt"), b"tampered\n").unwrap();
    expect_code(&fsc!("verify", cache, "--remove-bad"), 1);
    expect_code(&fsc!("clear", cache), 0);
    let v = json(&fsc!("stats", cache, "--json"));
    let removed: Vec<(String, String)> = v["recent-removals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["why"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for n in ["a", "b", "c"] {
        assert!(
            removed.contains(&(n.to_owned(), "removed".to_owned())),
            "{n} not in {removed:?}"
        );
    }
}

/// The report: `exists already` stayed 0 after CLI stores of an existing
/// name (the CLI skipped the copy without the library counting it).
#[test]
fn a_store_of_an_existing_name_is_counted_as_exists_already() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "a", &src), 0);
    for _ in 0..2 {
        expect_code(&store(&cache, "a", &src), 0);
    }
    expect_code(&fsc!("store", cache, "a", src, "--fail-if-exists"), 1);
    let v = json(&fsc!("stats", cache, "--json"));
    assert_eq!(
        (v["stored"].as_u64(), v["stored-exists"].as_u64()),
        (Some(1), Some(3)),
        "{v}"
    );
    let text = stdout(&fsc!("stats", cache));
    assert!(text.contains("  exists already:    3"), "{text}");
    // Builds of load_or_build and waits for a builder have lines of their
    // own (the library's tests count them).
    for line in [
        "  built:             0 (load_or_build)",
        "waits for a builder: 0",
    ] {
        assert!(text.contains(line), "{line:?} not in {text}");
    }
    assert_eq!(v["builds"].as_u64(), Some(0), "{v}");
    assert_eq!(v["build-waits"].as_u64(), Some(0), "{v}");
}

/// `cat` through a symlink that leaves the entry names the symlink; a
/// `store` of a symlink says it stored the link and how to store its
/// target's contents.
#[test]
fn symlinks_are_named_by_cat_and_noted_by_store() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    std::os::unix::fs::symlink("/etc/hostname", src.join("locale.alias")).unwrap();
    std::os::unix::fs::symlink("../../..", src.join("up")).unwrap();
    std::os::unix::fs::symlink("sub", src.join("inside")).unwrap();
    expect_code(&store(&cache, "locale", &src), 0);
    let o = fsc!("cat", cache, "locale", "locale.alias");
    expect_error(
        &o,
        "`locale.alias` in entry `locale` is a symlink that points outside the entry (to `/etc/hostname`)",
    );
    let o = fsc!("cat", cache, "locale", "up/etc/hostname");
    expect_error(
        &o,
        "`up` in entry `locale` is a symlink that points outside the entry (to `../../..`)",
    );
    // A symlink that stays inside is followed.
    let o = fsc!("cat", cache, "locale", "inside/file");
    expect_code(&o, 0);
    assert_eq!(o.stdout.len(), 100);

    // `fscache store C lib /lib`, where /lib is a symlink.
    let lib = tmp.path().join("lib");
    std::os::unix::fs::symlink(&src, &lib).unwrap();
    let o = store(&cache, "lib", &lib);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "stored a symlink; give `{}/` for its target's contents",
            lib.display()
        )),
        "{out}"
    );
    let listed = std::fs::read_link(cache.join("objects/lib/data/lib")).unwrap();
    assert_eq!(listed, src);
    // With the slash, the target's contents, and no note.
    let o = fsc!(
        "store",
        cache,
        "lib-contents",
        format!("{}/", lib.display())
    );
    expect_code(&o, 0);
    assert!(!stdout(&o).contains("symlink"), "{}", stdout(&o));
    assert!(cache.join("objects/lib-contents/data/hello.txt").is_file());
    let v = json(&fsc!("store", cache, "lib2", lib, "--json"));
    assert_eq!(v["symlink"], true, "{v}");
}

/// A tmux server on a private socket, killed when dropped.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        expect_code(&self.run(&args), 0);
    }

    /// Wait until the pane's last non-empty line is `want`.
    #[track_caller]
    fn expect_line(&self, want: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let pane = stdout(&self.run(&["capture-pane", "-p", "-t", "t"]));
            let last = pane
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            if last.trim_end() == want.trim_end() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "wanted {want:?}, the pane shows:\n{pane}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The completion script in a real bash, typed at as a person does:
/// `fscache ve<TAB>` completes the command, and an entry name completes
/// from the cache the line names, or from `$FSCACHE_DIR`.
#[test]
fn bash_completes_commands_and_entry_names_in_a_terminal() {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !have("tmux") || !Path::new("/bin/bash").exists() {
        eprintln!("skipping: tmux or bash is missing (cargo xtask ci installs tmux)");
        return;
    }
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    for n in ["locale", "lib"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    let script = tmp.path().join("fscache.bash");
    let o = fsc!("completions", "bash");
    expect_code(&o, 0);
    std::fs::write(&script, &o.stdout).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let tmux = Tmux {
        socket: tmp.path().join("tmux.sock"),
    };
    let path = format!("PATH={}:/usr/bin:/bin", bin_dir.display());
    let home = format!("HOME={}", tmp.path().display());
    let dir = tmp.path().display().to_string();
    let o = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "250",
        "-y",
        "40",
        "-c",
        &dir,
        "--",
        "env",
        "-i",
        &path,
        &home,
        "TERM=xterm",
        "PS1=$ ",
        "/bin/bash",
        "--norc",
        "--noprofile",
    ]);
    expect_code(&o, 0);
    let source = format!("source {}", script.display());
    tmux.keys(&[&source, "Enter", "clear", "Enter"]);
    tmux.expect_line("$");
    // The command.
    tmux.keys(&["fscache ve", "Tab"]);
    tmux.expect_line("$ fscache verify");
    // An entry name, from the cache given as the first argument.
    let c = cache.display().to_string();
    tmux.keys(&[&format!("{c} loc"), "Tab"]);
    tmux.expect_line(&format!("$ fscache verify {c} locale"));
    tmux.keys(&["C-u", "clear", "Enter"]);
    tmux.expect_line("$");
    // From $FSCACHE_DIR, for `cat` (one name, then a path) and `rm`; the
    // hidden commands are not offered.
    tmux.keys(&[&format!("export FSCACHE_DIR={c}; clear"), "Enter"]);
    tmux.expect_line("$");
    tmux.keys(&["fscache cat lo", "Tab"]);
    tmux.expect_line("$ fscache cat locale");
    tmux.keys(&["C-u", "fscache --cache ", &c, " rm li", "Tab"]);
    tmux.expect_line(&format!("$ fscache --cache {c} rm lib"));
    tmux.keys(&["C-u", "fscache man", "Tab", "Tab"]);
    tmux.expect_line("$ fscache man");
}

/// Help named the arguments `<ARGS> <ARGS>...`, and offered the global
/// options on commands where they mean nothing.
#[test]
fn help_names_the_arguments_and_keeps_global_options_where_they_mean_something() {
    for (cmd, names) in [
        ("store", &["[CACHE]", "NAME", "PATH"][..]),
        ("cat", &["[CACHE]", "NAME", "PATH"]),
        ("load", &["[CACHE]", "NAME", "CMD..."]),
        ("rm", &["[CACHE]", "NAME..."]),
        ("verify", &["[CACHE]", "[NAME]..."]),
        ("push", &["[CACHE]", "NAME..."]),
    ] {
        for flag in ["-h", "--help"] {
            let help = stdout(&fsc!(cmd, flag));
            assert!(!help.contains("ARGS"), "{cmd} {flag}: {help}");
            let args: Vec<&str> = help
                .split("Arguments:\n")
                .nth(1)
                .unwrap_or_else(|| panic!("{cmd}: {help}"))
                .lines()
                .take_while(|l| !l.is_empty())
                // An argument's line; not a continuation of its help.
                .filter_map(|l| l.strip_prefix("  ").filter(|r| !r.starts_with(' ')))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            assert_eq!(args, names, "{cmd} {flag}: {help}");
            assert!(help.contains("--cache"), "{cmd}: {help}");
        }
    }
    for cmd in [
        &["completions", "--help"][..],
        &["remote", "keygen", "--help"],
    ] {
        let help = stdout(&super::fscache(cmd));
        for global in ["--cache", "--quiet", "--verbose"] {
            assert!(!help.contains(global), "{cmd:?}: {help}");
        }
    }
    // Still accepted, so a script may pass them to every command.
    expect_code(&fsc!("-q", "completions", "bash"), 0);
    expect_code(&fsc!("completions", "bash", "-v"), 0);
}
