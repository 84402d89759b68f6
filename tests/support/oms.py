"""OpenSSF model signing from outside modelship: openssl key pairs and the reference ``model_signing`` CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The reference implementation (PyPI model-signing, a dev extra), run as its own CLI: a judge nobody here wrote.
MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


def keypair(folder: Path, name: str = "signer") -> tuple[Path, Path]:
    """An ECDSA P-256 key pair as the data scientist makes it (openssl ecparam / ec -pubout): (private, public)."""
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", private], check=True)
    subprocess.run(["openssl", "ec", "-in", private, "-pubout", "-out", public], check=True, capture_output=True)
    return private, public


def reference_verify(
    signature: Path, public: Path, model: Path, *, ignore_unsigned: bool = True
) -> subprocess.CompletedProcess:
    """``model_signing verify key`` over MODEL (returncode 0: it accepts the signature)."""
    flag = ["--ignore_unsigned_files"] if ignore_unsigned else []
    cmd = [MODEL_SIGNING, "verify", "key", "--signature", signature, "--public_key", public, *flag, model]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def reference_sign(private: Path, signature: Path, model: Path) -> None:
    """``model_signing sign key`` over MODEL, writing SIGNATURE."""
    cmd = [MODEL_SIGNING, "sign", "key", "--signature", signature, "--private_key", private, model]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


def model_folder(root: Path) -> Path:
    """A small model whose names sort differently as strings and as paths ("a-c" < "a/b" but a/ comes first)."""
    root.mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "b.bin").write_bytes(b"\x00weights" * 1000)
    (root / "a-c.json").write_text('{"labels": [1, 2]}\n')
    (root / "model.onnx").write_bytes(bytes(range(256)) * 64)
    return root


def flip_byte(path: Path, offset: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
