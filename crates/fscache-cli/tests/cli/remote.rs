//! `fscache push`/`pull`/`load --remote`/`remote ls|info|prune|keygen` on a
//! `file://` remote: two caches ("hosts", each driven by its own processes)
//! share entries with equal tree digests, signatures are checked when keys
//! are set, prune removes what is unused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn keys() -> (String, String) {
    let o = fsc!("remote", "keygen");
    expect_code(&o, 0);
    let out = stdout(&o);
    let get = |var: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("no {var} in {out}"))
            .to_owned()
    };
    (
        get("FSCACHE_REMOTE_SECRET_KEY"),
        get("FSCACHE_REMOTE_TRUSTED_KEYS"),
    )
}

#[test]
fn two_caches_share_entries_through_a_remote() {
    let (tmp, a) = new_cache("10M");
    let (_t2, b) = new_cache("10M");
    let remote = format!("file://{}", tmp.path().join("remote").display());
    let src = tree(tmp.path(), "src", 200_000);
    expect_code(&store(&a, "e", &src), 0);
    let (secret, public) = keys();

    let o = Command::new(BIN)
        .args([
            "push",
            a.to_str().unwrap(),
            "e",
            "--json",
            "--remote",
            &remote,
        ])
        .env("FSCACHE_REMOTE_SECRET_KEY", &secret)
        .output()
        .unwrap();
    expect_code(&o, 0);
    assert_eq!(json(&o)[0]["outcome"], "pushed");
    // A second push sends no blob again.
    let o = fsc!("push", &a, "e", "--json", "--remote", &remote);
    assert_eq!(json(&o)[0]["outcome"], "exists");
    assert_eq!(json(&o)[0]["blobs_uploaded"], 0);
    let o = fsc!("remote", "ls", "--remote", &remote, "--json");
    assert_eq!(json(&o), serde_json::json!(["e"]));

    // The other cache pulls it, checking the signature.
    let o = Command::new(BIN)
        .args([
            "pull",
            b.to_str().unwrap(),
            "e",
            "absent",
            "--remote",
            &remote,
        ])
        .env("FSCACHE_REMOTE_TRUSTED_KEYS", &public)
        .output()
        .unwrap();
    expect_code(&o, 2);
    assert!(stdout(&o).contains("pulled e"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("no entry `absent` on the remote"),
        "{}",
        stderr(&o)
    );
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        if !f.file_type().unwrap().is_file() {
            continue;
        }
        assert_eq!(
            std::fs::read(f.path()).unwrap(),
            std::fs::read(b.join("objects/e/data").join(f.file_name())).unwrap()
        );
    }

    // Someone else's key is not trusted: refused, nothing stored.
    let (_t3, c) = new_cache("10M");
    let (_, stranger) = keys();
    let o = Command::new(BIN)
        .args(["pull", c.to_str().unwrap(), "e", "--remote", &remote])
        .env("FSCACHE_REMOTE_TRUSTED_KEYS", &stranger)
        .output()
        .unwrap();
    expect_code(&o, 1);
    assert!(names(&ls_json(&c)).is_empty());

    // An entry already local asks nothing of the remote: its data gone
    // from the bucket, the pull still says it is there.
    std::fs::remove_dir_all(tmp.path().join("remote/v2/packs")).unwrap();
    let o = fsc!("pull", &b, "e", "--json", "--remote", &remote);
    expect_code(&o, 0);
    assert_eq!(json(&o)[0]["outcome"], "present");
    let o = fsc!("pull", &b, "e", "--remote", &remote);
    assert!(
        stdout(&o).contains("e is in the cache already"),
        "{}",
        stdout(&o)
    );
}

/// The tree digest of entry `name` of `cache`, as `fscache push` reports
/// it (pushing to a scratch remote of its own).
fn digest_of(cache: &Path, name: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let url = format!("file://{}", scratch.path().display());
    let o = fsc!("push", cache, name, "--json", "--remote", url);
    json(&o)[0]["digest"].as_str().unwrap().to_owned()
}

/// A tree with nested directories, modes, a symlink and a larger file.
fn rich_tree(dir: &Path) -> PathBuf {
    let t = tree(dir, "rich", 300_000);
    std::fs::create_dir_all(t.join("a/b/c")).unwrap();
    for i in 0..20 {
        std::fs::write(
            t.join(format!("a/b/c/f{i}")),
            format!("file {i}\n").repeat(i),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("../hello.txt", t.join("a/link")).unwrap();
    let run = t.join("a/run");
    std::fs::write(&run, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    t
}

/// Two hosts, each its own cache driven by its own `fscache` processes,
/// one remote: what host A pushes, host B gets through `load --remote`
/// (and `FSCACHE_REMOTE`), with the same tree digest, recorded so that
/// `fscache verify` checks it.
#[test]
fn load_reads_through_a_remote_on_another_host() {
    let (tmp, a) = new_cache("10M");
    let (_t2, b) = new_cache("10M");
    let remote = format!("file://{}", tmp.path().join("remote").display());
    expect_code(&store(&a, "e", &rich_tree(tmp.path())), 0);
    let o = fsc!("push", &a, "e", "--json", "--remote", &remote);
    let pushed = json(&o)[0]["digest"].as_str().unwrap().to_owned();
    assert!(pushed.starts_with("blake3v3:"), "{pushed}");

    // A local miss on B: pulled, stored, and the command runs in it.
    let o = fsc!(
        "load",
        &b,
        "e",
        "--remote",
        &remote,
        "--",
        "sh",
        "-c",
        "cat hello.txt; readlink a/link"
    );
    expect_code(&o, 0);
    assert_eq!(stdout(&o), "hello from rich\n../hello.txt\n");
    assert_eq!(names(&ls_json(&b)), ["e"]);
    assert_eq!(digest_of(&b, "e"), pushed);
    assert_eq!(digest_of(&a, "e"), pushed);
    // The pulled entry recorded its digest: verify checks it ("ok", not
    // "unverified"), and finds damage.
    let o = fsc!("verify", &b, "e", "--json");
    assert_eq!(json(&o)[0]["state"], "ok");
    std::fs::write(b.join("objects/e/data/hello.txt"), "tampered\n").unwrap();
    let o = fsc!("verify", &b, "e", "--json");
    expect_code(&o, 1);

    // A local hit does not need the remote: a bogus one is not asked.
    let o = fsc!(
        "load",
        &b,
        "e",
        "--remote",
        "s3://nowhere/x?endpoint=http://127.0.0.1:9",
        "--",
        "true"
    );
    expect_code(&o, 0);

    // FSCACHE_REMOTE is the default remote.
    let (_t3, c) = new_cache("10M");
    let o = Command::new(BIN)
        .args(["load", c.to_str().unwrap(), "e", "--", "cat", "hello.txt"])
        .env("FSCACHE_REMOTE", &remote)
        .output()
        .unwrap();
    expect_code(&o, 0);
    assert_eq!(stdout(&o), "hello from rich\n");
    assert_eq!(digest_of(&c, "e"), pushed);

    // Neither has it: a miss, exit 2, the command not run.
    let o = fsc!("load", &c, "absent", "--remote", &remote, "--", "false");
    expect_code(&o, 2);
    assert!(stderr(&o).contains("nor on the remote"), "{}", stderr(&o));

    // A remote that is down is a miss too, with a warning.
    let o = Command::new(BIN)
        .args([
            "load",
            c.to_str().unwrap(),
            "absent",
            "--remote",
            "s3://bucket/p?endpoint=http://127.0.0.1:9&region=auto",
            "--",
            "false",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    expect_code(&o, 2);
    assert!(stderr(&o).contains("warning: remote"), "{}", stderr(&o));
    // A URL this tool cannot open is an error, not a miss.
    let o = fsc!("load", &c, "absent", "--remote", "ftp://x/y", "--", "true");
    expect_error(&o, "unsupported scheme");
}

#[test]
fn remote_info_and_prune() {
    let k = json(&fsc!("remote", "keygen", "--json"));
    assert!(
        k["secret_key"]
            .as_str()
            .unwrap()
            .starts_with("ed25519-secret:"),
        "{k}"
    );
    assert!(
        k["public_key"].as_str().unwrap().starts_with("ed25519:"),
        "{k}"
    );
    let (tmp, a) = new_cache("10M");
    let remote = format!("file://{}", tmp.path().join("remote").display());
    expect_code(&store(&a, "e", &rich_tree(tmp.path())), 0);
    expect_code(&fsc!("push", &a, "e", "--remote", &remote), 0);
    let info = json(&fsc!("remote", "info", "--remote", &remote, "--json"));
    assert_eq!(
        (info["entries"].as_u64(), info["intents"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(info["packs"].as_u64(), Some(1), "{info}");
    let prune = |args: &[&str]| {
        let mut all = vec!["remote", "prune", "--remote", &remote, "--json"];
        all.extend_from_slice(args);
        let o = Command::new(BIN).args(&all).output().unwrap();
        expect_code(&o, 0);
        json(&o)
    };

    // Used a moment ago: a 30-day prune keeps everything.
    let p = prune(&["--unused-for", "30d"]);
    assert_eq!(p["entries_removed"], serde_json::json!([]));
    assert_eq!(p["packs_referenced"].as_u64(), Some(1));
    // A dry run says what would go, and removes nothing.
    let p = prune(&["--unused-for", "0s", "--grace", "0s", "--dry-run"]);
    assert_eq!(p["entries_removed"], serde_json::json!(["e"]));
    assert_eq!(p["packs_condemned"].as_u64(), Some(1));
    let o = fsc!("remote", "ls", "--remote", &remote, "--json");
    assert_eq!(json(&o), serde_json::json!(["e"]));
    // The default grace period keeps the pack, just written.
    let o = fsc!("remote", "prune", "--remote", &remote, "--unused-for", "0s");
    expect_code(&o, 0);
    assert!(stdout(&o).contains("removed e\n"), "{}", stdout(&o));
    let info = json(&fsc!("remote", "info", "--remote", &remote, "--json"));
    assert_eq!(
        (info["entries"].as_u64(), info["packs"].as_u64()),
        (Some(0), Some(1))
    );
    // Without one it is condemned, then deleted by the next prune.
    let p = prune(&["--unused-for", "0s", "--grace", "0s"]);
    assert_eq!(p["packs_condemned"].as_u64(), Some(1));
    let p = prune(&["--unused-for", "0s", "--grace", "0s"]);
    assert_eq!(p["packs_removed"].as_u64(), Some(1));
    let info = json(&fsc!("remote", "info", "--remote", &remote, "--json"));
    assert_eq!(info["packs"].as_u64(), Some(0));
    assert_eq!(
        info["prunes"].as_u64(),
        Some(0),
        "a finished prune leaves no marker"
    );

    let o = fsc!(
        "remote",
        "prune",
        "--remote",
        &remote,
        "--unused-for",
        "soon"
    );
    expect_error(&o, "invalid duration");
}

/// moto's S3 server on a free port with an empty bucket `bucket`, killed
/// on drop; `None` (and why, on stderr) when moto is not installed
/// (`.ci/run` and the `fscache-remote` tests install it).
struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Option<Moto> {
    use std::io::{Read, Write};
    let runs = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut cmd = if runs(Command::new("moto_server").arg("--help")) {
        Command::new("moto_server")
    } else if runs(Command::new("python3").args(["-c", "import moto.server"])) {
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        c
    } else {
        eprintln!("skipping: moto's S3 server is not installed (pip install 'moto[server]')");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = cmd
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            write!(
                s,
                "PUT /bucket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match sent {
            Ok(r) => {
                assert!(r.starts_with("HTTP/1.1 200"), "{r}");
                return Some(moto);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("moto did not start: {e}"),
        }
    }
}

/// Two hosts on a real S3-compatible server, each its own cache driven by
/// its own `fscache` processes: what A pushes, B reads through with A's
/// tree digests (recorded, so `verify` checks them).
#[test]
fn two_hosts_share_an_s3_remote() {
    let Some(moto) = moto() else { return };
    let remote = format!(
        "s3://bucket/hosts?endpoint=http://127.0.0.1:{}&region=auto",
        moto.1
    );
    let s3 = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("FSCACHE_REMOTE", &remote)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let (tmp, a) = new_cache("20M");
    let (_t2, b) = new_cache("20M");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let mut digests = Vec::new();
    for i in 0..3 {
        let src = rich_tree(&tmp.path().join(format!("src{i}")));
        std::fs::write(src.join("which"), format!("tree {i}\n")).unwrap();
        let name = format!("e{i}");
        expect_code(&store(&a, &name, &src), 0);
        let row = json(&s3(&["push", a_s, &name, "--json"]))[0].clone();
        assert_eq!(row["outcome"], "pushed", "{row}");
        digests.push(row["digest"].as_str().unwrap().to_owned());
    }
    for (i, digest) in digests.iter().enumerate() {
        let name = format!("e{i}");
        let o = s3(&["load", b_s, &name, "--", "cat", "which"]);
        expect_code(&o, 0);
        assert_eq!(stdout(&o), format!("tree {i}\n"));
        assert_eq!(&digest_of(&b, &name), digest);
        let o = fsc!("verify", &b, &name, "--json");
        assert_eq!(json(&o)[0]["state"], "ok");
    }
    let o = s3(&["remote", "ls", "--json"]);
    assert_eq!(json(&o), serde_json::json!(["e0", "e1", "e2"]));
    let o = s3(&["remote", "info", "--json"]);
    assert_eq!(json(&o)["intents"], 0);
}

/// Found when a remote was tried as a new user would: read-only commands
/// create nothing and name the missing remote; an empty `FSCACHE_REMOTE`
/// is unset everywhere; a bogus remote or key variable does not break a
/// local hit, and a key error names its variable; a remote that is down
/// is said so (not "nor on the remote"), cause first, within `--timeout`;
/// JSON calls a miss `missing`.
#[test]
fn remote_errors_say_the_cause_and_create_nothing() {
    let (tmp, a) = new_cache("10M");
    let missing = tmp.path().join("nothing-here");
    let url = format!("file://{}", missing.display());
    for verb in ["ls", "info", "check"] {
        let o = fsc!("remote", verb, "--remote", &url);
        expect_error(&o, "no remote at");
        assert!(stderr(&o).contains("nothing-here"), "{}", stderr(&o));
    }
    let o = fsc!("remote", "prune", "--remote", &url, "--unused-for", "1d");
    expect_error(&o, "no remote at");
    assert!(!missing.exists(), "a read-only command created the remote");

    // An empty FSCACHE_REMOTE is unset: for `remote ls` as for `load`.
    let o = Command::new(BIN)
        .args(["remote", "ls"])
        .env("FSCACHE_REMOTE", "")
        .output()
        .unwrap();
    expect_error(
        &o,
        "no remote given: pass --remote URL or set $FSCACHE_REMOTE",
    );

    // A local hit needs no remote: neither a bogus URL nor a bogus key.
    expect_code(&store(&a, "e", &tree(tmp.path(), "src", 1000)), 0);
    for (var, value) in [
        ("FSCACHE_REMOTE", "bogus:/x"),
        ("FSCACHE_REMOTE_TRUSTED_KEYS", "not-a-key"),
    ] {
        let o = Command::new(BIN)
            .args(["load", a.to_str().unwrap(), "e", "--", "true"])
            .env("FSCACHE_REMOTE", "file:///nonexistent/remote")
            .env(var, value)
            .output()
            .unwrap();
        expect_code(&o, 0);
    }
    // On a miss, the key error names its variable.
    let o = Command::new(BIN)
        .args(["load", a.to_str().unwrap(), "absent", "--", "true"])
        .env("FSCACHE_REMOTE", "file:///nonexistent/remote")
        .env("FSCACHE_REMOTE_TRUSTED_KEYS", "not-a-key")
        .output()
        .unwrap();
    expect_error(&o, "$FSCACHE_REMOTE_TRUSTED_KEYS: expected `ed25519:`");

    // A remote that is down: a miss that says so, cause first, in one line.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("s3://bucket/p?endpoint=http://127.0.0.1:{port}&region=auto");
    let o = Command::new(BIN)
        .args(["load", a.to_str().unwrap(), "absent", "--remote", &down])
        .args(["--timeout", "5s", "--", "true"])
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .output()
        .unwrap();
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(!err.contains("nor on the remote"), "{err}");
    assert!(err.contains("the remote failed"), "{err}");
    assert!(
        err.contains(&format!("connection refused at 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        err.lines().all(|l| l.len() < 300),
        "one short line each: {err}"
    );
    let o = Command::new(BIN)
        .args(["remote", "ls", "--remote", &down, "--timeout", "5s"])
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .output()
        .unwrap();
    expect_error(&o, "error: failed to list `s3://bucket");
    assert!(
        stderr(&o).contains("connection refused at 127.0.0.1"),
        "{}",
        stderr(&o)
    );

    // A silent server (connections accepted by the kernel, never
    // answered): `--timeout` bounds the command, retries included.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = format!(
        "s3://bucket/p?endpoint=http://127.0.0.1:{}&region=auto",
        silent.local_addr().unwrap().port()
    );
    let started = std::time::Instant::now();
    let o = Command::new(BIN)
        .args(["remote", "ls", "--remote", &hung, "--timeout", "2s"])
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .output()
        .unwrap();
    expect_error(&o, "no answer within 2s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "bounded by the timeout, not OpenDAL's retries: {:?}",
        started.elapsed()
    );
    drop(silent);

    // JSON: a miss is `missing`, not `failed`.
    let remote = format!("file://{}", tmp.path().join("remote").display());
    expect_code(&fsc!("push", &a, "e", "--remote", &remote), 0);
    let (_t2, b) = new_cache("10M");
    let o = fsc!("pull", &b, "absent", "--json", "--remote", &remote);
    expect_code(&o, 2);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["outcome"], "missing", "{rows}");
}

/// `remote check` is clean on a healthy remote, finds a damaged pack
/// (exit 1, naming the entry), and `--repair` heals it from the local
/// cache; `remote migrate` of a format-2 remote changes nothing.
#[test]
fn remote_check_and_repair() {
    let (tmp, a) = new_cache("10M");
    let remote = format!("file://{}", tmp.path().join("remote").display());
    expect_code(&store(&a, "e", &tree(tmp.path(), "src", 100_000)), 0);
    expect_code(&fsc!("push", &a, "e", "--remote", &remote), 0);
    let o = fsc!("remote", "check", "--remote", &remote, "--read-data");
    expect_code(&o, 0);
    assert!(stdout(&o).contains("no problems"), "{}", stdout(&o));
    // Damage every pack (one byte in the middle).
    let packs = tmp.path().join("remote/v2/packs");
    for d in std::fs::read_dir(&packs).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 3;
            bytes[mid] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let o = fsc!(
        "remote",
        "check",
        "--remote",
        &remote,
        "--read-data",
        "--json"
    );
    expect_code(&o, 1);
    let found: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(found["damaged"], serde_json::json!(["e"]), "{found}");
    let o = fsc!(
        "remote",
        "check",
        "--remote",
        &remote,
        "--read-data",
        "--repair",
        "--cache",
        &a
    );
    expect_code(&o, 0);
    assert!(stdout(&o).contains("repaired e"), "{}", stdout(&o));
    let (_t2, b) = new_cache("10M");
    expect_code(&fsc!("pull", &b, "e", "--remote", &remote), 0);
    let o = fsc!("remote", "migrate", "--remote", &remote, "--json");
    expect_code(&o, 0);
    assert_eq!(json(&o)["already"].as_u64(), Some(1));
}
