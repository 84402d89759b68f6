"""The gate's pure comparison: the compare section's validation, answer diffs, the verdict and its report."""

from __future__ import annotations

import json

import pytest

from pytest_modelship.cases import CasesError, compare_section, parse_cases
from pytest_modelship.compare import Answer, CompareSpec, Probe, diff, judge, outcome
from pytest_modelship.matching import Tolerance

PROBE = {"path": "/predict", "json": {"x": [1]}}


def _section(compare: dict, tmp_path) -> CompareSpec | None:
    doc = {"compare": compare}
    assert parse_cases(doc, "g.yaml") == []  # a file may hold only a compare section
    return compare_section(doc, "g.yaml", tmp_path)


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ({}, "g.yaml: 'compare' needs 'probes' or 'probes_file'"),
        ({"probes": [PROBE], "tolerence": {}}, "g.yaml: unknown key 'compare.tolerence' (expected one of "),
        ({"probes": [PROBE], "tolerance": {"abs": -1}}, "'compare.tolerance' must be {abs: .., rel: ..} with numbers"),
        ({"probes": [PROBE], "tolerance": {"absolute": 1}}, "'compare.tolerance' must be {abs: .., rel: ..}"),
        ({"probes": [PROBE], "ignore": "version"}, "'compare.ignore' must be a list of paths like"),
        ({"probes": [PROBE], "min_agreement": 98}, "'compare.min_agreement' must be a share between 0 and 1, got 98"),
        ({"probes": [PROBE], "max_latency_ratio": 0}, "'compare.max_latency_ratio' must be a positive number, got 0"),
        ({"probes": [{"path": "/p", "expect": {}}]}, "unknown probe key 'expect'"),
        ({"probes": [{"path": "p"}]}, "'path' must be a string starting with '/', got 'p'"),
        ({"probes": [{"method": "fetch"}]}, "'method' must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
        ({"probes": [{"json": {}, "body": "x"}]}, "give either 'json' or 'body', not both"),
        ({"probes": "x"}, "'compare.probes' must be a list of requests"),
        ({"probes": []}, "g.yaml: compare: no probes (give 'probes' or a non-empty 'probes_file')"),
        ({"probes_file": "absent.jsonl"}, "absent.jsonl: cannot read the probes file"),
    ],
)
def test_a_bad_compare_section_is_one_line_naming_the_key(compare, message, tmp_path):
    with pytest.raises(CasesError) as err:
        _section(compare, tmp_path)
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text


def test_unknown_top_level_keys_name_compare_among_the_allowed():
    with pytest.raises(
        CasesError, match=r"unknown top-level key 'tests' \(expected 'defaults', 'cases' and 'compare'\)"
    ):
        parse_cases({"tests": [], "cases": [{"name": "a"}]}, "g.yaml")


def test_probes_file_lines_are_probes_and_a_bad_line_is_named(tmp_path):
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"method": "post", "path": "/predict", "json": {"x": [1, 2]}})
        + "\n\n"
        + json.dumps({"path": "/v"})
        + "\n"
    )
    spec = _section({"probes": [PROBE], "probes_file": "p.jsonl", "tolerance": {"abs": 0.5}}, tmp_path)
    assert spec is not None
    assert [p.name for p in spec.probes] == ["#1", "p.jsonl:1", "p.jsonl:3"]
    assert spec.probes[1] == Probe(name="p.jsonl:1", method="POST", path="/predict", json={"x": [1, 2]})
    assert spec.probes[2].method == "GET"
    assert spec.tolerance == Tolerance(abs=0.5) and spec.min_agreement == 1.0 and spec.max_latency_ratio is None
    (tmp_path / "p.jsonl").write_text('{"path": "/v"}\n{"path": "/v", "expect": 1}\n')
    with pytest.raises(CasesError, match=r"^p\.jsonl: line 2: unknown probe key 'expect'"):
        _section({"probes_file": "p.jsonl"}, tmp_path)
    (tmp_path / "p.jsonl").write_text("{nope\n")
    with pytest.raises(CasesError, match=r"^p\.jsonl: line 1: not valid JSON"):
        _section({"probes_file": "p.jsonl"}, tmp_path)


def test_diff_compares_recursively_within_tolerance_and_skips_ignored_paths():
    tol = Tolerance(abs=1e-3)
    base = {
        "model_version": "1",
        "predictions": [{"label": "a", "p": {"a": 0.9, "b": 0.1}}, {"label": "b", "p": {"a": 0.2}}],
    }
    same = {
        "model_version": "2",
        "predictions": [{"label": "a", "p": {"a": 0.9004, "b": 0.1}}, {"label": "b", "p": {"a": 0.2}}],
    }
    assert diff(same, base, tol) == ['model_version: candidate "2", baseline "1"']
    assert diff(same, base, tol, ("model_version",)) == []
    moved = json.loads(json.dumps(same))
    moved["predictions"][1]["label"] = "a"
    moved["predictions"][0]["p"]["b"] = 0.2
    moved["predictions"][1]["extra"] = 1
    assert diff(moved, base, tol, ("model_version",)) == [
        "predictions[0].p.b: candidate 0.2, baseline 0.1",
        "predictions[1].extra: missing in the baseline",
        'predictions[1].label: candidate "a", baseline "b"',
    ]
    # [*] stands for any index, a '*' key for any key; an exact path does not cover its neighbours
    assert (
        diff(moved, base, tol, ("model_version", "predictions[*].p.*", "predictions[*].label", "predictions[1].extra"))
        == []
    )
    assert diff(moved, base, tol, ("model_version", "predictions[0].p.b", "predictions[*].extra")) == [
        'predictions[1].label: candidate "a", baseline "b"'
    ]
    assert diff([1, 2], [1], tol) == ["$: 2 items in the candidate, 1 in the baseline"]
    assert diff("1", 1, tol) == ['$: candidate "1", baseline 1']
    assert diff(True, 1, tol) == ["$: candidate true, baseline 1"]  # a bool is no number
    assert diff(100.0, 101.0, Tolerance(rel=0.01)) == []
    assert diff(100.0, 102.0, Tolerance(rel=0.01)) == ["$: candidate 100.0, baseline 102.0"]


def _answers(spec, pairs):
    probes = [Probe(name=f"p{i}", method="POST", path="/predict", json={"x": [i]}) for i in range(len(pairs))]
    return [outcome(spec, p, c, b) for p, (c, b) in zip(probes, pairs, strict=True)]


def test_judge_passes_on_agreement_and_names_the_diverging_inputs_side_by_side():
    spec = CompareSpec(probes=(), min_agreement=0.75, source="g.yaml")
    ok = (Answer(200, {"label": "cat"}, 10.0), Answer(200, {"label": "cat"}, 10.0))
    flipped = (Answer(200, {"label": "dog"}, 12.0), Answer(200, {"label": "cat"}, 11.0))
    status = (Answer(500, {"error": "x"}, 5.0), Answer(200, {"label": "cat"}, 9.0))
    verdict = judge(spec, _answers(spec, [ok, ok, ok, flipped]), "cand:1", "base:1")
    assert verdict.passed and verdict.agreement == 0.75 and verdict.problems == ()
    verdict = judge(spec, _answers(spec, [ok, ok, flipped, status]), "cand:1", "base:1")
    assert not verdict.passed
    assert verdict.problems == ("agreement 50.00% (2 of 4 probes) is below min_agreement 75.00%",)
    report = verdict.report
    assert "compare (g.yaml): candidate cand:1 vs baseline base:1" in report
    assert "first 2 of 2 diverging probe(s):" in report
    side_by_side = '    candidate: 200 {"label": "dog"}\n    baseline:  200 {"label": "cat"}\n'
    assert '  probe p2: POST /predict {"x": [2]}\n' + side_by_side in report
    assert '    >> label: candidate "dog", baseline "cat"' in report
    assert "  probe p3: POST /predict" in report and "    >> status: candidate 500, baseline 200" in report
    assert "p50" in report and "p95" in report


def test_judge_fails_the_latency_bound_on_p95_ratio_and_counts_no_answer_as_diverging():
    spec = CompareSpec(probes=(), max_latency_ratio=1.5, source="g.yaml")
    pairs = [(Answer(200, 1, 60.0 + i), Answer(200, 1, 10.0 + i)) for i in range(10)]
    verdict = judge(spec, _answers(spec, pairs), "c", "b")
    assert verdict.agreement == 1.0 and not verdict.passed
    (problem,) = verdict.problems
    assert problem.startswith("latency ratio 3.") and "above max_latency_ratio 1.5" in problem
    assert judge(CompareSpec(probes=(), max_latency_ratio=7), _answers(spec, pairs), "c", "b").passed
    dead = [(Answer(None, None, 3.0, error="ConnectionError: refused"), Answer(200, 1, 1.0))]
    verdict = judge(CompareSpec(probes=()), _answers(spec, dead), "c", "b")
    assert not verdict.passed and "no answer from the candidate" in verdict.report
    assert "candidate: no answer: ConnectionError: refused" in verdict.report


def test_the_example_gate_file_is_valid_and_covers_the_classes_and_edges():
    from pytest_modelship.cases import read_document
    from support import ROOT

    path = ROOT / "examples" / "flask_app" / "modelship-cases.yaml"
    spec = compare_section(read_document(path), path.name, path.parent)
    assert spec is not None and len(spec.probes) >= 200
    assert spec.ignore == ("model_version", "predictions[*].probabilities")
    # a retrain's probabilities are not compared, its labels are
    answer = {"predictions": [{"label": "setosa", "probabilities": {"setosa": 0.97}}], "model_version": "2"}
    moved = {"predictions": [{"label": "setosa", "probabilities": {"setosa": 0.91}}], "model_version": "1"}
    assert diff(answer, moved, spec.tolerance, spec.ignore) == []
    moved["predictions"][0]["label"] = "versicolor"
    assert diff(answer, moved, spec.tolerance, spec.ignore) == [
        'predictions[0].label: candidate "setosa", baseline "versicolor"'
    ]

    def flowers(p):
        rows = p.json.get("instances") if isinstance(p.json, dict) else None
        ok = isinstance(rows, list) and rows and all(isinstance(r, list) and len(r) == 4 for r in rows)
        return ok and all(isinstance(v, (int, float)) for r in rows for v in r)

    valid = [p for p in spec.probes if flowers(p)]
    assert len(valid) >= 190 and len(spec.probes) - len(valid) >= 5  # and invalid inputs among them
