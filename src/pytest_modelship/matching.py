"""Whether an answer meets a smoke case's expectations: status, JSON (exact or subset, floats within a
tolerance), a JSON Schema, latency. Every miss is one line naming where in the JSON it is (``$.scores[0]``).
``Request`` is what a smoke case or a compare probe sends."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

MISSING: Any = object()  # an expectation (or a request body) not given, as opposed to a JSON null


@dataclass(frozen=True)
class Request:
    """One HTTP request: a smoke case's (``cases.Case``) or a compare probe's (``compare.Probe``)."""

    name: str
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = MISSING
    body: str | None = None
    timeout: float | None = None

    @property
    def has_json(self) -> bool:
        return self.json is not MISSING

    def send_kwargs(self) -> dict[str, Any]:
        """The keyword arguments that send it with ``requests``: headers, the JSON or the body, the timeout."""
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.has_json:
            kwargs["json"] = self.json
        elif self.body is not None:
            kwargs["data"] = self.body.encode()
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs


@dataclass(frozen=True)
class Tolerance:
    abs: float = 0.0
    rel: float = 0.0

    def close(self, expected: float, actual: float) -> bool:
        return math.isclose(actual, expected, rel_tol=self.rel, abs_tol=self.abs)

    def __str__(self) -> str:
        parts = [f"± {self.abs:g}"] if self.abs else []
        parts += [f"± {self.rel:g} rel"] if self.rel else []
        return " ".join(parts)


@dataclass(frozen=True)
class Expect:
    status: tuple[int, ...] | None = None  # None: any 2xx
    json: Any = MISSING
    json_subset: Any = MISSING
    approx: Tolerance | None = None
    schema: dict[str, Any] | None = None
    max_latency_ms: float | None = None

    @property
    def wants_json(self) -> bool:
        return self.json is not MISSING or self.json_subset is not MISSING or self.schema is not None


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def match(exp: Expect, response: requests.Response, latency_ms: float) -> list[str]:
    """Every way the response misses the expectations (empty: it passed)."""
    problems: list[str] = []
    if exp.status is None:
        if not 200 <= response.status_code < 300:
            problems.append(f"status: expected 2xx, got {response.status_code}")
    elif response.status_code not in exp.status:
        want = exp.status[0] if len(exp.status) == 1 else list(exp.status)
        problems.append(f"status: expected {want}, got {response.status_code}")
    if exp.max_latency_ms is not None and latency_ms > exp.max_latency_ms:
        problems.append(f"latency: {latency_ms:.1f} ms exceeds max_latency_ms {exp.max_latency_ms:g}")
    if not exp.wants_json:
        return problems
    try:
        actual = response.json()
    except ValueError:
        problems.append(f"body: expected JSON, got {response.text[:200]!r}")
        return problems
    tol = exp.approx or Tolerance()
    if exp.json is not MISSING:
        compare(exp.json, actual, "$", False, tol, problems)
    if exp.json_subset is not MISSING:
        compare(exp.json_subset, actual, "$", True, tol, problems)
    if exp.schema is not None:
        import jsonschema

        validator = jsonschema.validators.validator_for(exp.schema)(exp.schema)
        for err in sorted(validator.iter_errors(actual), key=lambda e: list(e.absolute_path)):
            problems.append(f"schema: {_json_path(err.absolute_path)}: {err.message}")
    return problems


def compare(expected: Any, actual: Any, path: str, subset: bool, tol: Tolerance, problems: list[str]) -> None:
    """Structural comparison; ``subset`` lets objects hold extra keys, floats compare within ``tol``."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            problems.append(f"{path}: expected an object, got {show(actual)}")
            return
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing (expected {show(value)})")
            else:
                compare(value, actual[key], f"{path}.{key}", subset, tol, problems)
        if not subset:
            for key in actual.keys() - expected.keys():
                problems.append(f"{path}.{key}: unexpected key (value {show(actual[key])})")
    elif isinstance(expected, list):
        if not isinstance(actual, list):
            problems.append(f"{path}: expected a list, got {show(actual)}")
            return
        if len(expected) != len(actual):
            problems.append(f"{path}: expected {len(expected)} items, got {len(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            compare(e, a, f"{path}[{i}]", subset, tol, problems)
    elif is_number(expected) and is_number(actual) and (isinstance(expected, float) or isinstance(actual, float)):
        if not tol.close(float(expected), float(actual)):
            within = f" {tol}" if str(tol) else ""
            problems.append(f"{path}: expected {expected!r}{within}, got {actual!r}")
    elif type(expected) is not type(actual) or expected != actual:
        problems.append(f"{path}: expected {show(expected)}, got {show(actual)}")


def show(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def pretty(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def project(expected: Any, actual: Any) -> Any:
    """The part of ``actual`` that a subset expectation talks about (for a focused diff)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: project(expected[k], actual[k]) for k in expected if k in actual}
    if isinstance(expected, list) and isinstance(actual, list):
        return [project(e, a) for e, a in zip(expected, actual, strict=False)] + actual[len(expected) :]
    return actual
