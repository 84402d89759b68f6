"""Amazon S3 and S3-compatible stores (s3://BUCKET/PREFIX); needs the `s3` extra (boto3)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import errors
from .._workers import collect
from ..uri import ModelURI, redact
from .base import (
    CONNECT_TIMEOUT,
    MAX_CONNECTIONS,
    SHA256_KEY,
    ProgressFn,
    RemoteFile,
    read_timeout,
    sdk_retries,
    timed_out,
)


class S3Source:
    """A bucket; credentials and endpoint come from boto3's usual chain (AWS_ENDPOINT_URL honoured)."""

    def __init__(self, uri: ModelURI, credential: Any = None):
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
            import botocore.handlers
            import botocore.parsers
        except ImportError:
            raise errors.UsageError("s3:// needs boto3: pip install 'modelship[s3]'") from None
        self.uri = uri
        self._bucket = uri.location
        self._botocore_exc = botocore.exceptions
        self._parser_error = botocore.parsers.ResponseParserError
        cfg = botocore.config.Config(
            retries={"max_attempts": sdk_retries(), "mode": "standard"},  # retries, not counting the first
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=read_timeout(),
            max_pool_connections=MAX_CONNECTIONS,  # as many as fetch reads over at once (botocore keeps 10)
        )
        kwargs: dict[str, Any] = {"config": cfg}
        if os.environ.get("AWS_ENDPOINT_URL"):
            kwargs["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
        if isinstance(credential, dict):
            kwargs.update(credential)
        self._s3 = boto3.session.Session().client("s3", **kwargs)
        # No "Expect: 100-continue" on uploads: botocore spins forever at 100% CPU when the connection closes
        # right after an interim "100 Continue" line (awsrequest._consume_headers loops on EOF). Found by the
        # publish fault tests; the cost is sending a body the store might have refused up front.
        self._s3.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)

    def _error(self, e: Exception, what: str, idempotent: bool = False) -> errors.ModelshipError:
        """Map a botocore error to one line; ``idempotent``: the call can be made again as it is (list, head,
        read, delete), so a garbled answer is worth a retry."""
        exc = self._botocore_exc
        if isinstance(e, errors.ModelshipError):
            return e
        if isinstance(e, exc.NoCredentialsError):
            return errors.AuthError(
                f"{what}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
            )
        if isinstance(e, exc.ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                where = f"bucket {self._bucket!r}"
                return errors.ContainerNotFoundError(where, f"{where} not found; check the URI {self.uri.display}")
            if code in ("NoSuchKey", "404") or status == 404:
                return errors.NotFoundError(f"{what}: not found in bucket {self._bucket!r}")
            if code == "PreconditionFailed" or status == 412:
                return errors.IntegrityError(
                    f"{what}: the object changed while it was being read (ETag); re-run",
                    kind=errors.IntegrityError.CHANGED,
                )
            if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return errors.AuthError(
                    f"{what}: access to bucket {self._bucket!r} denied ({code}); check the AWS credentials"
                )
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "BadDigest"):  # BadDigest: damaged upload
                return errors.TransientError(f"{what}: S3 answered {status} {code}", reason=f"HTTP {status}")
            return errors.ModelshipError(f"{what}: S3 answered {status} {code}")
        if isinstance(e, (exc.FlexibleChecksumError, exc.ChecksumError)):
            # The response's own checksum caught bytes damaged on the way: fetch that part again.
            return errors.ChecksumError(
                f"{what}: the response failed its checksum (damaged in transit or in the store)"
            )
        if timed_out(e):
            return errors.StallError(what, f"S3 at {self._s3.meta.endpoint_url}")
        if isinstance(
            e,
            (
                exc.EndpointConnectionError,
                exc.ConnectionError,
                exc.HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError, ...
                exc.IncompleteReadError,  # the body ended before its Content-Length
                ConnectionError,
                TimeoutError,
            ),
        ):
            return errors.TransientError(f"{what}: {e.__class__.__name__} talking to S3")
        if idempotent and isinstance(e, (KeyError, ValueError, TypeError, AttributeError, self._parser_error)):
            # An answer cut off or damaged so that it does not parse (http.client even takes a head cut off
            # mid-way as complete): the exchange failed, not the request.
            return errors.TransientError(
                f"{what}: S3's answer was garbled ({e.__class__.__name__})", reason="garbled answer"
            )
        return errors.ModelshipError(f"{what}: {e.__class__.__name__}: {redact(str(e))}")

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        try:
            objects = []
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
                if "KeyCount" not in page and "IsTruncated" not in page:
                    # An empty or cut-off answer parses as "no objects": it must not read as an empty prefix.
                    raise errors.TransientError(
                        f"listing {self.uri.display}: S3's answer was cut off", reason="garbled answer"
                    )
                objects += page.get("Contents", [])
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"listing {self.uri.display}", idempotent=True) from None
        # Listing carries no metadata: ask for it in parallel (the published sha256 lives there).
        yield from collect(self._head, objects, 8, name="modelship-s3-head")

    def _head(self, obj: dict[str, Any]) -> RemoteFile:
        what = f"stat {obj['Key']}"
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=obj["Key"])
            size = int(head["ContentLength"])
        except Exception as e:  # noqa: BLE001
            raise self._error(e, what, idempotent=True) from None
        etag = head.get("ETag")
        # Two answers must agree: a head cut off inside Content-Length or ETag would otherwise give a wrong size
        # (a silently truncated download of a file published without sha256) or a wrong MD5.
        if size != int(obj.get("Size", size)) or (etag and not (len(etag) >= 2 and etag[0] == etag[-1] == '"')):
            raise errors.TransientError(
                f"{what}: S3's answer disagrees with its listing (cut off, or the object changed)",
                reason="garbled answer",
            )
        md5 = etag.strip('"') if etag and "-" not in etag else None  # a multipart ETag is not an MD5
        meta = head.get("Metadata", {})
        return RemoteFile(obj["Key"], size, etag, md5, meta.get(SHA256_KEY), head.get("LastModified"), meta)

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
            raise self._error(e, f"reading {name}", idempotent=True) from None

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        from boto3.s3.transfer import TransferConfig

        meta = {SHA256_KEY: sha256}
        size = path.stat().st_size
        cfg = TransferConfig(multipart_threshold=64 * 1024 * 1024, max_concurrency=4)
        try:
            if size < cfg.multipart_threshold:  # one PUT, checked by S3 against Content-MD5
                with open(path, "rb") as f:
                    self._put_checked(name, f, md5, meta)
                if progress:
                    progress(size)
                return
            # Multipart: each part is checked by S3; the whole file by the sha256 in metadata on fetch.
            self._s3.upload_file(
                str(path), self._bucket, name, ExtraArgs={"Metadata": meta}, Config=cfg, Callback=progress
            )
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"uploading {name}") from None

    def _put_checked(
        self, name: str, body: Any, md5: bytes, meta: dict[str, str] | None = None, **condition: str
    ) -> None:
        """One PUT with Content-MD5, then the ETag compared with it.

        A single PUT's ETag is the MD5 of what the store received (unless it encrypts with KMS or a customer
        key): this catches a damaged upload on S3-compatible stores that skip the Content-MD5 check.
        """
        md5_b64 = base64.b64encode(md5).decode()
        resp = self._s3.put_object(
            Bucket=self._bucket, Key=name, Body=body, ContentMD5=md5_b64, Metadata=meta or {}, **condition
        )
        etag = str(resp.get("ETag", "")).strip('"')
        sse = resp.get("ServerSideEncryption", "")
        encrypted = resp.get("SSECustomerAlgorithm") or sse not in ("", "AES256")
        if etag and "-" not in etag and not encrypted and etag != md5.hex():
            damaged = errors.TransientError(f"uploading {name}: the store got other bytes than were sent (ETag != MD5)")
            damaged.etag = etag  # type: ignore[attr-defined]  # what the store now holds: our own damaged write
            raise damaged

    def write_bytes(self, name: str, data: bytes) -> None:
        try:
            self._put_checked(name, data, hashlib.md5(data).digest())  # noqa: S324 - a transport checksum
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"uploading {name}") from None

    def create_bytes(self, name: str, data: bytes, *, replacing: str | None = None) -> bool:
        """Write a small object only if it does not exist (a conditional PUT, If-None-Match: *), or with
        ``replacing``, only if it is still the object of that ETag (If-Match); False when another writer got
        there first. A store that ignores the condition (older S3-compatible ones) writes as write_bytes does."""
        condition = {"IfMatch": replacing} if replacing is not None else {"IfNoneMatch": "*"}
        try:
            for attempt in range(sdk_retries() + 1):
                try:
                    self._put_checked(name, data, hashlib.md5(data).digest(), **condition)  # noqa: S324 - checksum
                    break
                except errors.TransientError as e:
                    if not getattr(e, "etag", None) or attempt == sdk_retries():
                        raise
                    # The store kept our damaged bytes (it skips the Content-MD5 check): a retry of the conditional
                    # create would find them and take them for another writer's. Replace exactly that object
                    # (retries like the SDK's own: none with MODELSHIP_MAX_ATTEMPTS=1).
                    condition = {"IfMatch": e.etag}  # type: ignore[attr-defined]
        except self._botocore_exc.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise self._error(e, f"uploading {name}") from None
        except Exception as e:  # noqa: BLE001
            raise self._error(e, f"uploading {name}") from None
        return True

    def delete(self, names: list[str]) -> None:
        for i in range(0, len(names), 1000):
            try:
                self._s3.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": [{"Key": n} for n in names[i : i + 1000]]}
                )
            except Exception as e:  # noqa: BLE001
                raise self._error(e, "deleting objects", idempotent=True) from None

    def close(self) -> None:
        self._s3.close()
