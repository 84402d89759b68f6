"""Amazon S3 and S3-compatible stores (s3://BUCKET/PREFIX); needs the `s3` extra (boto3)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import AuthError, IntegrityError, ModelshipError, NotFoundError, TransientError, UsageError
from ..uri import ModelURI, redact
from .base import SHA256_KEY, ProgressFn, RemoteFile


class S3Source:
    """A bucket; credentials and endpoint come from boto3's usual chain (AWS_ENDPOINT_URL honoured)."""

    def __init__(self, uri: ModelURI, credential: Any = None):
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise UsageError("s3:// needs boto3: pip install 'modelship[s3]'") from None
        self.uri = uri
        self._bucket = uri.location
        self._botocore_exc = botocore.exceptions
        cfg = botocore.config.Config(
            retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=60
        )
        kwargs: dict[str, Any] = {"config": cfg}
        if os.environ.get("AWS_ENDPOINT_URL"):
            kwargs["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
        if isinstance(credential, dict):
            kwargs.update(credential)
        self._s3 = boto3.session.Session().client("s3", **kwargs)

    def _error(self, e: Exception, what: str) -> ModelshipError:
        exc = self._botocore_exc
        if isinstance(e, ModelshipError):
            return e
        if isinstance(e, exc.NoCredentialsError):
            return AuthError(
                f"{what}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
            )
        if isinstance(e, exc.ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return NotFoundError(f"bucket {self._bucket!r} not found; check the URI {self.uri.display}")
            if code in ("NoSuchKey", "404") or status == 404:
                return NotFoundError(f"{what}: not found in bucket {self._bucket!r}")
            if code == "PreconditionFailed" or status == 412:
                return IntegrityError(f"{what}: the object changed while it was being read (ETag); re-run")
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return AuthError(
                    f"{what}: access to bucket {self._bucket!r} denied ({code}); check the AWS credentials"
                )
            if status >= 500 or code in ("SlowDown", "RequestTimeout"):
                return TransientError(f"{what}: S3 answered {status} {code}")
            return ModelshipError(f"{what}: S3 answered {status} {code}")
        if isinstance(
            e,
            (
                exc.EndpointConnectionError,
                exc.ConnectionError,
                exc.ReadTimeoutError,
                exc.ResponseStreamingError,
                ConnectionError,
                TimeoutError,
            ),
        ):
            return TransientError(f"{what}: {e.__class__.__name__} talking to S3")
        return ModelshipError(f"{what}: {e.__class__.__name__}: {redact(str(e))}")

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix)
            objects = [o for page in pages for o in page.get("Contents", [])]
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"listing {self.uri.display}") from None
        # Listing carries no metadata: ask for it in parallel (the published sha256 lives there).
        with ThreadPoolExecutor(8) as pool:
            yield from pool.map(self._head, objects)

    def _head(self, obj: dict[str, Any]) -> RemoteFile:
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=obj["Key"])
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"stat {obj['Key']}") from None
        etag = head.get("ETag")
        md5 = etag.strip('"') if etag and "-" not in etag else None  # a multipart ETag is not an MD5
        meta = head.get("Metadata", {})
        return RemoteFile(
            obj["Key"], int(head["ContentLength"]), etag, md5, meta.get(SHA256_KEY), head.get("LastModified"), meta
        )

    def read(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        if length == 0:
            return
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": name, "Range": f"bytes={offset}-{offset + length - 1}"}
        if etag:
            kwargs["IfMatch"] = etag
        try:
            body = self._s3.get_object(**kwargs)["Body"]
            yield from body.iter_chunks(1024 * 1024)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"reading {name}") from None

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        from boto3.s3.transfer import TransferConfig

        meta = {SHA256_KEY: sha256}
        size = path.stat().st_size
        cfg = TransferConfig(multipart_threshold=64 * 1024 * 1024, max_concurrency=4)
        try:
            if size < cfg.multipart_threshold:  # one PUT, checked by S3 against Content-MD5
                with open(path, "rb") as f:
                    md5_b64 = base64.b64encode(md5).decode()
                    self._s3.put_object(Bucket=self._bucket, Key=name, Body=f, ContentMD5=md5_b64, Metadata=meta)
                if progress:
                    progress(size)
                return
            # Multipart: each part is checked by S3; the whole file by the sha256 in metadata on fetch.
            self._s3.upload_file(
                str(path), self._bucket, name, ExtraArgs={"Metadata": meta}, Config=cfg, Callback=progress
            )
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"uploading {name}") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self._bucket, Key=name, Body=data)
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"uploading {name}") from None

    def delete(self, names: list[str]) -> None:
        for i in range(0, len(names), 1000):
            try:
                self._s3.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": [{"Key": n} for n in names[i : i + 1000]]}
                )
            except Exception as e:  # noqa: BLE001
                raise self._error(e, "deleting objects") from None

    def close(self) -> None:
        self._s3.close()
