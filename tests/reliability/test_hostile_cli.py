"""Hostile and malformed input on the command line and in the local files it names: lock files edited by hand,
destinations and options, command lines as users type them, model folders whose pickles run commands or whose
signatures are not what they claim, deploy render's images. Each case gets its one-line error and exit code (or,
where the input is odd but legitimate, a correct result), and nothing is ever written outside DEST
(support/hostile.py; the stores: conftest.py). Every row is also written to the reliability log, from which
docs/reliability.md's table is rendered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelship.manifest import tree_digest
from support.hostile import Case, Ctx, _fetch_at, check_case

pytestmark = pytest.mark.timeout(300)  # a hang is a failure, found in minutes

DIGEST = "sha256:" + "0" * 64


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
    check_case(env, tmp_path, capsys, monkeypatch, case)
