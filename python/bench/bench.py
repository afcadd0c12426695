"""A plain `timeit` table: fscache's Python package beside osbuild's own
FsCache (where importable: installed, or $FSCACHE_OSBUILD_PATH) on the same
operations, from one run. Run by `cargo xtask pybench`.

Rows: a load hit and a miss, a store of one 4 KiB file, and `store_tree`
of a 10,000-file tree the way osbuild's object store calls it (`tree/.`),
with `cp -a --reflink=auto -- tree/. data/` beside it: the command
osbuild's `store_tree` runs.

Fair on a shared machine:

* the implementations take turns, round by round (ABAB, then BABA), each
  cell the median of REPEAT rounds of NUMBER calls, per call;
* `sync` before every round, so no one pays for the write-back of what
  the one before wrote (the 10,000-file tree above all);
* each cell in wall time and in CPU time (user + system of this process
  and of its children: osbuild's `cp`). On a loaded machine the wall time
  mostly waits for other processes; the CPU time is the work done;
* and the kernel's part of that CPU time. For the 4 KiB store it bounds
  the ratio: osbuild's CPU time over our kernel time is the most any
  implementation making our system calls could gain (the kernel time is
  sampled at each clock tick: hence 1,000 stores a round).

Set FSCACHE_PYBENCH_DIR to choose the file system (default: $TMPDIR).
"""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import fscache

REPEAT = int(os.environ.get("FSCACHE_PYBENCH_REPEAT", "7"))
TREE_FILES = 10_000


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


def cpu_now():
    """(CPU, kernel CPU) seconds of this process and its waited-for
    children."""
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time() + c.ru_utime + c.ru_stime, s.ru_stime + c.ru_stime


def timed(fn, number):
    """(wall, cpu, kernel cpu) seconds per call of `number` calls of `fn`."""
    os.sync()
    (c0, k0), t0 = cpu_now(), time.perf_counter()
    for _ in range(number):
        fn()
    t1, (c1, k1) = time.perf_counter(), cpu_now()
    return (t1 - t0) / number, (c1 - c0) / number, (k1 - k0) / number


def make_tree(root, files):
    for i in range(files):
        d = os.path.join(root, f"d{i // 100}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(b"x" * 100)


class Side:
    """One implementation's cache and the operations on it."""

    def __init__(self, module, base, tree):
        self.name = "fscache" if module is fscache else "osbuild"
        self.cache = module.FsCache("bench", os.path.join(base, self.name))
        self.cache.__enter__()
        cache = self.cache
        cache.info = cache.info._replace(maximum_size="unlimited")
        with cache.store("hit") as rpath:
            with open(os.path.join(cache, rpath, "f"), "wb") as f:
                f.write(b"x" * 4096)
        counter = iter(range(10**9))

        def load_hit():
            with cache.load("hit"):
                pass

        def load_miss():
            try:
                with cache.load("absent"):
                    pass
            except cache.MissError:
                pass

        def store_4k():
            with cache.store(f"s{next(counter)}") as rpath:
                with open(os.path.join(cache, rpath, "f"), "wb") as f:
                    f.write(b"x" * 4096)

        def store_tree():
            cache.store_tree(f"t{next(counter)}", tree + "/.")

        self.ops = {
            "load hit": (load_hit, 2000),
            "load miss": (load_miss, 2000),
            "store 4 KiB": (store_4k, 1000),
            f"store_tree {TREE_FILES:,} files": (store_tree, 1),
        }

    def close(self):
        self.cache.__exit__(None, None, None)


class CpA:
    """`cp -a` of the tree's contents into a fresh directory."""

    name = "cp -a"

    def __init__(self, base, tree):
        counter = iter(range(10**9))

        def run():
            dst = os.path.join(base, f"cp{next(counter)}")
            os.mkdir(dst)
            subprocess.run(["cp", "--reflink=auto", "-a", "--", tree + "/.", dst], check=True)

        self.ops = {f"store_tree {TREE_FILES:,} files": (run, 1)}

    def close(self):
        pass


def run_all(sides):
    """{op: {side name: (wall, cpu, kernel cpu)}}, medians of interleaved
    rounds."""
    out = {}
    ops = list(dict.fromkeys(op for s in sides for op in s.ops))
    for op in ops:
        takers = [s for s in sides if op in s.ops]
        rounds = REPEAT if not op.startswith("store_tree") else 3
        runs = {s.name: [] for s in takers}
        for r in range(rounds):
            for s in takers if r % 2 == 0 else takers[::-1]:
                fn, number = s.ops[op]
                runs[s.name].append(timed(fn, number))
        out[op] = {n: tuple(statistics.median(t[i] for t in v) for i in range(3)) for n, v in runs.items()}
    return out


def human(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fs_type(path):
    """The file system type of `path`, from /proc/self/mountinfo."""
    best, kind = "", "?"
    try:
        with open("/proc/self/mountinfo", encoding="utf8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount = left.split()[4]
                if (path + "/").startswith(mount.rstrip("/") + "/") and len(mount) >= len(best):
                    best, kind = mount, right.split()[0]
    except OSError:
        pass
    return kind


def main():
    base = tempfile.mkdtemp(prefix="fscache-pybench-", dir=os.environ.get("FSCACHE_PYBENCH_DIR"))
    sides = []
    try:
        tree = os.path.join(base, "tree")
        make_tree(tree, TREE_FILES)
        sides.append(Side(fscache, base, tree))
        theirs = osbuild_module()
        if theirs:
            sides.append(Side(theirs, base, tree))
        sides.append(CpA(base, tree))
        print(f"in {base} ({fs_type(base)}), load average {os.getloadavg()[0]:.1f} at the start")
        res = run_all(sides)
        print(f"\n{'operation':<26}{'':<6}{'fscache':>11}{'osbuild':>11}{'osbuild/fscache':>17}{'cp -a':>11}{'fscache/cp':>12}")
        for op, cells in res.items():
            for i, kind in enumerate(("wall", "cpu", "kernel")):
                ours = cells["fscache"][i]
                other = cells.get("osbuild", (None,) * 3)[i]
                cp = cells.get("cp -a", (None,) * 3)[i]
                ratio = f"{other / ours:.2f}x" if other and ours else "-"
                vs_cp = f"{ours / cp:.2f}x" if cp and ours else ""
                label = op if i == 0 else ""
                print(
                    f"{label:<26}{kind:<6}{human(ours):>11}{human(other):>11}{ratio:>17}"
                    f"{(human(cp) if cp else ''):>11}{vs_cp:>12}"
                )
        store = res["store 4 KiB"]
        if "osbuild" in store and store["fscache"][2] > 0:
            # The kernel's share of our store is the system calls of the
            # on-disk protocol (six new inodes and two renames on both
            # sides): no implementation making them is faster than that.
            bound = store["osbuild"][1] / store["fscache"][2]
            print(
                f"\nstore 4 KiB: osbuild's CPU / fscache's kernel CPU = {bound:.2f}x, the most that"
                " an implementation making fscache's system calls with no user time could gain"
            )
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    finally:
        for s in sides:
            s.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
