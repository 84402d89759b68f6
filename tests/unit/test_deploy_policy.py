"""deploy render --policy kyverno --key PUB.pem: a Kyverno ClusterPolicy valid against Kyverno's own CRD schema
(vendored from the kyverno repository: tests/data/kyverno/README.md), requiring the key's signature on the app
image and on every image volume, which Kyverno's built-in extractors skip (kyverno#17555). The extraction is
checked by a reader written from Kyverno's source (tests/support/kyverno.py), not by the writer."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from modelship import cli
from modelship.deploy import default_template_dir, render
from modelship.errors import UsageError
from support.kube import validate
from support.kyverno import built_in_extractors, image_name, images, policy_errors, verified_by
from support.oms import pem_keypair

POLICY_FILE = "clusterpolicy-kyverno.yaml"
DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = f"myregistry.azurecr.io/iris-service@{DIGEST}"
VOLUME_IMAGE = f"models.example.com:5000/team/llm:2.0@sha256:{'cd' * 32}"
APP = {"port": 8000, "ready_path": "/health/ready", "live_path": "/health/live"}
APP_ARGS = ["--port", "8000", "--ready-path", "/health/ready", "--live-path", "/health/live"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    """A P-256 key pair as PEM files: (private, public)."""
    return pem_keypair(tmp_path_factory.mktemp("keys"), "team")


@pytest.fixture
def templates_with_image_volume(tmp_path) -> Path:
    """The built-in templates, the Deployment with an image volume of its own (as a user's template may have)."""
    folder = tmp_path / "templates"
    shutil.copytree(default_template_dir(), folder)
    path = folder / "deployment.yaml"
    doc = yaml.safe_load(path.read_text())
    volume = {"name": "weights", "image": {"reference": VOLUME_IMAGE, "pullPolicy": "IfNotPresent"}}
    doc["spec"]["template"]["spec"]["volumes"].append(volume)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def _policy(paths: list[Path]) -> dict:
    (path,) = [p for p in paths if p.name == POLICY_FILE]
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return doc


def _manifests(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.name != POLICY_FILE]


# --- the tests


def test_the_policy_is_valid_against_kyvernos_crd_schema_and_the_manifests_against_kubernetes(tmp_path, keys):
    _, pub = keys
    paths = render(IMAGE, tmp_path / "k8s", **APP, policy="kyverno", key=pub, require_attestations=["test-result"])
    assert [p.name for p in paths] == ["deployment.yaml", "service.yaml", POLICY_FILE]
    policy = _policy(paths)
    assert (policy["apiVersion"], policy["kind"]) == ("kyverno.io/v1", "ClusterPolicy")
    assert policy_errors(policy) == []
    proc = validate(_manifests(paths))
    assert proc.returncode == 0 and proc.stdout.count("passed") == 2, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p["spec"]["rules"][0].pop("name"), "'name' is a required property"),
        (lambda p: p["spec"]["rules"][0].pop("match"), "'match' is a required property"),
        (lambda p: p["spec"]["rules"][0]["imageExtractors"]["Pod"][3].pop("path"), "'path' is a required property"),
        (lambda p: p["spec"]["rules"][0]["verifyImages"][0].update(failureAction="Block"), "is not one of"),
        (lambda p: p["spec"]["rules"][0]["verifyImages"][0].update(type="cosign"), "is not one of"),
        (lambda p: p["spec"]["rules"][0]["verifyImages"][0].update(mutateDigest="yes"), "is not of type 'boolean'"),
        (  # a misspelt field: publicKey for publicKeys
            lambda p: p["spec"]["rules"][0]["verifyImages"][0]["attestors"][0]["entries"][0]["keys"].update(
                publicKey="x"
            ),
            "Additional properties are not allowed",
        ),
    ],
)
def test_the_schema_check_fails_when_the_policy_is_broken(tmp_path, keys, change, expected):
    # proves the check above is not vacuous: each of these would be refused by the API server
    _, pub = keys
    policy = _policy(render(IMAGE, tmp_path / "k8s", **APP, policy="kyverno", key=pub))
    broken = copy.deepcopy(policy)
    change(broken)
    errors = policy_errors(broken)
    assert any(expected in e for e in errors), errors


def test_kyverno_checks_the_image_volume_only_through_the_policys_extractors(
    tmp_path, keys, templates_with_image_volume
):
    _, pub = keys
    paths = render(IMAGE, tmp_path / "k8s", template_dir=templates_with_image_volume, **APP, policy="kyverno", key=pub)
    proc = validate(_manifests(paths), "1.35.0")  # image volumes are GA-track from 1.35
    assert proc.returncode == 0 and proc.stdout.count("passed") == 2, proc.stdout + proc.stderr
    policy = _policy(paths)
    assert policy_errors(policy) == []
    deployment = yaml.safe_load((tmp_path / "k8s" / "deployment.yaml").read_text())
    # the gap: Kyverno's built-in extractors see the app container only
    assert set(images(deployment, built_in_extractors("/spec/template/spec")).values()) == {IMAGE}
    # the policy's own extractors see the image volume as well; for a Pod too (what finally runs)
    (rule,) = policy["spec"]["rules"]
    found = images(deployment, rule["imageExtractors"]["Deployment"])
    assert found == {"/spec/template/spec/containers/0/image": IMAGE, _volume_pointer(deployment): VOLUME_IMAGE}
    pod = {"kind": "Pod", "spec": deployment["spec"]["template"]["spec"]}
    assert set(images(pod, rule["imageExtractors"]["Pod"]).values()) == {IMAGE, VOLUME_IMAGE}
    assert set(rule["match"]["any"][0]["resources"]["kinds"]) == {"Pod", "Deployment"}
    # and each found image is matched by an entry that requires the key's signature, digest pinned
    key_pem = _public_pem(pub)
    for image in (IMAGE, VOLUME_IMAGE):
        (entry,) = verified_by(policy, image)
        assert entry["required"] and entry["verifyDigest"] and entry["mutateDigest"]
        assert entry["failureAction"] == "Enforce" and entry["type"] == "Cosign"
        (keys_of,) = [e["keys"] for a in entry["attestors"] for e in a["entries"]]
        assert keys_of["publicKeys"] == key_pem
        assert keys_of["rekor"] == {"ignoreTlog": True}  # modelship's signatures have no transparency-log entry
    # another digest or tag of the same repositories needs the signature too; other repositories are not named
    assert verified_by(policy, "myregistry.azurecr.io/iris-service:1.5.0")
    assert verified_by(policy, f"models.example.com:5000/team/llm@sha256:{'ef' * 32}")
    assert not verified_by(policy, f"myregistry.azurecr.io/iris-service-other@{DIGEST}")
    assert not verified_by(policy, "models.example.com:5000/team/llm-2:1")
    assert policy["metadata"]["annotations"]["pod-policies.kyverno.io/autogen-controllers"] == "none"


def _volume_pointer(deployment: dict) -> str:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (i,) = [i for i, v in enumerate(volumes) if v["name"] == "weights"]
    return f"/spec/template/spec/volumes/{i}/image/reference"


def _public_pem(pub: Path) -> str:
    key = serialization.load_pem_public_key(pub.read_bytes())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_attestations_are_required_on_the_app_image_by_predicate_type(tmp_path, keys, templates_with_image_volume):
    _, pub = keys
    uri = "https://example.com/attestation/custom/v1"
    policy = _policy(
        render(
            IMAGE,
            tmp_path / "k8s",
            template_dir=templates_with_image_volume,
            **APP,
            policy="kyverno",
            key=pub,
            require_attestations=["slsa", "cyclonedx", "test-result", uri, "slsa"],
        )
    )
    assert policy_errors(policy) == []
    (app,) = verified_by(policy, IMAGE)
    types = [a["type"] for a in app["attestations"]]
    assert types == [
        "https://slsa.dev/provenance/v1",
        "https://cyclonedx.org/bom",
        "https://in-toto.io/attestation/test-result/v0.1",
        uri,
    ]
    for a in app["attestations"]:
        assert [e["keys"]["publicKeys"] for s in a["attestors"] for e in s["entries"]] == [_public_pem(pub)]
    # the verdict must be PASSED: Kyverno evaluates conditions over the statement's predicate
    (verdict,) = [a for a in app["attestations"] if a["type"].startswith("https://in-toto.io/attestation/test-result")]
    ((condition,),) = [c["all"] for c in verdict["conditions"]]
    assert (condition["key"], condition["operator"], condition["value"]) == ("{{ result }}", "Equals", "PASSED")
    # the model image is the signature's business only (attestations are made for the tested app image)
    (model,) = verified_by(policy, VOLUME_IMAGE)
    assert "attestations" not in model


def test_no_private_key_reaches_the_output_and_a_bad_key_is_one_line(tmp_path, keys, capsys):
    priv, pub = keys
    paths = render(IMAGE, tmp_path / "k8s", **APP, policy="kyverno", key=pub)
    assert not any("PRIVATE" in p.read_text() for p in paths)
    secret = priv.read_text().splitlines()[1]
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello\n")
    ed_key = tmp_path / "ed.pub"
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed_key.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for key, expected in [
        (priv, "a private key; --key takes its public half"),
        (tmp_path / "missing.pub", "cannot read the public key"),
        (not_a_key, "not a PEM public key"),
        (ed_key, "not an EC public key"),
    ]:
        out = tmp_path / f"out-{key.name}"
        rc = cli.main(["deploy", "render", "--image", IMAGE, "--out", str(out), *APP_ARGS, "--policy", "kyverno",
                       "--key", str(key)])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2, err
        assert expected in err and len(err.strip().splitlines()) == 1, err
        assert secret not in err
        assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "kyverno"}, "needs the public key"),
        ({"policy": "gatekeeper", "key": "k.pub"}, "choose one of kyverno"),
        ({"key": "k.pub"}, "--key is for the admission policy"),
        ({"require_attestations": ["slsa"]}, "--require-attestation is for the admission policy"),
        (
            {"policy": "kyverno", "key": "PUB", "require_attestations": ["sbom"]},
            "--require-attestation: 'sbom' is no attestation type; use slsa, cyclonedx",
        ),
    ],
)
def test_options_that_do_not_go_together_are_refused_before_anything_is_read(tmp_path, keys, kwargs, message):
    if kwargs.get("key") == "PUB":
        kwargs["key"] = keys[1]
    # not pinned by digest: had the options been accepted, the image error would have come instead
    with pytest.raises(UsageError, match=message):
        render("never-read:latest", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_template_with_the_policys_file_name_is_refused(tmp_path, keys):
    folder = tmp_path / "templates"
    shutil.copytree(default_template_dir(), folder)
    (folder / POLICY_FILE).write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(UsageError, match=POLICY_FILE):
        render(IMAGE, tmp_path / "out", template_dir=folder, **APP, policy="kyverno", key=keys[1])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("image", "name"),
    [
        (f"iris@{DIGEST}", f"docker.io/library/iris@{DIGEST}"),
        (f"team/iris:1.0@{DIGEST}", f"docker.io/team/iris@{DIGEST}"),
        (f"localhost:5000/iris@{DIGEST}", f"localhost:5000/iris@{DIGEST}"),
        (f"localhost/iris@{DIGEST}", f"localhost/iris@{DIGEST}"),
    ],
)
def test_repositories_are_named_as_kyverno_names_them(tmp_path, keys, image, name):
    # Kyverno adds docker.io (and library/) before it matches: a pattern without them would match nothing
    policy = _policy(render(image, tmp_path / "k8s", **APP, policy="kyverno", key=keys[1]))
    assert image_name(image) == name
    assert len(verified_by(policy, image)) == 1


def test_cli_writes_the_policy_beside_the_manifests(tmp_path, keys, capsys):
    _, pub = keys
    out = tmp_path / "k8s"
    argv = ["deploy", "render", "--image", IMAGE, "--out", str(out), "--name", "iris", *APP_ARGS]
    assert cli.main([*argv, "--policy", "kyverno", "--key", str(pub), "--require-attestation", "test-result"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / n) for n in ("deployment.yaml", "service.yaml", POLICY_FILE)]
    text = (out / POLICY_FILE).read_text()
    assert text.startswith("# Rendered by 'modelship deploy render --policy kyverno'")
    assert "kyverno#17555" in text
    policy = _policy([out / POLICY_FILE])
    assert policy["metadata"]["name"] == "iris-signed-images"
    assert policy_errors(policy) == []


def test_a_policy_left_by_an_earlier_render_is_kept_and_named(tmp_path, keys, caplog):
    """A render without --policy leaves the earlier render's policy (it may have been edited) and says that
    ``kubectl apply -f OUT`` still applies it; a file of the same name that modelship did not write is not named."""
    _, pub = keys
    out = tmp_path / "k8s"
    render(IMAGE, out, **APP, policy="kyverno", key=pub)
    before = (out / POLICY_FILE).read_text()
    with caplog.at_level("WARNING", logger="modelship"):
        paths = render(IMAGE, out, **APP)
    assert [p.name for p in paths] == ["deployment.yaml", "service.yaml"]
    assert (out / POLICY_FILE).read_text() == before
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"{out / POLICY_FILE} is from an earlier 'deploy render --policy kyverno'" in warning
    assert f"'kubectl apply -f {out}' still applies it" in warning

    (out / POLICY_FILE).write_text("# the user's own policy\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="modelship"):
        render(IMAGE, out, **APP)
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


def test_a_library_call_that_warns_prints_nothing_outside_pytest(tmp_path, keys):
    """In a program that configured no logging (pytest's own handlers would hide it here), the warning of a
    library call goes to no stream: Python's last-resort handler would print it on stderr."""
    _, pub = keys
    script = (
        "from modelship.deploy import render\n"
        f"kw = dict(port=8000, ready_path='/r', live_path='/l')\n"
        f"render({IMAGE!r}, 'out', policy='kyverno', key={str(pub)!r}, **kw)\n"
        f"render({IMAGE!r}, 'out', **kw)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")
    cli_run = subprocess.run(
        [sys.executable, "-m", "modelship.cli", "deploy", "render", "--image", IMAGE, "--out", "out", *APP_ARGS],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli_run.returncode == 0, cli_run.stderr
    assert "is from an earlier 'deploy render --policy kyverno'" in cli_run.stderr  # the CLI still says it
