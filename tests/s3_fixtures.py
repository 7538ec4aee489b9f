"""A local S3-compatible server for the object storage tests.

The endpoint is moto's standalone server (`python -m moto.server`, moto's in-memory
implementation of the S3 REST API, served by Flask/Werkzeug): a real HTTP server the platform's
boto3 client talks to over loopback as it would to AWS S3 or MinIO. It is started once per
test session (once per xdist worker) on a free 127.0.0.1 port; each test gets a bucket of its
own, and `s3_storage` makes it the default media storage (MEDIA_STORAGE=s3).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen

    def client(self):
        """A client of its own, to look at the bucket as an operator would."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 1}),
        )


@dataclass
class S3Bucket:
    server: S3Server
    name: str

    @property
    def client(self):
        return self.server.client()

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every object under PREFIX, with its size."""
        found = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        for page in pages:
            found.update({entry["Key"]: entry["Size"] for entry in page.get("Contents", ())})
        return found

    def head(self, key: str) -> dict:
        return self.client.head_object(Bucket=self.name, Key=key)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", "/")
                connection.getresponse().read()  # any answer: it serves
                connection.close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        yield S3Server(endpoint, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def storage_options(server: S3Server, bucket: str, **overrides) -> dict:
    """The default storage as settings.py builds it for MEDIA_STORAGE=s3."""
    options = {
        "bucket_name": bucket,
        "endpoint_url": server.endpoint,
        "region_name": REGION,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "file_overwrite": True,
        "max_memory_size": 2 * 2**20,
    }
    options.update(overrides)
    return {"BACKEND": "emailplatform.object_storage.MailObjectStorage", "OPTIONS": options}


@pytest.fixture
def s3_bucket(s3_server) -> Iterator[S3Bucket]:
    bucket = S3Bucket(s3_server, f"mail-{uuid.uuid4().hex[:12]}")
    bucket.client.create_bucket(Bucket=bucket.name)
    yield bucket
    client = bucket.client
    try:
        for key in bucket.objects():
            client.delete_object(Bucket=bucket.name, Key=key)
        client.delete_bucket(Bucket=bucket.name)
    except client.exceptions.NoSuchBucket:
        pass


@pytest.fixture
def s3_storage(settings, s3_bucket) -> S3Bucket:
    """The default media storage is the test's bucket on the local S3 server."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_options(s3_bucket.server, s3_bucket.name),
    }
    return s3_bucket
