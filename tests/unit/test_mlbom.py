"""The ML-BOM (modelship.trust.mlbom) and the app dependencies label it reads, validated by CycloneDX's strict
JSON validator (cyclonedx-python-lib's JsonStrictValidator, the 1.6 schema it ships: tests/support/predicates.py)."""

from __future__ import annotations

import json

import pytest

from modelship.conventions import APP_DEPENDENCIES_LABEL, APP_DEPENDENCIES_MAX, dependencies_label, parse_dependencies
from modelship.image.wheels import installed
from modelship.manifest import FileEntry, Manifest
from modelship.trust.mlbom import ml_bom, model_name
from support.predicates import bom_error

IMAGE = "registry.example:5000/team/iris@sha256:" + "e" * 64
FILES = [FileEntry("weights/model.onnx", 1234, "1" * 64), FileEntry("config.json", 10, "2" * 64)]
MANIFEST = Manifest.create("az://acct/models/iris?sv=1&sig=SASSECRET", "1.4.0", FILES)
LABELS = dependencies_label([("numpy", "2.1.0"), ("flask", "3.0.3"), ("onnxruntime", "1.20.1")])


def valid(bom: dict) -> None:
    error = bom_error(bom)
    assert error is None, error


def test_the_bom_validates_and_lists_the_model_its_files_and_the_dependencies():
    bom = ml_bom(MANIFEST, LABELS, image_ref=IMAGE, signer="sha256:" + "c" * 64, tool_version="0.1.0")
    valid(bom)
    assert bom["specVersion"] == "1.6"
    (model,) = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    libraries = [c for c in bom["components"] if c is not model]
    assert model["type"] == "machine-learning-model"
    assert (model["name"], model["version"]) == ("iris", "1.4.0")
    assert model["externalReferences"] == [{"type": "distribution", "url": "az://acct/models/iris"}]
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert props == {
        "modelship:model:uri": "az://acct/models/iris",
        "modelship:model:digest": MANIFEST.digest,
        "modelship:model:signer": "sha256:" + "c" * 64,
    }
    files = {c["name"]: c for c in model["components"]}
    assert {n: c["hashes"] for n, c in files.items()} == {
        f.path: [{"alg": "SHA-256", "content": f.sha256}] for f in FILES
    }
    assert all(c["type"] == "file" for c in files.values())
    assert [(c["type"], c["name"], c["version"], c["purl"]) for c in libraries] == [
        ("library", "flask", "3.0.3", "pkg:pypi/flask@3.0.3"),
        ("library", "numpy", "2.1.0", "pkg:pypi/numpy@2.1.0"),
        ("library", "onnxruntime", "1.20.1", "pkg:pypi/onnxruntime@1.20.1"),
    ]
    subject = bom["metadata"]["component"]
    assert (subject["type"], subject["name"], subject["version"]) == ("container", IMAGE.split("@")[0], IMAGE[-71:])
    deps = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert sorted(deps[IMAGE]) == sorted([model["bom-ref"], *(c["bom-ref"] for c in libraries)])
    assert "SASSECRET" not in json.dumps(bom)


def test_the_validator_refuses_a_wrong_component_type():
    bom = ml_bom(MANIFEST, LABELS)
    valid(bom)
    (model,) = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    model["type"] = "ml-model"  # the CycloneDX type is machine-learning-model
    assert bom_error(bom) is not None


def test_a_bom_without_dependencies_or_image_is_valid():
    bom = ml_bom(Manifest.create("/data/models/iris/3", None, FILES[:1]))
    valid(bom)
    assert [c["type"] for c in bom["components"]] == ["machine-learning-model"]
    assert "externalReferences" not in bom["components"][0]  # a local folder is no place to get it from
    assert "version" not in bom["components"][0]


@pytest.mark.parametrize(
    ("uri", "name"),
    [("az://acct/models/iris", "iris"), ("oci://r:5000/team/iris/", "iris"), ("s3://u:p@b/m?sig=x", "m")],
)
def test_model_name(uri, name):
    assert model_name(uri) == name


def test_the_dependencies_label_round_trips_and_stays_small(tmp_path):
    for whl in ("Flask-3.0.3-py3-none-any.whl", "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "junk.whl"):
        (tmp_path / whl).write_bytes(b"")
    assert installed(tmp_path) == [("flask", "3.0.3"), ("numpy", "2.1.0")]
    label = dependencies_label(installed(tmp_path))
    assert label == {APP_DEPENDENCIES_LABEL: "flask==3.0.3,numpy==2.1.0"}
    assert parse_dependencies(label[APP_DEPENDENCIES_LABEL]) == [("flask", "3.0.3"), ("numpy", "2.1.0")]
    assert parse_dependencies(None) == parse_dependencies("x,,y==") == []
    assert dependencies_label([]) == {}
    many = [(f"package-{i}", "1.0.0") for i in range(APP_DEPENDENCIES_MAX // 10)]
    assert dependencies_label(many) == {}  # too long for a label: left off, not cut
