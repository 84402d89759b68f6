"""What the CLI prints: the glossary's names (docs/architecture.md), pinned refs and pipeline variables."""

from __future__ import annotations

import json

import pytest

from modelship import cli
from modelship.oci.reference import pinned


@pytest.mark.parametrize(
    ("image", "digest", "ref"),
    [
        ("127.0.0.1:5000/team/iris:1.4", "sha256:aa", "127.0.0.1:5000/team/iris@sha256:aa"),
        ("myacr.azurecr.io/iris", "sha256:bb", "myacr.azurecr.io/iris@sha256:bb"),
        ("reg:5000/iris@sha256:old", "sha256:cc", "reg:5000/iris@sha256:cc"),
        ("iris:dev", "sha256:dd", "iris@sha256:dd"),
    ],
)
def test_ref_is_the_repository_pinned_by_digest(image, digest, ref):
    assert pinned(image, digest) == ref


def test_old_option_spellings_still_work_but_are_not_listed(capsys):
    parser = cli.build_parser()
    a = parser.parse_args(["publish", "m", "oci://r:5000/x", "--version", "1", "--image-dir", "/models/a"])
    b = parser.parse_args(["publish", "m", "oci://r:5000/x", "--version", "1", "--image-model-dir", "/models/a"])
    assert a.image_model_dir == b.image_model_dir == "/models/a"
    ref = "r:5000/x@sha256:" + "0" * 64
    c = parser.parse_args(["deploy", "render", "--image", ref, "--out", "k8s", "--model-dir", "/m"])
    d = parser.parse_args(["deploy", "render", "--image", ref, "--out", "k8s", "--image-model-dir", "/m"])
    assert c.image_model_dir == d.image_model_dir == "/m"
    for argv in (["publish", "--help"], ["deploy", "render", "--help"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        text = capsys.readouterr().out
        assert "--image-model-dir" in text and "--image-dir" not in text and "--model-dir" not in text


def _model(path):
    path.mkdir()
    (path / "w.bin").write_bytes(b"weights")
    return path


def test_pipeline_variables_come_from_the_json_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    store = (tmp_path / "store").as_uri()
    assert cli.main(["publish", str(_model(tmp_path / "m")), store, "--version", "1.0.0", "--json"]) == 0
    published = json.loads(capsys.readouterr().out)
    argv = ["fetch", store, str(tmp_path / "dest"), "--pipeline-variable", "modelVersion=version"]
    assert cli.main([*argv, "--pipeline-variable", "modelDigest=model_digest", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fetched ")  # the human line first, then what the agent reads
    assert lines[1:] == [
        "##vso[task.setvariable variable=modelVersion;isOutput=true]1.0.0",
        "##vso[task.setvariable variable=modelVersion]1.0.0",
        f"##vso[task.setvariable variable=modelDigest;isOutput=true]{published['model_digest']}",
        f"##vso[task.setvariable variable=modelDigest]{published['model_digest']}",
    ]
    # a key the result does not have is named, with the ones it has
    argv = ["fetch", store, str(tmp_path / "dest"), "--pipeline-variable", "imageRef=ref"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelship: error: --pipeline-variable imageRef=ref: this result has no single value 'ref'")
    assert "model_digest" in err and "\n" not in err


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--pipeline-variable", "imageRef"], "is not NAME=KEY"),
        (["--pipeline-variable", "a b=ref"], "is not NAME=KEY"),
        (["--pipeline-variable", "imageRef=ref", "--json"], "not allowed with argument"),
    ],
)
def test_bad_pipeline_variables_are_usage_errors(extra, says, capsys):
    assert cli.main(["resolve", "file:///nowhere", *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_print_gives_one_value_for_a_shell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    store = (tmp_path / "store").as_uri()
    model = str(_model(tmp_path / "m"))
    assert cli.main(["publish", model, store, "--version", "2.0.0", "--print", "model_digest"]) == 0
    digest = capsys.readouterr().out
    assert digest.startswith("sha256:") and digest.count("\n") == 1  # DIGEST=$(modelship publish … --print …)
    assert cli.main(["resolve", store, "--print", "model.model_digest"]) == 0  # a nested key, dotted
    assert capsys.readouterr().out == digest
    assert cli.main(["resolve", store, "--print", "model"]) == 2  # a block is not one value
    assert "no single value 'model'" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["", "a/b", "..", " 1.0"])
def test_one_version_rule_in_every_verb(version, tmp_path, capsys):
    # publish, resolve, lock and fetch refuse a bad version name alike: one rule (conventions.check_version)
    store = (tmp_path / "store").as_uri()
    runs = [
        ["publish", str(_model(tmp_path / "m")), store, "--version", version],
        ["resolve", store, "--version", version],
        ["lock", store, "--version", version, "-o", str(tmp_path / "x.lock")],
        ["fetch", store, str(tmp_path / "dest"), "--version", version],
    ]
    errors = set()
    for argv in runs:
        assert cli.main(argv) == 2
        errors.add(capsys.readouterr().err)
    rule = "give a version name without '/' (e.g. 1.2.0)"
    assert errors == {f"modelship: error: invalid --version {version!r}: {rule}\n"}
    assert not (tmp_path / "store").exists() and not (tmp_path / "dest").exists()


def test_inspect_results_json_is_the_glossarys():
    from modelship import InspectResult
    from modelship.image._inspect import describe

    labels = {"io.modelship.model.uri": "az://a/m", "io.modelship.model.version": "1", "io.modelship.app.port": "80"}
    local = describe("app:dev", "local", "sha256:" + "1" * 64, None, labels)
    assert isinstance(local, InspectResult) and local.ref is None and local.model["version"] == "1"
    keys = {"image", "ref", "source", "id", "image_digest", "labels", "model", "app", "manifest"}
    assert set(local.to_dict()) == keys  # platform(s) only of an image read from an index
    digest = "sha256:" + "2" * 64
    one = describe(
        "reg:5000/t/app:1", "registry", "sha256:" + "1" * 64, digest, labels, "linux/amd64", ("linux/amd64",)
    )
    d = one.to_dict()
    assert set(d) == keys | {"platform", "platforms"} and d["platforms"] == ["linux/amd64"]
    assert (d["image"], d["ref"], d["image_digest"]) == ("reg:5000/t/app:1", f"reg:5000/t/app@{digest}", digest)
    assert json.loads(json.dumps(d)) == d


def test_push_and_assemble_results_use_the_glossarys_names():
    from modelship import AssembleResult, PushResult

    digest = "sha256:" + "3" * 64
    pushed = PushResult(image="reg:5000/app:1", image_digest=digest, ref=f"reg:5000/app@{digest}")
    assert pushed.to_dict() == {
        "image": "reg:5000/app:1",
        "image_digest": digest,
        "ref": f"reg:5000/app@{digest}",
        "image_signature": None,  # with --sign-key: the image's cosign signature (docs/trust.md)
    }
    fields = set(AssembleResult.__dataclass_fields__)
    assert {"image", "image_digest", "ref", "app_ref"} <= fields and not {"digest", "pinned", "base"} & fields
