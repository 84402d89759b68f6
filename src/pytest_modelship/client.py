"""``ModelshipClient``: the HTTP client of the ``modelship_client`` fixture and of the smoke cases."""

from __future__ import annotations

from typing import Any

import requests


class ModelshipClient(requests.Session):
    """A ``requests.Session`` bound to the container: relative URLs, a default timeout, ``predict()``."""

    def __init__(self, base_url: str, timeout: float = 30.0, predict_path: str = "/predict") -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.predict_path = predict_path
        self.trust_env = False  # local container: proxies from the environment would only get in the way

    def url(self, path: str) -> str:
        if "://" in path:
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        target = self.url(url.decode() if isinstance(url, bytes) else url)
        return super().request(method, target, *args, **kwargs)

    def predict(self, payload: Any, path: str | None = None, **kwargs: Any) -> Any:
        """POST ``payload`` as JSON to the predict path and return the decoded JSON answer."""
        r = self.post(path or self.predict_path, json=payload, **kwargs)
        if not r.ok:
            raise requests.HTTPError(f"POST {r.request.url} answered {r.status_code}: {r.text[:300]}", response=r)
        return r.json()
