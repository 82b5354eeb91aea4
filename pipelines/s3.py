"""The S3 backend: one bucket per role, every PUT encrypted, many small objects read concurrently.

Buckets are ``<LAKE_BUCKET_PREFIX>-<role>``. The client is botocore's, with ``standard`` retries
(exponential backoff with jitter; throttling, 5xx and connection errors retried) and a connection
pool sized for ``LAKE_S3_CONCURRENCY`` requests in flight. Works against AWS or any S3-compatible
endpoint named by ``LAKE_S3_ENDPOINT_URL`` (MinIO, LocalStack, the emulator).
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipelines.concurrency import bounded_map
from pipelines.config import ROLES, LakeSettings
from pipelines.errors import ConfigError, NotFoundError, TerminalError, TransientError
from pipelines.storage import ARCHIVE_CLASSES, ObjectInfo, read_key, validate_key, write_key

#: objects up to this size are read whole on open(): one GET, retried by botocore as a unit
_SMALL_OBJECT = 8 << 20
_TERMINAL_CODES = {"AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                   "AllAccessDisabled", "KMS.NotFoundException", "KMS.DisabledException",
                   "InvalidArgument", "InvalidRequest"}


def aws_session(settings: LakeSettings) -> boto3.Session:
    """A boto3 session for the configured profile and region (credentials from botocore's chain)."""
    try:
        return boto3.Session(profile_name=settings.aws_profile or None, region_name=settings.aws_region)
    except BotoCoreError as exc:  # an unknown profile
        raise ConfigError(f"LAKE_AWS_PROFILE: {exc}") from exc


def client_config(settings: LakeSettings, pool: int | None = None) -> Config:
    """botocore configuration: ``standard`` retries and a pool for the requests we run at once."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": settings.aws_max_attempts},
        max_pool_connections=pool or settings.s3_concurrency + 4,
        connect_timeout=10, read_timeout=60,
    )


def sqs_client(settings: LakeSettings) -> Any:
    """An SQS client built like the S3 one: region, profile and retries (``LAKE_SQS_ENDPOINT_URL``
    for an emulator; empty means AWS itself)."""
    return aws_session(settings).client("sqs", endpoint_url=settings.sqs_endpoint_url or None,
                                        config=client_config(settings, 4))


def aws_error(exc: Exception, what: str) -> Exception:
    """Our error for a botocore failure that survived its retries: terminal or transient."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        kind = TerminalError if code in _TERMINAL_CODES else TransientError
        return kind(f"{what}: {code or 'error'}: {message}".rstrip(": "))
    return TransientError(f"{what}: {exc}")


class S3Storage:
    """Buckets per role on S3 (or an S3-compatible endpoint)."""

    has_tags = True

    def __init__(self, settings: LakeSettings, session: boto3.Session | None = None):
        self.settings = settings
        self.buckets = {role: settings.bucket(role) for role in ROLES}
        self._session = session or aws_session(settings)
        self.client = self._session.client("s3", endpoint_url=settings.s3_endpoint_url or None,
                                           config=client_config(settings))
        self._transfer = TransferConfig(
            multipart_threshold=settings.s3_multipart_bytes, multipart_chunksize=settings.s3_multipart_bytes,
            max_concurrency=min(10, settings.s3_concurrency), use_threads=True)

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> S3Storage:
        return cls(settings)

    # -- helpers -------------------------------------------------------------------------------

    def _bucket(self, role: str) -> str:
        try:
            return self.buckets[role]
        except KeyError:
            raise ValueError(f"unknown bucket role {role!r}") from None

    @property
    def sse_args(self) -> dict[str, Any]:
        """The encryption arguments every PUT carries."""
        if self.settings.s3_sse == "aws:kms":
            args: dict[str, Any] = {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": True}
            if self.settings.s3_kms_key_id:
                args["SSEKMSKeyId"] = self.settings.s3_kms_key_id
            return args
        return {"ServerSideEncryption": "AES256"}

    def _call(self, what: str, fn, **kwargs):
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, what) from exc

    # -- the Storage protocol --------------------------------------------------------------------

    def list(self, role: str, prefix: str = "") -> Iterator[ObjectInfo]:
        bucket = self._bucket(role)
        if prefix:
            validate_key(prefix)  # the same rule as the local folder: no "..", no empty segments
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        try:
            for page in pages:
                for o in page.get("Contents", ()):
                    yield ObjectInfo(key=o["Key"], size=o["Size"], etag=o["ETag"].strip('"'),
                                     mtime=o["LastModified"].timestamp(),
                                     storage_class=o.get("StorageClass") or "STANDARD")
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"listing s3://{bucket}/{prefix}") from exc

    def list_keys(self, role: str, prefix: str = "") -> Iterator[str]:
        return (o.key for o in self.list(role, prefix))

    def _head(self, role: str, key: str) -> dict[str, Any] | None:
        bucket = self._bucket(role)
        try:
            return self.client.head_object(Bucket=bucket, Key=read_key(role, key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise aws_error(exc, f"head s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"head s3://{bucket}/{key}") from exc

    def head(self, role: str, key: str) -> ObjectInfo | None:
        r = self._head(role, key)
        if r is None:
            return None
        # HEAD names the class only when it is not STANDARD
        return ObjectInfo(key=key, size=r["ContentLength"], etag=r["ETag"].strip('"'),
                          mtime=r["LastModified"].timestamp(), storage_class=r.get("StorageClass") or "STANDARD")

    def _on_object(self, what: str, fn, role: str, key: str, **kwargs) -> dict[str, Any]:
        """One request about an existing object: a missing one is NotFoundError, the rest mapped."""
        bucket = self._bucket(role)
        try:
            return fn(Bucket=bucket, Key=read_key(role, key), **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise NotFoundError(f"no object s3://{bucket}/{key}") from None
            raise aws_error(exc, f"{what} s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"{what} s3://{bucket}/{key}") from exc

    def _get_object(self, role: str, key: str, **kwargs) -> dict[str, Any]:
        return self._on_object("get", self.client.get_object, role, key, **kwargs)

    def get(self, role: str, key: str) -> bytes:
        body = self._get_object(role, key)["Body"]
        try:
            return body.read()
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"reading s3://{self._bucket(role)}/{key}: {exc}") from exc
        finally:
            body.close()

    def open(self, role: str, key: str) -> BinaryIO:
        r = self._get_object(role, key)
        stream: Any
        try:
            if r["ContentLength"] <= _SMALL_OBJECT:
                # read at once: a connection dropped mid-object is then retried like any GET
                stream = io.BytesIO(r["Body"].read())
            else:
                # larger ones spool to a local temporary file: memory stays bounded, and readers
                # get a seekable file (landing peeks at the first bytes to detect gzip)
                stream = tempfile.TemporaryFile(prefix="lake-s3-")  # noqa: SIM115 - the caller closes it
                for chunk in r["Body"].iter_chunks(1 << 20):
                    stream.write(chunk)
                stream.seek(0)
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"reading s3://{self._bucket(role)}/{key}: {exc}") from exc
        finally:
            r["Body"].close()
        stream.metadata = r.get("Metadata") or {}
        return stream

    def put(self, role: str, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        bucket = self._bucket(role)
        extra = {"Metadata": dict(metadata)} if metadata else {}
        r = self._call(f"put s3://{bucket}/{key}", self.client.put_object,
                       Bucket=bucket, Key=write_key(key), Body=data, **self.sse_args, **extra)
        return ObjectInfo(key=key, size=len(data), etag=r["ETag"].strip('"'), mtime=time.time())

    def put_file(self, role: str, key: str, path: Path, tags: Mapping[str, str] | None = None) -> ObjectInfo:
        bucket = self._bucket(role)
        write_key(key)
        size = Path(path).stat().st_size
        # tagged in the same request (x-amz-tagging), multipart included: no PutObjectTagging later
        extra = {**self.sse_args, **({"Tagging": urlencode(sorted(tags.items()))} if tags else {})}
        if size < self.settings.s3_multipart_bytes:
            with open(path, "rb") as fh:
                r = self._call(f"put s3://{bucket}/{key}", self.client.put_object,
                               Bucket=bucket, Key=key, Body=fh, **extra)
            return ObjectInfo(key=key, size=size, etag=r["ETag"].strip('"'), mtime=time.time())
        # multipart: parts uploaded concurrently; the object appears only on CompleteMultipartUpload,
        # and a killed upload leaves parts that abort_incomplete (and a lifecycle rule) remove
        self._call(f"upload s3://{bucket}/{key}", self.client.upload_file, Filename=str(path), Bucket=bucket,
                   Key=key, ExtraArgs=extra, Config=self._transfer)
        info = self.head(role, key)
        if info is None:
            raise TransientError(f"s3://{bucket}/{key} is missing right after its upload")
        return info

    def delete(self, role: str, keys: Iterable[str]) -> int:
        bucket = self._bucket(role)
        batch: list[str] = []
        deleted = 0
        for key in keys:
            batch.append(validate_key(key))
            if len(batch) == 1000:  # the DeleteObjects maximum
                deleted += self._delete_batch(bucket, batch)
                batch = []
        if batch:
            deleted += self._delete_batch(bucket, batch)
        return deleted

    def _delete_batch(self, bucket: str, keys: list[str]) -> int:
        r = self._call(f"delete from s3://{bucket}", self.client.delete_objects, Bucket=bucket,
                       Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = r.get("Errors") or []
        if errors:
            first = errors[0]
            raise TransientError(f"delete from s3://{bucket}: {len(errors)} of {len(keys)} keys failed, "
                                 f"first {first.get('Key')}: {first.get('Code')} {first.get('Message')}")
        return len(keys)

    def uri(self, role: str, key: str) -> str:
        return f"s3://{self._bucket(role)}/{validate_key(key) if key else ''}"

    def abort_incomplete(self, role: str, prefix: str, older_than_seconds: float) -> int:
        bucket = self._bucket(role)
        cutoff = time.time() - older_than_seconds
        aborted = 0
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
                for u in page.get("Uploads", ()):
                    if u["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
                        aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"aborting uploads under s3://{bucket}/{prefix}") from exc
        return aborted

    def fetch(self, role: str, keys: list[str], dest: Path) -> list[Path]:
        """Download objects into ``dest``, ``LAKE_S3_CONCURRENCY`` GETs in flight; paths in key order.

        Many small objects are bound by request latency, not bandwidth: tens of requests in flight
        turn a day of 20,000 objects from minutes into seconds. Each object streams to its own
        file, so memory holds one chunk per request, not the day.
        """
        dest.mkdir(parents=True, exist_ok=True)
        paths = [dest / f"{n:07d}-{Path(k).name}" for n, k in enumerate(keys)]

        def one(item: tuple[str, Path]) -> None:
            key, path = item
            body = self._get_object(role, key)["Body"]
            try:
                with path.open("wb") as fh:
                    for chunk in body.iter_chunks(1 << 20):
                        fh.write(chunk)
            except (BotoCoreError, OSError) as exc:
                raise TransientError(f"reading s3://{self._bucket(role)}/{key}: {exc}") from exc
            finally:
                body.close()

        for _ in bounded_map(one, zip(keys, paths, strict=True), min(self.settings.s3_concurrency, len(keys) or 1),
                             name="lake-s3-get"):
            pass
        return paths

    def put_if_absent(self, role: str, key: str, data: bytes) -> ObjectInfo | None:
        """Create an object only if none exists (``If-None-Match: *``); None when one does."""
        bucket = self._bucket(role)
        try:
            r = self.client.put_object(Bucket=bucket, Key=write_key(key), Body=data, IfNoneMatch="*",
                                       **self.sse_args)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise aws_error(exc, f"conditional put s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"conditional put s3://{bucket}/{key}") from exc
        return ObjectInfo(key=key, size=len(data), etag=r["ETag"].strip('"'), mtime=time.time())

    def delete_if(self, role: str, key: str, etag: str) -> bool:
        """Delete an object only if it still is the version ``etag`` (``If-Match`` on DELETE)."""
        bucket = self._bucket(role)
        try:
            self.client.delete_object(Bucket=bucket, Key=validate_key(key), IfMatch=f'"{etag}"')
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "404",
                                                              "ConditionalRequestConflict"):
                return False
            raise aws_error(exc, f"conditional delete s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"conditional delete s3://{bucket}/{key}") from exc
        return True

    def get_tags(self, role: str, key: str) -> dict[str, str]:
        r = self._on_object("get tags of", self.client.get_object_tagging, role, key)
        return {t["Key"]: t["Value"] for t in r.get("TagSet", ())}

    def put_tags(self, role: str, key: str, tags: Mapping[str, str]) -> None:
        bucket = self._bucket(role)
        # read_key: tagging names an existing object, and landing objects have producers' names
        self._call(f"tag s3://{bucket}/{key}", self.client.put_object_tagging, Bucket=bucket,
                   Key=read_key(role, key), Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})

    def restore(self, role: str, key: str, days: int, tier: str = "Standard") -> str:
        state = self.restore_state(role, key)
        if state != "archived":
            return state  # readable already, or a restore is on its way: asking again is an error
        bucket = self._bucket(role)
        try:
            self.client.restore_object(Bucket=bucket, Key=key, RestoreRequest={
                "Days": days, "GlacierJobParameters": {"Tier": tier}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "RestoreAlreadyInProgress":
                raise aws_error(exc, f"restore s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"restore s3://{bucket}/{key}") from exc
        return self.restore_state(role, key)

    def restore_state(self, role: str, key: str) -> str:
        r = self._head(role, key)
        if r is None:
            raise NotFoundError(f"no object s3://{self._bucket(role)}/{key}")
        if r.get("StorageClass") not in ARCHIVE_CLASSES:
            return "readable"
        restore = r.get("Restore")  # 'ongoing-request="true"' or 'ongoing-request="false", expiry-date=...'
        if not restore:
            return "archived"
        return "restoring" if 'ongoing-request="true"' in restore else "restored"

    @cached_property
    def filesystem(self):
        """An fsspec (s3fs) filesystem over the same endpoint and credentials, for DuckDB."""
        import s3fs

        # s3fs resolves credentials through the same botocore chain (env, profile, SSO, instance
        # role) and refreshes them itself, which frozen keys handed over here would not
        return s3fs.S3FileSystem(
            profile=self.settings.aws_profile or None,
            endpoint_url=self.settings.s3_endpoint_url or None,
            client_kwargs={"region_name": self.settings.aws_region},
            config_kwargs={"retries": {"mode": "standard", "total_max_attempts": self.settings.aws_max_attempts}},
            s3_additional_kwargs=dict(self.sse_args), skip_instance_cache=True)

    def ensure_buckets(self) -> list[str]:
        """Create the role buckets that do not exist yet; returns the ones created."""
        created = []
        for bucket in self.buckets.values():
            try:
                self.client.head_bucket(Bucket=bucket)
                continue
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                    raise aws_error(exc, f"checking bucket {bucket}") from exc
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if self.settings.aws_region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.aws_region}
            self._call(f"creating bucket {bucket}", self.client.create_bucket, **kwargs)
            created.append(bucket)
        return created
