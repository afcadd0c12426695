"""The osbuild API of `fscache.FsCache` and what this package adds, from the
behaviour osbuild documents: no-I/O constructor, the context manager, paths
relative to the cache, commit on a clean exit, the info tuples."""

import os
import stat
import tarfile
import threading
import time

import pytest

import fscache
from fscache import FsCache, FsCacheInfo, FsCacheObjectInfo

from conftest import ROOT, assert_books_balance, can_lock_exclusively, debris, entries, read_json


def unlimited(cache):
    cache.info = cache.info._replace(maximum_size="unlimited")


def fill(cache, rpath, name="f", data="payload"):
    with open(os.path.join(cache, rpath, name), "w", encoding="utf8") as f:
        f.write(data)


# The constructor, os.fspath, the context manager.


def test_constructor_does_no_io(tmp_path):
    path = tmp_path / "a" / "b" / "cache"
    cache = FsCache("osbuild", path)
    assert not os.path.exists(tmp_path / "a")
    assert not cache._is_active()
    assert os.fspath(cache) == os.fspath(path)
    assert cache._path("objects") == os.path.join(os.fspath(path), "objects")
    with cache:
        assert cache._is_active()
        for part in ("objects", "stage", "cache.info", "cache.lock", "cache.size", "CACHEDIR.TAG"):
            assert os.path.exists(os.path.join(path, part)), part
    assert not cache._is_active()


def test_fspath_is_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = FsCache("osbuild", "rel/cache")
    assert os.fspath(cache) == "rel/cache"
    with cache:
        unlimited(cache)
        with cache.store("x") as rpath:
            assert not os.path.isabs(rpath)
            fill(cache, rpath)
        with cache.load("x") as rpath:
            assert rpath == os.path.join("objects", "x", "data")
            with open(os.path.join(cache, rpath, "f"), encoding="utf8") as f:
                assert f.read() == "payload"


def test_everything_asserts_outside_the_context(cache_path):
    cache = FsCache("osbuild", cache_path)
    with pytest.raises(AssertionError):
        _ = cache.info
    with pytest.raises(AssertionError):
        cache.info = FsCacheInfo(maximum_size=1)
    for cm in (lambda: cache.load("x"), lambda: cache.store("x"), cache.stage):
        with pytest.raises(AssertionError):
            with cm():
                pass
    for call in (
        lambda: cache.store_tree("x", cache_path),
        lambda: cache.verify("x"),
        cache.stats,
        cache.prune,
        cache.entries,
        cache.usage,
        cache.sweep,
    ):
        with pytest.raises(AssertionError):
            call()
    with cache:
        with pytest.raises(AssertionError):
            cache.__enter__()  # pylint: disable=unnecessary-dunder-call
    # After the context, the same again, also for contexts made inside it.
    with pytest.raises(AssertionError):
        with cache.load("x"):
            pass
    with cache:
        late = [cache.load("x"), cache.store("x"), cache.stage()]
    for cm in late:
        with pytest.raises(AssertionError):
            with cm:
                pass


def test_enter_takes_the_cache_lock_and_exit_releases_it(cache_path):
    cache = FsCache("osbuild", cache_path)
    with cache:
        assert not can_lock_exclusively(os.path.join(cache_path, "cache.lock"))
    assert can_lock_exclusively(os.path.join(cache_path, "cache.lock"))


def test_exit_on_an_exception_releases_everything(cache_path):
    cache = FsCache("osbuild", cache_path)
    with pytest.raises(KeyError):
        with cache:
            unlimited(cache)
            with cache.store("kept") as rpath:
                fill(cache, rpath)
            with cache.load("kept"):
                with cache.stage() as s:
                    fill(cache, s)
                    raise KeyError("boom")
    assert not cache._is_active()
    assert can_lock_exclusively(os.path.join(cache_path, "cache.lock"))
    assert can_lock_exclusively(os.path.join(cache_path, "objects", "kept", "object.lock"))
    assert debris(cache_path) == []
    # The cache is usable again.
    with cache:
        with cache.load("kept"):
            pass


# load, store, stage.


def test_store_commits_on_a_clean_exit_and_discards_on_an_exception(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        with cache.store("a") as rpath:
            assert rpath.startswith("objects/uuid-") and rpath.endswith("/data")
            assert os.listdir(os.path.join(cache, rpath)) == []
            fill(cache, rpath)
        assert entries(cache_path) == ["a"]
        with pytest.raises(RuntimeError):
            with cache.store("b") as rpath:
                fill(cache, rpath)
                raise RuntimeError("build failed")
        assert entries(cache_path) == ["a"]
        assert debris(cache_path) == []
        assert_books_balance(cache_path)
        info = read_json(os.path.join(cache_path, "objects", "a", "object.info"))
        assert info["creation-boot-id"] == cache._bootid
        assert info["size"] > 0


def test_store_of_an_existing_name_keeps_the_first(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        for data in ("first", "second"):
            with cache.store("a") as rpath:
                fill(cache, rpath, data=data)
        with cache.load("a") as rpath:
            with open(os.path.join(cache, rpath, "f"), encoding="utf8") as f:
                assert f.read() == "first"
        assert debris(cache_path) == []


def test_contexts_do_their_work_when_entered(cache_path):
    # As osbuild's generator-based context managers: a call alone does no
    # I/O and raises nothing; the work (and any error) comes with `with`.
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        never = [cache.store("never"), cache.load(""), cache.store(""), cache.stage()]
        assert debris(cache_path) == [] and entries(cache_path) == []
        del never
        with cache.store("a") as rpath:
            fill(cache, rpath)
        cm = cache.load("a")
        lock = os.path.join(cache_path, "objects", "a", "object.lock")
        assert can_lock_exclusively(lock)
        with pytest.raises(KeyError):
            with cm as rpath:
                assert rpath == "objects/a/data"
                assert not can_lock_exclusively(lock)
                raise KeyError("the body's error goes on")
        assert can_lock_exclusively(lock)
        assert debris(cache_path) == []


def test_empty_and_invalid_names(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        with pytest.raises(ValueError):
            with cache.load(""):
                pass
        with pytest.raises(ValueError):
            with cache.store(""):
                pass
        with pytest.raises(ValueError):
            cache.store_tree("", cache_path)
        for bad in ("a/b", "..", ".", "uuid-0123", "x" * 256, "nul\0"):
            with pytest.raises(ValueError):
                with cache.store(bad):
                    pass
            with pytest.raises(FsCache.MissError):
                with cache.load(bad):
                    pass
        assert debris(cache_path) == []


def test_load_misses(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        with pytest.raises(FsCache.MissError):
            with cache.load("absent"):
                pass
        assert issubclass(FsCache.MissError, Exception)
        # With the default maximum size (0) nothing is kept.
        with cache.store("a") as rpath:
            fill(cache, rpath)
        with pytest.raises(FsCache.MissError):
            with cache.load("a"):
                pass
        assert entries(cache_path) == []


def test_load_holds_a_read_lock_until_exit(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        with cache.store("a") as rpath:
            fill(cache, rpath)
        lock = os.path.join(cache_path, "objects", "a", "object.lock")
        with cache.load("a"):
            assert not can_lock_exclusively(lock)
            assert cache.remove("a") == "in-use"
        assert can_lock_exclusively(lock)


def test_load_paths_of_alternating_and_nested_names(cache_path):
    # A load returns the last hit's path string again for the same name:
    # never another name's.
    names = ["a", "b", "ä-é", "a"]
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        for name in set(names):
            with cache.store(name) as rpath:
                fill(cache, rpath)
        for name in names + names[::-1]:
            with cache.load(name) as rpath:
                assert rpath == f"objects/{name}/data"
        with cache.load("a") as outer, cache.load("b") as inner:
            assert (outer, inner) == ("objects/a/data", "objects/b/data")
        # Released after the cache's exit: the last user of the handle.
        cm = cache.load("b")
        cm.__enter__()
    lock = os.path.join(cache_path, "objects", "b", "object.lock")
    assert not can_lock_exclusively(lock)
    cm.__exit__(None, None, None)
    assert can_lock_exclusively(lock)


def test_stage_is_private_and_removed(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        with cache.stage() as rpath:
            assert rpath.startswith("stage/uuid-") and rpath.endswith("/data")
            fill(cache, rpath)
            assert debris(cache_path) != []
        assert debris(cache_path) == []
        with pytest.raises(ZeroDivisionError):
            with cache.stage() as rpath:
                fill(cache, rpath)
                _ = 1 / 0
        assert debris(cache_path) == []


def test_eviction_keeps_the_limit_least_recently_used_first(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        cache.info = cache.info._replace(maximum_size=256 * 1024)
        for i in range(12):
            with cache.store(f"e{i}") as rpath:
                fill(cache, rpath, data="x" * 32 * 1024)
            if i >= 1:
                with cache.load("e0"):  # keep e0 the most recently used
                    pass
        assert read_json(os.path.join(cache_path, "cache.size")) <= 256 * 1024
        assert "e0" in entries(cache_path)
        assert "e1" not in entries(cache_path)
        assert_books_balance(cache_path)
        # Larger than the whole cache: not kept.
        with cache.store("huge") as rpath:
            fill(cache, rpath, data="x" * 512 * 1024)
        assert "huge" not in entries(cache_path)


# info and the info tuples.


def test_info_property_and_setter(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        assert cache.info.version == 1
        assert cache.info.maximum_size is None
        cache.info = FsCacheInfo(maximum_size=1024)
        assert cache.info.maximum_size == 1024
        cache.info = FsCacheInfo(creation_boot_id="0" * 32)
        assert cache.info.maximum_size == 1024
        assert cache.info.creation_boot_id == "0" * 32
        cache.info = cache.info._replace(maximum_size=-1)
        assert cache.info.maximum_size == -1
        # A negative size is no limit.
        with cache.store("big") as rpath:
            fill(cache, rpath, data="x" * 100_000)
        assert entries(cache_path) == ["big"]
        with pytest.raises(ValueError):
            cache.info = FsCacheInfo(maximum_size=1.5)
    # Read again on the next enter, unknown keys kept on disk.
    raw = read_json(os.path.join(cache_path, "cache.info"))
    raw["future-key"] = {"x": 1}
    with open(os.path.join(cache_path, "cache.info"), "w", encoding="utf8") as f:
        f.write(__import__("json").dumps(raw))
    with FsCache("osbuild", cache_path) as cache:
        assert cache.info.creation_boot_id == "0" * 32
        cache.info = FsCacheInfo(maximum_size=4096)
    assert read_json(os.path.join(cache_path, "cache.info"))["future-key"] == {"x": 1}


def test_info_tuples_behave_like_osbuilds():
    assert FsCacheInfo() == (None, None, None)
    assert FsCacheInfo._fields == ("creation_boot_id", "maximum_size", "version")
    info = FsCacheInfo(creation_boot_id="0" * 32, maximum_size=1024)
    assert info.to_json() == {"creation-boot-id": "0" * 32, "maximum-size": 1024}
    assert FsCacheInfo(maximum_size="unlimited", version=1).to_json() == {
        "maximum-size": "unlimited",
        "version": 1,
    }
    assert FsCacheInfo(maximum_size=-1).to_json() == {"maximum-size": -1}
    assert FsCacheInfo.from_json({"creation-boot-id": "0" * 32, "maximum-size": 1024}) == info
    assert FsCacheInfo.from_json({"maximum-size": -7}).maximum_size == -7
    assert FsCacheInfo.from_json(
        {"creation-boot-id": "short", "maximum-size": "10G", "version": "1", "other": 1}
    ) == FsCacheInfo()
    for not_an_object in (None, [], 7, "x"):
        assert FsCacheInfo.from_json(not_an_object) == FsCacheInfo()
    obj = FsCacheObjectInfo(name="a", last_used=1.5)
    assert obj == ("a", 1.5) and obj._replace(last_used=2.0).last_used == 2.0


def test_last_used_objs_are_oldest_first(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        for n in ("a", "b", "c"):
            with cache.store(n) as rpath:
                fill(cache, rpath)
            time.sleep(0.02)
        with cache.load("a"):
            pass
        assert [o.name for o in cache._last_used_objs()] == ["b", "c", "a"]
        assert cache._last_used("a") >= cache._last_used("c")
        with pytest.raises(FsCache.MissError):
            cache._last_used("nope")
        # osbuild's eviction helper: the least recently used first, twice
        # the size asked for, books exact.
        size = read_json(os.path.join(cache_path, "objects", "b", "object.info"))["size"]
        assert cache._remove_lru(max(1, size // 2))
        assert entries(cache_path) == ["a", "c"]
        assert_books_balance(cache_path)
        space = FsCache._calculate_space(os.path.join(cache_path, "objects", "a", "data"))
        assert space == os.lstat(os.path.join(cache_path, "objects", "a", "data")).st_blocks * 512 + sum(
            os.lstat(os.path.join(cache_path, "objects", "a", "data", n)).st_blocks * 512
            for n in os.listdir(os.path.join(cache_path, "objects", "a", "data"))
        )
    # Outside the context too, as osbuild's.
    with pytest.raises(FsCache.MissError):
        cache._last_used("nope")


def test_incompatible_version_misses_and_stores_nothing(cache_path):
    with FsCache("osbuild", cache_path):
        pass
    with open(os.path.join(cache_path, "cache.info"), "w", encoding="utf8") as f:
        f.write('{"version": 2, "maximum-size": "unlimited"}')
    with FsCache("osbuild", cache_path) as cache:
        assert not cache._is_compatible()
        with cache.store("a") as rpath:
            assert rpath.startswith("stage/")
            fill(cache, rpath)
        with pytest.raises(FsCache.MissError):
            with cache.load("a"):
                pass
        assert entries(cache_path) == []
        assert debris(cache_path) == []


# store_tree: osbuild's `cp -a -- TREE data/` rule.


def make_tree(root):
    os.makedirs(os.path.join(root, "sub"))
    with open(os.path.join(root, "sub", "a.txt"), "w", encoding="utf8") as f:
        f.write("a\n")
    os.chmod(os.path.join(root, "sub", "a.txt"), 0o600)
    os.symlink("sub/a.txt", os.path.join(root, "link"))
    os.utime(os.path.join(root, "sub", "a.txt"), (1_000_000_000, 1_000_000_000))
    os.chmod(root, 0o750)


def test_store_tree_copies_a_directory_as_a_child_unless_slash_dot(cache_path, tmp_path):
    tree = os.fspath(tmp_path / "tree")
    make_tree(tree)
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        cache.store_tree("child", tree)
        cache.store_tree("contents", tree + "/.")
        cache.store_tree("file", os.path.join(tree, "sub", "a.txt"))
        with cache.load("child") as rpath:
            data = os.path.join(cache, rpath)
            assert os.listdir(data) == ["tree"]
            assert stat.S_IMODE(os.stat(os.path.join(data, "tree")).st_mode) == 0o750
            got = os.path.join(data, "tree")
        with cache.load("contents") as rpath:
            data = os.path.join(cache, rpath)
            assert sorted(os.listdir(data)) == ["link", "sub"]
            assert os.readlink(os.path.join(data, "link")) == "sub/a.txt"
            a = os.stat(os.path.join(data, "sub", "a.txt"))
            assert stat.S_IMODE(a.st_mode) == 0o600 and int(a.st_mtime) == 1_000_000_000
        with cache.load("file") as rpath:
            assert os.listdir(os.path.join(cache, rpath)) == ["a.txt"]
        assert got.endswith("objects/child/data/tree")
        assert_books_balance(cache_path)
        with pytest.raises(RuntimeError):
            cache.store_tree("missing", os.fspath(tmp_path / "nope"))
        assert "missing" not in entries(cache_path)
        assert debris(cache_path) == []


def test_long_operations_release_the_gil(cache_path, tmp_path):
    tree = tmp_path / "many"
    tree.mkdir()
    for i in range(1500):
        (tree / f"f{i}").write_bytes(b"x" * 64)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        t = threading.Thread(target=tick)
        t.start()
        try:
            time.sleep(0.01)
            before = len(ticks)
            start = time.monotonic()
            cache.store_tree("many", os.fspath(tree))
            took = time.monotonic() - start
            during = len(ticks) - before
            # The commit at a `with cache.store()`'s exit measures the
            # whole tree, in the native context manager.
            cm = cache.store("many-2")
            rpath = cm.__enter__()  # pylint: disable=unnecessary-dunder-call
            for i in range(1000):
                with open(os.path.join(cache, rpath, f"f{i}"), "wb") as f:
                    f.write(b"x" * 64)
            before = len(ticks)
            start = time.monotonic()
            cm.__exit__(None, None, None)
            took_commit = time.monotonic() - start
            during_commit = len(ticks) - before
        finally:
            stop.set()
            t.join()
        assert entries(cache_path) == ["many", "many-2"]
    # Holding the GIL for the whole copy would leave the ticker at (about)
    # zero; released, it ticks about once a millisecond throughout.
    if took > 0.05:
        assert during >= 5, f"{during} ticks during a {took:.3f} s store_tree"
    if took_commit > 0.05:
        assert during_commit >= 5, f"{during_commit} ticks during a {took_commit:.3f} s commit"


# The osbuild-written cache vector.


def test_an_osbuild_written_cache_loads_and_updates_without_loss(tmp_path):
    with tarfile.open(os.path.join(ROOT, "crates", "fscache-cli", "tests", "data", "osbuild-cache.tar")) as t:
        t.extractall(tmp_path)  # noqa: S202 (our own test vector)
    path = tmp_path / "osbuild-cache"
    with FsCache("osbuild", path) as cache:
        assert cache.info.maximum_size == 10 * 1024 * 1024
        with cache.load("plain") as rpath:
            with open(os.path.join(cache, rpath, "hello.txt"), encoding="utf8") as f:
                assert f.read() == "hello from osbuild\n"
        with cache.load("tree") as rpath:
            assert os.readlink(os.path.join(cache, rpath, "link-to-a")) == "sub/a.txt"
        with cache.load("empty") as rpath:
            assert os.listdir(os.path.join(cache, rpath)) == []
        assert cache.verify("plain").state == "unverified"
        cache.info = cache.info._replace(maximum_size=20 * 1024 * 1024)
        with cache.store("ours") as rpath:
            fill(cache, rpath)
    raw = read_json(path / "cache.info")
    assert "future-key" in raw and raw["maximum-size"] == 20 * 1024 * 1024
    assert entries(path) == ["empty", "ours", "plain", "tree"]


# Beyond osbuild.


def test_verify_names_what_an_outside_deleter_removed(cache_path, tmp_path):
    tree = os.fspath(tmp_path / "tree")
    make_tree(tree)
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        for n in ("ok", "changed", "halfgone"):
            cache.store_tree(n, tree + "/.")
        assert cache.verify("ok") == ("ok", [])
        assert not cache.verify("ok").bad
        os.chmod(os.path.join(cache_path, "objects", "changed", "data", "sub", "a.txt"), 0o644)
        assert cache.verify("changed").state == "mismatch"
        os.unlink(os.path.join(cache_path, "objects", "halfgone", "object.info"))
        v = cache.verify("halfgone")
        assert v.state == "incomplete" and v.missing == ["object.info"] and v.bad
        assert cache.verify("absent") == ("miss", [])
        with pytest.raises(FsCache.MissError):
            with cache.load("halfgone"):
                pass
        assert cache.remove("halfgone") == "removed"
        assert cache.remove("changed") == "removed"
        assert cache.remove("changed") == "missing"
        assert entries(cache_path) == ["ok"]
        assert_books_balance(cache_path)


def test_stats_prune_entries_sweep_usage(cache_path):
    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        for n in ("a", "b", "c"):
            with cache.store(n) as rpath:
                fill(cache, rpath, data=n * 10_000)
        with cache.load("a"):
            pass
        with pytest.raises(FsCache.MissError):
            with cache.load("z"):
                pass
        s = cache.stats()
        assert s["hits"] >= 1 and s["misses"] >= 1 and s["stored"] == 3
        listed = cache.entries()
        assert [e.name for e in listed] == ["a", "b", "c"]
        assert all(e.size and e.size > 0 and not e.in_use for e in listed)
        u = cache.usage()
        assert u["entries"] == 3 and u["on_disk"] >= u["accounted"] > 0
        dry = cache.prune(to=0, dry_run=True)
        assert sorted(dry.removed) == ["a", "b", "c"] and entries(cache_path) == ["a", "b", "c"]
        with cache.load("c"):
            report = cache.prune(unused_for=0)
        assert sorted(report.removed) == ["a", "b"] and report.skipped == ["c"]
        assert report.accounted == read_json(os.path.join(cache_path, "cache.size"))
        assert cache.contains("c") and not cache.contains("a")
        # Debris of a dead writer.
        os.makedirs(os.path.join(cache_path, "stage", "uuid-" + "0" * 32, "data"))
        assert cache.sweep() == ["uuid-" + "0" * 32]
        assert debris(cache_path) == []
        assert_books_balance(cache_path)


def test_load_or_build_builds_once(cache_path):
    calls = []

    def build(path):
        assert os.path.isabs(path)
        calls.append(path)
        with open(os.path.join(path, "out"), "w", encoding="utf8") as f:
            f.write("built")

    with FsCache("osbuild", cache_path) as cache:
        unlimited(cache)
        for _ in range(2):
            with cache.load_or_build("step", build) as rpath:
                assert rpath == "objects/step/data"
                with open(os.path.join(cache, rpath, "out"), encoding="utf8") as f:
                    assert f.read() == "built"
        assert len(calls) == 1

        def fail(path):
            raise OSError(5, "the build failed")

        with pytest.raises(OSError):
            with cache.load_or_build("broken", fail):
                pass
        assert entries(cache_path) == ["step"]
        assert debris(cache_path) == []


@pytest.mark.skipif(not fscache._native.HAS_REMOTE, reason="built without the `remote` feature")
def test_push_pull_and_load_or_pull_by_url(tmp_path):
    remote = f"file://{tmp_path / 'remote'}"
    (tmp_path / "remote").mkdir()
    with FsCache("osbuild", tmp_path / "host-a") as a:
        unlimited(a)
        with a.store("shared") as rpath:
            fill(a, rpath, data="from host a")
        report = a.push("shared", remote)
        assert report is not None and report["digest"].startswith("blake3")
        assert a.push("absent", remote) is None
    with FsCache("osbuild", tmp_path / "host-b") as b:
        unlimited(b)
        with pytest.raises(FsCache.MissError):
            with b.load("shared"):
                pass
        with b.load_or_pull("shared", remote) as rpath:
            with open(os.path.join(b, rpath, "f"), encoding="utf8") as f:
                assert f.read() == "from host a"
        with b.load("shared"):
            pass
        with pytest.raises(FsCache.MissError):
            with b.load_or_pull("nowhere", remote):
                pass
    with FsCache("osbuild", tmp_path / "host-c") as c:
        unlimited(c)
        with c.pull("shared", remote) as rpath:
            assert rpath == "objects/shared/data"
        with pytest.raises(FsCache.MissError):
            with c.pull("nowhere", remote):
                pass
        with pytest.raises(ValueError):
            c.push("shared")  # no URL and no $FSCACHE_REMOTE


def test_errors_are_the_python_ones(cache_path, tmp_path):
    assert issubclass(fscache.Error, RuntimeError)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        with FsCache("osbuild", blocker / "cache"):
            pass
    with FsCache("osbuild", cache_path) as cache:
        with pytest.raises(fscache.Error):
            cache.push("x", "nosuchscheme://x")
        with pytest.raises(fscache.Error):
            cache._handle().close()
            cache.stats()
