"""A plain `timeit` table: fscache's Python package beside osbuild's own
FsCache (where importable: installed, or $FSCACHE_OSBUILD_PATH) on the same
operations, from one run. Run by `cargo xtask pybench`.

Rows: a load hit and a miss, a store of one 4 KiB file, and store_tree of a
10,000-file tree (with `cp -a --reflink=auto` beside it as the floor).
Each cell is the median of REPEAT timings of NUMBER calls, per call.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit

import fscache

REPEAT = int(os.environ.get("FSCACHE_PYBENCH_REPEAT", "7"))


def osbuild_module():
    extra = os.environ.get("FSCACHE_OSBUILD_PATH")
    if extra:
        sys.path.insert(0, extra)
    try:
        from osbuild.util import fscache as theirs  # pylint: disable=import-outside-toplevel

        return theirs
    except ImportError as e:
        print(f"osbuild is not importable ({e}): its column is empty", file=sys.stderr)
        return None


def per_call(fn, number, repeat=REPEAT):
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number


def make_tree(root, files):
    for i in range(files):
        d = os.path.join(root, f"d{i // 100}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(b"x" * 100)


def bench(module, base, tree):
    """Timings (seconds per call) of one implementation."""
    path = os.path.join(base, module.__name__.replace(".", "_"))
    cache = module.FsCache("bench", path)
    out = {}
    with cache:
        cache.info = cache.info._replace(maximum_size="unlimited")
        with cache.store("hit") as rpath:
            with open(os.path.join(cache, rpath, "f"), "wb") as f:
                f.write(b"x" * 4096)

        def load_hit():
            with cache.load("hit"):
                pass

        def load_miss():
            try:
                with cache.load("absent"):
                    pass
            except cache.MissError:
                pass

        counter = iter(range(10**9))

        def store_4k():
            with cache.store(f"s{next(counter)}") as rpath:
                with open(os.path.join(cache, rpath, "f"), "wb") as f:
                    f.write(b"x" * 4096)

        trees = iter(range(10**9))

        def store_tree():
            cache.store_tree(f"t{next(trees)}", tree)

        out["load hit"] = per_call(load_hit, 2000)
        out["load miss"] = per_call(load_miss, 2000)
        out["store 4 KiB"] = per_call(store_4k, 200)
        out["store_tree 10,000 files"] = per_call(store_tree, 1, repeat=3)
    return out


def cp_a(base, tree):
    n = iter(range(10**9))

    def run():
        dst = os.path.join(base, f"cp{next(n)}")
        os.mkdir(dst)
        subprocess.run(["cp", "--reflink=auto", "-a", "--", tree, dst], check=True)

    return per_call(run, 1, repeat=3)


def human(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def main():
    base = tempfile.mkdtemp(prefix="fscache-pybench-", dir=os.environ.get("FSCACHE_PYBENCH_DIR"))
    try:
        tree = os.path.join(base, "tree")
        make_tree(tree, 10_000)
        ours = bench(fscache, base, tree)
        theirs_mod = osbuild_module()
        theirs = bench(theirs_mod, base, tree) if theirs_mod else {}
        floor = cp_a(base, tree)
        print(f"\n{'operation':<26}{'fscache':>12}{'osbuild':>12}{'osbuild/fscache':>18}{'cp -a':>10}")
        for op, t in ours.items():
            o = theirs.get(op)
            ratio = f"{o / t:.2f}x" if o else "-"
            cp = human(floor) if op.startswith("store_tree") else ""
            print(f"{op:<26}{human(t):>12}{human(o):>12}{ratio:>18}{cp:>10}")
        print(f"\nstore_tree / cp -a: {ours['store_tree 10,000 files'] / floor:.2f}x (fscache)")
        if theirs:
            print(f"store_tree / cp -a: {theirs['store_tree 10,000 files'] / floor:.2f}x (osbuild)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
