"""The gate's comparison, pure: a cases file's ``compare:`` section -> probes and thresholds, two answers ->
the paths where they differ, every probe's pair of answers -> the verdict and its report.

No containers and no HTTP here (gate.py sends the probes). The section, validated by cases.schema.json::

    compare:
      probes:                      # requests, like cases without expectations
        - {method: POST, path: /predict, json: {x: [1, 2]}}
      probes_file: probes.jsonl    # and/or one JSON request per line (relative to the cases file)
      tolerance: {abs: 1.0e-6, rel: 0.0}   # numbers; strings and labels must be equal
      ignore: [model_version, "predictions[*].score"]   # paths compared by neither side
      min_agreement: 0.98          # share of probes whose answers match (default 1.0)
      max_latency_ratio: 1.5       # candidate p95 / baseline p95 (default: not checked)

A probe matches when both status codes are equal and every compared value is equal (or, for numbers,
within the tolerance), recursively.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .matching import MISSING, Request, Tolerance, is_number, show

SHOWN_DIVERGING = 5  # probes shown side by side in the report; the rest are counted
SHOWN_PATHS = 8  # differing paths listed per probe


@dataclass(frozen=True)
class Probe(Request):
    """One request sent to both containers."""

    def describe(self) -> str:
        """The request in one line: method, path and body (secret-named headers are never shown)."""
        text = f"{self.method} {self.path}"
        if self.has_json:
            text += " " + show(self.json)
        elif self.body is not None:
            text += f" {self.body[:80]!r}"
        return text


@dataclass(frozen=True)
class CompareSpec:
    """A validated ``compare:`` section."""

    probes: tuple[Probe, ...]
    tolerance: Tolerance = field(default_factory=Tolerance)
    ignore: tuple[str, ...] = ()
    min_agreement: float = 1.0
    max_latency_ratio: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Answer:
    """What one container answered to a probe (``error``: no answer at all)."""

    status: int | None
    body: Any  # the decoded JSON, else the text
    latency_ms: float
    error: str | None = None

    def show(self) -> str:
        if self.error is not None:
            return f"no answer: {self.error}"
        return f"{self.status} {json.dumps(self.body, ensure_ascii=False, default=str)[:300]}"


@dataclass(frozen=True)
class Outcome:
    """One probe's pair of answers and where they differ (empty: they match)."""

    probe: Probe
    candidate: Answer
    baseline: Answer
    diffs: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return not self.diffs


class CompareError(Exception):
    """A malformed compare section or probes file: one line naming the file and the problem."""


# ---------------------------------------------------------------------------------------------- parsing


def parse_compare(raw: dict[str, Any], source: str, base_dir: Path) -> CompareSpec:
    """The spec of a ``compare:`` section that passed the schema; reads its probes file (JSON lines)."""
    probes = [_probe(p, f"#{i}") for i, p in enumerate(raw.get("probes") or [], 1)]
    probes_file = raw.get("probes_file")
    if probes_file:
        probes += load_probes(base_dir / probes_file)
    if not probes:
        raise CompareError(f"{source}: compare: no probes (give 'probes' or a non-empty 'probes_file')")
    tol = raw.get("tolerance") or {}
    ratio = raw.get("max_latency_ratio")
    return CompareSpec(
        probes=tuple(probes),
        tolerance=Tolerance(abs=float(tol.get("abs", 0)), rel=float(tol.get("rel", 0))),
        ignore=tuple(raw.get("ignore") or ()),
        min_agreement=float(raw.get("min_agreement", 1.0)),
        max_latency_ratio=float(ratio) if ratio is not None else None,
        source=source,
    )


def load_probes(path: Path) -> list[Probe]:
    """The probes of a JSON-lines file: one request object per line; blank lines are skipped."""
    from .cases import _first_problem, _validator

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CompareError(f"{path}: cannot read the probes file ({e.__class__.__name__}: {e})") from None
    probes = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise CompareError(f"{path.name}: line {n}: not valid JSON ({e.msg})") from None
        problem = _first_problem(_validator("probe"), raw)
        if problem is not None:
            raise CompareError(f"{path.name}: line {n}: {problem}")
        probes.append(_probe(raw, f"{path.name}:{n}"))
    return probes


def _probe(raw: dict[str, Any], default_name: str) -> Probe:
    has_body = "json" in raw or "body" in raw
    timeout = raw.get("timeout")
    return Probe(
        name=str(raw.get("name") or default_name),
        method=str(raw.get("method", "POST" if has_body else "GET")).upper(),
        path=raw.get("path", "/"),
        headers={k: str(v) for k, v in (raw.get("headers") or {}).items()},
        json=raw.get("json", MISSING),
        body=raw.get("body"),
        timeout=float(timeout) if timeout is not None else None,
    )


# ------------------------------------------------------------------------------------------- comparing


def _patterns(ignore: tuple[str, ...]) -> list[re.Pattern[str]]:
    """``a.b[*].c`` -> a regex of the paths it names: ``[*]`` any index, ``*`` alone any key."""
    out = []
    for text in ignore:
        parts = re.split(r"(\[\*\])", text)
        regex = "".join(r"\[\d+\]" if p == "[*]" else re.escape(p).replace(r"\*", r"[^.\[]+") for p in parts)
        out.append(re.compile(regex))
    return out


def diff(candidate: Any, baseline: Any, tol: Tolerance, ignore: tuple[str, ...] = (), path: str = "") -> list[str]:
    """Every path where the two JSON values differ beyond ``tol`` (paths matching ``ignore`` are skipped).

    Paths are written like the ignore list: ``predictions[0].label``; the whole answer is ``$``.
    """
    patterns = _patterns(ignore)
    out: list[str] = []
    _diff(candidate, baseline, tol, patterns, path, out)
    return out


def _diff(c: Any, b: Any, tol: Tolerance, patterns: list[re.Pattern[str]], path: str, out: list[str]) -> None:
    if path and any(p.fullmatch(path) for p in patterns):
        return
    where = path or "$"
    if isinstance(c, dict) and isinstance(b, dict):
        for key in sorted(c.keys() | b.keys(), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in b or key not in c:
                if not any(p.fullmatch(sub) for p in patterns):
                    side = "baseline" if key not in b else "candidate"
                    out.append(f"{sub}: missing in the {side}")
                continue
            _diff(c[key], b[key], tol, patterns, sub, out)
    elif isinstance(c, list) and isinstance(b, list):
        if len(c) != len(b):
            out.append(f"{where}: {len(c)} items in the candidate, {len(b)} in the baseline")
        for i, (ci, bi) in enumerate(zip(c, b, strict=False)):
            _diff(ci, bi, tol, patterns, f"{path}[{i}]", out)
    elif is_number(c) and is_number(b):
        if not tol.close(float(b), float(c)):
            out.append(f"{where}: candidate {c!r}, baseline {b!r}")
    elif type(c) is not type(b) or c != b:
        out.append(f"{where}: candidate {show(c)}, baseline {show(b)}")


def outcome(spec: CompareSpec, probe: Probe, candidate: Answer, baseline: Answer) -> Outcome:
    """Compare one probe's answers: statuses, then the bodies."""
    diffs: list[str] = []
    if candidate.error is not None or baseline.error is not None:
        silent = [name for name, a in (("candidate", candidate), ("baseline", baseline)) if a.error is not None]
        diffs.append("no answer from the " + " and the ".join(silent))
    elif candidate.status != baseline.status:
        diffs.append(f"status: candidate {candidate.status}, baseline {baseline.status}")
    else:
        diffs += diff(candidate.body, baseline.body, spec.tolerance, spec.ignore)
    return Outcome(probe, candidate, baseline, tuple(diffs))


# --------------------------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Verdict:
    """The gate's result: whether it passed, the one-line reasons it did not, and the whole report."""

    passed: bool
    problems: tuple[str, ...]
    agreement: float
    summary: str  # the agreement and latency line (JUnit property, terminal summary)
    report: str


def percentile(values: list[float], p: float) -> float:
    from .report import percentile as _pct

    return _pct(values, p) if values else 0.0


def judge(spec: CompareSpec, outcomes: list[Outcome], candidate: str, baseline: str) -> Verdict:
    """Agreement and latency against the spec's thresholds, and the report (diverging probes side by side)."""
    total = len(outcomes)
    diverging = [o for o in outcomes if not o.matches]
    agreement = (total - len(diverging)) / total if total else 1.0
    c_ms = [o.candidate.latency_ms for o in outcomes if o.candidate.error is None]
    b_ms = [o.baseline.latency_ms for o in outcomes if o.baseline.error is None]
    c95, b95 = percentile(c_ms, 95), percentile(b_ms, 95)
    ratio = c95 / b95 if b95 > 0 else float("inf")
    problems = []
    if agreement < spec.min_agreement:
        problems.append(
            f"agreement {agreement:.2%} ({total - len(diverging)} of {total} probes) is below "
            f"min_agreement {spec.min_agreement:.2%}"
        )
    if spec.max_latency_ratio is not None and ratio > spec.max_latency_ratio:
        problems.append(
            f"latency ratio {ratio:.2f} (candidate p95 {c95:.1f} ms / baseline p95 {b95:.1f} ms) is above "
            f"max_latency_ratio {spec.max_latency_ratio:g}"
        )
    lines = [f"compare ({spec.source}): candidate {candidate} vs baseline {baseline}"]
    lines += [f"  - {p}" for p in problems]
    agreement_line = f"agreement: {agreement:.2%} ({total - len(diverging)} of {total} probes match)"
    latency_line = (
        f"latency: candidate p50 {percentile(c_ms, 50):.1f} ms, p95 {c95:.1f} ms; "
        f"baseline p50 {percentile(b_ms, 50):.1f} ms, p95 {b95:.1f} ms; ratio of p95 {ratio:.2f}"
    )
    lines += [agreement_line, latency_line]
    tol = str(spec.tolerance) or "exact"
    ignore = ", ".join(spec.ignore) or "nothing"
    lines.append(f"tolerance: {tol}; ignored: {ignore}")
    if diverging:
        lines.append(f"first {min(len(diverging), SHOWN_DIVERGING)} of {len(diverging)} diverging probe(s):")
    for o in diverging[:SHOWN_DIVERGING]:
        lines.append(f"  probe {o.probe.name}: {o.probe.describe()}")
        lines.append(f"    candidate: {o.candidate.show()}")
        lines.append(f"    baseline:  {o.baseline.show()}")
        lines += [f"    >> {d}" for d in o.diffs[:SHOWN_PATHS]]
        if len(o.diffs) > SHOWN_PATHS:
            lines.append(f"    >> ... and {len(o.diffs) - SHOWN_PATHS} more path(s)")
    summary = f"{agreement_line}; {latency_line}"
    return Verdict(not problems, tuple(problems), agreement, summary, "\n".join(lines))
