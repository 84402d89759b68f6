"""Recorded traffic -> a probes file for the gate (``modelship probes record``).

Two kinds of capture, one per line, told apart line by line:

- JSON lines, one request object each: ``method``, ``path`` (or ``url``/``uri``: only its path and query are
  kept), ``headers``, and the body as ``json`` (any value) or ``body`` (a string; parsed when it is JSON);
- access-log lines in the common/combined format (``... "POST /predict HTTP/1.1" 200 ...``): method and
  path only, an access log holds no body.

Each probe is a line of JSON ``{"method", "path", "headers"?, "json"|"body"?}``, the format of a compare
section's ``probes_file``. Headers whose name says they carry a secret (Authorization, Cookie, *KEY*,
*TOKEN*, ...) are dropped, never written; so are hop-by-hop headers that describe the old connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import UsageError

_SECRET = re.compile(r"AUTH|COOKIE|KEY|SECRET|TOKEN|PASSWORD|PASSWD|SAS|SIG|CREDENTIAL|SESSION", re.IGNORECASE)
_CONNECTION = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding", "keep-alive"}
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+"')
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


@dataclass
class Recorded:
    """The probes of a capture, and what was left out of it."""

    probes: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # lines that are no request (blank, other log lines, other methods)
    dropped_headers: set[str] = field(default_factory=set)  # names of secret headers left out


def record(lines: Iterable[str], source: str = "-") -> Recorded:
    """The probes of ``lines`` (JSON lines and/or access-log lines); a JSON line that is no request object
    is a UsageError naming ``source`` and the line."""
    out = Recorded()
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if text[0] in "{[":  # a JSON line
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as e:
                raise UsageError(f"{source}: line {n}: not valid JSON ({e.msg})") from None
            out.probes.append(_from_json(raw, out, f"{source}: line {n}"))
            continue
        m = _ACCESS.search(text)
        if m is None or m["method"] not in _METHODS:
            out.skipped += 1
            continue
        out.probes.append({"method": m["method"], "path": _path(m["target"])})
    return out


def _path(target: str) -> str:
    parts = urlsplit(target)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _from_json(raw: Any, out: Recorded, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a request object, got {type(raw).__name__}")
    target = raw.get("path") or raw.get("url") or raw.get("uri")
    if not isinstance(target, str) or not target:
        raise UsageError(f"{where}: a request needs 'path' (or 'url')")
    method = str(raw.get("method") or ("POST" if "json" in raw or raw.get("body") else "GET")).upper()
    if method not in _METHODS:
        raise UsageError(f"{where}: method {method!r} is not one of {', '.join(sorted(_METHODS))}")
    probe: dict[str, Any] = {"method": method, "path": _path(target)}
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise UsageError(f"{where}: 'headers' must be a mapping of names to values")
    kept = {}
    for name, value in headers.items():
        if _SECRET.search(str(name)):
            out.dropped_headers.add(str(name).lower())
        elif str(name).lower() not in _CONNECTION:
            kept[str(name)] = str(value)
    if kept:
        probe["headers"] = kept
    if "json" in raw:
        probe["json"] = raw["json"]
    elif isinstance(raw.get("body"), str) and raw["body"]:
        try:
            probe["json"] = json.loads(raw["body"])
        except json.JSONDecodeError:
            probe["body"] = raw["body"]
    return probe


def dumps(probes: list[dict[str, Any]]) -> str:
    """The probes file's text: one compact JSON object per line."""
    return "".join(json.dumps(p, ensure_ascii=False, separators=(", ", ": ")) + "\n" for p in probes)


def record_file(source: str, out: str) -> Recorded:
    """Record the capture ``source`` (a file, or ``-`` for stdin) into the new probes file ``out``, written to a
    temporary file and renamed; an existing ``out`` is never overwritten."""
    import sys
    from pathlib import Path

    from ._fs import write_atomic

    dest = Path(out)
    if dest.exists():
        raise UsageError(f"{out} exists: choose another --out, or remove it first")
    if source == "-":
        recorded = record(sys.stdin, "stdin")
    else:
        try:
            with open(source, encoding="utf-8") as f:
                recorded = record(f, source)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{source}: cannot read the capture ({e.__class__.__name__}: {e})") from None
    if not recorded.probes:
        raise UsageError(f"{source}: no requests found (expected JSON lines or access-log lines)")
    write_atomic(dest, dumps(recorded.probes))
    return recorded
