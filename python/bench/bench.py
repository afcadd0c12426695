"""A plain `timeit` table: fscache's Python package beside osbuild's own
FsCache (where importable: installed, or $FSCACHE_OSBUILD_PATH) on the same
operations, from one run. Run by `cargo xtask pybench`.

Rows: a load hit and a miss, a store of one 4 KiB file, and store_tree of a
10,000-file tree (with `cp -a --reflink=auto` beside it as the floor).
Each cell is the median of REPEAT timings of NUMBER calls, per call, in
wall time and in this process's CPU time (user + system, from getrusage),
with the system part beside it. On a shared machine the wall time waits
for other processes; the CPU time is the work each implementation does,
and its system part is the kernel's share (the same calls for both: the
on-disk protocol fixes them), so `osbuild CPU / fscache sys` is the best
ratio any implementation of the protocol could reach on this file system.
Set FSCACHE_PYBENCH_DIR to choose the file system (default: $TMPDIR).
"""

import os
import resource
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


class Timing:
    """Seconds per call: wall, CPU (user + system) and the system part."""

    def __init__(self, wall, cpu, sys_):
        self.wall, self.cpu, self.sys = wall, cpu, sys_


def per_call(fn, number, repeat=REPEAT):
    runs = []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = timeit.default_timer()
        for _ in range(number):
            fn()
        t1 = timeit.default_timer()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        sys_ = r1.ru_stime - r0.ru_stime
        cpu = r1.ru_utime - r0.ru_utime + sys_
        runs.append(((t1 - t0) / number, cpu / number, sys_ / number))
    pick = lambda i: statistics.median(r[i] for r in runs)  # noqa: E731
    return Timing(pick(0), pick(1), pick(2))


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

    # `cp` is a child: its CPU time is in RUSAGE_CHILDREN.
    walls, cpus, syss = [], [], []
    for _ in range(3):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = timeit.default_timer()
        run()
        walls.append(timeit.default_timer() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        syss.append(r1.ru_stime - r0.ru_stime)
        cpus.append(r1.ru_utime - r0.ru_utime + syss[-1])
    return Timing(statistics.median(walls), statistics.median(cpus), statistics.median(syss))


def human(s):
    if s is None:
        return "-"
    if s == 0:
        return "0"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def main():
    base = tempfile.mkdtemp(prefix="fscache-pybench-", dir=os.environ.get("FSCACHE_PYBENCH_DIR"))
    try:
        print(f"in {base} ({fs_type(base)}), load average {os.getloadavg()[0]:.1f}")
        tree = os.path.join(base, "tree")
        make_tree(tree, 10_000)
        ours = bench(fscache, base, tree)
        theirs_mod = osbuild_module()
        theirs = bench(theirs_mod, base, tree) if theirs_mod else {}
        floor = cp_a(base, tree)
        head = ("operation", "", "fscache", "osbuild", "osbuild/fscache")
        print(f"\n{head[0]:<26}{head[1]:<6}{head[2]:>11}{head[3]:>11}{head[4]:>17}")
        for op, t in ours.items():
            o = theirs.get(op)
            for kind in ("wall", "cpu", "sys"):
                ratio = f"{getattr(o, kind) / getattr(t, kind):.2f}x" if o else "-"
                if kind == "sys":
                    # The best any implementation could do: only the kernel's part.
                    ratio = f"(max {o.cpu / t.sys:.2f}x)" if o and t.sys else ""
                mine = getattr(t, kind)
                other = getattr(o, kind) if o else None
                label = op if kind == "wall" else ""
                print(f"{label:<26}{kind:<6}{human(mine):>11}{human(other):>11}{ratio:>17}")
        st = ours["store_tree 10,000 files"]
        print(f"\ncp -a of the tree: wall {human(floor.wall)}, cpu {human(floor.cpu)}, sys {human(floor.sys)}")
        print(f"store_tree / cp -a: {st.wall / floor.wall:.2f}x wall, {st.cpu / floor.cpu:.2f}x cpu (fscache)")
        if theirs:
            ot = theirs["store_tree 10,000 files"]
            print(f"store_tree / cp -a: {ot.wall / floor.wall:.2f}x wall, {ot.cpu / floor.cpu:.2f}x cpu (osbuild)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


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


if __name__ == "__main__":
    main()
