"""The plugin's pure parts: cases validation and matching, secret detection, image defaults, owners."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from pytest_modelship.cases import CasesError, load_file, parse_cases
from pytest_modelship.checks import find_secrets
from pytest_modelship.errors import SetupError
from pytest_modelship.images import ImageInfo
from pytest_modelship.matching import match
from pytest_modelship.reaper import owner_alive, owner_id
from pytest_modelship.redact import mask_env
from pytest_modelship.report import percentile
from pytest_modelship.settings import Settings


def _response(status: int, body: bytes, content_type: str = "application/json") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    r.headers["Content-Type"] = content_type
    r.reason = "OK"
    return r


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a non-empty list of cases"),
        ({"cases": [{"path": "/x"}]}, "case #1: missing 'name'"),
        ({"cases": [{"name": "a"}, {"name": "a"}]}, "case 'a' (#2): duplicate name"),
        ({"cases": [{"name": "a", "methd": "GET"}]}, "case 'a' (#1): unknown key 'methd'"),
        ({"cases": [{"name": "a", "path": "x"}]}, "'path' must be a string starting with '/'"),
        ({"cases": [{"name": "a", "expect": {"status": "ok"}}]}, "'expect.status' must be an HTTP status code"),
        ({"cases": [{"name": "a", "expect": {"approx": -1}}]}, "'expect.approx' must be a tolerance"),
        ({"cases": [{"name": "a", "expect": {"schema": {"type": 5}}}]}, "'expect.schema' is not a valid JSON Schema"),
        ({"cases": [{"name": "a", "json": {}, "body": "x"}]}, "give either 'json' or 'body'"),
        ({"cases": [{"name": "a::b"}]}, "must not contain '::'"),
        ({"tests": []}, "unknown top-level key 'tests'"),
        # added with the JSON Schema: each place of the schema keeps its one line
        ({"zz": 1, "aa": 2, "cases": []}, "unknown top-level key 'aa' (expected 'defaults', 'cases' and 'compare')"),
        ({"defaults": [], "cases": [{"name": "a"}]}, "'defaults' must be a mapping"),
        ({"cases": {"name": "a"}}, "expected a non-empty list of cases"),
        (["a"], "case #1: expected a mapping, got str"),
        ([{"name": "  "}], "case #1: missing 'name' (a non-empty string)"),
        ({"defaults": {"methd": "GET"}, "cases": [{"name": "a"}]}, "case 'a' (#1): unknown key 'methd'"),
        ({"defaults": {"json": {}}, "cases": [{"name": "a", "body": "x"}]}, "case 'a' (#1): give either 'json' or"),
        (
            [{"name": "a", "method": "fetch"}],
            "'method' must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, got 'fetch'",
        ),
        ([{"name": "a", "headers": {1: "x"}}], "'headers' must be a mapping of names to values"),
        ([{"name": "a", "body": {"x": 1}}], "'body' must be a string (use 'json' for structured data)"),
        ([{"name": "a", "timeout": True}], "'timeout' must be a positive number of seconds, got True"),
        ([{"name": "a", "expect": ["status"]}], "case 'a' (#1): 'expect' must be a mapping"),
        ({"defaults": {"expect": 3}, "cases": [{"name": "a"}]}, "case 'a' (#1): 'expect' must be a mapping"),
        ([{"name": "a", "expect": {"stauts": 200}}], "unknown key 'expect.stauts' (expected one of approx, json,"),
        ([{"name": "a", "expect": {"status": 200.0}}], "'expect.status' must be an HTTP status code or a list of them"),
        ([{"name": "a", "expect": {"status": [200, 600]}}], "'expect.status' must be an HTTP status code"),
        ([{"name": "a", "expect": {"approx": {"abs": 1, "x": 2}}}], "got {'abs': 1, 'x': 2}"),
        ([{"name": "a", "expect": {"schema": 5}}], "'expect.schema' must be a JSON Schema mapping"),
        ([{"name": "a", "expect": {"max_latency_ms": 0}}], "'expect.max_latency_ms' must be a positive number, got 0"),
    ],
)
def test_malformed_cases_name_file_case_and_problem(doc, message):
    with pytest.raises(CasesError) as err:
        parse_cases(doc, "smoke.yaml")
    assert str(err.value).startswith("smoke.yaml: ")
    assert message in str(err.value)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cases:\n  - name: a\n    json: {x: [1, 2}\n")
    with pytest.raises(CasesError, match=r"c\.yaml: not valid YAML \(line 3, column \d+: "):
        load_file(path)


def test_json_cases_file_and_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"defaults": {"headers": {"X-A": "1"}, "expect": {"status": 201}}, "cases": [{"name": "a"}]}')
    (case,) = load_file(path)
    assert (case.method, case.path, case.headers, case.expect.status) == ("GET", "/", {"X-A": "1"}, (201,))
    (case,) = parse_cases([{"name": "p", "json": {"x": 1}}], "s")
    assert case.method == "POST"


def test_the_cases_schema_is_a_json_schema_that_accepts_the_example_cases_file():
    """The schema ships with the plugin (editors can validate a cases file with it); it must stay valid."""
    import json
    from pathlib import Path

    import jsonschema
    import yaml

    import pytest_modelship

    schema = json.loads((Path(pytest_modelship.__file__).parent / "cases.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    example = Path(__file__).parents[2] / "examples" / "flask_app" / "modelship-cases.yaml"
    jsonschema.validate(yaml.safe_load(example.read_text()), schema)
    assert [c.name for c in load_file(example)]


def test_method_in_any_case_and_expect_merged_key_by_key():
    doc = {
        "defaults": {"expect": {"status": 201, "max_latency_ms": 50}, "timeout": 3},
        "cases": [{"name": "a", "method": "patch", "expect": {"status": [200, 204]}}],
    }
    (case,) = parse_cases(doc, "s")
    assert (case.method, case.timeout, case.expect.status, case.expect.max_latency_ms) == ("PATCH", 3.0, (200, 204), 50)


def test_match_exact_subset_approx_schema_latency():
    (case,) = parse_cases(
        [
            {
                "name": "a",
                "expect": {
                    "json": {"label": "cat", "scores": [0.5, 0.25], "n": 2},
                    "approx": {"abs": 0.01},
                    "schema": {"type": "object", "properties": {"n": {"type": "string"}}},
                    "max_latency_ms": 100,
                },
            }
        ],
        "s",
    )
    good = _response(200, b'{"label": "cat", "scores": [0.505, 0.25], "n": 2}')
    assert match(case.expect, good, 10) == ["schema: $.n: 2 is not of type 'string'"]
    bad = _response(500, b'{"label": "dog", "scores": [0.6], "extra": true, "n": 2.0}')
    problems = match(case.expect, bad, 150)
    assert "status: expected 2xx, got 500" in problems
    assert "latency: 150.0 ms exceeds max_latency_ms 100" in problems
    assert '$.label: expected "cat", got "dog"' in problems
    assert "$.scores: expected 2 items, got 1" in problems
    assert "$.scores[0]: expected 0.5 ± 0.01, got 0.6" in problems
    assert "$.extra: unexpected key (value true)" in problems
    assert not any(p.startswith("$.n") for p in problems)  # 2 == 2.0 within tolerance


def test_subset_ignores_extra_keys_but_not_types():
    (case,) = parse_cases([{"name": "a", "expect": {"json_subset": {"label": "cat", "meta": {"v": 1}}}}], "s")
    assert match(case.expect, _response(200, b'{"label": "cat", "meta": {"v": 1, "w": 2}, "x": 1}'), 1) == []
    assert match(case.expect, _response(200, b'{"label": "cat", "meta": {"v": "1"}}'), 1) == [
        '$.meta.v: expected 1, got "1"'
    ]
    assert match(case.expect, _response(200, b"<html>", "text/html"), 1) == ["body: expected JSON, got '<html>'"]


@pytest.mark.parametrize(
    "text",
    [
        "AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountName=a;AccountKey=YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo=",
        "MODEL_URI=https://acct.blob.core.windows.net/models?sv=2022-11-02&sp=r&sig=AbCdEf0123456789abcdef%2B%3D",
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "/bin/sh -c #(nop) ENV HF_TOKEN=hf_abcdefghijklmnopqrstuv",
        "|1 DB_PASSWORD=s3cr3t-pa55 /bin/sh -c make",
    ],
)
def test_secret_patterns_found(text):
    assert find_secrets(text)


@pytest.mark.parametrize(
    "text",
    [
        "GPG_KEY=A035C8C19219BA821ECEA86B64E628F8D684696D",  # official python images: a public key id
        "PATH=/opt/venv/bin:/usr/bin",
        "API_TOKEN=",
        "API_TOKEN=${API_TOKEN}",
        "io.modelship.model.uri=az://models/smoke",
        "/bin/sh -c #(nop) HEALTHCHECK &{[CMD python3 -c import urllib.request]}",
    ],
)
def test_harmless_values_not_flagged(text):
    assert find_secrets(text) == []


def _image(**kw) -> ImageInfo:
    base = {
        "ref": "x:1",
        "id": "sha256:" + "0" * 64,
        "exposed_ports": ("8000/tcp",),
        "healthcheck": None,
        "user": "",
        "env": (),
        "labels": {},
        "history": (),
    }
    return ImageInfo(**{**base, **kw})


def test_image_defaults_port_and_ready_path():
    assert _image().default_port() == 8000
    with pytest.raises(SetupError, match="exposes no TCP port: pass --modelship-port"):
        _image(exposed_ports=()).default_port()
    with pytest.raises(SetupError, match=r"several ports \(8000, 9000\)"):
        _image(exposed_ports=("8000/tcp", "9000/tcp")).default_port()
    hc = ("CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/ready')")
    assert _image(healthcheck=hc).healthcheck_path() == "/v1/ready"
    assert _image(healthcheck=("CMD-SHELL", "curl -fs http://localhost:8080/healthz || exit 1")).healthcheck_path() == (
        "/healthz"
    )
    assert _image(healthcheck=("CMD", "/bin/check")).healthcheck_path() is None
    assert _image(env=("MODELSHIP_MODEL_DIR=/models",)).model_dir == "/models"


def test_model_dir_from_env_then_label_then_default():
    label = {"io.modelship.model.dir": "/srv/model"}
    assert _image().model_dir == "/opt/modelship/model"
    assert _image(labels=label).model_dir == "/srv/model"  # an app-only image that records its model dir
    # what the app reads wins; model_files_sha256 reports a label that disagrees (tests/test_plugin_reports.py)
    assert _image(labels=label, env=("MODELSHIP_MODEL_DIR=/models",)).model_dir == "/models"


def test_ports_the_image_declares_are_described():
    assert _image().describe_ports() == "exposes 8000"
    both = _image(exposed_ports=("8000/tcp", "9000/udp"), labels={"io.modelship.app.port": "9000"})
    assert both.declared_ports() == {8000, 9000}
    assert both.describe_ports() == "exposes 8000 and names port 9000 in its label io.modelship.app.port"
    assert _image(exposed_ports=()).describe_ports() == "declares no port"


def test_secret_env_values_masked_and_redacted():
    s = Settings(image="x", env={"API_KEY": "k-123456", "MODE": "fast", "AZURE_SAS": "sv=1&sig=abc"})
    assert mask_env(s.env) == {"API_KEY": "***", "MODE": "fast", "AZURE_SAS": "***"}
    assert s.redact("got k-123456 and sv=1&sig=abc in mode fast") == "got *** and *** in mode fast"


def test_owner_alive_tells_live_dead_and_foreign():
    assert owner_alive(owner_id()) is True
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = owner_id(proc.pid)
    proc.wait()
    assert owner_alive(dead) is False
    assert owner_alive("other-host|pid:[1]|1|1") is None
    assert owner_alive("garbage") is None
    assert str(os.getpid()) in owner_id()


def test_percentile_interpolates():
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == pytest.approx(10.5)
    assert percentile(values, 95) == pytest.approx(19.05)
    assert percentile([3.0], 95) == 3.0


def test_gate_thresholds_given_as_options_override_the_cases_file():
    from pytest_modelship.compare import CompareSpec, Probe
    from pytest_modelship.gate import thresholds
    from pytest_modelship.settings import _BY_KEY, _parse

    spec = CompareSpec(probes=(Probe(name="root"),), min_agreement=0.95, max_latency_ratio=1.5)
    assert thresholds(spec, None) == spec
    settings = Settings(image="app:1")
    assert thresholds(spec, settings) == spec  # none given: the file's
    settings.min_agreement = _parse(None, _BY_KEY["min_agreement"], "0.99", "MODELSHIP_MIN_AGREEMENT")
    settings.max_latency_ratio = _parse(None, _BY_KEY["max_latency_ratio"], "1.2", "--modelship-max-latency-ratio")
    stricter = thresholds(spec, settings)
    assert (stricter.min_agreement, stricter.max_latency_ratio, stricter.probes) == (0.99, 1.2, spec.probes)
    for key, bad, why in [
        ("min_agreement", "98%", "not a number"),
        ("min_agreement", "1.5", "at most 1"),
        ("min_agreement", "0", "more than 0"),
        ("max_latency_ratio", "-1", "must be more than 0"),
        ("max_latency_ratio", "inf", "must be more than 0"),
    ]:
        with pytest.raises(pytest.UsageError, match=why):
            _parse(None, _BY_KEY[key], bad, "--x")
