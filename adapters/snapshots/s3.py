"""Snapshots in S3 or an S3-compatible store (MinIO, R2, moto), streamed through multipart uploads."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sandbox_lifecycle.adapters.composition.settings import S3Settings, Settings
from sandbox_lifecycle.adapters.snapshots.archive import HashingReader
from sandbox_lifecycle.core.errors import ConfigError, ProviderError, SnapshotNotFound
from sandbox_lifecycle.core.ports import SnapshotInfo

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["S3SnapshotStore"]

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB
# S3 limits: at most 10,000 parts per upload, and CopyObject (used to attach the sha256) up to 5 GiB.
_MAX_PARTS = 10_000
_MAX_COPY = 5 * 1024 * MiB
SHA256_META = "sha256"

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}


class S3SnapshotStore:
    """A SnapshotStore over one bucket.

    ``put`` holds at most one part in memory. ``part_size`` below S3's 5 MiB minimum only works
    against test servers configured for it.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        client: S3Client | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        if part_size < 1:
            raise ValueError("part_size must be positive")
        self.bucket = bucket
        self.part_size = part_size
        self._endpoint = endpoint_url
        # Kept only to scrub it from any message that might echo it back; never logged or shown.
        self._secret = secret_key
        self._client = client or _make_client(endpoint_url, region, access_key, secret_key)

    @classmethod
    def from_settings(cls, settings: S3Settings, *, part_size: int = DEFAULT_PART_SIZE) -> S3SnapshotStore:
        return cls(
            settings.bucket,
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            part_size=part_size,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, part_size: int = DEFAULT_PART_SIZE) -> S3SnapshotStore:
        """Build from S3_BUCKET, S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY (parsed by Settings)."""
        s3 = Settings.from_env(environ).s3
        if s3 is None:
            raise ConfigError(
                "S3_BUCKET is not set; set it to use S3 snapshots (or unset S3_* for local ones)"
            )
        return cls.from_settings(s3, part_size=part_size)

    def __repr__(self) -> str:
        return f"S3SnapshotStore(bucket={self.bucket!r}, endpoint={self._endpoint!r})"

    # --- SnapshotStore ----------------------------------------------------------------------------

    def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
        """Upload without holding more than one part; on any failure nothing is left under ``key``."""
        reader = HashingReader(stream)
        data = reader.read_exact(self.part_size)
        if len(data) < self.part_size:
            # Fits one request, and the sha256 is already known: one plain PUT with its metadata.
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, Metadata={SHA256_META: reader.sha256}
                )
            except (ClientError, BotoCoreError) as exc:
                self._raise("put", key, exc)
            return SnapshotInfo(key=key, sha256=reader.sha256, bytes=reader.bytes_read)

        etag = self._multipart(key, reader, data)
        self._attach_sha256(key, etag, reader)
        return SnapshotInfo(key=key, sha256=reader.sha256, bytes=reader.bytes_read)

    def open(self, key: str) -> BinaryIO:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except (ClientError, BotoCoreError) as exc:
            self._raise("get", key, exc)
        return io.BufferedReader(_Body(body, self, key), buffer_size=MiB)

    def stat(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def info(self, key: str) -> SnapshotInfo | None:
        """Size and the sha256 recorded in the object's metadata (None if it has none), without
        downloading it; None when the object is absent. Lets the reconciler complete a crashed suspend."""
        head = self._head(key)
        if head is None:
            return None
        return SnapshotInfo(
            key=key, sha256=head.get("Metadata", {}).get(SHA256_META), bytes=int(head["ContentLength"])
        )

    def delete(self, key: str) -> None:
        # S3 answers a delete of a missing key with success, which is the idempotence we want.
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            self._raise("delete", key, exc)

    def keys(self, prefix: str = "") -> Iterator[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"]
        except (ClientError, BotoCoreError) as exc:
            self._raise("list", prefix + "*", exc)

    def remove_stale_uploads(self, older_than: datetime, prefix: str = "") -> list[str]:
        """Abort the multipart uploads under ``prefix`` initiated before ``older_than``.

        A put killed mid-upload never reaches its own abort, and S3 keeps (and bills) the parts of an
        incomplete upload until it is aborted; a bucket lifecycle rule is the usual backstop, but it
        is not ours to rely on.
        """
        removed: list[str] = []
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] >= older_than:
                        continue
                    key, upload_id = upload["Key"], upload["UploadId"]
                    try:
                        self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    except ClientError as exc:
                        if _code(exc) != "NoSuchUpload":  # completed or aborted meanwhile
                            raise
                        continue
                    removed.append(f"{key} (multipart upload {upload_id})")
        except (ClientError, BotoCoreError) as exc:
            self._raise("abort stale uploads", prefix + "*", exc)
        return removed

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (first start against a fresh MinIO/moto)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND | _NO_BUCKET:
                self._raise("head bucket", "", exc)
        except BotoCoreError as exc:
            self._raise("head bucket", "", exc)
        region = self._client.meta.region_name
        try:
            if region and region != "us-east-1":
                self._client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self._client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            # Another process creating it first is the same outcome.
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                self._raise("create bucket", "", exc)
        except BotoCoreError as exc:
            self._raise("create bucket", "", exc)

    # --- internals --------------------------------------------------------------------------------

    def _multipart(self, key: str, reader: HashingReader, first: bytes) -> str:
        """Upload ``first`` and the rest of ``reader`` as parts; returns the object's ETag."""
        try:
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            self._raise("start upload", key, exc)
        try:
            parts: list[CompletedPartTypeDef] = []
            data = first
            while data:
                number = len(parts) + 1
                if number > _MAX_PARTS:
                    raise ProviderError(
                        f"snapshot {key!r} needs more than {_MAX_PARTS} parts of {self.part_size} bytes; "
                        "raise the part size"
                    )
                resp = self._client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
                # Drop the sent part before reading the next, so only one is ever held.
                data = b""
                data = reader.read_exact(self.part_size)
            done = self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            # Also on KeyboardInterrupt: uploaded parts are billed and invisible until aborted.
            self._abort(key, upload_id)
            if isinstance(exc, ClientError | BotoCoreError):
                self._raise("upload", key, exc)
            raise
        return done["ETag"]

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "could not abort multipart upload %s of s3://%s/%s (a bucket lifecycle rule for "
                "incomplete uploads will clean it up): %s",
                upload_id,
                self.bucket,
                key,
                self._scrub(str(exc)),
            )

    def _attach_sha256(self, key: str, etag: str, reader: HashingReader) -> None:
        """Store the sha256 as metadata, known only now that every part is sent.

        A multipart upload fixes metadata when it starts, so copy the object onto itself with it.
        The ETag condition stops us from labelling a concurrent writer's object with our digest.
        """
        if reader.bytes_read > _MAX_COPY:
            log.warning("snapshot %s is over 5 GiB; stored without sha256 metadata", key)
            return
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                CopySourceIfMatch=etag,
                Metadata={SHA256_META: reader.sha256},
                MetadataDirective="REPLACE",
            )
        except BaseException as exc:
            # put either returns a complete object or leaves nothing, so callers never see a half state.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.delete_object(Bucket=self.bucket, Key=key)
            if isinstance(exc, ClientError | BotoCoreError):
                self._raise("tag", key, exc)
            raise

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self._client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            self._raise("head", key, exc)
        except BotoCoreError as exc:
            self._raise("head", key, exc)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _raise(self, op: str, key: str, exc: Exception) -> NoReturn:
        where = f"s3://{self.bucket}/{key}"
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in _NOT_FOUND and key and op in ("get", "head"):
                raise SnapshotNotFound(key) from exc
            message = exc.response.get("Error", {}).get("Message", "")
            if code in _NO_BUCKET:
                err = ProviderError(f"S3 bucket {self.bucket!r} does not exist; create it or fix S3_BUCKET")
                err.retryable = False
            elif code in _DENIED:
                err = ProviderError(
                    f"S3 {op} of {where} was denied ({code}); check S3_ACCESS_KEY, S3_SECRET_KEY "
                    "and the bucket policy"
                )
                err.retryable = False
            else:
                err = ProviderError(f"S3 {op} of {where} failed: {code}: {self._scrub(message)}")
        else:
            err = ProviderError(f"S3 {op} of {where} failed: {self._scrub(str(exc))}")
        raise err from exc


class _Body(io.RawIOBase):
    """A get_object body whose transport errors surface as ProviderError, like every other call."""

    def __init__(self, body: Any, store: S3SnapshotStore, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
            self._store._raise("read", self._key, exc)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _make_client(
    endpoint_url: str | None, region: str | None, access_key: str | None, secret_key: str | None
) -> S3Client:
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=120,
    )
    if endpoint_url:
        # Custom endpoints (MinIO, moto, R2) rarely resolve bucket subdomains, and several reject the
        # CRC trailers boto3 adds by default since 1.36; ask for both only when the service requires it.
        config = config.merge(
            Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        )
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region or ("us-east-1" if endpoint_url else None),
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)
