//! Every command and flag on its own: `set`, `info`, `store`, `ls`,
//! `load`, `cat`, `rm`, `prune`, `stage`, `help` (its arguments named),
//! hostile input, an unwritable cache, a cache osbuild wrote, and symlinks
//! met by `cat` and `store`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::*;

#[test]
fn set_creates_the_cache_and_info_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("new/cache");
    let o = fsc!("set", cache, "--max-size", "10G");
    expect_code(&o, 0);
    assert!(stdout(&o).contains("10.0GiB"), "{}", stdout(&o));
    assert!(cache.join("cache.info").exists());

    let v = json(&fsc!("info", cache, "--json"));
    assert_eq!(v["version"], 1);
    assert_eq!(v["maximum_size"], 10u64 << 30);
    assert_eq!(v["accounted_size"], 0);
    assert_eq!(v["entries"], 0);
    assert!(v["size_on_disk"].as_u64().unwrap() > 0);
    // Written at creation: the app boot id of this boot.
    assert_eq!(v["creation_boot_id"].as_str().map(str::len), Some(32));

    let o = fsc!("info", cache);
    expect_code(&o, 0);
    for line in [
        "version:",
        "maximum size:     10.0GiB",
        "accounted size:   0B",
        "entries:          0",
        "size on disk:",
        "creation boot id:",
    ] {
        assert!(stdout(&o).contains(line), "{line:?} in {}", stdout(&o));
    }

    for (given, expect) in [
        ("unlimited", Value::from("unlimited")),
        ("512MiB", Value::from(512u64 << 20)),
        ("1.5GB", Value::from(1_500_000_000u64)),
        ("4096", Value::from(4096)),
    ] {
        expect_code(&fsc!("set", cache, "--max-size", given), 0);
        let v = json(&fsc!("info", cache, "--json"));
        assert_eq!(v["maximum_size"], expect, "{given}");
    }
}

#[test]
fn set_keeps_unknown_keys_of_cache_info() {
    let (_t, cache) = new_cache("1M");
    std::fs::write(
        cache.join("cache.info"),
        br#"{"version": 1, "maximum-size": 5, "future-key": {"kept": true}}"#,
    )
    .unwrap();
    expect_code(&fsc!("set", cache, "--max-size", "2M"), 0);
    let info: Value =
        serde_json::from_slice(&std::fs::read(cache.join("cache.info")).unwrap()).unwrap();
    assert_eq!(info["future-key"]["kept"], true);
    assert_eq!(info["maximum-size"], 2u64 << 20);
    assert_eq!(info["version"], 1);
}

#[test]
fn store_then_ls_in_every_order() {
    let (tmp, cache) = new_cache("10M");
    let small = tree(tmp.path(), "small", 100);
    let big = tree(tmp.path(), "big", 200_000);
    let mid = tree(tmp.path(), "mid", 50_000);
    for (name, src) in [("b-small", &small), ("a-big", &big), ("c-mid", &mid)] {
        let o = store(&cache, name, src);
        expect_code(&o, 0);
        assert!(
            stdout(&o).starts_with(&format!("stored {name}: "))
                && stdout(&o).contains(" on disk ("),
            "{}",
            stdout(&o)
        );
        // Not a terminal: no progress bar, nothing on stderr.
        assert_eq!(stderr(&o), "");
    }
    age(&cache, "c-mid", 300);
    age(&cache, "a-big", 200);
    age(&cache, "b-small", 100);

    let list = ls_json(&cache);
    assert_eq!(
        names(&list),
        ["c-mid", "a-big", "b-small"],
        "lru is the default"
    );
    for e in &list {
        assert!(e["size"].as_u64().unwrap() > 0);
        assert_eq!(e["in_use"], false);
        assert!(e["last_use"].as_f64().unwrap() > 1e9);
    }
    assert!((299..400).contains(&list[0]["idle_seconds"].as_u64().unwrap()));

    let sorted = |how: &str| {
        let o = fsc!("ls", cache, "--sort", how, "--json");
        names(json(&o).as_array().unwrap())
    };
    assert_eq!(sorted("lru"), ["c-mid", "a-big", "b-small"]);
    assert_eq!(sorted("size"), ["a-big", "c-mid", "b-small"]);
    assert_eq!(sorted("name"), ["a-big", "b-small", "c-mid"]);

    let o = fsc!("ls", cache, "--sort", "name");
    expect_code(&o, 0);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("LAST USE")
            && lines[0].contains("IN USE")
    );
    assert!(
        lines[1].starts_with("a-big") && lines[1].contains("KiB") && lines[1].contains("3m ago"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("c-mid") && lines[3].contains("5m ago"),
        "{text}"
    );

    let v = json(&fsc!("info", cache, "--json"));
    assert_eq!(v["entries"], 3);
    let sum: u64 = list.iter().map(|e| e["size"].as_u64().unwrap()).sum();
    assert_eq!(v["accounted_size"], sum);
}

#[test]
fn store_reports_every_outcome_and_exits_0_only_when_stored_or_existing() {
    let (tmp, cache) = new_cache("100K");
    let small = tree(tmp.path(), "small", 100);
    expect_code(&store(&cache, "x", &small), 0);

    // "Exists" is a success with a note, unless --fail-if-exists.
    let o = store(&cache, "x", &small);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("x exists already"), "{}", stdout(&o));
    let o = fsc!("store", cache, "x", small, "--fail-if-exists");
    expect_error(&o, "`x` not stored: an entry of that name exists already");

    let huge = tree(tmp.path(), "huge", 300_000);
    let o = store(&cache, "huge", &huge);
    expect_error(
        &o,
        "`huge` not stored: larger than the cache's maximum size",
    );
    assert!(ls_json(&cache).iter().all(|e| e["name"] != "huge"));

    // A single file becomes data/<its name>.
    let file = tmp.path().join("single.txt");
    std::fs::write(&file, "one file\n").unwrap();
    let o = fsc!("store", cache, "f", file, "--json");
    let v = json(&o);
    assert_eq!(v["outcome"], "stored");
    assert_eq!(v["name"], "f");
    assert!(v["size"].as_u64().unwrap() > 0);
    assert_eq!(v["evicted"], Value::Array(vec![]));
    let o = fsc!("cat", cache, "f", "single.txt");
    expect_code(&o, 0);
    assert_eq!(stdout(&o), "one file\n");

    let v = json(&fsc!("store", cache, "x", small, "--json"));
    assert_eq!(v["outcome"], "exists");
    let o = fsc!("store", cache, "x", small, "--json", "--fail-if-exists");
    expect_code(&o, 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "exists");
}

#[test]
fn store_past_the_limit_shows_what_eviction_removed() {
    let (tmp, cache) = new_cache("100K");
    for (name, ago) in [("oldest", 300), ("older", 200), ("newer", 100)] {
        expect_code(&store(&cache, name, &tree(tmp.path(), name, 20_000)), 0);
        age(&cache, name, ago);
    }
    let big = tree(tmp.path(), "big", 40_000);
    let o = store(&cache, "big", &big);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("stored big"), "{out}");
    assert!(out.contains("evicted oldest"), "{out}");
    assert!(!out.contains("evicted newer"), "{out}");
    let left = names(&ls_json(&cache));
    assert!(left.contains(&"big".to_owned()) && left.contains(&"newer".to_owned()));
    assert!(!left.contains(&"oldest".to_owned()));
}

#[test]
fn load_runs_the_command_in_the_entry_and_exits_with_its_status() {
    let (tmp, cache) = new_cache("1M");
    expect_code(&store(&cache, "e", &tree(tmp.path(), "e", 10)), 0);
    let script = "pwd; echo \"$FSCACHE_ENTRY\"; cat hello.txt; exit 7";
    let o = fsc!("load", cache, "e", "--", "sh", "-c", script);
    expect_code(&o, 7);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let data = std::fs::canonicalize(cache.join("objects/e/data")).unwrap();
    assert_eq!(Path::new(lines[0]), data);
    assert_eq!(std::fs::canonicalize(lines[1]).unwrap(), data);
    assert_eq!(lines[2], "hello from e");

    let o = fsc!("load", cache, "e", "--", "true");
    expect_code(&o, 0);

    let o = fsc!("load", cache, "absent", "--", "true");
    expect_code(&o, 2);
    assert!(stderr(&o).contains("`absent`"), "{}", stderr(&o));

    // Not found: 127, as shells and env(1) exit.
    let o = fsc!("load", cache, "e", "--", "/no/such/program");
    expect_code(&o, 127);
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("/no/such/program"), "{}", stderr(&o));
}

#[test]
fn cat_writes_one_file_under_the_read_lock() {
    let (tmp, cache) = new_cache("1M");
    expect_code(&store(&cache, "e", &tree(tmp.path(), "e", 3000)), 0);
    let o = fsc!("cat", cache, "e", "hello.txt");
    expect_code(&o, 0);
    assert_eq!(stdout(&o), "hello from e\n");
    let o = fsc!("cat", cache, "e", "sub/file");
    expect_code(&o, 0);
    assert_eq!(o.stdout, vec![b'x'; 3000]);

    let o = fsc!("cat", cache, "absent", "x");
    expect_code(&o, 2);
    assert!(stderr(&o).contains("`absent`"));
    expect_error(
        &fsc!("cat", cache, "e", "nope"),
        "no file `nope` in entry `e`",
    );
    expect_error(&fsc!("cat", cache, "e", "sub"), "is a directory");
    expect_error(
        &fsc!("cat", cache, "e", "../object.info"),
        "`../object.info`",
    );
    expect_error(&fsc!("cat", cache, "e", "/etc/passwd"), "`/etc/passwd`");
}

#[test]
fn rm_removes_entries_and_reports_misses() {
    let (tmp, cache) = new_cache("1M");
    let src = tree(tmp.path(), "t", 5000);
    for name in ["a", "b", "c"] {
        expect_code(&store(&cache, name, &src), 0);
    }
    let o = fsc!("rm", cache, "a", "b");
    expect_code(&o, 0);
    assert!(stdout(&o).contains("removed a (freed ") && stdout(&o).contains("removed b"));
    assert_eq!(names(&ls_json(&cache)), ["c"]);
    let v = json(&fsc!("info", cache, "--json"));
    assert_eq!(v["accounted_size"], ls_json(&cache)[0]["size"]);

    let o = fsc!("rm", cache, "a");
    expect_code(&o, 2);
    assert!(stderr(&o).contains("no entry `a`"), "{}", stderr(&o));
    // A miss and a removal: the removal happens, the exit says miss.
    let o = fsc!("rm", cache, "zz", "c");
    expect_code(&o, 2);
    assert!(ls_json(&cache).is_empty());
}

#[test]
fn a_reader_keeps_rm_and_prune_from_removing_its_entry() {
    let (tmp, cache) = new_cache("1M");
    let src = tree(tmp.path(), "t", 5000);
    expect_code(&store(&cache, "held", &src), 0);
    expect_code(&store(&cache, "free", &src), 0);
    let mut reader = hold(&cache, "held", "2");

    let o = fsc!("rm", cache, "held");
    expect_error(&o, "`held` is in use by a reader; skipped");

    let o = fsc!("prune", cache, "--to", "0", "--json");
    let v = json(&o);
    assert_eq!(v["removed"], serde_json::json!(["free"]));
    assert_eq!(v["skipped"], serde_json::json!(["held"]));
    assert!(cache.join("objects/held/data/hello.txt").exists());

    assert!(reader.wait().unwrap().success());
    let list = ls_json(&cache);
    assert_eq!(names(&list), ["held"]);
    assert_eq!(list[0]["in_use"], false);
    expect_code(&fsc!("rm", cache, "held"), 0);
}

#[test]
fn prune_to_a_size_unused_for_and_dry_run() {
    let (tmp, cache) = new_cache("1M");
    let src = tree(tmp.path(), "t", 20_000);
    for (name, ago) in [
        ("d3", 3 * 86_400),
        ("h12", 12 * 3_600),
        ("m5", 300),
        ("now", 0),
    ] {
        expect_code(&store(&cache, name, &src), 0);
        age(&cache, name, ago);
    }
    let one = ls_json(&cache)[0]["size"].as_u64().unwrap();

    // Dry run: reports, removes nothing.
    let o = fsc!("prune", cache, "--unused-for", "1d", "--dry-run");
    expect_code(&o, 0);
    assert!(stdout(&o).contains("would remove d3"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("h12"));
    let v = json(&fsc!(
        "prune",
        cache,
        "--unused-for",
        "90m",
        "--dry-run",
        "--json"
    ));
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["removed"], serde_json::json!(["d3", "h12"]));
    assert_eq!(v["freed"], 2 * one);
    assert_eq!(ls_json(&cache).len(), 4);

    // For real, by age.
    let v = json(&fsc!("prune", cache, "--unused-for", "1d", "--json"));
    assert_eq!(v["removed"], serde_json::json!(["d3"]));
    assert_eq!(v["accounted_size"], 3 * one);

    // By size, oldest first; a size is read in human units.
    let to = format!("{}K", one * 2 / 1024);
    let o = fsc!("prune", cache, "--to", to);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("removed h12"), "{}", stdout(&o));
    assert!(stdout(&o).contains("freed"), "{}", stdout(&o));
    assert_eq!(names(&ls_json(&cache)), ["m5", "now"]);

    // Both at once, then the default: down to the maximum size.
    let v = json(&fsc!(
        "prune",
        cache,
        "--to",
        "1G",
        "--unused-for",
        "1m",
        "--json"
    ));
    assert_eq!(v["removed"], serde_json::json!(["m5"]));
    expect_code(&fsc!("set", cache, "--max-size", "1"), 0);
    let v = json(&fsc!("prune", cache, "--json"));
    assert_eq!(v["removed"], serde_json::json!(["now"]));
    assert_eq!(v["accounted_size"], 0);
}

#[test]
fn stage_runs_in_a_scratch_directory_removed_afterwards() {
    let (_t, cache) = new_cache("1M");
    let script = "pwd; test \"$PWD\" = \"$FSCACHE_STAGE\" && echo data > f && ls; exit 5";
    let o = fsc!("stage", cache, "--", "sh", "-c", script);
    expect_code(&o, 5);
    let out = stdout(&o);
    let mut lines = out.lines();
    let dir = PathBuf::from(lines.next().unwrap());
    assert_eq!(lines.next(), Some("f"));
    assert!(
        dir.starts_with(std::fs::canonicalize(cache.join("stage")).unwrap()),
        "{dir:?}"
    );
    assert!(!dir.exists(), "the scratch directory is removed");
    assert_eq!(std::fs::read_dir(cache.join("stage")).unwrap().count(), 0);
    expect_code(&fsc!("stage", cache, "--", "true"), 0);
}

#[test]
fn hostile_input_exits_1_with_a_clear_message() {
    let (tmp, cache) = new_cache("1M");
    let src = tree(tmp.path(), "t", 10);
    let missing = tmp.path().join("missing");
    let c = cache.as_os_str();

    // Missing cache directory: only `set` creates one.
    for cmd in [
        vec!["info"],
        vec!["ls"],
        vec!["rm", "x"],
        vec!["prune"],
        vec!["cat", "x", "y"],
        vec!["load", "x", "--", "true"],
        vec!["stage", "--", "true"],
    ] {
        let args: Vec<&OsStr> = [OsStr::new(cmd[0]), missing.as_os_str()]
            .into_iter()
            .chain(cmd[1..].iter().map(OsStr::new))
            .collect();
        expect_error(&fscache(&args), "does not exist");
    }
    expect_error(&store(&missing, "x", &src), &missing.display().to_string());
    assert!(!missing.exists(), "nothing was created");

    // A file, a directory that is no cache, a place nobody may write.
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    expect_error(&fsc!("info", file), "is not a directory");
    expect_error(&fsc!("ls", tmp.path()), "is not an fscache directory");
    let nested = file.join("cache");
    expect_error(
        &fsc!("set", nested, "--max-size", "1G"),
        &nested.display().to_string(),
    );
    expect_error(
        &fscache(["set", "/proc/fscache-test/cache", "--max-size", "1G"]),
        "/proc/fscache-test/cache",
    );

    // Invalid names.
    for bad in ["../x", "uuid-123", "", "a/b", ".."] {
        expect_error(&store(&cache, bad, &src), "invalid entry name");
        expect_error(&fsc!("rm", cache, bad), "invalid entry name");
        expect_error(&fsc!("load", c, bad, "--", "true"), "invalid entry name");
        expect_error(&fsc!("cat", c, bad, "f"), "invalid entry name");
    }

    // Bad sizes and durations.
    for bad in ["10X", "-1", "", "1.2.3G", "lots", "99999999999999999999"] {
        expect_error(&fsc!("set", c, "--max-size", bad), "invalid size");
        expect_error(&fsc!("prune", c, "--to", bad), "invalid size");
    }
    // `unlimited` is refused with advice that does not offer it back.
    let o = fsc!("prune", c, "--to", "unlimited");
    expect_error(&o, "leave out --to");
    assert!(!stderr(&o).contains("or `unlimited`"), "{}", stderr(&o));
    let o = fsc!("set", c, "--max-size", "0");
    expect_error(&o, "give `unlimited` or a size");
    for bad in ["3", "3x", "d", "-1d", "1.5h", ""] {
        expect_error(&fsc!("prune", c, "--unused-for", bad), "invalid duration");
    }

    // A PATH that does not exist; a command that does not exist.
    let nowhere = tmp.path().join("nowhere");
    expect_error(
        &store(&cache, "x", &nowhere),
        &format!("`{}` does not exist", nowhere.display()),
    );
    let o = fsc!("stage", c, "--", "/no/such/program");
    expect_code(&o, 127);
    assert!(stderr(&o).contains("/no/such/program"), "{}", stderr(&o));

    // Usage errors are exit 1 too (2 means a miss).
    expect_code(&fscache(["bogus"]), 1);
    expect_code(&fsc!("load", c, "x"), 1);
    expect_code(&fsc!("ls", c, "--sort", "age"), 1);
    expect_code(&fsc!("rm", c), 1);
    assert!(ls_json(&cache).is_empty(), "nothing was stored");
}

#[test]
fn an_unwritable_cache_is_an_error_unless_we_are_privileged() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, cache) = new_cache("1M");
    let src = tree(tmp.path(), "t", 10);
    let objects = cache.join("objects");
    std::fs::set_permissions(&objects, std::fs::Permissions::from_mode(0o555)).unwrap();
    let privileged = std::fs::write(objects.join("probe"), "").is_ok();
    if privileged {
        eprintln!("skipping the permission check: running with CAP_DAC_OVERRIDE (root)");
        let _ = std::fs::remove_file(objects.join("probe"));
    } else {
        expect_error(&store(&cache, "x", &src), &objects.display().to_string());
        // Reading still works.
        expect_code(&fsc!("ls", cache), 0);
    }
    std::fs::set_permissions(&objects, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// As another user, `store` drops what `cp -a` drops (another owner, and
/// the set-user-ID bit on it) and says so; `--strict` refuses instead and
/// stores nothing.
#[test]
fn store_as_another_user_drops_what_cp_a_drops_unless_strict() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = rustix::process::geteuid().is_root();
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !root || !setpriv {
        eprintln!("skipped: needs root to make the tree and setpriv to drop privileges");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let f = src.join("suid");
    std::fs::write(&f, "x").unwrap();
    std::os::unix::fs::lchown(&f, Some(1234), Some(1234)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::os::unix::fs::lchown(&mine, Some(65534), Some(65534)).unwrap();
    let cache = mine.join("cache");
    let as_nobody = |args: &[&OsStr]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=-all", "--bounding-set=-all", BIN])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let c = cache.as_os_str();
    let o = as_nobody(&["set".as_ref(), c, "--max-size".as_ref(), "1G".as_ref()]);
    expect_code(&o, 0);
    let o = as_nobody(&[
        "store".as_ref(),
        "--strict".as_ref(),
        c,
        "a".as_ref(),
        src.as_ref(),
    ]);
    expect_error(&o, "cannot be kept");
    // Listed as the same user (root's `ls` would make lock files the
    // user cannot open).
    let listed = json(&as_nobody(&["ls".as_ref(), c, "--json".as_ref()]));
    assert_eq!(
        listed,
        serde_json::json!([]),
        "a strict refusal stores nothing"
    );
    let o = as_nobody(&[
        "store".as_ref(),
        "--json".as_ref(),
        c,
        "b".as_ref(),
        src.as_ref(),
    ]);
    let v = json(&o);
    assert_eq!(v["dropped"]["owners"], 1, "{v}");
    assert_eq!(v["dropped"]["set_id_bits"], 1, "{v}");
    let md = std::fs::metadata(cache.join("objects/b/data/suid")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (65534, 0o755));
    let o = as_nobody(&["store".as_ref(), c, "c".as_ref(), src.as_ref()]);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("not kept"), "{}", stdout(&o));
}

#[test]
fn help_documents_commands_and_exit_codes() {
    let o = fscache(["--help"]);
    expect_code(&o, 0);
    let help = stdout(&o);
    for word in [
        "info",
        "ls",
        "set",
        "store",
        "load",
        "cat",
        "rm",
        "prune",
        "stage",
        "Exit codes",
        "miss",
    ] {
        assert!(help.contains(word), "{word:?} not in {help}");
    }
    let o = fscache(["prune", "--help"]);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("--unused-for") && stdout(&o).contains("--dry-run"));
    expect_code(&fscache(["--version"]), 0);
}

#[test]
fn works_on_a_cache_osbuild_wrote() {
    // A copy of the vector in the workspace's tests/data, inside the crate
    // so the packaged crate tests it too.
    let tar = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osbuild-cache.tar");
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(tmp.path())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("skipping: `tar` is not available");
        return;
    }
    let cache = tmp.path().join("osbuild-cache");
    let mut list = names(&ls_json(&cache));
    list.sort();
    assert_eq!(list, ["empty", "plain", "tree"]);
    let o = fsc!("cat", cache, "plain", "hello.txt");
    expect_code(&o, 0);
    assert_eq!(stdout(&o), "hello from osbuild\n");
    let v = json(&fsc!("info", cache, "--json"));
    assert_eq!(v["maximum_size"], 10u64 << 20);
    expect_code(&fsc!("set", cache, "--max-size", "20M"), 0);
    let info: Value =
        serde_json::from_slice(&std::fs::read(cache.join("cache.info")).unwrap()).unwrap();
    assert_eq!(info["future-key"]["kept"], true);
    expect_code(&fsc!("rm", cache, "tree"), 0);
}

#[test]
fn store_of_an_existing_name_skips_the_copy() {
    let (tmp, cache) = new_cache("unlimited");
    let src = tree(tmp.path(), "src", 1000);
    expect_code(&store(&cache, "a", &src), 0);
    // A source the copy fails on (reading `/proc/self/mem` from offset 0
    // is EIO): only a skipped copy can answer "exists".
    let bad = std::path::PathBuf::from("/proc/self/mem");
    let o = store(&cache, "a", &bad);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("exists already"), "{}", stdout(&o));
    let o = fsc!("store", cache, "a", bad, "--fail-if-exists");
    expect_error(&o, "exists already");
    let o = store(&cache, "b", &bad);
    expect_error(&o, "mem");
    assert_eq!(names(&ls_json(&cache)), ["a"]);
}

#[test]
fn debris_of_a_killed_store_is_swept_by_ls_and_prune() {
    let (tmp, cache) = new_cache("unlimited");
    for (i, cmd) in ["ls", "prune"].iter().enumerate() {
        let debris = cache.join(format!("objects/uuid-{}", format!("{i}").repeat(32)));
        std::fs::create_dir_all(debris.join("data")).unwrap();
        std::fs::write(debris.join("object.lock"), b"").unwrap();
        std::fs::write(debris.join("data/f"), vec![0u8; 100_000]).unwrap();
        expect_code(&fsc!(cmd, &cache), 0);
        assert!(!debris.exists(), "`{cmd}` left {}", debris.display());
    }
    drop(tmp);
}

// Beside the per-command tests above (after the helpers and `fsc!`,
// which they use):

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
        let help = stdout(&fscache(cmd));
        for global in ["--cache", "--quiet", "--verbose"] {
            assert!(!help.contains(global), "{cmd:?}: {help}");
        }
    }
    // Still accepted, so a script may pass them to every command.
    expect_code(&fsc!("-q", "completions", "bash"), 0);
    expect_code(&fsc!("completions", "bash", "-v"), 0);
}
