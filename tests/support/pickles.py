"""Pickles that run a command when loaded, and the containers model pickles come in (joblib, a PyTorch zip).

The command only creates a marker file: a test that the scan refused the file checks the marker is absent,
and :func:`proves_it_runs` checks that loading the same bytes does create it (so the absence means something).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path


class RunsCommand:
    """Unpickling this runs ``os.system(COMMAND)`` (pickled as the global ``posix system``)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_pickle(marker: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """A pickle whose loading creates MARKER."""
    return pickle.dumps({"weights": [1.0, 2.0], "hook": RunsCommand(f"touch {marker}")}, protocol=protocol)


def plain_pickle() -> bytes:
    """A pickle of a dict of numbers: nothing to import, nothing to run."""
    return pickle.dumps({"coef": [0.5, -1.25, 3.0], "intercept": 0.1, "classes": [0, 1, 2]})


def torch_zip(data_pkl: bytes, name: str = "archive") -> bytes:
    """A PyTorch-style zip archive (``torch.save`` since 1.6), built by hand: NAME/data.pkl, version, a tensor."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", data_pkl)
        z.writestr(f"{name}/byteorder", "little")
        z.writestr(f"{name}/data/0", struct.pack("<4f", 1, 2, 3, 4))
        z.writestr(f"{name}/version", "3\n")
    return buf.getvalue()


def safetensors(tensors: dict[str, list[float]]) -> bytes:
    """A real safetensors file of float32 vectors: an 8-byte header length, the JSON header, the data."""
    header: dict[str, object] = {}
    data = b""
    for key, values in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[key] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def proves_it_runs(data: bytes, marker: Path) -> None:
    """Loading DATA (in another process) creates MARKER; the marker is removed again."""
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=data, check=False, capture_output=True, timeout=60)
    assert marker.exists(), "the hostile pickle did not run its command: the refusal tests would prove nothing"
    marker.unlink()
