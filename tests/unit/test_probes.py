"""`modelship probes record`: captures -> the gate's probes file, read back by the plugin's own loader."""

from __future__ import annotations

import json

from pytest_modelship.compare import load_probes
from support.cli import run_cli

CAPTURE = "\n".join(
    [
        '10.0.0.7 - - [07/Dec/2026:06:00:01 +0000] "GET /version?verbose=1 HTTP/1.1" 200 21 "-" "curl/8"',
        "INFO worker booted",  # not a request: skipped
        json.dumps(
            {
                "method": "post",
                "url": "http://svc:8000/predict",
                "headers": {"Authorization": "Bearer s3cr3t-value", "X-Api-Key": "k3y-value", "X-Client": "web"},
                "body": json.dumps({"x": [1, 2]}),
            }
        ),
        json.dumps({"path": "/predict", "json": {"x": [-1]}, "headers": {"Cookie": "sid=c00kie", "Host": "svc"}}),
        "",
    ]
)


def test_record_turns_log_and_json_lines_into_probes_without_secrets(tmp_path):
    out = tmp_path / "probes.jsonl"
    proc = run_cli("probes", "record", "--from", "-", "--out", str(out), stdin=CAPTURE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (
        f"recorded 3 probes to {out} (1 other lines skipped; secret headers dropped: authorization, cookie, x-api-key)"
    )
    text = out.read_text()
    for secret in ("s3cr3t", "k3y-value", "c00kie", "Authorization", "Cookie"):
        assert secret not in text and secret not in proc.stderr
    assert [json.loads(line) for line in text.splitlines()] == [
        {"method": "GET", "path": "/version?verbose=1"},
        {"method": "POST", "path": "/predict", "headers": {"X-Client": "web"}, "json": {"x": [1, 2]}},
        {"method": "POST", "path": "/predict", "json": {"x": [-1]}},
    ]
    probes = load_probes(out)  # what a compare section's probes_file reads
    assert [(p.name, p.method, p.path) for p in probes] == [
        ("probes.jsonl:1", "GET", "/version?verbose=1"),
        ("probes.jsonl:2", "POST", "/predict"),
        ("probes.jsonl:3", "POST", "/predict"),
    ]


def test_record_never_overwrites_and_names_a_bad_line(tmp_path):
    out = tmp_path / "probes.jsonl"
    out.write_text("mine\n")
    proc = run_cli("probes", "record", "--from", "-", "--out", str(out), stdin=CAPTURE)
    assert proc.returncode == 2 and out.read_text() == "mine\n"
    assert proc.stderr.strip().endswith("exists: choose another --out, or remove it first"), proc.stderr
    fresh = tmp_path / "new.jsonl"
    proc = run_cli("probes", "record", "--from", "-", "--out", str(fresh), stdin='{"path": "/p"}\n[1, 2]\n')
    assert proc.returncode == 2 and not fresh.exists() and list(tmp_path.iterdir()) == [out]
    assert "stdin: line 2: expected a request object, got list" in proc.stderr
    proc = run_cli("probes", "record", "--from", "-", "--out", str(fresh), stdin="nothing here\n")
    assert proc.returncode == 2 and "no requests found" in proc.stderr
