"""fscache: a shared, size-limited LRU cache of directory trees.

A drop-in for ``osbuild.util.fscache`` on the Rust implementation of the
same on-disk format (version 1): ``FsCache``, ``FsCacheInfo`` and
``FsCacheObjectInfo`` with osbuild's API and semantics, so that osbuild's
``objectstore.py`` works unchanged with ``from fscache import FsCache``.
Both implementations can share one cache directory at the same time.

Beyond osbuild: ``verify``, ``stats``, ``prune``, ``entries``, ``remove``,
``sweep``, ``usage``, ``load_or_build`` (built once across processes), and
a remote tier: ``push``, ``pull`` and ``load_or_pull`` by URL.

Where this package differs from osbuild's (each on purpose):

* a name must be one valid path component that does not start with
  ``uuid-`` (reserved for anonymous entries): ``store`` raises
  ``ValueError`` for any other, ``load`` raises ``MissError``;
* a negative ``maximum_size`` is written to ``cache.info`` as
  ``"unlimited"`` (osbuild writes the number; both read either as no limit);
  ``info`` still shows the value that was set;
* ``store_tree`` raises ``RuntimeError`` (with the ``OSError`` as its cause)
  when the copy fails, as osbuild does when ``cp`` fails, and copies with
  the native copy instead of running ``cp -a``.
"""

import contextlib
import errno
import os
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Union,
)

from . import _native

__all__ = [
    "FsCache",
    "FsCacheInfo",
    "FsCacheObjectInfo",
    "FsCacheEntry",
    "PruneReport",
    "Verified",
    "Error",
]

#: An fscache failure that is not a system call's (an incompatible or
#: corrupt cache, a remote that fails).
Error = _native.Error

MaximumSizeType = Optional[Union[int, str]]


class FsCacheInfo(NamedTuple):
    """The configuration of a cache, as ``cache.info`` holds it.

    An immutable tuple, used to read or set the configuration. ``None``
    means unset: the cache then uses the default (a ``maximum_size`` of 0,
    so nothing is kept).

    creation_boot_id - the app boot id of the boot that created the cache
    maximum_size - the limit in bytes, ``"unlimited"``, or a negative int
                   (also no limit)
    version - the format version of the cache
    """

    creation_boot_id: Optional[str] = None
    maximum_size: MaximumSizeType = None
    version: Optional[int] = None

    @classmethod
    def from_json(cls, data: Any) -> "FsCacheInfo":
        """The tuple of a parsed ``cache.info``: unknown keys are ignored,
        values of the wrong type read as unset, and anything but a JSON
        object reads as an empty tuple."""
        if not isinstance(data, dict):
            return cls()
        boot_id = data.get("creation-boot-id")
        if not (isinstance(boot_id, str) and len(boot_id) == 32):
            boot_id = None
        size = data.get("maximum-size")
        if not (isinstance(size, int) or size == "unlimited"):
            size = None
        version = data.get("version")
        if not isinstance(version, int):
            version = None
        return cls(boot_id, size, version)

    def to_json(self) -> Dict[str, Any]:
        """The JSON object of the fields that are set (for ``json.dump``)."""
        keys = (
            ("creation-boot-id", self.creation_boot_id),
            ("maximum-size", self.maximum_size),
            ("version", self.version),
        )
        return {k: v for k, v in keys if v is not None}


class FsCacheObjectInfo(NamedTuple):
    """A cache entry's name and its last use (a Unix time). The time is
    valid only as long as nothing else uses the entry."""

    name: str
    last_used: float


class FsCacheEntry(NamedTuple):
    """A committed entry, as ``FsCache.entries`` lists it."""

    name: str
    #: The bytes its ``object.info`` recorded (``None``: damaged).
    size: Optional[int]
    #: Its last use, a Unix time.
    last_used: float
    #: Whether someone holds it now (a snapshot).
    in_use: bool


class PruneReport(NamedTuple):
    """What ``FsCache.prune`` removed (or, in a dry run, would remove)."""

    removed: List[str]
    skipped: List[str]
    freed: int
    accounted: int


class Verified(NamedTuple):
    """What ``FsCache.verify`` found.

    state - ``"ok"``, ``"mismatch"`` (the content changed since its
            commit), ``"unverified"`` (no digest was recorded),
            ``"incomplete"`` (parts were deleted from outside) or ``"miss"``
    missing - for ``"incomplete"``: the parts that are gone
    """

    state: str
    missing: List[str]

    @property
    def bad(self) -> bool:
        """Whether the entry is known to be damaged."""
        return self.state in ("mismatch", "incomplete")


def _copies_contents(tree: str) -> bool:
    # osbuild copies with `cp -a -- TREE data/`: a path whose last
    # component is `.` copies the directory's contents, any other the
    # directory itself, as a child of `data/`.
    return tree.rstrip("/").rsplit("/", 1)[-1] == "."


class FsCache(contextlib.AbstractContextManager, os.PathLike):
    """A file-system cache shared by threads and processes.

    The constructor does no I/O. Enter the context manager to use the
    cache: ``__enter__`` creates the cache's scaffolding where needed and
    takes its shared lock, ``__exit__`` releases it. Any other method
    raises ``AssertionError`` outside the context.

    Paths that ``load``, ``store`` and ``stage`` yield are relative to the
    cache's path (join them with ``os.fspath(cache)``).
    """

    class MissError(Exception):
        """The entry is not there for us now: absent, being written or
        removed, or damaged. Other processes create and delete entries at
        any time, so a miss only says so much."""

    # The on-disk names, under osbuild's attribute names (its tests and
    # tools use them).
    _dirname_data = "data"
    _dirname_objects = "objects"
    _dirname_stage = "stage"
    _filename_cache_info = "cache.info"
    _filename_cache_lock = "cache.lock"
    _filename_cache_size = "cache.size"
    _filename_cache_tag = "CACHEDIR.TAG"
    _filename_object_info = "object.info"
    _filename_object_lock = "object.lock"
    _version_current = _native.VERSION
    _version_minimum = _native.VERSION

    _appid: str
    _path_cache: Any
    _active: bool
    _bootid: Optional[str]
    _info: FsCacheInfo

    def __init__(self, appid: str, path_cache: Any):
        """A cache for the application ``appid`` at ``path_cache`` (any
        path-like; created with its parents on ``__enter__``). No I/O."""
        self._appid = appid
        self._path_cache = os.fspath(path_cache)
        self._active = False
        self._bootid = None
        self._info = FsCacheInfo()
        self._native: Optional[_native.Cache] = None

    def __fspath__(self) -> Any:
        """The cache's path as given to the constructor."""
        return self._path_cache

    def _path(self, *rpaths: str) -> str:
        """A path in the cache: ``rpaths`` joined to the cache's path."""
        return os.path.join(self, *rpaths)

    def _is_active(self) -> bool:
        return self._active

    def _is_compatible(self) -> bool:
        return self._info.version == _native.VERSION

    def _handle(self) -> "_native.Cache":
        assert self._active and self._native is not None
        return self._native

    def __enter__(self) -> "FsCache":
        assert not self._active
        try:
            self._bootid = _native.app_boot_id(self._appid)
            self._native = _native.Cache.open(self._appid, self._path_cache, self.MissError)
            self._load_cache_info()
            self._active = True
            # The hot calls go straight to the native context managers
            # while the cache is entered: no Python frame between a `with`
            # and its system calls. (Not where a subclass overrides them.)
            for method in ("load", "store", "stage"):
                if getattr(type(self), method) is getattr(FsCache, method):
                    setattr(self, method, getattr(self._native, f"{method}_context"))
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, exc_type, exc_value, exc_tb) -> None:
        for method in ("load", "store", "stage"):
            self.__dict__.pop(method, None)
        if self._native is not None:
            self._native.close()
            self._native = None
        self._active = False
        self._bootid = None
        self._info = FsCacheInfo()

    def _read_cache_info(self) -> Any:
        import json

        with open(self._path("cache.info"), "r", encoding="utf8") as f:
            return json.load(f)

    def _load_cache_info(self, info: Optional[FsCacheInfo] = None) -> None:
        if info is None:
            info = FsCacheInfo.from_json(self._read_cache_info())
        self._info = info

    @property
    def info(self) -> FsCacheInfo:
        """The configuration as read on entering (or last set here)."""
        assert self._is_active()
        return self._info

    @info.setter
    def info(self, info: FsCacheInfo) -> None:
        """Update ``cache.info`` with the fields of ``info`` that are set,
        under its lock; every other value, known or not, is kept."""
        assert self._is_active()
        size = info.maximum_size
        if size is not None and not isinstance(size, int) and size != "unlimited":
            raise ValueError(
                f"maximum-size can only be set to 'unlimited' or an integer value, got {type(size)}"
            )
        if self._is_compatible():
            self._handle().set_info(
                maximum_size=size,
                creation_boot_id=info.creation_boot_id,
                version=info.version,
            )
        raw = self._read_cache_info()
        if isinstance(raw, dict):
            raw.update(info.to_json())
            info = FsCacheInfo.from_json(raw)
        self._load_cache_info(info)

    def stage(self) -> ContextManager[str]:
        """A private scratch directory (its path relative to the cache),
        removed completely when the context ends."""
        native = self._native
        if native is None:
            return _not_active()
        return native.stage_context()

    def store(self, name: str) -> ContextManager[str]:
        """Store an entry: yields the path (relative to the cache) of an
        empty private directory to fill; a clean exit commits it as
        ``name``, an exception discards it. A commit may still not keep
        the entry (too large, no space, the name taken): never rely on it
        being there afterwards. An empty name raises ``ValueError``."""
        native = self._native
        if native is None:
            return _not_active()
        # One native object is the whole context manager: no Python frame
        # runs on the way to the system calls.
        return native.store_context(name)

    def load(self, name: str) -> ContextManager[str]:
        """Load the entry ``name``: yields the path (relative to the cache)
        of its content, read-locked until the context ends. Raises
        ``FsCache.MissError`` when it is not there (also for a name no
        entry can have), ``ValueError`` for an empty name."""
        native = self._native
        if native is None:
            return _not_active()
        return native.load_context(name)

    def store_tree(self, name: str, tree: Any) -> None:
        """Store a copy of ``tree`` as ``name`` (committed at once, so it
        may vanish at any moment afterwards). A file is copied in; a
        directory is copied in as a whole, named as it is, unless its path
        ends in ``/.``, which copies its contents. Symlinks are copied,
        never followed; modes, times and hard links are kept."""
        cache = self._handle()
        if not name:
            raise ValueError()
        tree = os.fspath(tree)
        if not self._is_compatible():
            return
        try:
            cache.store_tree(name, tree, _copies_contents(tree))
        except OSError as e:
            raise RuntimeError(f"Cannot copy into file-system cache: {e}") from e

    def _last_used(self, name: str) -> float:
        """The last use of ``name`` (its lock file's atime, a Unix time);
        ``MissError`` if there is no such entry. Needs no context, as in
        osbuild."""
        try:
            return os.stat(self._path(self._dirname_objects, name, self._filename_object_lock)).st_atime
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ENOENT, errno.ENOTDIR):
                raise self.MissError() from None
            raise

    def _last_used_objs(self) -> List[FsCacheObjectInfo]:
        """Every entry with its last use, least recently used first (a
        snapshot: entries come and go meanwhile)."""
        objs = []
        for name in os.listdir(self._path(self._dirname_objects)):
            if name.startswith("uuid-"):
                continue
            try:
                objs.append(FsCacheObjectInfo(name=name, last_used=self._last_used(name)))
            except (OSError, self.MissError):
                continue
        return sorted(objs, key=lambda o: o.last_used)

    def _remove_lru(self, required_size: int) -> bool:
        """Evict least-recently-used entries until twice ``required_size``
        is freed (osbuild's margin), skipping the ones in use; whether more
        than ``required_size`` was freed. Books stay exact."""
        accounted, _on_disk, _entries = self._handle().usage()
        target = max(0, accounted - 2 * max(0, required_size))
        _removed, _skipped, freed, _accounted = self._handle().prune(target, None, False)
        return freed > required_size

    @staticmethod
    def _calculate_space(path_target: Any) -> int:
        """The space of a tree: ``st_blocks`` × 512 of the directory and of
        everything below it, links not followed (osbuild's measure)."""
        total = os.lstat(path_target).st_blocks * 512
        pending = [os.fspath(path_target)]
        while pending:
            with os.scandir(pending.pop()) as it:
                for entry in it:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
        return total

    # Beyond osbuild.

    def contains(self, name: str) -> bool:
        """Whether ``name`` is committed now (takes no lock, counts no use)."""
        return self._handle().contains(name)

    def verify(self, name: str) -> Verified:
        """Check ``name`` against the digest recorded at its commit (under
        its read lock; its last use is not changed)."""
        state, missing = self._handle().verify(name)
        return Verified(state, list(missing))

    def stats(self) -> Dict[str, Any]:
        """The cache's statistics, summed over every process that used it:
        hits, misses by reason, stores, evictions, ..."""
        return self._handle().stats()

    def prune(
        self,
        to: Optional[int] = None,
        unused_for: Optional[float] = None,
        dry_run: bool = False,
    ) -> PruneReport:
        """Remove least-recently-used entries down to ``to`` bytes and/or
        every entry unused for ``unused_for`` seconds (with neither: down
        to the maximum size), skipping entries someone holds."""
        removed, skipped, freed, accounted = self._handle().prune(to, unused_for, dry_run)
        return PruneReport(list(removed), list(skipped), freed, accounted)

    def entries(self) -> List[FsCacheEntry]:
        """The committed entries, sorted by name."""
        return [FsCacheEntry(*e) for e in self._handle().entries()]

    def remove(self, name: str) -> str:
        """Remove ``name`` unless someone holds it: ``"removed"``,
        ``"in-use"`` or ``"missing"``."""
        return self._handle().remove(name)

    def sweep(self) -> List[str]:
        """Remove the debris of crashed writers; returns what went."""
        removed, _freed = self._handle().sweep()
        return list(removed)

    def repair(self) -> bool:
        """Remove the debris of crashes and rebuild ``cache.size`` from the
        entries, if no other process (osbuild's included) has the cache
        open; ``False`` (nothing done) otherwise."""
        return self._handle().repair() is not None

    def usage(self) -> Dict[str, int]:
        """``accounted`` bytes (``cache.size``), ``on_disk`` bytes of the
        cache's own parts, and the number of ``entries``."""
        accounted, on_disk, entries = self._handle().usage()
        return {"accounted": accounted, "on_disk": on_disk, "entries": entries}

    @contextlib.contextmanager
    def load_or_build(self, name: str, build: Callable[[str], Any]) -> Iterator[str]:
        """Load ``name``, or build it: ``build(path)`` fills the absolute
        directory ``path``, once across every process that asks at the same
        time (the others wait and load it). Yields the content's path
        relative to the cache, held until the context ends. An exception of
        ``build`` propagates, and nothing is stored."""
        entry = self._handle().load_or_build(name, lambda p: build(os.fspath(p)))
        try:
            yield entry.rel
        finally:
            entry.release()

    def push(self, name: str, url: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """Push ``name`` to the remote at ``url`` (default:
        ``$FSCACHE_REMOTE``): what the push did, or ``None`` if the entry is
        not here. Keys come from ``$FSCACHE_REMOTE_SECRET_KEY`` and
        ``$FSCACHE_REMOTE_TRUSTED_KEYS``."""
        url = _remote_url(url)  # first: a build without remotes says so
        return self._handle().push(url, name)

    @contextlib.contextmanager
    def pull(self, name: str, url: Optional[str] = None) -> Iterator[str]:
        """Pull ``name`` from the remote into this cache and yield its path
        (relative to the cache), held until the context ends;
        ``MissError`` if the remote lacks it."""
        url = _remote_url(url)
        entry = self._handle().pull(url, name)
        if entry is None:
            raise self.MissError()
        try:
            yield entry.rel
        finally:
            entry.release()

    @contextlib.contextmanager
    def load_or_pull(self, name: str, url: Optional[str] = None) -> Iterator[str]:
        """Load ``name`` here, else pull it from the remote; ``MissError``
        if neither has it (or the remote fails: never worse than a miss)."""
        url = _remote_url(url)
        entry = self._handle().load_or_pull(url, name)
        if entry is None:
            raise self.MissError()
        try:
            yield entry.rel
        finally:
            entry.release()


@contextlib.contextmanager
def _not_active() -> Iterator[str]:
    # osbuild asserts an entered cache when the context is entered (its
    # methods are generators), not when the method is called.
    raise AssertionError("the cache is not entered: use `with cache:`")
    yield ""  # pylint: disable=unreachable


def _remote_url(url: Optional[str]) -> str:
    if not _native.HAS_REMOTE:
        raise Error("this build of fscache has no remote support (the `remote` feature)")
    url = url or os.environ.get("FSCACHE_REMOTE")
    if not url:
        raise ValueError("no remote URL given and $FSCACHE_REMOTE is not set")
    return url
