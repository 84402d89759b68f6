"""A single model file over https:// (or http:// on loopback), with ranged, ETag-pinned reads."""

from __future__ import annotations

import datetime as _dt
import email.utils
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from ..errors import AuthError, IntegrityError, ModelshipError, NotFoundError, StallError, TransientError
from ..uri import ModelURI
from .base import CONNECT_TIMEOUT, MAX_CONNECTIONS, ProgressFn, RemoteFile, read_timeout, timed_out


def _http_date(resp: requests.Response) -> _dt.datetime | None:
    try:
        return email.utils.parsedate_to_datetime(resp.headers["Last-Modified"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # absent or unparsable: only used to order non-PEP-440 versions


class HttpSource:
    """One file at a URL; its "version" is unversioned, its name the URL's last path segment."""

    def __init__(self, uri: ModelURI, credential: Any = None):
        self.uri = uri
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=MAX_CONNECTIONS)  # requests keeps 10
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if credential:
            self._session.headers["Authorization"] = f"Bearer {credential}"
        self._url = uri.raw.split("#", 1)[0]
        self._size: int | None = None  # from the last HEAD: every ranged answer must agree
        self._server = f"the server {urlsplit(uri.display).netloc}"  # display: no password

    def _check(self, resp: requests.Response, what: str) -> None:
        if resp.status_code in (401, 403):
            raise AuthError(f"{what}: {resp.status_code} from {self.uri.display}; check the URL's credentials")
        if resp.status_code == 404:
            raise NotFoundError(f"{what}: {self.uri.display} not found (404)")
        if resp.status_code == 412:
            raise IntegrityError(
                f"{what}: {self.uri.display} changed while it was being read (ETag); re-run",
                kind=IntegrityError.CHANGED,
            )
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientError(
                f"{what}: {self.uri.display} answered {resp.status_code}", reason=f"HTTP {resp.status_code}"
            )
        if resp.status_code >= 400:
            raise ModelshipError(f"{what}: {self.uri.display} answered {resp.status_code}")

    def list(self, prefix: str) -> Iterator[RemoteFile]:
        try:
            resp = self._session.head(self._url, allow_redirects=True, timeout=(CONNECT_TIMEOUT, read_timeout()))
        except requests.RequestException as e:
            if timed_out(e):
                raise StallError(f"HEAD {self.uri.display}", self._server) from None
            raise TransientError(f"HEAD {self.uri.display}: {e.__class__.__name__}") from None
        self._check(resp, "HEAD")
        # http.client takes a head cut off mid-way as complete: a missing or partial header must not become a
        # wrong size or ETag. Such answers are retried (and a server that never sends a size fails after that).
        size, etag = resp.headers.get("Content-Length", ""), resp.headers.get("ETag")
        if not size.isdigit():
            raise TransientError(
                f"HEAD {self.uri.display}: no Content-Length in the answer (cut off?); modelship needs the size",
                reason="garbled answer",
            )
        if etag and not re.fullmatch(r'(W/)?"[^"]*"', etag):
            raise TransientError(
                f"HEAD {self.uri.display}: malformed ETag in the answer (cut off?)", reason="garbled answer"
            )
        self._size = int(size)
        yield RemoteFile(name=self.uri.prefix, size=self._size, etag=etag, last_modified=_http_date(resp))

    def read(self, name: str, offset: int, length: int, etag: str | None) -> Iterator[bytes]:
        if length == 0:
            return
        headers = {"Range": f"bytes={offset}-{offset + length - 1}", "Accept-Encoding": "identity"}
        if etag:
            headers["If-Match"] = etag
        try:
            with self._session.get(
                self._url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT, read_timeout())
            ) as resp:
                self._check(resp, "GET")
                total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                if self._size is not None and total.isdigit() and int(total) != self._size:
                    raise IntegrityError(
                        f"GET: {self.uri.display} changed while it was being read (now {total} bytes); re-run",
                        kind=IntegrityError.CHANGED,
                    )
                skip = offset if resp.status_code == 200 else 0  # server ignored Range: skip to our part
                left = length
                for data in resp.iter_content(1024 * 1024):
                    if skip:
                        cut = min(skip, len(data))
                        data, skip = data[cut:], skip - cut
                    if not data:
                        continue
                    data = data[:left]
                    left -= len(data)
                    yield data
                    if left == 0:
                        return
        except requests.RequestException as e:
            if timed_out(e):
                raise StallError(f"GET {self.uri.display}", self._server) from None
            raise TransientError(f"GET {self.uri.display}: {e.__class__.__name__}") from None

    def write(self, name: str, path: Path, *, sha256: str, md5: bytes, progress: ProgressFn | None = None) -> None:
        raise ModelshipError(f"cannot publish to {self.uri.display}: https:// model stores are read-only")

    def write_bytes(self, name: str, data: bytes) -> None:
        self.write(name, Path(), sha256="", md5=b"")

    def delete(self, names: list[str]) -> None:
        self.write("", Path(), sha256="", md5=b"")

    def close(self) -> None:
        self._session.close()
