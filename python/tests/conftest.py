"""Shared fixtures of the fscache package's tests: temporary caches, the
`fscache` command, osbuild's own FsCache where it is importable, and an
independent reader of the books (cache.size, object.info)."""

import fcntl
import json
import os
import shutil
import struct
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture
def cache_path(tmp_path):
    """A path for a cache that does not exist yet."""
    return os.fspath(tmp_path / "cache")


@pytest.fixture
def osbuild_fscache():
    """osbuild's own `osbuild.util.fscache` module, or a skip saying why.

    osbuild is not on PyPI: it is importable when installed (a distribution
    package), or from a source checkout named by $FSCACHE_OSBUILD_PATH.
    """
    extra = os.environ.get("FSCACHE_OSBUILD_PATH")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    try:
        from osbuild.util import fscache as theirs  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        pytest.skip(
            f"osbuild's Python code is not importable ({e}): it is not on PyPI; "
            "install osbuild or set FSCACHE_OSBUILD_PATH to its source checkout"
        )
    return theirs


@pytest.fixture
def fscache_bin():
    """The `fscache` command: $FSCACHE_BIN (set by `cargo xtask ci`), the
    workspace's debug build, or one on $PATH; else a skip."""
    for candidate in (
        os.environ.get("FSCACHE_BIN"),
        os.path.join(ROOT, "target", "debug", "fscache"),
        shutil.which("fscache"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no `fscache` binary: build it with `cargo build -p fscache-cli`")
    return None


def read_json(path):
    with open(path, "r", encoding="utf8") as f:
        return json.load(f)


def entries(path):
    """The committed names in objects/ (not uuid-*), sorted."""
    objects = os.path.join(path, "objects")
    return sorted(n for n in os.listdir(objects) if not n.startswith("uuid-"))


def debris(path):
    """uuid-* in objects/ and anything in stage/: what must not be left."""
    out = [f"objects/{n}" for n in os.listdir(os.path.join(path, "objects")) if n.startswith("uuid-")]
    out += [f"stage/{n}" for n in os.listdir(os.path.join(path, "stage"))]
    return out


def assert_books_balance(path):
    """cache.size is exactly the sum of the entries' recorded sizes."""
    total = 0
    for name in entries(path):
        info = os.path.join(path, "objects", name, "object.info")
        if os.path.exists(info):
            total += read_json(info)["size"]
    assert read_json(os.path.join(path, "cache.size")) == total


# `struct flock` on Linux (64-bit off_t): l_type, l_whence, l_start, l_len,
# l_pid, padded to 32 bytes.
_FLOCK = "hhxxxxqqixxxx"
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)


def can_lock_exclusively(path):
    """Whether an exclusive OFD lock on `path` can be taken now (nobody
    holds a lock on it), the way fscache and osbuild lock."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        arg = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        try:
            fcntl.fcntl(fd, _F_OFD_SETLK, arg)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)
