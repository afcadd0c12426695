"""osbuild's own unit tests of its FsCache (`test/mod/test_util_fscache.py`
in an osbuild source checkout), run against this package: the module is
executed as it is, then its global `fscache` is pointed at ours.

Skipped (saying why) unless $FSCACHE_OSBUILD_PATH names an osbuild source
checkout (osbuild is not on PyPI). The tests listed in DIFFERENT test
osbuild's private helpers or a documented difference; each says which.
"""

import os
import sys

import pytest

import fscache

SUITE = os.path.join("test", "mod", "test_util_fscache.py")

#: osbuild's tests that cannot pass here, and why (docs/format.md's
#: "Differences from osbuild" table has the on-disk ones).
DIFFERENT = {
    "test_atomic_open": "osbuild's private locked-open helper; ours is in Rust (fscache-dir)",
    "test_atomic_file": "osbuild's private atomic-file helper; ours is in Rust (fscache-dir)",
    "test_atomic_dir": "osbuild's private anonymous-directory helper; ours is in Rust (fscache-dir)",
    "test_scaffolding": "our cache.info also records creation-boot-id, and the root also "
    "holds fscache's own books.lock (both documented differences)",
    "test_cache_info": "our cache.info records creation-boot-id on creation (a documented difference)",
    "test_cache_full_behavior": "a store evicts only what its own charge needs, osbuild twice its "
    "size: the test asserts osbuild's margin (a documented difference)",
}


def _load_suite():
    """osbuild's test module, executed with `fscache` rebound to ours, or
    the reason it cannot be."""
    root = os.environ.get("FSCACHE_OSBUILD_PATH")
    if not root:
        return None, "FSCACHE_OSBUILD_PATH is not set (osbuild is not on PyPI)"
    path = os.path.join(root, SUITE)
    if not os.path.exists(path):
        return None, f"{path} does not exist: FSCACHE_OSBUILD_PATH is not an osbuild checkout"
    if root not in sys.path:
        sys.path.insert(0, root)
    namespace = {"__name__": "osbuild_test_util_fscache", "__file__": path}
    try:
        with open(path, encoding="utf8") as f:
            exec(compile(f.read(), path, "exec"), namespace)  # pylint: disable=exec-used
    except ImportError as e:
        return None, f"osbuild's test module does not import ({e})"
    namespace["fscache"] = fscache
    return namespace, None


SUITE_NS, WHY_NOT = _load_suite()
NAMES = sorted(n for n in (SUITE_NS or {}) if n.startswith("test_")) or ["(none)"]


@pytest.mark.parametrize("name", NAMES)
def test_osbuilds_own_test(name, tmp_path):
    if SUITE_NS is None:
        pytest.skip(WHY_NOT)
    if name in DIFFERENT:
        pytest.skip(f"differs on purpose: {DIFFERENT[name]}")
    fn = SUITE_NS[name]
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "skipif" and mark.args and mark.args[0]:
            pytest.skip(mark.kwargs.get("reason", "osbuild's own skip"))
    args = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    given = {"tmpdir": os.fspath(tmp_path), "tmp_path": tmp_path}
    fn(**{a: given[a] for a in args})
