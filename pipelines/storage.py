"""Object storage behind one interface: a local folder per bucket role, or S3 buckets.

Keys are always ``/``-separated and relative to a role's bucket. Every key is validated before it
becomes a path, so a value from an event can never escape its bucket.
"""

from __future__ import annotations

import hashlib
import os
import re
import reprlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from pipelines.config import ROLES, LakeSettings
from pipelines.errors import ConfigError, NotFoundError, UnsupportedError

_KEY_PART = re.compile(r"^[A-Za-z0-9._=\-+@]+$")

#: object metadata naming when a landing object's events arrived (Unix seconds). A collector that
#: buffers before uploading sets it so arrival is when it received the batch, not when it
#: uploaded; without it arrival is the object's last-modified time.
ARRIVED_AT = "arrived-at"

#: the object tag naming the storage class a curated object's partition belongs in (lifecycle
#: rules transition by it); compaction writes ``STANDARD`` with every data file
TIER_TAG = "lake-tier"

#: the object tag saying where an object is in the flow, read by lifecycle rules: raw objects
#: whose day is compacted and published carry ``compacted`` (they expire), landing objects with
#: a ledger record carry ``landed`` (they expire after ``LAKE_LANDING_EXPIRE_DAYS``)
STATE_TAG, COMPACTED, LANDED = "lake-state", "compacted", "landed"

#: storage classes whose objects must be restored before anyone can read them (Athena skips them)
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key within the role's bucket, size, identity tag and mtime."""

    key: str
    size: int
    etag: str
    mtime: float
    #: the S3 storage class; the local folder has one class, STANDARD
    storage_class: str = "STANDARD"


#: a segment of a key someone else chose (a producer's landing object): anything printable
_FOREIGN_PART = re.compile(r"^[^\x00-\x1f\x7f]+$")


def write_key(key: str) -> str:
    """Validate a key to write: a plain key naming an object, not a prefix (``web/`` is what an
    empty name makes of ``f"web/{name}"``: an S3 folder marker, or a file named ``web``)."""
    if isinstance(key, str) and key.endswith("/"):
        raise ValueError(f"invalid object key {reprlib.repr(key)}: it names a prefix, not an object")
    return validate_key(key)


def read_key(role: str, key: str) -> str:
    """Validate a key to read: strict, except in ``landing``, whose names producers choose.

    S3 accepts any name, so a landing object may be called ``web/it's a batch.json``; refusing it
    would stop every landing pass at that object. Reading it is safe: such a name is only ever
    a request parameter or a file name in the landing folder, never part of a key the lake writes
    (those come from :func:`pipelines.layout.source_name` and digests). Traversal, empty segments
    and control characters stay refused.
    """
    return validate_key(key, foreign=role == "landing")


def validate_key(key: str, *, foreign: bool = False) -> str:
    """Return ``key`` if every segment is a plain name; raise ``ValueError`` otherwise.

    ``foreign`` admits any printable segment (see :func:`read_key`)."""
    # reprlib: a 100,000-character key still gives a one-line error a person can read
    if not isinstance(key, str) or not key or len(key) > 1024 or key.startswith("/") or "\x00" in key:
        raise ValueError(f"invalid object key {reprlib.repr(key)}")
    # a trailing "/" names a prefix (a version directory, a table location)
    for part in key.removesuffix("/").split("/"):
        if part in ("", ".", "..") or not (_FOREIGN_PART if foreign else _KEY_PART).fullmatch(part):
            raise ValueError(f"invalid object key {reprlib.repr(key)}: segment {reprlib.repr(part)}")
    return key


@runtime_checkable
class Storage(Protocol):
    """What the stages need from object storage."""

    def list(self, role: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix``, in key order."""

    def list_keys(self, role: str, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in key order (cheaper than :meth:`list`: no sizes or tags)."""

    def head(self, role: str, key: str) -> ObjectInfo | None:
        """The object's info, or None when it does not exist."""

    def get(self, role: str, key: str) -> bytes:
        """The whole object."""

    def open(self, role: str, key: str) -> BinaryIO:
        """A readable binary stream over the object (with a ``metadata`` dict where the backend
        has user metadata)."""

    def put(self, role: str, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Write an object atomically: readers see the old bytes or the new, never a part.

        ``metadata`` is user metadata; the embedded backend keeps only :data:`ARRIVED_AT`
        (as the file's mtime).
        """

    def put_file(self, role: str, key: str, path: Path, tags: Mapping[str, str] | None = None) -> ObjectInfo:
        """Upload a local file atomically (multipart where the backend has it)."""

    def delete(self, role: str, keys: Iterable[str]) -> int:
        """Delete objects; missing ones are ignored. Returns how many were deleted."""

    def uri(self, role: str, key: str) -> str:
        """An address DuckDB and pyarrow can read: a local path or ``s3://bucket/key``."""

    def abort_incomplete(self, role: str, prefix: str, older_than_seconds: float) -> int:
        """Remove uploads under ``prefix`` that a killed writer left unfinished (temporary files,
        multipart uploads) and that are older than the given age. Returns how many."""

    def fetch(self, role: str, keys: list[str], dest: Path) -> list[Path]:
        """Local files holding the objects, in key order (downloaded into ``dest`` if remote)."""

    def put_if_absent(self, role: str, key: str, data: bytes) -> ObjectInfo | None:
        """Create an object only if none exists (an atomic test-and-set); None when one does."""

    def delete_if(self, role: str, key: str, etag: str) -> bool:
        """Delete an object only if it still is the version ``etag``; False otherwise."""

    #: whether objects carry tags (and so storage classes and lifecycle rules that read them)
    has_tags: bool

    def get_tags(self, role: str, key: str) -> dict[str, str]:
        """The object's tags (S3 object tagging); the local folder has none."""

    def put_tags(self, role: str, key: str, tags: Mapping[str, str]) -> None:
        """Replace the object's tags; raises :class:`UnsupportedError` where there are none."""

    def restore(self, role: str, key: str, days: int, tier: str = "Standard") -> str:
        """Ask for a readable copy of an archived object for ``days``; returns its restore state."""

    def restore_state(self, role: str, key: str) -> str:
        """``readable`` (not archived), ``archived``, ``restoring`` or ``restored``."""

    @property
    def filesystem(self):
        """An fsspec filesystem DuckDB reads ``uri()`` addresses through, or None for local paths."""


class LocalStorage:
    """One folder per bucket role under the lake root; the embedded default."""

    has_tags = False  # no object tags, storage classes or lifecycle: tiering is a plan here

    def __init__(self, root: Path, bucket_names: dict[str, str] | None = None):
        self.root = Path(root)
        self._dirs = {role: self.root / (bucket_names or {}).get(role, role) for role in ROLES}
        self._etags: dict[tuple[str, int, int], str] = {}

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> LocalStorage:
        return cls(settings.root_path)

    def _dir(self, role: str) -> Path:
        try:
            return self._dirs[role]
        except KeyError:
            raise ValueError(f"unknown bucket role {role!r}") from None

    def _path(self, role: str, key: str) -> Path:
        return self._dir(role) / validate_key(key)

    def _read_path(self, role: str, key: str) -> Path:
        return self._dir(role) / read_key(role, key)

    def list(self, role: str, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._dir(role)
        return (self._info(base / k, k) for k in self.list_keys(role, prefix))

    def list_keys(self, role: str, prefix: str = "") -> Iterator[str]:
        base = self._dir(role)
        if prefix:
            validate_key(prefix)  # refused as on S3, not just an empty listing
        if not base.exists():
            return iter(())
        # Walk only the deepest folder the prefix names fully, then filter by the rest.
        head, _, _ = prefix.rpartition("/")
        start = base / head if head else base
        if not start.exists():
            return iter(())
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".tmp-")]
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue  # an upload in progress is not an object yet
                full = Path(dirpath) / name
                key = full.relative_to(base).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return iter(sorted(found))

    def _info(self, path: Path, key: str) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(key=key, size=st.st_size, etag=self._etag(path, st), mtime=st.st_mtime)

    def _etag(self, path: Path, st: os.stat_result) -> str:
        if not path.is_relative_to(self._dirs["landing"]):
            # Objects of the other roles are written once, by the pipeline: size and mtime
            # identify a version, without reading every file on every listing.
            return hashlib.blake2b(f"{st.st_size}:{st.st_mtime_ns}".encode(), digest_size=8).hexdigest()
        # Landing objects get a content digest, like S3's ETag of a single-part upload: the same
        # bytes delivered again keep their identity, so they are not landed twice. Cached per
        # (path, size, mtime) because the inbox sensor lists often and files rarely change.
        cache_key = (str(path), st.st_size, st.st_mtime_ns)
        tag = self._etags.get(cache_key)
        if tag is None:
            h = hashlib.blake2b(digest_size=16)
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            tag = h.hexdigest()
            if len(self._etags) > 200_000:
                self._etags.clear()
            self._etags[cache_key] = tag
        return tag

    def head(self, role: str, key: str) -> ObjectInfo | None:
        path = self._read_path(role, key)
        return self._info(path, key) if path.is_file() else None

    def get(self, role: str, key: str) -> bytes:
        try:
            return self._read_path(role, key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no object {role}/{key}") from None

    def open(self, role: str, key: str) -> BinaryIO:
        try:
            return self._read_path(role, key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"no object {role}/{key}") from None

    def put(self, role: str, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        path = self._dir(role) / write_key(key)
        # rename makes it atomic for readers and against a killed process; no fsync per small
        # object (it tripled landing time): the embedded backend does not promise durability
        # across power loss, S3 does
        tmp = _temp_beside(path, data)
        try:
            if metadata and ARRIVED_AT in metadata:
                when = float(metadata[ARRIVED_AT])
                os.utime(tmp, (when, when))  # mtime is the local arrival time, like LastModified
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._info(path, key)

    def put_file(self, role: str, key: str, path: Path, tags: Mapping[str, str] | None = None) -> ObjectInfo:
        # ``tags`` only matter to S3 lifecycle rules, which the local folder does not have
        dest = self._dir(role) / write_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)  # no fsync: see put()
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._info(dest, key)

    def delete(self, role: str, keys: Iterable[str]) -> int:
        n = 0
        paths = [self._path(role, key) for key in keys]  # all valid, or nothing deleted (as on S3)
        for path in paths:
            try:
                path.unlink()
                n += 1
            except FileNotFoundError:
                continue
            _prune_empty(path.parent, self._dir(role))
        return n

    def uri(self, role: str, key: str) -> str:
        return str(self._path(role, key)) + ("/" if key.endswith("/") else "")

    def abort_incomplete(self, role: str, prefix: str, older_than_seconds: float) -> int:
        head = prefix.rpartition("/")[0]
        start = self._dir(role) / validate_key(head) if head else self._dir(role)
        if not start.exists():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in list(start.rglob(".tmp-*")):  # listed first: pruning edits the tree
            # a killed put() leaves its temporary file; a live one is younger than the cutoff
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
                _prune_empty(path.parent, self._dir(role))
        return removed

    def fetch(self, role: str, keys: list[str], dest: Path) -> list[Path]:
        return [self._path(role, k) for k in keys]  # already local: nothing to copy

    def put_if_absent(self, role: str, key: str, data: bytes) -> ObjectInfo | None:
        path = self._dir(role) / write_key(key)
        tmp = _temp_beside(path, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: the local conditional PUT
        except FileExistsError:
            return None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return self._info(path, key)

    def delete_if(self, role: str, key: str, etag: str) -> bool:
        # Compare, then unlink: not atomic like S3's conditional DELETE, but only the publish
        # locks use it and the local catalog never needs them (SQLite does compare-and-set).
        info = self.head(role, key)
        if info is None or info.etag != etag:
            return False
        return self.delete(role, [key]) == 1

    def get_tags(self, role: str, key: str) -> dict[str, str]:
        if not self._read_path(role, key).is_file():  # a landing object may have a producer's name
            raise NotFoundError(f"no object {role}/{key}")
        return {}

    def put_tags(self, role: str, key: str, tags: Mapping[str, str]) -> None:
        raise UnsupportedError("the embedded backend has no object tags or storage classes: "
                               "tiering there is a plan (`lake tier --plan`)")

    def restore(self, role: str, key: str, days: int, tier: str = "Standard") -> str:
        return self.restore_state(role, key)  # a local file is never archived

    def restore_state(self, role: str, key: str) -> str:
        if not self._path(role, key).is_file():
            raise NotFoundError(f"no object {role}/{key}")
        return "readable"

    @property
    def filesystem(self):
        return None

    def local_dir(self, role: str) -> Path:
        """The folder that holds a role's objects (embedded backend only)."""
        return self._dir(role)


def _temp_beside(path: Path, data: bytes) -> str:
    """Write ``data`` to a temporary file in ``path``'s folder (listings skip ``.tmp-`` names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir():
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def open_storage(settings: LakeSettings) -> Storage:
    """Build the storage backend the settings name."""
    if settings.backend == "local":
        return LocalStorage.from_settings(settings)
    if settings.backend == "s3":
        try:
            from pipelines.s3 import S3Storage
        except ImportError as exc:  # pragma: no cover - arrives with the S3 backend
            raise ConfigError("the s3 backend is not available in this build") from exc
        return S3Storage.from_settings(settings)
    raise ConfigError(f"unknown backend {settings.backend!r}")
