//! Single flight within a process: of many threads that miss one name,
//! one builds; the others wait, bounded and cancellable, and a failed build
//! leaves nothing; a build that asks for its own name is an error, not a
//! hang.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use fscache::{BuildOptions, Error, Obtained};

use crate::util::{on_disk, unlimited};

#[test]
fn one_of_many_threads_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let builds = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            // A handle per thread: separate opens, as separate processes.
            let c = unlimited(c.path());
            let (builds, start) = (builds.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let got = c
                    .load_or_build("shared", |dir| {
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        std::fs::write(dir.join("f"), b"once")
                    })
                    .unwrap();
                assert!(got.is_cached());
                std::fs::read(got.path().join("f")).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), b"once");
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
}

#[test]
fn waiting_for_a_builder_is_bounded_and_cancellable() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let waiter = unlimited(tmp.path());
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let builder = std::thread::spawn(move || {
        c.load_or_build("slow", |dir| {
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            std::fs::write(dir.join("f"), b"late")
        })
        .unwrap()
        .is_cached()
    });
    held_rx.recv().unwrap();
    let stop = Arc::new(AtomicBool::new(true));
    let e = waiter
        .load_or_build_with(
            "slow",
            &BuildOptions::default().cancel_on(stop),
            |_| -> Result<(), Error> { unreachable!() },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e:?}");
    // Past the bound, the waiter builds its own.
    let got = waiter
        .load_or_build_with(
            "slow",
            &BuildOptions::default().wait_at_most(Duration::from_millis(50)),
            |dir| std::fs::write(dir.join("f"), b"own"),
        )
        .unwrap();
    assert!(matches!(got, Obtained::Built(_)));
    drop(got);
    go_tx.send(()).unwrap();
    // The first builder then finds the name taken and loads the other's.
    assert!(builder.join().unwrap());
    let e = waiter.load("slow").unwrap().unwrap();
    assert_eq!(std::fs::read(e.path().join("f")).unwrap(), b"own");
}

#[test]
fn a_failed_build_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let e = c
        .load_or_build("fails", |dir| {
            std::fs::write(dir.join("partial"), b"x")?;
            Err(std::io::Error::other("compiler crashed"))
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "compiler crashed");
    assert!(on_disk(c.path()).is_empty(), "{:?}", on_disk(c.path()));
    assert!(!c.contains("fails").unwrap());
}

/// The user trial's bug: a build that asks for its own name waited for
/// itself forever, and left a `uuid-*` behind when killed.
#[test]
fn load_or_build_of_its_own_name_from_its_build_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    // Another handle of the same cache, too: the lock is the cache's.
    let other = unlimited(tmp.path());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let outer = c.clone();
    let builder = std::thread::spawn(move || {
        let r = outer.load_or_build("self", |_dir| -> Result<(), Error> {
            let inner = other.load_or_build("self", |_| -> Result<(), Error> { unreachable!() });
            let e = inner.expect_err("the inner call is refused");
            assert!(matches!(e, Error::Reentrant { .. }), "{e:?}");
            assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::Deadlock);
            // Another name, from inside the build, is fine.
            let other_name = other.load_or_build("dep", |d| std::fs::write(d.join("f"), b"d"));
            assert!(matches!(other_name, Ok(Obtained::Built(_))));
            Err(Error::Reentrant {
                name: "self".into(),
            })
        });
        done_tx.send(r.map(|_| ())).unwrap();
    });
    let r = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no hang");
    // The thread's handles write their statistics as they close (a temp
    // file in `objects/` for a moment): wait for that before listing.
    builder.join().unwrap();
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "`load_or_build` of `self` called from inside its own build: it would wait for itself"
    );
    // Nothing left behind, and the lock is free again: a later build works.
    assert_eq!(on_disk(c.path()), ["objects/dep"]);
    let got = c
        .load_or_build("self", |d| std::fs::write(d.join("f"), b"s"))
        .unwrap();
    assert!(matches!(got, Obtained::Built(_)));
}
