//! What an operator reaches for: a default cache (`--cache`,
//! `FSCACHE_DIR`), `clear`, `repair`, the debris report, `-q`, `set`
//! over the limit, completions and the man page, stdout that fails,
//! `verify NAME` with the default cache, `set` on a directory that is no
//! cache, `repair --json` while busy, and the bash completion typed in a
//! terminal (tmux).

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    expect_code, expect_error, hold, json, ls_json, names, new_cache, stderr, stdout, stop, store,
    tree, with_env, BIN,
};

/// Plant the debris a killed writer leaves: an unlocked `uuid-*` entry.
fn plant_debris(cache: &Path, tag: char) -> std::path::PathBuf {
    let debris = cache.join(format!("objects/uuid-{}", tag.to_string().repeat(32)));
    std::fs::create_dir_all(debris.join("data")).unwrap();
    std::fs::write(debris.join("object.lock"), b"").unwrap();
    std::fs::write(debris.join("data/f"), vec![0u8; 200_000]).unwrap();
    debris
}

#[test]
fn fscache_dir_and_cache_flag_name_the_default_cache() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    let o = |args: &[&str]| {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        with_env(&cache, &args)
    };
    let s = src.to_str().unwrap();
    expect_code(&o(&["store", "a", s]), 0);
    expect_code(&o(&["store", "b", s]), 0);
    assert_eq!(names(&ls_json(&cache)), ["a", "b"]);
    let l = o(&["ls"]);
    expect_code(&l, 0);
    assert!(stdout(&l).contains("a "), "{}", stdout(&l));
    expect_code(&o(&["load", "a", "--", "true"]), 0);
    let c = o(&["cat", "a", "hello.txt"]);
    expect_code(&c, 0);
    assert_eq!(stdout(&c), "hello from src\n");
    expect_code(&o(&["info", "--json"]), 0);
    expect_code(&o(&["rm", "b"]), 0);
    assert_eq!(names(&ls_json(&cache)), ["a"]);

    // Existing invocations keep working with FSCACHE_DIR set elsewhere:
    // an explicit CACHE wins.
    let (_tmp2, other) = new_cache("unlimited");
    let args = [
        OsStr::new("store"),
        other.as_os_str(),
        "x".as_ref(),
        src.as_os_str(),
    ];
    expect_code(&with_env(&cache, args), 0);
    let args = [OsStr::new("rm"), other.as_os_str(), "x".as_ref()];
    expect_code(&with_env(&cache, args), 0);
    assert!(ls_json(&other).is_empty());
    assert_eq!(names(&ls_json(&cache)), ["a"]);

    // --cache, without the variable; both ways at once is refused.
    let flag = fsc!("--cache", cache, "ls", "--json");
    assert_eq!(json(&flag).as_array().unwrap().len(), 1);
    let r = fsc!("rm", "--cache", cache, "a");
    expect_code(&r, 0);
    expect_error(&fsc!("ls", cache, "--cache", cache), "given twice");
    // Neither: a clear error, not a usage dump.
    expect_error(&fsc!("ls"), "no cache given");
    expect_error(&fsc!("store", "a", src), "no cache given");
}

#[test]
fn clear_removes_every_entry_no_reader_holds() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 10_000);
    for n in ["a", "b", "held"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    let mut reader = hold(&cache, "held", "30");
    let o = fsc!("clear", cache);
    let _ = stop(&mut reader);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("skipped held: in use"), "{out}");
    assert!(out.contains("removed 2 entries"), "{out}");
    assert_eq!(names(&ls_json(&cache)), ["held"]);
    let v = json(&fsc!("clear", cache, "--json"));
    assert_eq!(v["removed"], serde_json::json!(["held"]));
    assert_eq!(v["skipped"], serde_json::json!([]));
    assert!(v["freed"].as_u64().unwrap() > 0);
    let info = json(&fsc!("info", cache, "--json"));
    assert_eq!(info["accounted_size"], 0);
}

#[test]
fn info_removes_and_reports_debris() {
    let (_tmp, cache) = new_cache("unlimited");
    let d1 = plant_debris(&cache, '1');
    let d2 = plant_debris(&cache, '2');
    let o = fsc!("info", cache);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("debris:           2 items"), "{out}");
    assert!(out.contains("removed"), "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    assert!(!d1.exists() && !d2.exists());
    let v = json(&fsc!("info", cache, "--json"));
    assert_eq!(v["debris"]["removed"], serde_json::json!([]));
    plant_debris(&cache, '3');
    let v = json(&fsc!("info", cache, "--json"));
    assert_eq!(v["debris"]["removed"].as_array().unwrap().len(), 1);
    assert!(v["debris"]["size_on_disk"].as_u64().unwrap() >= 200_000);
}

#[test]
fn repair_fixes_the_books_or_says_others_hold_the_cache() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 10_000);
    expect_code(&store(&cache, "a", &src), 0);
    let exact = json(&fsc!("info", cache, "--json"))["accounted_size"]
        .as_u64()
        .unwrap();
    // An over-count, as a crash between charge and commit leaves it.
    std::fs::write(cache.join("cache.size"), format!("{}", exact + 12_345)).unwrap();
    plant_debris(&cache, '4');
    let o = fsc!("repair", cache);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("removed uuid-4444"), "{out}");
    assert!(out.contains("corrected"), "{out}");
    let v = json(&fsc!("info", cache, "--json"));
    assert_eq!(v["accounted_size"].as_u64(), Some(exact));
    let v = json(&fsc!("repair", cache, "--json"));
    assert_eq!(v["accounted"].as_u64(), Some(exact));
    assert_eq!(v["accounted_before"].as_u64(), Some(exact));
    assert_eq!(v["removed"], serde_json::json!([]));

    // Another process has the cache open: refuse at once, exit 1.
    let mut reader = hold(&cache, "a", "30");
    let started = Instant::now();
    let o = fsc!("repair", cache);
    let _ = stop(&mut reader);
    expect_error(&o, "open in other processes");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn set_over_the_new_limit_says_so_and_prunes_on_request() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100_000);
    for n in ["a", "b", "c"] {
        expect_code(&store(&cache, n, &src), 0);
    }
    let o = fsc!("set", cache, "--max-size", "150K");
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("over the new maximum"), "{out}");
    assert!(out.contains("fscache prune"), "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    assert_eq!(names(&ls_json(&cache)).len(), 3);
    let v = json(&fsc!(
        "set",
        cache,
        "--max-size",
        "150K",
        "--prune",
        "--json"
    ));
    assert_eq!(v["over_limit"], false);
    assert!(v["accounted_size"].as_u64().unwrap() <= 150_000);
    assert!(!v["pruned"]["removed"].as_array().unwrap().is_empty());
}

#[test]
fn quiet_keeps_what_was_asked_for_only() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    let o = fsc!("-q", "store", cache, "a", src);
    expect_code(&o, 0);
    assert_eq!(stdout(&o), "");
    let o = fsc!("ls", cache, "-q");
    assert!(stdout(&o).contains("a "), "{}", stdout(&o));
    let o = fsc!("ls", cache, "-q", "-v");
    expect_code(&o, 1);
}

/// Every reporting command, with stdout on `/dev/full` (ENOSPC on write):
/// one `error:` line and exit 1, never a panic.
#[test]
fn a_failing_stdout_is_one_error_line_and_a_closed_pipe_is_quiet() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "a", &src), 0);
    let c = cache.to_str().unwrap();
    let s = src.to_str().unwrap();
    let runs: &[&[&str]] = &[
        &["ls", c],
        &["ls", c, "--json"],
        &["info", c],
        &["info", c, "--json"],
        &["set", c, "--max-size", "1G"],
        &["store", c, "b", s],
        &["store", c, "a", s, "--json"],
        &["cat", c, "a", "hello.txt"],
        &["prune", c, "--dry-run"],
        &["repair", c],
        &["clear", c, "--json"],
        &["completions", "bash"],
        &["manpage"],
        &["--help"],
    ];
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped the /dev/full half: no /dev/full here");
    } else {
        for args in runs {
            let o = Command::new(BIN)
                .args(*args)
                .stdout(Stdio::from(File::create("/dev/full").unwrap()))
                .output()
                .unwrap();
            expect_error(&o, "failed to write to stdout");
            assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        }
    }
    expect_code(&store(&cache, "a2", &src), 0);
    // A reader that went away (`| head`): success, and nothing said.
    for args in runs {
        let mut child = Command::new(BIN)
            .args(*args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        expect_code(&o, 0);
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}

/// Whether `program` runs here.
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn completion_scripts_parse() {
    for (shell, check) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let o = fsc!("completions", shell);
        expect_code(&o, 0);
        assert!(stdout(&o).contains("fscache"), "{shell}");
        if !have(check) {
            eprintln!("skipped parsing the {shell} completions: `{check}` is not installed");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("fscache.{shell}"));
        std::fs::write(&file, &o.stdout).unwrap();
        let flag = if shell == "fish" {
            "--no-execute"
        } else {
            "-n"
        };
        let st = Command::new(check).arg(flag).arg(&file).output().unwrap();
        assert!(st.status.success(), "{shell}: {}", stderr(&st));
    }
    expect_code(&fsc!("completions", "tcsh"), 1);
}

#[test]
fn the_man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    let o = fsc!("manpage", dir.path());
    expect_code(&o, 0);
    let top = dir.path().join("fscache.1");
    let page = std::fs::read_to_string(&top).unwrap();
    assert!(page.contains(".TH fscache 1"), "{page}");
    for sub in ["store", "repair", "clear", "completions"] {
        assert!(
            dir.path().join(format!("fscache-{sub}.1")).exists(),
            "{sub}"
        );
    }
    assert!(!dir.path().join("fscache-manpage.1").exists());
    let render: Option<Vec<&OsStr>> = if have("man") {
        Some(vec!["man".as_ref(), "-l".as_ref()])
    } else if have("groff") {
        Some(vec![
            "groff".as_ref(),
            "-man".as_ref(),
            "-Tutf8".as_ref(),
            "-ww".as_ref(),
        ])
    } else {
        None
    };
    let Some(render) = render else {
        eprintln!("skipped rendering the man pages: neither `man` nor `groff` is installed");
        return;
    };
    for page in std::fs::read_dir(dir.path()).unwrap() {
        let page = page.unwrap().path();
        let o = Command::new(render[0])
            .args(&render[1..])
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", page.display(), stderr(&o));
        assert!(!stdout(&o).is_empty(), "{}", page.display());
        assert!(
            !stderr(&o).contains("warning"),
            "{}: {}",
            page.display(),
            stderr(&o)
        );
    }
}

#[test]
fn verify_takes_its_cache_from_fscache_dir_or_cache_and_misses_exit_2() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 100);
    expect_code(&store(&cache, "locale", &src), 0);
    // FSCACHE_DIR=$C fscache verify locale
    let o = with_env(&cache, ["verify", "locale"]);
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "locale: ok");
    // fscache --cache $C verify locale
    let o = fsc!("--cache", cache, "verify", "locale");
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "locale: ok");
    // The whole cache, from the environment or as the one argument.
    expect_code(&with_env(&cache, ["verify"]), 0);
    expect_code(&fsc!("verify", cache), 0);
    // A name without an entry is a miss.
    let o = with_env(&cache, ["verify", "nonexist"]);
    expect_code(&o, 2);
    assert!(stdout(&o).contains("nonexist: missing"), "{}", stdout(&o));
    assert!(stderr(&o).starts_with("miss: "), "{}", stderr(&o));
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
