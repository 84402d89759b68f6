"""train.py: deterministic, no pickle, the ONNX export agrees with scikit-learn, publish works."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.datasets import load_iris

import train


def test_export_writes_only_onnx_and_json(bare_model_dir):
    assert sorted(p.name for p in bare_model_dir.iterdir()) == ["labels.json", "metrics.json", "model.onnx"]
    onnx.checker.check_model(onnx.load(str(bare_model_dir / "model.onnx")))
    assert json.loads((bare_model_dir / "labels.json").read_text()) == ["setosa", "versicolor", "virginica"]


def test_held_out_accuracy_is_recorded_and_good(bare_model_dir):
    metrics = json.loads((bare_model_dir / "metrics.json").read_text())
    assert metrics["n_test"] == 38
    assert metrics["n_train"] == 112
    assert 0.9 <= metrics["accuracy"] <= 1.0


def test_same_code_gives_byte_identical_model(tmp_path, bare_model_dir):
    again = train.export(train.train(), tmp_path / "again")
    for name in ("model.onnx", "labels.json", "metrics.json"):
        assert (again / name).read_bytes() == (bare_model_dir / name).read_bytes(), name


def test_other_hyperparameters_give_another_model(tmp_path, bare_model_dir):
    other = train.export(train.train(c=0.1), tmp_path / "other")
    assert (other / "model.onnx").read_bytes() != (bare_model_dir / "model.onnx").read_bytes()


def test_onnx_outputs_are_plain_tensors_matching_sklearn(trained, bare_model_dir):
    sess = ort.InferenceSession(str(bare_model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]  # zipmap off
    x = load_iris().data.astype(np.float32)
    labels, probs = sess.run(None, {"input": x})
    np.testing.assert_array_equal(labels, trained.pipeline.predict(x))
    np.testing.assert_allclose(probs, trained.pipeline.predict_proba(x), atol=1e-5)


def test_main_publishes_a_version(tmp_path, capsys):
    store = tmp_path / "store"
    assert train.main(["--out", str(tmp_path / "m"), "--publish", store.as_uri(), "--version", "1"]) == 0
    published = json.loads((store / "1" / "modelship.json").read_text())
    assert published["version"] == "1"
    assert sorted(f["path"] for f in published["files"]) == ["labels.json", "metrics.json", "model.onnx"]
    assert "published" in capsys.readouterr().out
    # the same version again is refused (one line, exit 1) unless --force
    assert train.main(["--out", str(tmp_path / "m"), "--publish", store.as_uri(), "--version", "1"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert train.main(["--out", str(tmp_path / "m"), "--publish", store.as_uri(), "--version", "1", "--force"]) == 0


def test_publish_needs_a_version(tmp_path):
    with pytest.raises(SystemExit) as exc:
        train.main(["--out", str(tmp_path / "m"), "--publish", "file:///nowhere"])
    assert exc.value.code == 2
