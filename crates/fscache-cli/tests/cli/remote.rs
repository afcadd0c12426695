//! `fscache push`/`pull`/`remote ls`/`remote keygen` on a `file://` remote:
//! two caches share entries, signatures are checked when keys are set.

use super::*;

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
}
