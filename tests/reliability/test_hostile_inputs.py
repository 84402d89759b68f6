"""Hostile and malformed input: each case gets its one-line error and exit code (or, where the input is odd but
legitimate, a correct result), and nothing is ever written outside DEST.

Stores: Azurite for versions and markers, the moto S3 server for object names no file system or Azurite can hold
('..', NUL, backslash), a local folder for names only a file system can hold (newline, > 1024 bytes).
Every row is also written to the reliability log, from which docs/reliability.md's table is rendered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import modelship
from modelship import cli
from modelship.cache import Cache
from modelship.manifest import tree_digest
from modelship.repos.folder_publish import PENDING_MARKER
from support.faults.checks import cache_problems, secrets_in
from support.models import make_model
from support.oms import keypair
from support.pickles import evil_pickle, plain_pickle, torch_zip
from support.record import record
from support.trees import leftovers, tree_sha

pytestmark = pytest.mark.timeout(300)  # a hang is a failure, found in minutes

SECRET_SIG = "SECRETSIG0123456789abcdefXYZ"
DIGEST = "sha256:" + "0" * 64


@dataclass
class Ctx:
    """What the cases run against; ``az``/``s3``/``local`` build URIs below the prepared stores."""

    tmp: Path
    container: str
    bucket: str
    local: Path
    lock: Path
    blob_endpoint: str = ""  # Azurite's, with the account path: http://127.0.0.1:PORT/devstoreaccount1
    account_key: str = ""

    def az(self, prefix: str) -> str:
        return f"az://devstoreaccount1/{self.container}/{prefix}"

    def s3(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


@pytest.fixture(scope="module")
def stores(tmp_path_factory, blob_service, azurite_connection_string, moto_server):
    """One Azurite container, one S3 bucket and one local folder holding every odd thing the cases need."""
    import boto3

    tmp = tmp_path_factory.mktemp("hostile")
    container = blob_service.create_container(f"hostile-{uuid.uuid4().hex[:12]}")
    bucket = f"hostile-{uuid.uuid4().hex[:12]}"
    endpoint = f"http://{moto_server[0]}:{moto_server[1]}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1"
    )
    s3.create_bucket(Bucket=bucket)
    local = tmp / "store"
    cs = dict(p.split("=", 1) for p in azurite_connection_string.split(";") if "=" in p)
    ctx = Ctx(
        tmp, container.container_name, bucket, local, tmp / "modelship.lock", cs["BlobEndpoint"], cs["AccountKey"]
    )
    good = make_model(tmp / "good", {"w.bin": 3000, "sub/cfg.json": b"{}"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
        mp.setenv("MODELSHIP_CACHE_DIR", str(tmp / "setup-cache"))
        modelship.publish(good, ctx.az("iris"), version="1.0.0", progress=False)
        modelship.lock(ctx.az("iris"), output=ctx.lock)
        zero = make_model(tmp / "zero", {"a.txt": b"", "deep/er/b.txt": b"", "c.bin": b""})
        modelship.publish(zero, ctx.az("zero"), version="1", progress=False)
    up = container.upload_blob
    # A publish that died half-way (marker, some files, no manifest), and one that only wrote its marker.
    up(f"iris/2.0.0/{PENDING_MARKER}", b"{}")
    up("iris/2.0.0/w.bin", b"partial")
    up(f"iris/3.0.0/{PENDING_MARKER}", b"{}")
    up(f"stuck/1.0/{PENDING_MARKER}", b"{}")  # every version incomplete
    up("foreign/1.0/w.bin", b"uploaded by azcopy")  # no marker, no manifest: another tool's upload, usable
    up("damaged/1/modelship.json", json.dumps({"files": [{"path": "gone.bin", "size": 1, "sha256": "0" * 64}]}))
    up("badmanifest/1/modelship.json", b"{not json")
    up("badmanifest/1/w.bin", b"x")
    up("emptyver/1/modelship.json", json.dumps({"files": []}).encode())
    up("schema99/1/modelship.json", json.dumps({"schema": 99, "files": []}).encode())  # a newer modelship's
    up("schema99/1/w.bin", b"x")
    up("abs/w.bin", b"ok")
    up("abs//etc/cron.d/evil", b"owned")  # an empty segment: the rest is an absolute path
    up("longname/w.bin", b"ok")
    up("longname/" + "L" * 300, b"x")  # one path segment longer than any file system allows
    for case, name in S3_NAMES.items():
        s3.put_object(Bucket=bucket, Key=f"{case}/good.bin", Body=b"fine")
        s3.put_object(Bucket=bucket, Key=f"{case}/{name}", Body=b"evil")
    _signature_folders(tmp, local)
    make_model(local / "pickled", {"est.pkl": evil_pickle(tmp / "MARKER"), "plain.pkl": plain_pickle()})
    make_model(local / "renamed", {"weights.safetensors": evil_pickle(tmp / "MARKER", protocol=0)})
    make_model(local / "torchzip", {"model.pt": torch_zip(evil_pickle(tmp / "MARKER"))})
    (local / "newline").mkdir(parents=True)
    (local / "newline" / "good.bin").write_bytes(b"fine")
    (local / "newline" / "line\nbreak").write_bytes(b"evil")
    deep = local / "toolong" / "/".join(["d" * 200] * 5)  # 1,000+ bytes of relative name
    deep.mkdir(parents=True)
    (deep / ("f" * 100)).write_bytes(b"x")
    (local / "toolong" / "good.bin").write_bytes(b"fine")
    yield ctx, endpoint
    container.delete_container()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)


def _signature_folders(tmp: Path, local: Path) -> None:
    """Model folders as fetch writes them (modelship.json), each with a hostile model.sig; keys in tmp/keys."""
    from modelship.trust import oms

    (tmp / "keys").mkdir()
    private, _ = keypair(tmp / "keys", "team")
    key = oms.load_private_key(private)
    files = {"w.bin": b"weights" * 100, "cfg.json": b"{}"}
    shas = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    good = oms.sign(shas, key)
    other = oms.sign({"another-model.onnx": "ab" * 32}, key)  # a real signature, of another model
    for name, sig in (("truncated", good[: len(good) // 2]), ("garbled", bytes(range(256)) * 4), ("other", other)):
        make_model(local / f"sig-{name}", files, uri="file:///models/iris", version="1")
        (local / f"sig-{name}" / "model.sig").write_bytes(sig)
    make_model(local / "sig-good", files, uri="file:///models/iris", version="1")
    (local / "sig-good" / "model.sig").write_bytes(good)
    make_model(local / "sig-symlink", files, uri="file:///models/iris", version="1")
    (local / "sig-symlink" / "model.sig").symlink_to(local / "sig-good" / "model.sig")  # one that would verify


S3_NAMES = {
    "dotdot": "../../escape",
    "dot": "./here",
    "backslash": "a\\..\\..\\escape",
    "nul": "n\x00ul",
    "control": "c\x01d",
    "del": "d\x7fl",
    "tab": "t\tab",
    "absolute": "/etc/passwd",
}


@pytest.fixture
def env(stores, monkeypatch, azurite_connection_string):
    """Credentials for Azurite and moto only: no case can send a request anywhere else."""
    ctx, endpoint = stores
    for var in ("AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return ctx


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    argv: Callable[[Ctx, Path], list[str]]  # (ctx, dest) → command line
    rc: int
    needle: str  # in the error line; for rc 0, in stdout
    edit_lock: Callable[[dict], object] | None = None
    raw_lock: str | None = None
    env: Callable[[Ctx], dict[str, str | None]] | None = None  # variables to set (None: unset) for this case


def _fetch(uri: str, *extra: str) -> Callable[[Ctx, Path], list[str]]:
    return lambda ctx, dest: ["fetch", uri, str(dest), *extra]


def _fetch_at(where: str, prefix: str, *extra: str) -> Callable[[Ctx, Path], list[str]]:
    def argv(ctx: Ctx, dest: Path) -> list[str]:
        uri = {"az": ctx.az, "s3": ctx.s3, "local": lambda p: str(ctx.local / p)}[where](prefix)
        return ["fetch", uri, str(dest), *extra]

    return argv


def _render(image: str, *extra: str) -> Callable[[Ctx, Path], list[str]]:
    return lambda ctx, dest: ["deploy", "render", "--image", image, "--out", str(dest), *extra]


def _with_lock(*extra: str) -> Callable[[Ctx, Path], list[str]]:
    return lambda ctx, dest: ["fetch", "--lock", str(ctx.tmp / "edited.lock"), str(dest), *extra]


def _assemble_signed(folder: str, key: str = "keys/team.pub") -> Callable[[Ctx, Path], list[str]]:
    """assemble --model FOLDER --verify-key KEY to a registry nobody listens on: refused before any request."""
    return lambda ctx, d: [
        "assemble", "127.0.0.1:1/app:1", "--model", str(ctx.local / folder), "--tag", "127.0.0.1:1/app:m",
        "--verify-key", str(ctx.tmp / key),
    ]  # fmt: skip


def _other_account(ctx: Ctx, d: Path) -> list[str]:
    return ["fetch", f"az://otheraccount/{ctx.container}/iris", str(d)]


def _no_credentials(ctx: Ctx) -> dict[str, str | None]:
    return {"AZURE_STORAGE_CONNECTION_STRING": None, "MODELSHIP_AZURE_ENDPOINT": ctx.blob_endpoint}


def _connection_string(**parts: str) -> Callable[[Ctx], dict[str, str | None]]:
    """AZURE_STORAGE_CONNECTION_STRING with Azurite's endpoint and ``parts``; {SAS} is an expired SAS token."""

    def env(ctx: Ctx) -> dict[str, str | None]:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        expired = generate_container_sas(
            "devstoreaccount1",
            ctx.container,
            account_key=ctx.account_key,
            permission=ContainerSasPermissions(read=True, list=True),
            start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2),
            expiry=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1),
        )
        fields = {"BlobEndpoint": ctx.blob_endpoint, **{k: v.replace("{SAS}", expired) for k, v in parts.items()}}
        return {"AZURE_STORAGE_CONNECTION_STRING": ";".join(f"{k}={v}" for k, v in fields.items())}

    return env


def _set_sha(doc: dict) -> None:
    doc["files"][0]["sha256"] = "0" * 64


def _set_sha_and_digest(doc: dict) -> None:
    doc["files"][0]["sha256"] = "0" * 64
    doc["digest"] = tree_digest((f["path"], f["sha256"]) for f in doc["files"])


def _add_escaping_path(doc: dict) -> None:
    doc["files"].append({"path": "../escape", "size": 1, "sha256": "1" * 64})
    doc["digest"] = tree_digest((f["path"], f["sha256"]) for f in doc["files"])


def _wrong_types(doc: dict) -> None:
    doc["files"][0]["size"] = "big"


CASES = [
    # --- malformed URIs: refused before any request (exit 2)
    Case("uri-empty", "URI", _fetch(""), 2, "no model URI given"),
    Case("uri-blank", "URI", _fetch("   "), 2, "empty model URI"),
    Case("uri-az-nothing", "URI", _fetch("az://"), 2, "expected az://ACCOUNT/CONTAINER/PREFIX"),
    Case("uri-az-no-container", "URI", _fetch("az://devstoreaccount1"), 2, "expected az://ACCOUNT/CONTAINER/PREFIX"),
    Case("uri-az-no-account", "URI", _fetch("az:///models/iris"), 2, "expected az://ACCOUNT/CONTAINER/PREFIX"),
    Case("uri-az-bad-account", "URI", _fetch("az://evil.example.com/models/x"), 2, "is not a storage account name"),
    Case("uri-az-bad-container", "URI", _fetch("az://devstoreaccount1/Models_X/x"), 2, "is not a container name"),
    Case("uri-s3-no-bucket", "URI", _fetch("s3:///models/x"), 2, "expected s3://BUCKET/PREFIX"),
    Case("uri-unknown-scheme", "URI", _fetch("gs://bucket/models/x"), 2, "unknown model URI scheme 'gs'"),
    Case("uri-ftp", "URI", _fetch("ftp://127.0.0.1/models/x"), 2, "unknown model URI scheme 'ftp'"),
    Case("uri-az-one-slash", "URI", _fetch("az:/devstoreaccount1/models/x"), 2, "did you mean az://devstoreaccount1"),
    Case("uri-dotdot", "URI", _fetch("az://devstoreaccount1/models/../etc"), 2, "path segment '..' is not allowed"),
    Case("uri-backslash", "URI", _fetch("az://devstoreaccount1/models/a\\b"), 2, "is not allowed"),
    Case("uri-nul", "URI", _fetch("az://devstoreaccount1/models/x\x00y"), 2, "control character '\\x00'"),
    Case("uri-newline", "URI", _fetch("s3://bucket\nother/x"), 2, "control character '\\n'"),
    Case("uri-bad-ipv6", "URI", _fetch("http://[::1/m.onnx"), 2, "Invalid IPv6 URL"),
    Case("uri-bad-port", "URI", _fetch("http://127.0.0.1:port/m.onnx"), 2, "invalid model URI"),
    Case("uri-https-no-file", "URI", _fetch("https://example.org/"), 2, "an https URL must name a file"),
    Case("uri-file-with-host", "URI", _fetch("file://remotehost/models"), 2, "file URIs take no host"),
    Case(
        "uri-sas-not-echoed",
        "URI",
        _fetch(f"https://acct.blob.core.windows.net/?sv=1&sig={SECRET_SIG}"),
        2,
        "no container in the URL",
    ),
    Case(
        "uri-very-long-path",
        "URI",
        lambda ctx, d: ["fetch", str(ctx.tmp / ("y" * 5000)), str(d)],
        2,
        "path too long for the file system",
    ),
    Case(
        "uri-very-long-prefix",
        "URI",
        lambda ctx, d: ["fetch", ctx.az("x" * 10000), str(d)],
        1,
        "nothing is stored under that prefix",
    ),
    # --- missing things and versions (exit 1), bad version arguments (exit 2)
    Case(
        "missing-container",
        "versions",
        _fetch("az://devstoreaccount1/no-such-container-x/iris"),
        1,
        "container 'no-such-container-x' of account 'devstoreaccount1' not found",
    ),
    Case("missing-prefix", "versions", _fetch_at("az", "nothing-here"), 1, "nothing is stored under that prefix"),
    Case("missing-version", "versions", _fetch_at("az", "iris", "--version", "9.9"), 1, "version '9.9' not found"),
    Case("empty-version", "versions", _fetch_at("az", "iris", "--version", ""), 2, "invalid --version ''"),
    Case("version-with-slash", "versions", _fetch_at("az", "iris", "--version", "../1.0.0"), 2, "invalid --version"),
    Case("latest-skips-incomplete", "versions", _fetch_at("az", "iris", "--json"), 0, '"version": "1.0.0"'),
    Case(
        "pinned-incomplete",
        "versions",
        _fetch_at("az", "iris", "--version", "2.0.0"),
        1,
        "is incomplete (its publish has not finished or died half-way)",
    ),
    Case("pinned-marker-only", "versions", _fetch_at("az", "iris", "--version", "3.0.0"), 1, "is incomplete"),
    Case("all-versions-incomplete", "versions", _fetch_at("az", "stuck"), 1, "no complete model version"),
    Case("foreign-upload-usable", "versions", _fetch_at("az", "foreign", "--json"), 0, '"version": "1.0"'),
    Case(
        "manifest-names-missing-file",
        "versions",
        _fetch_at("az", "damaged"),
        1,
        "is damaged: 'gone.bin' is in its manifest but not in the store",
    ),
    Case("manifest-not-json", "versions", _fetch_at("az", "badmanifest"), 1, "is not a valid modelship manifest"),
    Case("empty-version-folder", "versions", _fetch_at("az", "emptyver"), 1, "holds no model files"),
    Case(
        "publish-empty-version",
        "versions",
        lambda ctx, d: ["publish", str(ctx.tmp / "good"), ctx.az("pub"), "--version", ""],
        2,
        "invalid --version ''",
    ),
    Case(
        "publish-version-with-slash",
        "versions",
        lambda ctx, d: ["publish", str(ctx.tmp / "good"), ctx.az("pub"), "--version", "1/2"],
        2,
        "invalid --version '1/2'",
    ),
    Case(
        "publish-over-incomplete",
        "versions",
        lambda ctx, d: ["publish", str(ctx.tmp / "good"), ctx.az("iris"), "--version", "2.0.0"],
        1,
        "is incomplete (a publish died half-way or is still running); pass --force",
    ),
    Case(
        "manifest-newer-schema",
        "versions",
        _fetch_at("az", "schema99"),
        2,
        "unsupported schema 99 (this modelship reads schema 1); upgrade modelship",
    ),
    # --- Azure credentials and accounts (issue #14): the URI's account is the one read, or one line says why not
    Case(
        "account-other-than-credential",
        "credentials",
        _other_account,
        1,
        "names account 'otheraccount' but AZURE_STORAGE_CONNECTION_STRING (AccountName/BlobEndpoint) is for "
        "account 'devstoreaccount1'",
    ),
    Case(
        "account-other-than-credential-https",
        "credentials",
        lambda ctx, d: ["fetch", f"https://otheraccount.blob.core.windows.net/{ctx.container}/iris", str(d)],
        1,
        "names account 'otheraccount' but AZURE_STORAGE_CONNECTION_STRING",
    ),
    Case(
        "account-routed-by-endpoint-override",
        "credentials",
        lambda ctx, d: [*_other_account(ctx, d), "--json"],
        0,
        '"uri": "az://otheraccount/',
        env=lambda ctx: {"MODELSHIP_AZURE_ENDPOINT": ctx.blob_endpoint},
    ),
    Case(
        "no-credentials-over-http",
        "credentials",
        _fetch_at("az", "iris"),
        1,
        "no credentials found for account 'devstoreaccount1', and anonymous access to container",
        env=_no_credentials,
    ),
    Case(
        "account-key-not-base64",
        "credentials",
        _fetch_at("az", "iris"),
        1,
        "the account key in AZURE_STORAGE_CONNECTION_STRING is not valid base64",
        env=_connection_string(AccountName="devstoreaccount1", AccountKey="not-base64!!"),
    ),
    Case(
        "sas-garbage",
        "credentials",
        _fetch_at("az", "iris"),
        1,
        "AZURE_STORAGE_SAS_TOKEN is not a SAS token (no sv= or sig= parameter)",
        env=lambda ctx: {**_no_credentials(ctx), "AZURE_STORAGE_SAS_TOKEN": "garbage"},
    ),
    Case(
        "sas-expired",
        "credentials",
        _fetch_at("az", "iris"),
        1,
        "the SAS token of AZURE_STORAGE_CONNECTION_STRING expired at ",
        env=_connection_string(SharedAccessSignature="{SAS}"),
    ),
    # --- hostile object names: refused, nothing written anywhere (exit 1)
    *[Case(f"name-{case}", "names", _fetch_at("s3", case), 1, "refusing file name") for case in S3_NAMES],
    Case("name-absolute-azure", "names", _fetch_at("az", "abs"), 1, "refusing file name '/etc/cron.d/evil'"),
    Case("name-segment-300", "names", _fetch_at("az", "longname"), 1, "refusing file name 'LLLL"),
    Case("name-newline", "names", _fetch_at("local", "newline"), 1, "refusing file name 'line\\nbreak'"),
    Case("name-over-1024-bytes", "names", _fetch_at("local", "toolong"), 1, "refusing file name 'ddd"),
    Case(
        "publish-hostile-local-name",
        "names",
        lambda ctx, d: ["publish", str(ctx.local / "newline"), ctx.az("pubname"), "--version", "1"],
        1,
        "refusing file name 'line\\nbreak'",
    ),
    # --- model files whose pickle runs a command when loaded (docs/trust.md): refused before any upload
    *[
        Case(
            f"publish-pickle-{folder}",
            "pickles",
            lambda ctx, d, folder=folder: [
                "publish",
                str(ctx.local / folder),
                ctx.az(f"pickled-{folder}"),
                "--version",
                "1",
            ],
            1,
            f"refusing model file {name}: its pickle imports posix.system",
        )
        for folder, name in (
            ("pickled", "est.pkl"),
            ("renamed", "weights.safetensors"),
            ("torchzip", "model.pt:archive/data.pkl"),
        )
    ],
    # --- model signatures (docs/trust.md) in a folder going into an image: refused before any registry request
    Case("sig-truncated", "signatures", _assemble_signed("sig-truncated"), 1, "not a model signature (truncated or"),
    Case("sig-garbled", "signatures", _assemble_signed("sig-garbled"), 1, "not a model signature (truncated or"),
    Case(
        "sig-other-model", "signatures", _assemble_signed("sig-other"), 1, "these are not the bytes its signer signed"
    ),
    Case("sig-symlinked", "signatures", _assemble_signed("sig-symlink"), 1, "model.sig: is a symlink; a model's"),
    Case("sig-key-not-a-key", "signatures", _assemble_signed("sig-good", "good/w.bin"), 2, "not a PEM public key"),
    # --- zero-byte files: legitimate, round-trip exactly
    Case("zero-byte-files", "files", _fetch_at("az", "zero", "--json"), 0, '"size": 0'),
    # --- a lock file edited by hand
    Case("lock-not-json", "lock", _with_lock(), 2, "not valid JSON", raw_lock="{not json"),
    Case("lock-json-array", "lock", _with_lock(), 2, "expected a JSON object", raw_lock="[]"),
    Case("lock-wrong-hash", "lock", _with_lock(), 2, "the lock was edited by hand", edit_lock=_set_sha),
    Case("lock-wrong-types", "lock", _with_lock(), 2, "not a modelship lock file", edit_lock=_wrong_types),
    Case("lock-no-files", "lock", _with_lock(), 2, "not a modelship lock file (no 'files' field)", raw_lock="{}"),
    Case(
        "lock-newer-schema",
        "lock",
        _with_lock(),
        2,
        "unsupported schema 99 (this modelship reads schema 1); upgrade modelship",
        raw_lock='{"schema": 99}',
    ),
    Case(
        "lock-consistent-but-wrong-sha",
        "lock",
        _with_lock(),
        1,
        "lock mismatch: sub/cfg.json has sha256",
        edit_lock=_set_sha_and_digest,
    ),
    Case(
        "lock-escaping-path",
        "lock",
        _with_lock(),
        2,
        "invalid entry: refusing file name '../escape'",
        edit_lock=_add_escaping_path,
    ),
    Case(
        "lock-contradicting-version",
        "lock",
        _with_lock("--version", "2.0.0"),
        2,
        "contradicts the lock file",
        edit_lock=lambda doc: None,
    ),
    Case(
        "lock-missing-file",
        "lock",
        lambda ctx, d: ["fetch", "--lock", str(ctx.tmp / "nope.lock"), str(d)],
        2,
        "no such file",
    ),
    # --- destinations and options
    Case(
        "dest-is-a-file",
        "dest",
        lambda ctx, d: ["fetch", ctx.az("iris"), str(ctx.tmp / "good" / "w.bin")],
        2,
        "exists and is not a folder",
    ),
    Case(
        "dest-foreign-folder",
        "dest",
        lambda ctx, d: ["fetch", ctx.az("iris"), str(ctx.tmp / "good")],
        2,
        "is not empty and holds no modelship.json",
    ),
    Case("workers-zero", "dest", _fetch_at("az", "iris", "--workers", "0"), 2, "--workers must be at least 1"),
    # --- command lines as users type them (issue #14): options anywhere, a missing argument named, one line
    Case(
        "options-before-dest",
        "CLI",
        lambda ctx, d: ["fetch", ctx.az("iris"), "--version", "1.0.0", str(d), "--json"],
        0,
        '"model_digest": "sha256:',
    ),
    Case("dest-missing", "CLI", lambda ctx, d: ["fetch", ctx.az("iris"), "--version", "1.0.0"], 2, "missing DEST"),
    Case(
        "dest-missing-with-lock",
        "CLI",
        lambda ctx, d: ["fetch", "--lock", str(ctx.lock)],
        2,
        "missing DEST: modelship fetch [URI] --lock FILE DEST",
    ),
    Case("unknown-option", "CLI", _fetch_at("az", "iris", "--bogus"), 2, "unrecognized arguments: --bogus"),
    # --- deploy render: the image decides the port and probes; nothing is guessed
    Case(
        "deploy-image-unreadable",
        "deploy",
        _render(f"127.0.0.1:1/absent/app@{DIGEST}"),  # nothing listens on port 1
        1,
        "reads the app's port and probe paths from the image; or pass --port, --ready-path, --live-path",
    ),
    Case(
        "deploy-port-zero",
        "deploy",
        _render(f"reg/app@{DIGEST}", "--port", "0", "--ready-path", "/ready", "--live-path", "/alive"),
        2,
        "port must be a whole number between 1 and 65535, got 0",
    ),
    Case("deploy-tag-not-digest", "deploy", _render("reg/app:latest"), 2, "is not pinned by digest"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_input(env, tmp_path, capsys, monkeypatch, case):
    ctx = env
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "model"
    if case.raw_lock is not None or case.edit_lock is not None:
        text = case.raw_lock
        if text is None:
            doc = json.loads(ctx.lock.read_text())
            case.edit_lock(doc)
            text = json.dumps(doc)
        (ctx.tmp / "edited.lock").write_text(text)
    for key, value in (case.env(ctx) if case.env else {}).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    protected = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ctx.tmp / "good").rglob("*") if p.is_file()}
    capsys.readouterr()
    rc = cli.main([*case.argv(ctx, dest), "--no-progress"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    problems = []
    if rc != case.rc:
        problems.append(f"exit {rc}, expected {case.rc}: {err.strip()[-300:]}")
    if case.rc == 0:
        if case.needle not in out:
            problems.append(f"{case.needle!r} not in the output")
        if (dest / "escape").exists() or (work / "escape").exists():
            problems.append("odd files in or next to DEST")
    else:
        if len(lines) != 1 or not lines[0].startswith("modelship: error: "):
            problems.append(f"not one error line: {err.strip()[-300:]}")
        elif case.needle not in lines[0]:
            problems.append(f"{case.needle!r} not in {lines[0][:300]!r}")
        if "unexpected" in err or "Traceback" in err:
            problems.append("unmapped exception")
        if dest.exists():
            problems.append("DEST was created by a failed command")
    if [p.name for p in work.iterdir() if p.name != "model"] or leftovers(work):
        problems.append(f"files written outside DEST: {sorted(p.name for p in work.iterdir())}")
    if any(hashlib.sha256(p.read_bytes()).hexdigest() != sha for p, sha in protected.items()):
        problems.append("the local model folder was changed")
    problems += cache_problems(Cache())
    secrets = secrets_in(out + err, [SECRET_SIG])
    if secrets:
        problems.append("the SAS signature was echoed")
    record(
        "hostile",
        case.id,
        group=case.group,
        expected_rc=case.rc,
        rc=rc,
        needle=case.needle,
        error=lines[-1] if rc and lines else "",
        outcome="pass" if not problems else "violation",
        secrets=secrets,
        injected=1,
        bytes_lost=0,
    )
    assert not problems, problems
    if case.id == "zero-byte-files":
        assert tree_sha(dest) == tree_sha(ctx.tmp / "zero") and all(
            p.stat().st_size == 0 for p in dest.rglob("*.*") if p.name != "modelship.json"
        )


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))  # the usual default on CI agents


@pytest.mark.slow
def test_ten_thousand_tiny_files(tmp_path):
    """10,000 files of a few bytes, published and fetched by the CLI in a process limited to 1024 descriptors.

    A local folder store: Azurite takes ~40 s each way for 10,000 requests; the fetch engine is the same."""
    model = tmp_path / "model"
    for i in range(10_000):
        p = model / f"d{i % 64:02d}" / f"f{i:05d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"{i}\n".encode() * (i % 3))  # a third of them are empty
    store, dest = tmp_path / "store", tmp_path / "out" / "model"
    env = {**os.environ, "MODELSHIP_CACHE_DIR": str(tmp_path / "cache")}
    timings = {}
    for verb, argv in (
        ("publish", ["publish", str(model), f"file://{store}/many", "--version", "1"]),
        ("fetch", ["fetch", f"file://{store}/many", str(dest), "--json"]),
    ):
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "modelship.cli", *argv, "--no-progress"],
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=_limit_fds,
            timeout=300,
        )
        timings[verb] = round(time.monotonic() - t0, 2)
        assert proc.returncode == 0, proc.stderr[-500:]
    result = json.loads(proc.stdout)
    assert len(result["files"]) == 10_000 and result["downloaded_files"] == 10_000
    assert tree_sha(dest) == tree_sha(model)
    assert leftovers(tmp_path / "out") == []
    record(
        "hostile",
        "ten-thousand-tiny-files",
        group="files",
        expected_rc=0,
        rc=0,
        needle="",
        error="",
        outcome="pass",
        secrets=0,
        injected=1,
        bytes_lost=0,
        **{f"{k}_seconds": v for k, v in timings.items()},
    )
