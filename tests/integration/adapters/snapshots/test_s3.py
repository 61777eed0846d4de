"""S3-only behaviour: metadata, cleanup when S3 itself fails, error mapping, configuration."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore
from sandbox_lifecycle.core.errors import ConfigError, ProviderError
from tests.support.fixtures.snapshots import PART_SIZE, SECRET, make_s3_store

pytestmark = pytest.mark.s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KEY = "snapshots/sbx-9/1.tar.zst"


class FailingClient:
    """The real client, except that one operation fails the way S3 reports errors."""

    def __init__(self, real: Any, op: str, code: str = "InternalError", message: str = "boom") -> None:
        self._real, self._op, self._code, self._message = real, op, code, message

    def __getattr__(self, name: str) -> Any:
        if name == self._op:

            def fail(**kwargs: Any) -> Any:
                raise ClientError({"Error": {"Code": self._code, "Message": self._message}}, name)

            return fail
        return getattr(self._real, name)


def with_failing(store: S3SnapshotStore, op: str, **kwargs: str) -> S3SnapshotStore:
    """A store on the same bucket whose client fails ``op``; it knows SECRET so it can scrub it."""
    client = cast("S3Client", FailingClient(store._client, op, **kwargs))
    return S3SnapshotStore(store.bucket, client=client, part_size=PART_SIZE, secret_key=SECRET)


class CountingClient:
    """The real client, counting calls per operation."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        return getattr(self._real, name)


def test_a_stream_larger_than_a_part_goes_up_in_parts(moto_endpoint: str) -> None:
    store = make_s3_store(moto_endpoint)
    counting = CountingClient(store._client)
    spy = S3SnapshotStore(store.bucket, client=cast("S3Client", counting), part_size=PART_SIZE)
    data = os.urandom(3 * PART_SIZE + 1)
    spy.put(KEY, io.BytesIO(data))
    assert counting.calls.get("upload_part") == 4
    assert counting.calls.get("put_object") is None
    with store.open(KEY) as f:
        assert f.read() == data


def pending_uploads(store: S3SnapshotStore) -> list[Any]:
    return list(store._client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


@pytest.mark.parametrize("size", [100, 3 * PART_SIZE])
def test_sha256_is_stored_as_metadata(moto_endpoint: str, size: int) -> None:
    store = make_s3_store(moto_endpoint)
    info = store.put(KEY, io.BytesIO(os.urandom(size)))
    head = store._client.head_object(Bucket=store.bucket, Key=KEY)
    assert head["Metadata"]["sha256"] == info.sha256
    assert head["ContentLength"] == size


@pytest.mark.parametrize("op", ["upload_part", "complete_multipart_upload"])
def test_s3_failure_mid_upload_aborts_it(moto_endpoint: str, op: str) -> None:
    store = make_s3_store(moto_endpoint)
    failing = with_failing(store, op)
    with pytest.raises(ProviderError, match="InternalError"):
        failing.put(KEY, io.BytesIO(os.urandom(3 * PART_SIZE)))
    assert store.stat(KEY) is None
    assert pending_uploads(store) == []


def test_failure_attaching_metadata_removes_the_object(moto_endpoint: str) -> None:
    store = make_s3_store(moto_endpoint)
    with pytest.raises(ProviderError):
        with_failing(store, "copy_object").put(KEY, io.BytesIO(os.urandom(2 * PART_SIZE)))
    assert store.stat(KEY) is None
    assert pending_uploads(store) == []


def test_missing_bucket_is_a_clear_permanent_error_without_the_secret(moto_endpoint: str) -> None:
    store = S3SnapshotStore(
        "no-such-bucket", endpoint_url=moto_endpoint, access_key="testing", secret_key=SECRET
    )
    with pytest.raises(ProviderError) as err:
        store.put(KEY, io.BytesIO(b"x"))
    assert "no-such-bucket" in str(err.value) and "S3_BUCKET" in str(err.value)
    assert err.value.retryable is False
    for text in (str(err.value), str(err.value.__cause__), repr(store)):
        assert SECRET not in text


def test_denied_names_the_settings_and_scrubs_an_echoed_secret(moto_endpoint: str) -> None:
    store = make_s3_store(moto_endpoint)
    failing = with_failing(store, "head_object", code="SignatureDoesNotMatch", message=f"bad {SECRET}")
    with pytest.raises(ProviderError, match="S3_SECRET_KEY") as err:
        failing.stat(KEY)
    assert err.value.retryable is False
    assert SECRET not in str(err.value)
    echoing = with_failing(store, "head_object", code="SlowDown", message=f"x {SECRET}")
    with pytest.raises(ProviderError) as err2:
        echoing.stat(KEY)
    assert SECRET not in str(err2.value) and "***" in str(err2.value)


def test_unreachable_endpoint_is_a_retryable_provider_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key=SECRET, region_name="us-east-1"
    ).client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    store = S3SnapshotStore("b", client=client, secret_key=SECRET)
    with pytest.raises(ProviderError) as err:
        store.stat(KEY)
    assert err.value.retryable is True
    assert SECRET not in str(err.value)


def test_ensure_bucket_is_idempotent(moto_endpoint: str) -> None:
    store = make_s3_store(moto_endpoint)
    store.ensure_bucket()
    store.put(KEY, io.BytesIO(b"x"))
    store.ensure_bucket()
    assert store.stat(KEY) == 1


def test_from_env_reads_the_documented_variables(moto_endpoint: str) -> None:
    env = {
        "S3_ENDPOINT": moto_endpoint,
        "S3_REGION": "eu-west-1",
        "S3_ACCESS_KEY": "testing",
        "S3_SECRET_KEY": SECRET,
        "S3_BUCKET": "from-env-bucket",
    }
    store = S3SnapshotStore.from_env(env)
    assert store.bucket == "from-env-bucket"
    assert store._client.meta.region_name == "eu-west-1"
    store.ensure_bucket()
    assert store.put(KEY, io.BytesIO(b"abc")).bytes == 3
    assert SECRET not in repr(store)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "S3_BUCKET"),
        ({"S3_BUCKET": ""}, "S3_BUCKET"),
        ({"S3_BUCKET": "b", "S3_ACCESS_KEY": "a"}, "S3_SECRET_KEY"),
        ({"S3_BUCKET": "b", "S3_SECRET_KEY": SECRET}, "S3_ACCESS_KEY"),
    ],
)
def test_from_env_refuses_incomplete_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        S3SnapshotStore.from_env(env)
    assert SECRET not in str(err.value)


# Starts a multipart upload of KEY to the moto server, sends a few parts, then blocks until killed.
KILLED_PUT = """
import sys, time
from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore


class Stalling:
    sent = 0
    def read(self, n=-1):
        if self.sent >= 4 * 65536:
            time.sleep(3600)
        self.sent += 65536
        return b"n" * 65536

endpoint, bucket, key = sys.argv[1:4]
store = S3SnapshotStore(bucket, endpoint_url=endpoint, region="us-east-1", access_key="testing",
                        secret_key="testing", part_size=65536)
store.put(key, Stalling())
"""


def uploads(store: S3SnapshotStore) -> list[str]:
    listed = store._client.list_multipart_uploads(Bucket=store.bucket)
    return sorted(u["Key"] for u in listed.get("Uploads", []))


def kill_mid_upload(endpoint: str, store: S3SnapshotStore, key: str) -> None:
    root = Path(__file__).resolve().parents[4]
    child = subprocess.Popen([sys.executable, "-c", KILLED_PUT, endpoint, store.bucket, key], cwd=root)
    try:
        deadline = time.monotonic() + 30
        while key not in uploads(store) or not store._client.list_parts(
            Bucket=store.bucket, Key=key, UploadId=_upload_id(store, key)
        ).get("Parts"):
            assert time.monotonic() < deadline, "child never started uploading"
            assert child.poll() is None, "child exited early"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def _upload_id(store: S3SnapshotStore, key: str) -> str:
    listed = store._client.list_multipart_uploads(Bucket=store.bucket, Prefix=key)
    return str(listed["Uploads"][0]["UploadId"])


def test_incomplete_uploads_of_a_killed_put_are_aborted_once_stale(moto_endpoint: str) -> None:
    store = make_s3_store(moto_endpoint)
    mine, theirs = "prod/snapshots/sbx-1/3.tar.zst", "staging/snapshots/sbx-1/3.tar.zst"
    kill_mid_upload(moto_endpoint, store, mine)
    kill_mid_upload(moto_endpoint, store, theirs)
    assert uploads(store) == [mine, theirs]

    # Started after the cutoff: it might be a put still running, so it stays. (The cutoff is taken from
    # what the server reports: moto stamps every upload with one fixed initiation time.)
    listed = store._client.list_multipart_uploads(Bucket=store.bucket, Prefix=mine)
    initiated = listed["Uploads"][0]["Initiated"]
    assert store.remove_stale_uploads(initiated - timedelta(seconds=1), "prod/") == []
    assert uploads(store) == [mine, theirs]

    removed = store.remove_stale_uploads(datetime.now(UTC) + timedelta(seconds=1), "prod/")

    assert len(removed) == 1 and removed[0].startswith(f"{mine} (multipart upload ")
    # Only under the prefix: another deployment's upload is its own to abort.
    assert uploads(store) == [theirs]
    assert list(store.keys("prod/")) == []
    assert store.remove_stale_uploads(datetime.now(UTC) + timedelta(seconds=1), "prod/") == []
