"""A worker process of test_multiprocess.py: random stores, loads (each hit's
content checked against its name), stages and removals on one cache through
the `fscache` package. Prints `ok HITS MISSES` or exits non-zero."""

import os
import random
import sys

from fscache import FsCache


def payload(name):
    return (name + "\n") * 2000


def main():
    path, seed, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    hits = misses = 0
    with FsCache("osbuild", path) as cache:
        for _ in range(ops):
            name = f"n{rng.randrange(12)}"
            op = rng.random()
            if op < 0.4:
                with cache.store(name) as rpath:
                    with open(os.path.join(cache, rpath, "f"), "w", encoding="utf8") as f:
                        f.write(payload(name))
            elif op < 0.85:
                try:
                    with cache.load(name) as rpath:
                        with open(os.path.join(cache, rpath, "f"), encoding="utf8") as f:
                            if f.read() != payload(name):
                                print(f"bad content in {name}", file=sys.stderr)
                                return 1
                    hits += 1
                except FsCache.MissError:
                    misses += 1
            elif op < 0.95:
                with cache.stage() as rpath:
                    with open(os.path.join(cache, rpath, "scratch"), "w", encoding="utf8") as f:
                        f.write("x" * 1000)
            else:
                cache.remove(name)
    print(f"ok {hits} {misses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
