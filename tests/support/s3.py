"""A real S3-compatible server for a test: moto's server mode on a free port, with one bucket.

The service reaches it exactly as it reaches a cloud bucket (django-storages and boto3 over HTTP, presigned
URLs a plain HTTP client fetches); credentials come from the standard AWS chain (here the environment).
"""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from moto.server import ThreadedMotoServer

from tests.support.proxy import free_port

REGION = "eu-central-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-access-key", "AWS_SECRET_ACCESS_KEY": "testing-secret-key"}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The service's settings for this bucket (GDPR_EXPORT_STORAGE=s3), credentials included."""
        return {
            "GDPR_EXPORT_STORAGE": "s3",
            "GDPR_EXPORT_BUCKET": self.bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_S3_REGION_NAME": REGION,
            **CREDENTIALS,
        }

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1 with a bucket of its own, stop it afterwards.

    moto keeps its buckets per process, not per server: each server gets a fresh bucket name."""
    bucket = f"jia-gdpr-exports-{uuid.uuid4().hex[:12]}"
    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per S3 request in the test's output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = S3Server(endpoint_url=f"http://127.0.0.1:{port}", bucket=bucket)
        s3.client().create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield s3
    finally:
        server.stop()
