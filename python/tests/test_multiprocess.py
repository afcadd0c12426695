"""Several Python processes and the `fscache` command on one small cache at
once: every hit has the content its name says, the limit holds, and the
books are exact and no debris is left afterwards."""

import os
import subprocess
import sys

import fscache

from conftest import HERE, assert_books_balance, debris, entries, read_json

LIMIT = 160 * 1024


def test_python_processes_and_the_cli_share_one_cache(cache_path, fscache_bin, tmp_path):
    with fscache.FsCache("osbuild", cache_path) as cache:
        cache.info = cache.info._replace(maximum_size=LIMIT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    workers = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "worker.py"), cache_path, str(seed), "150"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in range(3)
    ]
    # The command line meanwhile: stores, loads with their content checked,
    # listings and verifies, on the same names.
    src = tmp_path / "src"
    src.mkdir()
    cli_hits = 0
    for i in range(15):
        name = f"n{i % 12}"
        (src / "f").write_text((name + "\n") * 2000)
        run = lambda *args: subprocess.run(  # noqa: E731
            [fscache_bin, "-q", *args], capture_output=True, text=True, check=False
        )
        r = run("store", cache_path, name, os.fspath(src))
        assert r.returncode == 0, r.stderr
        r = run("load", cache_path, name, "--", "cat", "f")
        assert r.returncode in (0, 2), r.stderr  # 2: a miss (evicted, removed)
        if r.returncode == 0:
            assert r.stdout == (name + "\n") * 2000
            cli_hits += 1
        assert run("ls", cache_path).returncode == 0
        r = run("verify", cache_path)
        assert r.returncode == 0, r.stdout + r.stderr
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        assert out.startswith("ok "), out
    assert read_json(os.path.join(cache_path, "cache.size")) <= LIMIT
    assert_books_balance(cache_path)
    assert debris(cache_path) == []
    with fscache.FsCache("osbuild", cache_path) as cache:
        for name in entries(cache_path):
            with cache.load(name) as rpath:
                with open(os.path.join(cache, rpath, "f"), encoding="utf8") as f:
                    assert f.read() == (name + "\n") * 2000
            assert cache.verify(name).state in ("ok", "unverified")
