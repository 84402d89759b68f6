"""Hostile and malformed input to the stores: URIs, credentials and accounts, versions and what a store holds
(markers, manifests, object names no file system should get), zero-byte and 10,000 tiny files. Each case gets
its one-line error and exit code (or, where the input is odd but legitimate, a correct result), and nothing is
ever written outside DEST (support/hostile.py).

Stores (conftest.py): Azurite for versions and markers, the moto S3 server for object names no file system or
Azurite can hold ('..', NUL, backslash), a local folder for names only a file system can hold (newline, > 1024
bytes). Every row is also written to the reliability log, from which docs/reliability.md's table is rendered.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.hostile import S3_NAMES, SECRET_SIG, Case, Ctx, _fetch_at, check_case
from support.record import record
from support.trees import leftovers, tree_sha

pytestmark = pytest.mark.timeout(300)  # a hang is a failure, found in minutes


def _fetch(uri: str, *extra: str) -> Callable[[Ctx, Path], list[str]]:
    return lambda ctx, dest: ["fetch", uri, str(dest), *extra]


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
    # --- zero-byte files: legitimate, round-trip exactly
    Case("zero-byte-files", "files", _fetch_at("az", "zero", "--json"), 0, '"size": 0'),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_input(env, tmp_path, capsys, monkeypatch, case):
    check_case(env, tmp_path, capsys, monkeypatch, case)


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
