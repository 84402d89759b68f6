"""oci/ without services: the reference parser, the layer bytes (vs Python's tarfile and GNU tar), docker
config credentials through docker-py, and the one-line registry errors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests

from modelship.errors import AuthError, IntegrityError, ModelshipError, NotFoundError, TransientError, UsageError
from modelship.oci.auth import Credentials, acr_exchange_allowed, docker_credentials
from modelship.oci.layers import LARGE_FILE, header, model_layers
from modelship.oci.reference import base_url, names_registry, parse_reference, split_tag
from modelship.oci.registry import RegistryClient
from support.models import make_model

IMAGE_DIR = "/opt/modelship/model"
D = "sha256:" + "a" * 64


# ---------------------------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("ref", "registry", "repository", "tag", "digest"),
    [
        ("python", "docker.io", "library/python", None, None),
        ("python:3.11-slim", "docker.io", "library/python", "3.11-slim", None),
        ("team/app", "docker.io", "team/app", None, None),
        ("docker.io/library/python:3.11", "docker.io", "library/python", "3.11", None),
        ("index.docker.io/team/app:1", "docker.io", "team/app", "1", None),
        ("127.0.0.1:5000/team/app:1", "127.0.0.1:5000", "team/app", "1", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/a/b/c:v1.2_3", "localhost:5000", "a/b/c", "v1.2_3", None),
        ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
        ("myacr.azurecr.io/team/app@" + D, "myacr.azurecr.io", "team/app", None, D),
        ("myacr.azurecr.io/team/app:1@" + D, "myacr.azurecr.io", "team/app", "1", D),
        ("reg.example.com/a__b/c-d.e:latest", "reg.example.com", "a__b/c-d.e", "latest", None),
    ],
)
def test_references_parse_like_docker(ref, registry, repository, tag, digest):
    r = parse_reference(ref)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repository, tag, digest)
    assert r.reference == (digest or tag or "latest")
    again = parse_reference(str(r))  # one form, round-trips (a missing tag is written as :latest)
    assert (again.name, again.reference) == (r.name, r.reference)


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("", "invalid image reference"),
        ("Team/App", "lower-case"),
        ("reg.io/app:bad tag", "invalid image reference"),
        ("reg.io/app:-x", "tag '-x' is not valid"),
        ("reg.io/app@sha256:abc", "bad digest"),
        ("reg.io/app@md5:" + "a" * 32, "bad digest"),
        ("reg.io/-app", "not a valid name"),
        ("reg.io//app", "not a valid name"),
        ("re_g.io:5000/app", "not a registry"),
        ("reg.io/" + "a" * 300, "longer than 255"),
    ],
)
def test_bad_references_are_one_line_usage_errors(ref, says):
    with pytest.raises(UsageError, match=says) as e:
        parse_reference(ref)
    assert "\n" not in str(e.value)


def test_reference_helpers():
    assert base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert base_url("localhost:5000") == "http://localhost:5000"
    assert base_url("[::1]:5000") == "http://[::1]:5000"
    assert base_url("myacr.azurecr.io") == "https://myacr.azurecr.io"
    assert base_url("docker.io") == "https://registry-1.docker.io"
    assert names_registry("127.0.0.1:5000/app:1") and names_registry("localhost/app")
    assert names_registry("myacr.azurecr.io/team/app") and names_registry("docker.io/library/python:3.11")
    assert not names_registry("team/app:1") and not names_registry("app:1.0") and not names_registry("app")
    assert parse_reference("python").repository == "library/python"
    assert parse_reference("myacr.azurecr.io/app").reference == "latest"
    assert parse_reference(f"localhost:5000/app@{D}").reference == D
    # engine names (build tags, push) split as docker-py splits them: a ':' before the last '/' is a port
    assert split_tag("127.0.0.1:5000/team/app") == ("127.0.0.1:5000/team/app", "latest")
    assert split_tag("127.0.0.1:5000/team/app:1") == ("127.0.0.1:5000/team/app", "1")
    assert split_tag(f"reg.io/app@{D}") == ("reg.io/app", D)
    r = parse_reference("127.0.0.1:5000/team/app:1")
    assert str(r.with_digest(D)) == f"127.0.0.1:5000/team/app@{D}" and r.name == "127.0.0.1:5000/team/app"
    with pytest.raises(UsageError):
        r.with_tag("no/slash")


# ---------------------------------------------------------------------------------------------- layers


def _model(root: Path, big: bytes) -> Path:
    return make_model(
        root,
        {"weights.bin": big, "tokenizer/vocab.json": b'{"a": 1}', "config.json": b"{}", "z/deep/x.txt": b"x"},
        uri="az://acct/models/m",
        version="1.0",
    )


def _bytes(layer) -> bytes:
    return b"".join(bytes(p) for p in layer.iter_bytes(0, layer.size))


def test_same_model_gives_byte_identical_layers_wherever_it_lies(tmp_path, monkeypatch):
    big = os.urandom(LARGE_FILE + 123)
    old = os.umask(0o077)
    try:
        a = _model(tmp_path / "one", big)
    finally:
        os.umask(old)
    b = _model(tmp_path / "elsewhere" / "two", big)
    os.utime(b / "weights.bin", (1, 1))  # other times, other modes, another folder: same layers
    (b / "config.json").chmod(0o600)
    _, la = model_layers(a, image_model_dir=IMAGE_DIR)
    _, lb = model_layers(b, image_model_dir=IMAGE_DIR)
    assert [x.digest(memo=False) for x in la] == [x.digest(memo=False) for x in lb]
    assert [_bytes(x) for x in la] == [_bytes(x) for x in lb]
    assert len(la) == 2 and la[0].title == f"{IMAGE_DIR}/weights.bin"
    # the digest is sha256 of the bytes, and the memo (keyed by plan) gives the same answer without reading
    assert la[0].digest(memo=False) == "sha256:" + hashlib.sha256(_bytes(la[0])).hexdigest()
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache"))
    first = la[0].digest()
    (a / "weights.bin").rename(a / "gone")  # not read again: the memo answers
    assert la[0].digest() == first


def test_layer_tar_reads_back_with_tarfile_and_gnu_tar(tmp_path):
    big = os.urandom(LARGE_FILE)
    model = _model(tmp_path / "m", big)
    manifest, layers = model_layers(model, image_model_dir=IMAGE_DIR)
    small = _bytes(layers[-1])
    with tarfile.open(fileobj=io.BytesIO(small)) as t:
        members = {m.name: m for m in t.getmembers()}
        assert list(members) == [
            "opt",
            "opt/modelship",
            "opt/modelship/model",
            "opt/modelship/model/config.json",
            "opt/modelship/model/modelship.json",
            "opt/modelship/model/tokenizer",
            "opt/modelship/model/tokenizer/vocab.json",
            "opt/modelship/model/z",
            "opt/modelship/model/z/deep",
            "opt/modelship/model/z/deep/x.txt",
        ]
        for m in members.values():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
            want = 0o755 if m.name in ("opt", "opt/modelship") else (0o555 if m.isdir() else 0o444)
            assert m.mode == want, m.name
        inside = json.loads(t.extractfile("opt/modelship/model/modelship.json").read())
        assert "fetched_at" not in inside and inside["digest"] == manifest.digest
        assert t.extractfile("opt/modelship/model/tokenizer/vocab.json").read() == b'{"a": 1}'
    with tarfile.open(fileobj=io.BytesIO(_bytes(layers[0]))) as t:
        assert t.extractfile("opt/modelship/model/weights.bin").read() == big
    (tmp_path / "l.tar").write_bytes(small)
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "l.tar")], capture_output=True, text=True, check=True)
    assert "dr-xr-xr-x 0/0" in listing.stdout and "-r--r--r-- 0/0" in listing.stdout and not listing.stderr


def test_reader_from_an_offset_matches_the_whole_stream(tmp_path):
    model = _model(tmp_path / "m", os.urandom(LARGE_FILE + 7))
    _, layers = model_layers(model, image_model_dir=IMAGE_DIR)
    whole = _bytes(layers[0])
    for offset in (0, 1, 511, 512, 1536, 1 << 20, len(whole) - 1030, len(whole)):
        r = layers[0].open(offset)
        got = b""
        while chunk := r.read(300_000):
            got += chunk
        assert got == whole[offset:], offset
    r = layers[0].open()
    while r.read(1 << 20):
        pass
    assert r.digest == layers[0].digest(memo=False)


def test_a_file_changed_after_the_fetch_is_refused_while_streaming(tmp_path):
    model = _model(tmp_path / "m", os.urandom(LARGE_FILE))
    _, layers = model_layers(model, image_model_dir=IMAGE_DIR)
    with open(model / "weights.bin", "r+b") as f:  # same size, one byte different
        f.seek(1000)
        f.write(b"\xff" if f.read(1) != b"\xff" else b"\x00")
    with pytest.raises(IntegrityError, match=r"weights\.bin: sha256 does not match the model's manifest"):
        layers[0].digest(memo=False)
    (model / "config.json").write_bytes(b"{ }")  # another size: refused before anything is read
    with pytest.raises(IntegrityError, match=r"config\.json: 3 bytes but the manifest says 2"):
        model_layers(model, image_model_dir=IMAGE_DIR)
    (model / "config.json").unlink()
    with pytest.raises(IntegrityError, match="listed in the manifest but missing"):
        model_layers(model, image_model_dir=IMAGE_DIR)


def test_folder_without_manifest_and_bad_paths_are_one_line_usage_errors(tmp_path):
    plain = make_model(tmp_path / "plain", {"a.bin": b"a"})  # a plain folder: its manifest is computed
    manifest, _ = model_layers(plain, image_model_dir=IMAGE_DIR)
    assert manifest.uri == f"file://{plain}" and manifest.version is None
    assert [f.path for f in manifest.files] == ["a.bin"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="is empty"):
        model_layers(tmp_path / "empty", image_model_dir=IMAGE_DIR)
    with pytest.raises(UsageError, match="must be an absolute, normalised path"):
        model_layers(_model(tmp_path / "m", b"x"), image_model_dir="opt/../model")
    evil = _model(tmp_path / "evil", b"x")
    data = json.loads((evil / "modelship.json").read_text())
    data["files"][0]["path"] = "../../etc/passwd"
    from modelship.manifest import tree_digest

    data["digest"] = tree_digest((f["path"], f["sha256"]) for f in data["files"])
    (evil / "modelship.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="is not a plain relative path"):
        model_layers(evil, image_model_dir=IMAGE_DIR)


def test_source_date_epoch_sets_the_mtime(tmp_path, monkeypatch):
    model = _model(tmp_path / "m", b"small")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    _, layers = model_layers(model, image_model_dir=IMAGE_DIR)
    with tarfile.open(fileobj=io.BytesIO(_bytes(layers[0]))) as t:
        assert {m.mtime for m in t.getmembers()} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        model_layers(model, image_model_dir=IMAGE_DIR)


def test_pax_headers_only_where_ustar_cannot_hold_the_entry():
    plain = header("opt/model/a.bin", mode=0o444, size=5)
    assert len(plain) == 512 and plain[257:263] == b"ustar\x00"
    split = header("opt/" + "d" * 120 + "/f.bin", mode=0o444, size=5)  # fits ustar's prefix + name
    assert len(split) == 512
    for name, size in (("opt/" + "x" * 300, 5), ("opt/é.bin", 5), ("opt/huge.bin", 9 * 1024**3)):
        h = header(name, mode=0o444, size=size)
        assert len(h) == 1536 and h[156:157] == b"x"  # pax header + its records + the ustar header
        info = tarfile.TarInfo.frombuf(h[1024:], "utf-8", "surrogateescape")
        assert info.type == tarfile.REGTYPE
        # tarfile reads it back with the pax values applied
        with tarfile.open(fileobj=io.BytesIO(h + b"\0" * 1024), mode="r:") as tar:
            member = tar.next()
        assert member is not None and (member.name, member.size) == (name, size)


def test_gnu_tar_extracts_pax_entries(tmp_path):
    if shutil.which("tar") is None:
        pytest.fail("GNU tar missing")
    name = "opt/" + "long-" * 40 + "é.txt"
    body = b"hello"
    data = header(name, mode=0o444, size=5) + body + b"\0" * 507 + b"\0" * 1024
    (tmp_path / "t.tar").write_bytes(data)
    (tmp_path / "out").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "t.tar"), "-C", str(tmp_path / "out")], check=True)
    assert (tmp_path / "out" / name).read_bytes() == body


# ---------------------------------------------------------------------------------------------- credentials


def test_docker_config_credentials_via_docker_py(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_credentials("127.0.0.1:5000") is None
    auth = base64.b64encode(b"alice:pa:ss").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"http://127.0.0.1:5000": {"auth": auth}, "myacr.azurecr.io": {"identitytoken": "rt"}}})
    )
    c = docker_credentials("127.0.0.1:5000")
    assert (c.username, c.password) == ("alice", "pa:ss") and "pa:ss" not in repr(c)
    assert docker_credentials("myacr.azurecr.io").identity_token == "rt"
    assert "rt" not in repr(docker_credentials("myacr.azurecr.io"))
    assert docker_credentials("other.io") is None
    # a credential helper that is configured but not installed: no credentials, no crash
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"127.0.0.1:5000": "nonexistent-helper"}}))
    assert docker_credentials("127.0.0.1:5000") is None


def test_a_credential_helper_is_asked(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-modelship-test"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread server\necho "{\\"Username\\": \\"bot\\", \\"Secret\\": \\"s3cret-$server\\"}"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"reg.example.com": "modelship-test"}}))
    c = docker_credentials("reg.example.com")
    assert (c.username, c.password) == ("bot", "s3cret-reg.example.com")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "modelship-test"}))
    assert docker_credentials("other.example.com").password == "s3cret-other.example.com"


def test_entra_tokens_go_only_to_acr_hosts(monkeypatch):
    monkeypatch.delenv("MODELSHIP_ACR_REGISTRIES", raising=False)
    assert acr_exchange_allowed("myacr.azurecr.io") and acr_exchange_allowed("x.azurecr.cn")
    assert not acr_exchange_allowed("evil-azurecr.io.example.com") and not acr_exchange_allowed("127.0.0.1:5000")
    monkeypatch.setenv("MODELSHIP_ACR_REGISTRIES", "127.0.0.1:5000, registry.corp.example")
    assert acr_exchange_allowed("127.0.0.1:5000") and acr_exchange_allowed("registry.corp.example")


# ---------------------------------------------------------------------------------------------- errors


def _response(status: int, body: dict | str = "") -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = (json.dumps(body) if isinstance(body, dict) else body).encode()
    return resp


@pytest.mark.parametrize(
    ("status", "body", "kind", "says"),
    [
        (404, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}, NotFoundError,
         "repository team/app not found in registry reg.io"),
        (401, {"errors": [{"code": "UNAUTHORIZED"}]}, AuthError, "wants credentials for team/app: run 'docker login"),
        (403, {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}, AuthError,
         "denied manifest PUT in team/app"),
        # what ACR answers when a registry's storage is full
        (403, {"errors": [{"code": "DENIED", "message": "Storage quota exceeded for registry"}]}, ModelshipError,
         "storage quota exceeded"),
        (415, {"errors": [{"code": "MANIFEST_INVALID", "message": "unsupported media type"}]}, ModelshipError,
         "does not support this media type"),
        (503, "upstream down", TransientError, "answered HTTP 503"),
        (400, {"errors": [{"code": "MANIFEST_INVALID", "message": "password=hunter2 x"}]}, ModelshipError,
         "MANIFEST_INVALID"),
    ],
)  # fmt: skip
def test_registry_errors_are_one_line(status, body, kind, says):
    client = RegistryClient("reg.io", Credentials("u", "hunter2"))
    err = client.error(_response(status, body), "manifest PUT", "team/app")
    assert type(err) is kind and says in str(err) and "\n" not in str(err)
    assert "hunter2" not in str(err)
