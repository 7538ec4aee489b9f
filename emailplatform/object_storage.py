"""The media storage on an S3-compatible object store, and what the platform needs of any
media storage beyond Django's `Storage`: ranged reads, confirmed writes, listing by age.

Raw segments, attachments, staged big messages and outbound uploads live in the default
storage: the local disk (MEDIA_ROOT) unless MEDIA_STORAGE=s3, when workers on several hosts
share one bucket. The durability rule is the same for both: an object is written and
confirmed (fsynced on disk; on S3, the upload returned and a HEAD sees it whole) before the
row that names it commits, and the storage sweeper removes what no row names.

Big objects go up in parts (S3 multipart upload above S3_MULTIPART_THRESHOLD_BYTES, a failed
upload aborted so no part lingers), and one message of a segment is read with a ranged GET,
never the whole segment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import Storage, default_storage
from django.utils import timezone
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

# Failures of the object store (unreachable, refused, throttled): the platform's
# infrastructure, never one message's fault.
OBJECT_STORE_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, Boto3Error)

READ_CHUNK_BYTES = 1024 * 1024

T = TypeVar("T")
R = TypeVar("R")


class ObjectNotConfirmed(OSError):
    """An upload returned, but the store does not hold the object whole."""


class MailObjectStorage(S3Storage):
    """django-storages' S3 storage with multipart settings of its own, ranged reads, and a
    flat listing (one request per 1,000 keys, with their ages) for the sweeper."""

    def get_default_settings(self) -> dict[str, Any]:
        return {
            **super().get_default_settings(),
            "multipart_threshold": 64 * 1024 * 1024,
            "multipart_chunksize": 16 * 1024 * 1024,
            "max_concurrency": 4,
        }

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if "transfer_config" not in settings:
            self.transfer_config = TransferConfig(
                multipart_threshold=self.multipart_threshold,
                multipart_chunksize=self.multipart_chunksize,
                max_concurrency=self.max_concurrency,
            )

    @property
    def client(self):
        return self.connection.meta.client

    def key(self, name: str) -> str:
        return self._normalize_name(clean_name(name))

    def read_range(
        self, name: str, offset: int, length: int | None, chunk_bytes: int
    ) -> Iterator[bytes]:
        if length == 0:
            return
        ranged = {}
        if offset or length is not None:  # a Range on an empty object is refused (416)
            end = "" if length is None else str(offset + length - 1)
            ranged["Range"] = f"bytes={offset}-{end}"
        try:
            answer = self.client.get_object(Bucket=self.bucket_name, Key=self.key(name), **ranged)
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise FileNotFoundError(f"no object {name}") from err
            raise
        body = answer["Body"]
        try:
            yield from body.iter_chunks(chunk_bytes)
        finally:
            body.close()

    def open_stream(self, name: str) -> tuple[BinaryIO, int]:
        """The object's body as a stream, and its size."""
        try:
            answer = self.client.get_object(Bucket=self.bucket_name, Key=self.key(name))
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise FileNotFoundError(f"no object {name}") from err
            raise
        return answer["Body"], answer["ContentLength"]

    def stored_size(self, name: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket_name, Key=self.key(name))
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return None
            raise
        return head["ContentLength"]

    def stale_uploads_abort(self, cutoff: datetime) -> int:
        aborted = 0
        prefix = self.location.strip("/")
        paginator = self.client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(Bucket=self.bucket_name, Prefix=f"{prefix}/" if prefix else "")
        for page in pages:
            for upload in page.get("Uploads", ()):
                if upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket_name, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    def walk(self, root: str) -> Iterator[tuple[str, datetime]]:
        """Every object under ROOT/ with its last modification, however deep."""
        prefix = self.key(root).rstrip("/") + "/"
        base = self.location.strip("/")
        strip = len(base) + 1 if base else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=prefix):
            for entry in page.get("Contents", ()):
                yield entry["Key"][strip:], entry["LastModified"]


_pool: dict[str, Any] = {"pid": None, "executor": None}
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """One pool per process, kept: each of its threads keeps its S3 session (django-storages
    makes one per thread, which costs more than a request). Made anew after a fork."""
    with _pool_lock:
        if _pool["pid"] != os.getpid():
            _pool.update(
                pid=os.getpid(),
                executor=ThreadPoolExecutor(workers, thread_name_prefix="object-store"),
            )
        return _pool["executor"]


def map_stored(
    fn: Callable[[T], R], items: list[T], *, storage: Storage | None = None
) -> list[R | BaseException]:
    """FN over ITEMS, each result or the exception it raised, in order: concurrently on an
    object store (a round trip each, S3_MAX_CONCURRENCY at a time), one by one on a disk."""
    storage = storage or default_storage
    if not isinstance(storage, MailObjectStorage) or len(items) < 2:
        return [_outcome(fn, item) for item in items]
    pool = _executor(max(1, storage.max_concurrency))
    return list(pool.map(lambda item: _outcome(fn, item), items))


def _outcome(fn: Callable[[T], R], item: T) -> R | BaseException:
    try:
        return fn(item)
    except Exception as exc:
        return exc


def stale_uploads_abort(storage: Storage, cutoff: datetime) -> int:
    """Abort the multipart uploads begun before CUTOFF and never completed (their process
    died mid-upload): their parts are stored, and billed, but no listing of objects shows
    them. 0 on a local disk."""
    if not isinstance(storage, MailObjectStorage):
        return 0
    return storage.stale_uploads_abort(cutoff)


def read_range(
    name: str,
    offset: int,
    length: int | None,
    *,
    storage: Storage | None = None,
    chunk_bytes: int = READ_CHUNK_BYTES,
) -> Iterator[bytes]:
    """LENGTH bytes (None: to the end) of the file NAME from OFFSET, piece by piece."""
    storage = storage or default_storage
    if isinstance(storage, MailObjectStorage):
        yield from storage.read_range(name, offset, length, chunk_bytes)
        return
    with storage.open(name, "rb") as handle:
        handle.seek(offset)
        left = length if length is not None else float("inf")
        while left > 0 and (block := handle.read(int(min(left, chunk_bytes)))):
            left -= len(block)
            yield block


def open_for_download(name: str, *, storage: Storage | None = None) -> tuple[BinaryIO, int]:
    """The file NAME opened for streaming to a client, and its size: from S3 straight from
    the response body (never spooled whole first)."""
    storage = storage or default_storage
    if isinstance(storage, MailObjectStorage):
        return storage.open_stream(name)
    return storage.open(name, "rb"), storage.size(name)


def save_confirmed(name: str, content: Any, *, storage: Storage | None = None) -> str:
    """Save CONTENT as NAME and return once it is durable: fsynced on a local disk; on S3,
    uploaded (in parts when big) and seen whole by a HEAD. Raises OSError otherwise."""
    storage = storage or default_storage
    expected = content.size
    name = storage.save(name, content)
    if isinstance(storage, MailObjectStorage):
        stored = storage.stored_size(name)
        if stored != expected:
            raise ObjectNotConfirmed(f"{name}: the store holds {stored} bytes of {expected}")
        return name
    try:
        path = storage.path(name)
    except NotImplementedError:  # another remote storage: durable once the upload returns
        return name
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return name


def files_older_than(storage: Storage, root: str, cutoff: datetime) -> Iterable[str]:
    """The files under ROOT/ last modified before CUTOFF."""
    if isinstance(storage, MailObjectStorage):
        for name, modified in storage.walk(root):
            if modified < cutoff:
                yield name
        return
    try:
        directories, files = storage.listdir(root)
    except FileNotFoundError:
        return
    for name in files:
        path = f"{root}/{name}"
        try:
            modified = storage.get_modified_time(path)
        except FileNotFoundError:  # removed meanwhile
            continue
        if timezone.is_naive(modified):
            modified = timezone.make_aware(modified)
        if modified < cutoff:
            yield path
    for directory in directories:
        yield from files_older_than(storage, f"{root}/{directory}", cutoff)


def stored_size(name: str, *, storage: Storage | None = None) -> int | None:
    """The size of the file NAME, None if there is none (one request on S3)."""
    storage = storage or default_storage
    if isinstance(storage, MailObjectStorage):
        return storage.stored_size(name)
    try:
        return storage.size(name)
    except FileNotFoundError:
        return None


def local_path(name: str, *, storage: Storage | None = None) -> str | None:
    """The file's path on this host's disk, or None on an object store."""
    storage = storage or default_storage
    try:
        return storage.path(name)
    except NotImplementedError:
        return None


def download_to(name: str, destination: str, *, storage: Storage | None = None) -> None:
    """Copy the file NAME to the local DESTINATION, streamed."""
    storage = storage or default_storage
    with open(destination, "wb") as target:
        for block in read_range(name, 0, None, storage=storage):
            target.write(block)
