"""Smoke cases: a YAML/JSON file -> validated Case objects -> one pytest item per case.

``load_file`` reads, ``parse_cases`` validates against the JSON Schema shipped next to this module
(cases.schema.json: the first problem is one line naming the file, the case and the key) into frozen
dataclasses, and the items send each case; ``matching.match`` judges the answer, ``describe`` writes the
failure. A top-level ``compare:`` section (candidate vs baseline, see compare.py) may join or replace
``cases``; ``compare_section`` reads it.

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
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .items import ItemFailed, ModelshipItem, RunCollector
from .matching import MISSING, Expect, Request, Tolerance, match, pretty, project

if TYPE_CHECKING:
    import requests

    from .compare import CompareSpec

LATENCY_PROPERTY = "modelship_latency_ms"
CASE_PROPERTY = "modelship_case"


class CasesError(Exception):
    """A malformed cases file or case: one line naming the file, the case and the problem."""


@dataclass(frozen=True)
class Case(Request):
    """A request and what its answer must be."""

    expect: Expect = field(default_factory=Expect)
    source: str = ""


# ------------------------------------------------------------------------------------------- loading


def load_file(path: Path) -> list[Case]:
    """Read and validate a cases file; every problem is a CasesError naming the file."""
    return parse_cases(read_document(path), path.name)


def read_document(path: Path) -> Any:
    """The decoded cases file (YAML or JSON), not validated yet; every problem is a CasesError naming the file."""
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
    return data


def parse_cases(data: Any, source: str) -> list[Case]:
    """Validate the decoded document (a list of cases or ``{defaults: {...}, cases: [...]}``) against the
    cases schema; the first problem is a CasesError of one line naming the source, the case and the key."""
    problem = _first_problem(_validator(), data)
    if problem is not None:
        raise CasesError(f"{source}: {problem}")
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        defaults = data.get("defaults") or {}
        data = data.get("cases") or []  # a file may hold only a compare section
    case_validator = _validator("case")
    cases: list[Case] = []
    seen: set[str] = set()
    for i, raw in enumerate(data, 1):
        merged = _merge(defaults, raw)
        name = raw.get("name") if isinstance(raw, dict) else None
        named = isinstance(name, str) and bool(name.strip())
        where = f"{source}: case {name!r} (#{i})" if named else f"{source}: case #{i}"
        checked = merged
        if isinstance(merged, dict) and isinstance(merged.get("method"), str):
            checked = {**merged, "method": merged["method"].upper()}
        problem = _first_problem(case_validator, checked, shown=merged)  # any letter case, shown as written
        if problem is not None:
            raise CasesError(f"{where}: {problem}")
        case = _case(checked, where, source)
        if case.name in seen:
            raise CasesError(f"{where}: duplicate name; case names must be unique")
        seen.add(case.name)
        cases.append(case)
    return cases


# The schema ships with the package (cases.schema.json; editors can validate a cases file with it too). Each
# place that can fail carries an "x-message": the one line printed for a failure there.
_SCHEMA: dict[str, Any] = json.loads((Path(__file__).parent / "cases.schema.json").read_text(encoding="utf-8"))
_CASE: dict[str, Any] = {"$schema": _SCHEMA["$schema"], "$defs": _SCHEMA["$defs"], "$ref": "#/$defs/case"}
# the document's shape only: each case is checked afterwards, with the defaults merged in, against _CASE
_DOCUMENT: dict[str, Any] = {
    **_SCHEMA,
    "$defs": {**_SCHEMA["$defs"], "cases": {**_SCHEMA["$defs"]["cases"], "items": True}},
}


@functools.cache
def _validator(which: str = "document") -> Any:
    """The validator of the whole document, of one ``case`` or one ``probe`` (made once, on first use)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    # an HTTP status is an int: JSON Schema's integer would also take 200.0 (and Python's int takes True)
    types = base.TYPE_CHECKER.redefine("integer", lambda _checker, v: isinstance(v, int) and not isinstance(v, bool))
    schema = {"case": _CASE, "probe": {**_CASE, "$ref": "#/$defs/probe"}}.get(which, _DOCUMENT)
    return jsonschema.validators.extend(base, type_checker=types)(schema)


def _first_problem(validator: Any, instance: Any, shown: Any = None) -> str | None:
    """The first schema violation as its one-line message, or None. ``shown`` is the instance as written,
    when ``instance`` was normalised for the check."""
    errors = list(validator.iter_errors(instance))
    if not errors:
        return None
    first = errors[0]
    # several unknown keys fail at the same place: name the first in sorted order, whatever the document's order
    same = [e for e in errors if e.relative_schema_path == first.relative_schema_path and e.path == first.path]
    error = min(same, key=lambda e: str(e.instance))
    template = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if template is None:
        return error.message  # a place without a message of its own: jsonschema's line
    value = error.instance
    if shown is not None and "propertyNames" not in error.relative_schema_path:  # a key names itself
        value = shown
        for part in error.absolute_path:
            value = value[part]
    allowed = [str(v) for v in error.validator_value] if error.validator == "enum" else []
    quoted = [repr(v) for v in allowed]
    return template.format(
        value=value,
        type=type(value).__name__,
        expected=", ".join(sorted(allowed)),
        expected_and=" and ".join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else "".join(quoted),
    )


def _merge(defaults: dict[str, Any], raw: Any) -> Any:
    """The case with the defaults under it (``expect`` merged key by key); a non-mapping stays as it is."""
    if not isinstance(raw, dict):
        return raw
    # a case always names itself: a 'name' in the defaults is never used
    merged = {**{k: v for k, v in defaults.items() if k not in ("expect", "name")}, **raw}
    mine, common = raw.get("expect"), defaults.get("expect")
    if mine is None and common is None:
        merged.pop("expect", None)
    elif isinstance(mine, (dict, type(None))) and isinstance(common, (dict, type(None))):
        merged["expect"] = {**(common or {}), **(mine or {})}
    else:  # the one that is not a mapping, for the schema to name
        merged["expect"] = common if isinstance(mine, (dict, type(None))) else mine
    return merged


def _case(merged: dict[str, Any], where: str, source: str) -> Case:
    """The Case of a case that passed the schema."""
    has_body = "json" in merged or "body" in merged
    timeout = merged.get("timeout")
    return Case(
        name=merged["name"],
        method=merged.get("method", "POST" if has_body else "GET"),
        path=merged.get("path", "/"),
        headers={k: str(v) for k, v in (merged.get("headers") or {}).items()},
        json=merged.get("json", MISSING),
        body=merged.get("body"),
        timeout=float(timeout) if timeout is not None else None,
        expect=_expect(merged.get("expect") or {}, where),
        source=source,
    )


def _expect(raw: dict[str, Any], where: str) -> Expect:
    status = raw.get("status")
    approx = raw.get("approx")
    tol = None
    if isinstance(approx, dict):
        tol = Tolerance(abs=float(approx.get("abs", 0)), rel=float(approx.get("rel", 0)))
    elif approx is not None:
        tol = Tolerance(abs=float(approx))
    schema = raw.get("schema")
    if schema is not None:  # the user's schema against its own meta-schema, beyond what cases.schema.json says
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            raise CasesError(f"{where}: 'expect.schema' is not a valid JSON Schema ({e.message})") from None
    latency = raw.get("max_latency_ms")
    return Expect(
        status=None if status is None else tuple(status if isinstance(status, list) else [status]),
        json=raw.get("json", MISSING),
        json_subset=raw.get("json_subset", MISSING),
        approx=tol,
        schema=schema,
        max_latency_ms=float(latency) if latency is not None else None,
    )


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
            body = pretty(actual)
        except ValueError:
            actual = MISSING
        shown_body = body if len(body) <= 2000 else body[:2000] + "\n... (truncated)"
        lines += ["  " + line for line in shown_body.splitlines()]
        exp = case.expect
        for label, expected, subset in (("json", exp.json, False), ("json_subset", exp.json_subset, True)):
            if expected is MISSING or actual is MISSING:
                continue
            target = project(expected, actual) if subset else actual
            diff = list(
                difflib.unified_diff(
                    pretty(expected).splitlines(), pretty(target).splitlines(), "expected", "actual", lineterm="", n=2
                )
            )
            if diff:
                lines.append(f"diff of expect.{label} (- expected, + actual):")
                lines += ["  " + d for d in diff[2:]]
    return redact("\n".join(lines))


# --------------------------------------------------------------------------------------------- items


class CaseFailed(ItemFailed):
    """Raised by a case item; its text is the whole failure report."""

    def __init__(self, text: str, request_failed: bool = False) -> None:
        super().__init__(text)
        self.request_failed = request_failed  # no answer at all: the app may have just died


class CaseItem(ModelshipItem):
    """One smoke case sent to the running container."""

    given, shown = "case", "modelship case {name}"
    case: Case

    def setup(self) -> None:
        self.run.container()

    def runtest(self) -> None:
        case = self.case
        client = self.run.client()
        url = client.url(case.path)
        kwargs = case.send_kwargs()
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
        problems = match(case.expect, response, latency)
        if not problems:
            for result in self.config.hook.pytest_modelship_check_response(
                config=self.config, case=case, response=response, latency_ms=latency
            ):
                if result:
                    problems += [result] if isinstance(result, str) else list(result)
        if problems:
            raise CaseFailed(describe(case, url, response, latency, problems, self.run.redact))


class _CasesCollector(RunCollector):
    """A collector of cases: a malformed case becomes a collection error naming the problem."""

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CasesError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # type: ignore[misc]


class CasesFile(_CasesCollector, pytest.File):
    """The cases file as a collector."""

    def collect(self) -> list[pytest.Item]:
        data = read_document(self.path)
        cases = parse_cases(data, self.path.name)
        items: list[pytest.Item] = [CaseItem.from_parent(self, name=c.name, case=c, run=self.run) for c in cases]
        spec = compare_section(data, self.path.name, self.path.parent)
        if spec is not None:
            from .gate import GATE_ITEM, GateItem

            if GATE_ITEM in {c.name for c in cases}:
                raise CasesError(f"{self.path.name}: a case is named {GATE_ITEM!r}, the compare section's item name")
            items.append(GateItem.from_parent(self, name=GATE_ITEM, spec=spec, run=self.run))
        return items


class HookCases(_CasesCollector, pytest.Collector):
    """Cases contributed by ``pytest_modelship_cases`` implementations."""

    def collect(self) -> list[CaseItem]:
        raw: list[Any] = []
        for result in self.config.hook.pytest_modelship_cases(config=self.config):
            raw += list(result or [])
        if not raw:
            return []
        cases = parse_cases(raw, "pytest_modelship_cases")
        return [CaseItem.from_parent(self, name=c.name, case=c, run=self.run) for c in cases]


def compare_section(data: Any, source: str, base_dir: Path) -> CompareSpec | None:
    """The document's ``compare:`` section as a spec (None without one); the document passed ``parse_cases``."""
    from .compare import CompareError, parse_compare

    if not isinstance(data, dict) or data.get("compare") is None:
        return None
    try:
        return parse_compare(data["compare"], source, base_dir)
    except CompareError as e:
        raise CasesError(str(e)) from None
