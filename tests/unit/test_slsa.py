"""The SLSA v1 provenance predicate (modelship.trust.slsa), judged by tests/support/predicates.py (in-toto's
provenance v1 protobuf and a schema of SLSA's required fields), code that did not write it."""

from __future__ import annotations

import json
import subprocess

import jsonschema
import pytest
from google.protobuf import json_format

from modelship.trust import slsa
from support.predicates import check_provenance as check

APP = "registry.example:5000/team/app@sha256:" + "a" * 64
MODEL = slsa.ModelInput(
    "az://acct/models/iris?sv=2024&sig=SECRETSIG", "1.4.0", "sha256:" + "b" * 64, "sha256:" + "c" * 64
)
COMMIT = "d" * 40


def _made(**kw):
    args = {
        "model": MODEL,
        "started": "2026-12-07T14:00:00Z",
        "finished": "2026-12-07T14:00:02Z",
        "app_ref": APP,
        "source": slsa.Source("https://user:TOKEN@dev.azure.com/org/p/_git/app", COMMIT, "refs/heads/main"),
        "invocation": "https://dev.azure.com/org/p/_build/results?buildId=42",
        "internal": {"platforms": ["linux/amd64"]},
        "builder_version": "0.1.0",
    }
    external = {"app": "registry.example:5000/team/app:1", "tag": "registry.example:5000/team/iris:2", "platform": None}
    return slsa.provenance("assemble", external, **{**args, **kw})


def test_the_predicate_has_slsa_v1_shape_with_every_dependency():
    p = _made()
    check(p)
    deps = {d["name"]: d for d in p["buildDefinition"]["resolvedDependencies"]}
    assert deps["app image"]["digest"] == {"sha256": "a" * 64}
    assert (
        deps["app image"]["uri"]
        == "pkg:docker/team/app@sha256%3A" + "a" * 64 + "?repository_url=registry.example%3A5000"
    )
    assert deps["model"] == {
        "name": "model",
        "uri": "az://acct/models/iris",
        "digest": {"sha256": "b" * 64},
        "annotations": {"version": "1.4.0", "signer": "sha256:" + "c" * 64},
    }
    assert deps["source"] == {
        "name": "source",
        "uri": "git+https://dev.azure.com/org/p/_git/app@refs/heads/main",
        "digest": {"gitCommit": COMMIT},
    }
    assert p["buildDefinition"]["buildType"] == "https://modelship.dev/build-types/assemble/v1"
    assert p["buildDefinition"]["externalParameters"] == {
        "app": "registry.example:5000/team/app:1",
        "tag": "registry.example:5000/team/iris:2",
    }
    assert p["runDetails"]["builder"] == {"id": slsa.BUILDER_ID, "version": {"modelship": "0.1.0"}}
    assert p["runDetails"]["metadata"]["invocationId"].endswith("buildId=42")


def test_the_least_predicate_is_valid_too():
    p = slsa.provenance(
        "publish", {"model": "./m"}, model=slsa.ModelInput("oci://r/m", None, "sha256:" + "b" * 64),
        started="2026-12-07T14:00:00Z", finished="2026-12-07T14:00:00Z",
    )  # fmt: skip
    check(p)
    assert [d["name"] for d in p["buildDefinition"]["resolvedDependencies"]] == ["model"]
    assert "annotations" not in p["buildDefinition"]["resolvedDependencies"][0]


def test_the_checks_fail_on_a_wrong_shape():
    p = _made()
    del p["runDetails"]["builder"]["id"]
    with pytest.raises(jsonschema.ValidationError):
        check(p)
    p = _made()
    p["buildDefinition"]["resolvedDependencies"][0]["sha"] = "x"  # not a ResourceDescriptor field
    with pytest.raises(json_format.ParseError):
        check(p)
    p = _made()
    p["runDetails"]["metadata"]["startedOn"] = "yesterday"
    with pytest.raises(jsonschema.ValidationError):
        check(p)


def test_no_secret_reaches_the_predicate():
    env = {
        "BUILD_SOURCEVERSION": COMMIT,
        "BUILD_REPOSITORY_URI": "https://build:PAT-SECRET@dev.azure.com/org/p/_git/app?token=QSECRET#frag",
        "BUILD_SOURCEBRANCH": "refs/heads/main",
        "BUILD_BUILDID": "42",
        "SYSTEM_COLLECTIONURI": "https://who:COLL-SECRET@dev.azure.com/org/",
        "SYSTEM_TEAMPROJECT": "my project",
    }
    external = {
        "model": "https://acct.blob.core.windows.net/models/iris?sv=2024&sig=SASSECRET",
        "models": ["s3://key:S3SECRET@bucket/x?X-Amz-Signature=AMZSECRET"],
        "nested": {"uri": "https://u:NESTSECRET@host/p"},
    }
    model = slsa.ModelInput("https://u:PW-SECRET@host/models/iris?sig=SIGSECRET", "1", "sha256:" + "b" * 64)
    p = slsa.provenance(
        "assemble", external, model=model, started="2026-12-07T14:00:00Z", finished="2026-12-07T14:00:00Z",
        app_ref=APP, source=slsa.source_from_env(env), invocation=slsa.invocation_id(env),
    )  # fmt: skip
    check(p)
    text = json.dumps(p)
    for secret in ("SECRET", "sig=", "token=", "@dev.azure.com", "u:", "build:", "who:", "#frag"):
        assert secret not in text, secret
    assert p["runDetails"]["metadata"]["invocationId"] == (
        "https://dev.azure.com/org/my%20project/_build/results?buildId=42"
    )
    assert p["buildDefinition"]["externalParameters"]["models"] == ["s3://bucket/x"]


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        ("git@github.com:team/app.git", "ssh://github.com/team/app.git"),
        ("https://TOKEN@github.com/team/app", "https://github.com/team/app"),
        ("az://acct/c/p?sv=1&sig=x", "az://acct/c/p"),
        ("/a/local/folder", "/a/local/folder"),
    ],
)
def test_public_uri(uri, public):
    assert slsa.public_uri(uri) == public


def test_source_from_git_when_the_pipeline_does_not_say(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert slsa.source_from_env({}, tmp_path) is None  # not a checkout
    git("init", "-q", "-b", "main")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    assert slsa.source_from_env({}, tmp_path) is None  # no remote: no URI to name it by
    git("remote", "add", "origin", "https://ci:GITSECRET@example.com/team/app.git")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert slsa.source_from_env({}, tmp_path) == slsa.Source(
        "https://example.com/team/app.git", head.strip(), "refs/heads/main"
    )


def test_invocation_id():
    assert slsa.invocation_id({}) is None
    assert slsa.invocation_id({"BUILD_BUILDID": "7"}) == "7"
