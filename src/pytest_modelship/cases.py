"""Smoke cases: a YAML/JSON file -> validated Case objects -> one pytest item per case.

Loading, validating and matching are kept apart: ``load_file`` reads, ``parse_cases`` validates into
frozen dataclasses (every problem names the file, the case and the key), ``match`` compares a response.
One job, the smoke case from its file to its verdict, which is why the module is longer than ~400 lines.

File format (YAML or JSON)::

    defaults:                 # optional, merged into every case
      headers: {X-Client: smoke}
    cases:
      - name: predict_cat
        method: POST          # default: POST when a body is given, else GET
        path: /predict
        headers: {X-Request-Id: smoke-1}
        json: {x: [1, 2, 3]}
        timeout: 10           # seconds for this request (default 30)
        expect:
          status: 200         # or a list; default: any 2xx
          json: {label: cat, score: 0.91}
          json_subset: {label: cat}
          approx: 0.01        # float tolerance for json/json_subset: absolute, or {abs: .., rel: ..}
          schema: {type: object, required: [label]}
          max_latency_ms: 500
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import requests

    from ._protocol import Run

_MISSING: Any = object()
CASE_KEYS = {"name", "method", "path", "headers", "json", "body", "timeout", "expect"}
EXPECT_KEYS = {"status", "json", "json_subset", "approx", "schema", "max_latency_ms"}
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
LATENCY_PROPERTY = "modelship_latency_ms"
CASE_PROPERTY = "modelship_case"


class CasesError(Exception):
    """A malformed cases file or case: one line naming the file, the case and the problem."""


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
    json: Any = _MISSING
    json_subset: Any = _MISSING
    approx: Tolerance | None = None
    schema: dict[str, Any] | None = None
    max_latency_ms: float | None = None

    @property
    def wants_json(self) -> bool:
        return self.json is not _MISSING or self.json_subset is not _MISSING or self.schema is not None


@dataclass(frozen=True)
class Case:
    name: str
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = _MISSING
    body: str | None = None
    timeout: float | None = None
    expect: Expect = field(default_factory=Expect)
    source: str = ""

    @property
    def has_json(self) -> bool:
        return self.json is not _MISSING


# ------------------------------------------------------------------------------------------- loading


def load_file(path: Path) -> list[Case]:
    """Read and validate a cases file; every problem is a CasesError naming the file."""
    if not path.is_file():
        raise CasesError(f"{path}: cases file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CasesError(f"{path}: cannot read ({e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CasesError(f"{path.name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    else:
        import yaml

        try:  # libyaml's loader when PyYAML has it: same documents, several times faster to parse
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise CasesError(f"{path.name}: not valid YAML ({where}{getattr(e, 'problem', None) or e})") from None
    return parse_cases(data, path.name)


def parse_cases(data: Any, source: str) -> list[Case]:
    """Validate the decoded document: a list of cases or ``{defaults: {...}, cases: [...]}``."""
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        unknown = set(data) - {"defaults", "cases"}
        if unknown:
            raise CasesError(f"{source}: unknown top-level key {_one(unknown)!r} (expected 'defaults' and 'cases')")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise CasesError(f"{source}: 'defaults' must be a mapping")
        data = data.get("cases")
    if not isinstance(data, list) or not data:
        raise CasesError(f"{source}: expected a non-empty list of cases (or a mapping with 'cases:')")
    cases: list[Case] = []
    seen: set[str] = set()
    for i, raw in enumerate(data, 1):
        case = _parse_case(raw, defaults, source, i)
        if case.name in seen:
            raise CasesError(f"{source}: case {case.name!r} (#{i}): duplicate name; case names must be unique")
        seen.add(case.name)
        cases.append(case)
    return cases


def _parse_case(raw: Any, defaults: dict[str, Any], source: str, index: int) -> Case:
    where = f"{source}: case #{index}"
    if not isinstance(raw, dict):
        raise CasesError(f"{where}: expected a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CasesError(f"{where}: missing 'name' (a non-empty string)")
    where = f"{source}: case {name!r} (#{index})"
    if "::" in name or "/" in name:
        raise CasesError(f"{where}: 'name' must not contain '::' or '/'")
    merged = {**{k: v for k, v in defaults.items() if k != "expect"}, **raw}
    expect_raw = {**(defaults.get("expect") or {}), **(raw.get("expect") or {})}
    for key in merged:
        if key not in CASE_KEYS:
            raise CasesError(f"{where}: unknown key {key!r} (expected one of {', '.join(sorted(CASE_KEYS))})")
    if "json" in merged and "body" in merged:
        raise CasesError(f"{where}: give either 'json' or 'body', not both")
    has_body = "json" in merged or "body" in merged
    method = merged.get("method", "POST" if has_body else "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise CasesError(f"{where}: 'method' must be one of {', '.join(sorted(METHODS))}, got {method!r}")
    path = merged.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise CasesError(f"{where}: 'path' must be a string starting with '/', got {path!r}")
    headers = merged.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers):
        raise CasesError(f"{where}: 'headers' must be a mapping of names to values")
    body = merged.get("body")
    if body is not None and not isinstance(body, str):
        raise CasesError(f"{where}: 'body' must be a string (use 'json' for structured data)")
    timeout = merged.get("timeout")
    if timeout is not None and (not _is_number(timeout) or timeout <= 0):
        raise CasesError(f"{where}: 'timeout' must be a positive number of seconds, got {timeout!r}")
    return Case(
        name=name,
        method=method.upper(),
        path=path,
        headers={k: str(v) for k, v in headers.items()},
        json=merged.get("json", _MISSING),
        body=body,
        timeout=float(timeout) if timeout is not None else None,
        expect=_parse_expect(expect_raw, where),
        source=source,
    )


def _parse_expect(raw: Any, where: str) -> Expect:
    if not isinstance(raw, dict):
        raise CasesError(f"{where}: 'expect' must be a mapping")
    for key in raw:
        if key not in EXPECT_KEYS:
            raise CasesError(f"{where}: unknown key 'expect.{key}' (expected one of {', '.join(sorted(EXPECT_KEYS))})")
    status = raw.get("status")
    statuses: tuple[int, ...] | None = None
    if status is not None:
        values = status if isinstance(status, list) else [status]
        if not values or not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in values):
            raise CasesError(f"{where}: 'expect.status' must be an HTTP status code or a list of them, got {status!r}")
        statuses = tuple(values)
    tol = None
    if "approx" in raw:
        a = raw["approx"]
        if _is_number(a) and a >= 0:
            tol = Tolerance(abs=float(a))
        elif isinstance(a, dict) and set(a) <= {"abs", "rel"} and all(_is_number(v) and v >= 0 for v in a.values()):
            tol = Tolerance(abs=float(a.get("abs", 0)), rel=float(a.get("rel", 0)))
        else:
            raise CasesError(f"{where}: 'expect.approx' must be a tolerance >= 0 or {{abs: .., rel: ..}}, got {a!r}")
    schema = raw.get("schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise CasesError(f"{where}: 'expect.schema' must be a JSON Schema mapping")
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            raise CasesError(f"{where}: 'expect.schema' is not a valid JSON Schema ({e.message})") from None
    latency = raw.get("max_latency_ms")
    if latency is not None and (not _is_number(latency) or latency <= 0):
        raise CasesError(f"{where}: 'expect.max_latency_ms' must be a positive number, got {latency!r}")
    return Expect(
        status=statuses,
        json=raw.get("json", _MISSING),
        json_subset=raw.get("json_subset", _MISSING),
        approx=tol,
        schema=schema,
        max_latency_ms=float(latency) if latency is not None else None,
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one(keys: set[str]) -> str:
    return sorted(map(str, keys))[0]


# ------------------------------------------------------------------------------------------ matching


def match(case: Case, response: requests.Response, latency_ms: float) -> list[str]:
    """Every way the response misses the case's expectations (empty: it passed)."""
    exp = case.expect
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
    if exp.json is not _MISSING:
        compare(exp.json, actual, "$", False, tol, problems)
    if exp.json_subset is not _MISSING:
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
            problems.append(f"{path}: expected an object, got {_show(actual)}")
            return
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing (expected {_show(value)})")
            else:
                compare(value, actual[key], f"{path}.{key}", subset, tol, problems)
        if not subset:
            for key in actual.keys() - expected.keys():
                problems.append(f"{path}.{key}: unexpected key (value {_show(actual[key])})")
    elif isinstance(expected, list):
        if not isinstance(actual, list):
            problems.append(f"{path}: expected a list, got {_show(actual)}")
            return
        if len(expected) != len(actual):
            problems.append(f"{path}: expected {len(expected)} items, got {len(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            compare(e, a, f"{path}[{i}]", subset, tol, problems)
    elif _is_number(expected) and _is_number(actual) and (isinstance(expected, float) or isinstance(actual, float)):
        if not tol.close(float(expected), float(actual)):
            within = f" {tol}" if str(tol) else ""
            problems.append(f"{path}: expected {expected!r}{within}, got {actual!r}")
    elif type(expected) is not type(actual) or expected != actual:
        problems.append(f"{path}: expected {_show(expected)}, got {_show(actual)}")


def _show(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _pretty(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _project(expected: Any, actual: Any) -> Any:
    """The part of ``actual`` that a subset expectation talks about (for a focused diff)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: _project(expected[k], actual[k]) for k in expected if k in actual}
    if isinstance(expected, list) and isinstance(actual, list):
        return [_project(e, a) for e, a in zip(expected, actual, strict=False)] + actual[len(expected) :]
    return actual


def describe(
    case: Case,
    url: str,
    response: requests.Response | None,
    latency_ms: float | None,
    problems: list[str],
    redact: Callable[[str], str],
) -> str:
    """The failure text: what was wrong, the request that was sent, the answer and a diff."""
    from .redact import MASK, is_secret_name

    lines = [
        f"case {case.name!r} ({case.source}): " + ("1 problem" if len(problems) == 1 else f"{len(problems)} problems")
    ]
    lines += [f"  - {p}" for p in problems]
    lines += ["request:", f"  {case.method} {url}"]
    if case.headers:
        shown = {
            k: (MASK if is_secret_name(k) or k.lower() in ("authorization", "cookie") else v)
            for k, v in case.headers.items()
        }
        lines.append(f"  headers: {json.dumps(shown, ensure_ascii=False)}")
    if case.has_json:
        lines.append(f"  json: {json.dumps(case.json, ensure_ascii=False, default=str)}")
    elif case.body is not None:
        lines.append(f"  body: {case.body[:500]!r}")
    if response is not None:
        lines.append(f"response: {response.status_code} {response.reason} in {latency_ms:.1f} ms")
        body = response.text
        try:
            actual: Any = response.json()
            body = _pretty(actual)
        except ValueError:
            actual = _MISSING
        shown_body = body if len(body) <= 2000 else body[:2000] + "\n... (truncated)"
        lines += ["  " + line for line in shown_body.splitlines()]
        exp = case.expect
        for label, expected, subset in (("json", exp.json, False), ("json_subset", exp.json_subset, True)):
            if expected is _MISSING or actual is _MISSING:
                continue
            target = _project(expected, actual) if subset else actual
            diff = list(
                difflib.unified_diff(
                    _pretty(expected).splitlines(), _pretty(target).splitlines(), "expected", "actual", lineterm="", n=2
                )
            )
            if diff:
                lines.append(f"diff of expect.{label} (- expected, + actual):")
                lines += ["  " + d for d in diff[2:]]
    return redact("\n".join(lines))


# --------------------------------------------------------------------------------------------- items


class CaseFailed(Exception):
    """Raised by a case item; its text is the whole failure report."""

    def __init__(self, text: str, request_failed: bool = False) -> None:
        super().__init__(text)
        self.request_failed = request_failed  # no answer at all: the app may have just died


class CaseItem(pytest.Item):
    """One smoke case sent to the running container."""

    def __init__(self, *, case: Case, run: Run, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.run = run
        self.add_marker("modelship")  # `-m modelship`: only the smoke test, in a repo with other tests

    def setup(self) -> None:
        self.run.container()

    def runtest(self) -> None:
        case = self.case
        client = self.run.client()
        url = client.url(case.path)
        kwargs: dict[str, Any] = {"headers": case.headers}
        if case.has_json:
            kwargs["json"] = case.json
        elif case.body is not None:
            kwargs["data"] = case.body.encode()
        if case.timeout is not None:
            kwargs["timeout"] = case.timeout
        import requests

        t0 = time.perf_counter()
        try:
            response = client.request(case.method, url, **kwargs)
        except requests.RequestException as e:
            latency = (time.perf_counter() - t0) * 1000
            problem = f"request failed after {latency:.0f} ms: {type(e).__name__}: {e}"
            raise CaseFailed(describe(case, url, None, None, [problem], self.run.redact), request_failed=True) from None
        latency = (time.perf_counter() - t0) * 1000
        self.user_properties.append((CASE_PROPERTY, case.name))
        self.user_properties.append((LATENCY_PROPERTY, round(latency, 3)))
        problems = match(case, response, latency)
        if not problems:
            for result in self.config.hook.pytest_modelship_check_response(
                config=self.config, case=case, response=response, latency_ms=latency
            ):
                if result:
                    problems += [result] if isinstance(result, str) else list(result)
        if problems:
            raise CaseFailed(describe(case, url, response, latency, problems, self.run.redact))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"modelship case {self.case.name}"


class CasesFile(pytest.File):
    """The cases file as a collector: a malformed file becomes a collection error naming the problem."""

    def __init__(self, *, run: Run, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run

    def collect(self) -> list[CaseItem]:
        cases = load_file(self.path)
        return [CaseItem.from_parent(self, name=c.name, case=c, run=self.run) for c in cases]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CasesError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class HookCases(pytest.Collector):
    """Cases contributed by ``pytest_modelship_cases`` implementations."""

    def __init__(self, *, run: Run, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run

    def collect(self) -> list[CaseItem]:
        raw: list[Any] = []
        for result in self.config.hook.pytest_modelship_cases(config=self.config):
            raw += list(result or [])
        if not raw:
            return []
        cases = parse_cases(raw, "pytest_modelship_cases")
        return [CaseItem.from_parent(self, name=c.name, case=c, run=self.run) for c in cases]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CasesError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)
