"""The Flask app through its test client: predictions, health, metadata, and every kind of bad input."""

from __future__ import annotations

import json
import random

import pytest

from conftest import MODEL_VERSION
from iris_app import create_app

SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [7.0, 3.2, 4.7, 1.4]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]
LABELS = {"setosa", "versicolor", "virginica"}


def test_predicts_each_species_with_probabilities_and_version(client):
    r = client.post("/predict", json={"instances": [SETOSA, VERSICOLOR, VIRGINICA]})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["model_version"] == MODEL_VERSION
    assert [p["label"] for p in body["predictions"]] == ["setosa", "versicolor", "virginica"]
    for p in body["predictions"]:
        assert set(p["probabilities"]) == LABELS
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["probabilities"][p["label"]] == max(p["probabilities"].values())
    assert body["predictions"][0]["probabilities"]["setosa"] > 0.9


def test_integers_are_numbers_too(client):
    r = client.post("/predict", json={"instances": [[5, 3, 1, 0]]})
    assert r.status_code == 200
    assert r.get_json()["predictions"][0]["label"] == "setosa"


def test_health_and_metadata_when_ready(client, model_dir):
    assert client.get("/health/live").status_code == 200
    r = client.get("/health/ready")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ready", "model_version": MODEL_VERSION}
    meta = client.get("/metadata").get_json()
    assert meta == json.loads((model_dir / "modelship.json").read_text())
    assert meta["version"] == MODEL_VERSION
    assert meta["digest"].startswith("sha256:")


def test_not_ready_until_the_model_is_loaded_and_checked(model_dir):
    app = create_app({"MODEL_DIR": str(model_dir), "MODEL_LOAD": "none"})
    client = app.test_client()
    assert client.get("/health/live").status_code == 200
    r = client.get("/health/ready")
    assert r.status_code == 503
    assert r.get_json()["status"] == "loading"
    r = client.post("/predict", json={"instances": [SETOSA]})
    assert r.status_code == 503
    assert r.get_json()["error"]["type"] == "not_ready"
    app.extensions["iris_model"].load()
    assert client.get("/health/ready").status_code == 200
    assert client.post("/predict", json={"instances": [SETOSA]}).status_code == 200


def test_background_loading_becomes_ready(model_dir):
    app = create_app({"MODEL_DIR": str(model_dir), "MODEL_LOAD": "background"})
    assert app.extensions["iris_model"].wait(30)
    assert app.test_client().get("/health/ready").status_code == 200


def test_model_dir_comes_from_the_environment(monkeypatch, model_dir):
    monkeypatch.setenv("MODELSHIP_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("MAX_INSTANCES", "2")
    client = create_app({"MODEL_LOAD": "eager"}).test_client()
    assert client.get("/health/ready").status_code == 200
    assert client.post("/predict", json={"instances": [SETOSA] * 3}).status_code == 413


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda tmp: None, "MODELSHIP_MODEL_DIR is not set"),
        (lambda tmp: str(tmp / "missing"), "does not exist"),
        (lambda tmp: str(tmp), "labels.json"),
    ],
    ids=["unset", "missing-dir", "empty-dir"],
)
def test_a_broken_model_dir_is_never_ready_and_says_why(tmp_path, monkeypatch, setup, reason):
    monkeypatch.delenv("MODELSHIP_MODEL_DIR", raising=False)
    client = create_app({"MODEL_DIR": setup(tmp_path), "MODEL_LOAD": "eager"}).test_client()
    assert client.get("/health/live").status_code == 200
    r = client.get("/health/ready")
    assert r.status_code == 503
    assert r.get_json()["status"] == "failed"
    assert reason in r.get_json()["error"]


def test_labels_that_do_not_match_the_model_fail_the_self_check(tmp_path, bare_model_dir):
    for name in ("model.onnx", "metrics.json"):
        (tmp_path / name).write_bytes((bare_model_dir / name).read_bytes())
    (tmp_path / "labels.json").write_text('["a", "b"]')
    client = create_app({"MODEL_DIR": str(tmp_path), "MODEL_LOAD": "eager"}).test_client()
    r = client.get("/health/ready")
    assert r.status_code == 503
    assert "self-check" in r.get_json()["error"]


def test_a_corrupt_onnx_file_is_reported(tmp_path, bare_model_dir):
    (tmp_path / "labels.json").write_bytes((bare_model_dir / "labels.json").read_bytes())
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    r = create_app({"MODEL_DIR": str(tmp_path), "MODEL_LOAD": "eager"}).test_client().get("/health/ready")
    assert r.status_code == 503
    assert "onnxruntime cannot load it" in r.get_json()["error"]


def test_bare_training_output_serves_without_metadata(bare_model_dir):
    client = create_app({"MODEL_DIR": str(bare_model_dir), "MODEL_LOAD": "eager"}).test_client()
    r = client.post("/predict", json={"instances": [SETOSA]})
    assert r.status_code == 200
    assert r.get_json()["model_version"] is None
    r = client.get("/metadata")
    assert r.status_code == 404
    assert r.get_json()["error"]["type"] == "no_manifest"


def _raw(body: str, content_type: str = "application/json") -> dict:
    return {"data": body, "content_type": content_type}


BAD_REQUESTS = {
    "text-plain": (_raw('{"instances": [[1, 2, 3, 4]]}', "text/plain"), 415),
    "form": (_raw("instances=1", "application/x-www-form-urlencoded"), 415),
    "no-content-type": ({"data": '{"instances": [[1, 2, 3, 4]]}'}, 415),
    "empty-body": (_raw(""), 400),
    "not-json": (_raw("{instances: oops"), 400),
    "json-null": (_raw("null"), 400),
    "top-level-list": ({"json": [[1, 2, 3, 4]]}, 400),
    "no-instances": ({"json": {"inputs": [[1, 2, 3, 4]]}}, 400),
    "extra-field": ({"json": {"instances": [[1, 2, 3, 4]], "debug": True}}, 400),
    "instances-not-list": ({"json": {"instances": "1,2,3,4"}}, 400),
    "instances-empty": ({"json": {"instances": []}}, 400),
    "flat-row": ({"json": {"instances": [1, 2, 3, 4]}}, 400),
    "row-too-short": ({"json": {"instances": [[1, 2, 3]]}}, 400),
    "row-too-long": ({"json": {"instances": [[1, 2, 3, 4, 5]]}}, 400),
    "ragged": ({"json": {"instances": [[1, 2, 3, 4], [1, 2]]}}, 400),
    "nested": ({"json": {"instances": [[[1], 2, 3, 4]]}}, 400),
    "string-value": ({"json": {"instances": [["5.1", 3.5, 1.4, 0.2]]}}, 400),
    "null-value": ({"json": {"instances": [[None, 3.5, 1.4, 0.2]]}}, 400),
    "bool-value": ({"json": {"instances": [[True, 3.5, 1.4, 0.2]]}}, 400),
    "nan-literal": (_raw('{"instances": [[NaN, 3.5, 1.4, 0.2]]}'), 400),
    "infinity-literal": (_raw('{"instances": [[Infinity, 3.5, 1.4, 0.2]]}'), 400),
    "overflow-to-inf": (_raw('{"instances": [[1e400, 3.5, 1.4, 0.2]]}'), 400),
    "huge-integer": (_raw('{"instances": [[1' + "0" * 400 + ", 3.5, 1.4, 0.2]]}"), 400),
    "beyond-float32": ({"json": {"instances": [[1e39, 3.5, 1.4, 0.2]]}}, 400),
    "too-many-instances": ({"json": {"instances": [SETOSA] * 101}}, 413),
    "body-too-large": (_raw('{"instances": [' + ",".join(["[1, 2, 3, 4]"] * 100_000) + "]}"), 413),
}


@pytest.mark.parametrize(("kwargs", "status"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_input_is_a_4xx_json_error(client, kwargs, status):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    err = r.get_json()["error"]
    assert err["type"]
    assert err["message"]


def test_exactly_the_limit_is_accepted(client):
    r = client.post("/predict", json={"instances": [SETOSA] * 100})
    assert r.status_code == 200
    assert len(r.get_json()["predictions"]) == 100


def test_wrong_method_and_unknown_path_are_json_too(client):
    r = client.get("/predict")
    assert r.status_code == 405
    assert r.get_json()["error"]["type"] == "method_not_allowed"
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.get_json()["error"]["type"] == "not_found"


def _random_json(rng: random.Random, depth: int = 0):
    kinds = ["int", "float", "str", "bool", "null", "list", "dict"] if depth < 3 else ["int", "float", "str"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 7, 2**63, -(2**70)])
    if kind == "float":
        return rng.choice([0.5, -3.25, 1e308, 1e-320, 5.1])
    if kind == "str":
        return rng.choice(["", "x", "instances", "5.1"])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["instances", "x"]): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 2))}


def test_random_bodies_never_cause_a_server_error(client):
    rng = random.Random(1234)
    statuses = set()
    for _ in range(300):
        body = _random_json(rng)
        if rng.random() < 0.5:
            body = {"instances": body}
        r = client.post("/predict", json=body)
        assert r.status_code < 500, (body, r.get_data(as_text=True))
        statuses.add(r.status_code)
    assert 400 in statuses
