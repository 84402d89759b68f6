"""modelship.trust.pickles: which model files are scanned, what is refused, and what is never read."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import zipfile

import joblib
import numpy as np
import pytest

from modelship.errors import UnsafePickleError
from modelship.trust import pickles
from support.pickles import RunsCommand, evil_pickle, plain_pickle, proves_it_runs, safetensors, torch_zip


def _scan(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return pickles.scan_file(path, name)


def test_the_hostile_pickle_really_runs_its_command(tmp_path):
    proves_it_runs(evil_pickle(tmp_path / "marker"), tmp_path / "marker")


@pytest.mark.parametrize("protocol", range(6))
def test_a_pickle_that_calls_os_system_is_found_at_every_protocol(tmp_path, protocol):
    assert _scan(tmp_path, "model.pkl", evil_pickle(tmp_path / "m", protocol)) == [("model.pkl", "posix.system")]


def test_a_plain_pickle_of_numbers_passes(tmp_path):
    assert _scan(tmp_path, "model.pkl", plain_pickle()) == []


def test_unknown_classes_pass_only_dangerous_globals_are_refused(tmp_path):
    from collections import OrderedDict

    assert _scan(tmp_path, "m.pickle", __import__("pickle").dumps(OrderedDict(a=np.arange(3)))) == []


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "xz", "lzma"])
def test_joblib_files_are_scanned_compressed_or_not(tmp_path, compress):
    evil, clean = tmp_path / "evil.joblib", tmp_path / "clean.joblib"
    joblib.dump({"hook": RunsCommand("touch x"), "coef": np.arange(4.0)}, evil, compress=compress)
    joblib.dump({"coef": np.arange(4.0), "names": ["a", "b"]}, clean, compress=compress)
    assert pickles.scan_file(evil, "evil.joblib") == [("evil.joblib", "posix.system")]
    assert pickles.scan_file(clean, "clean.joblib") == []


def test_a_torch_zip_archive_is_scanned_member_by_member(tmp_path):
    found = _scan(tmp_path, "model.pt", torch_zip(evil_pickle(tmp_path / "m", 2)))
    assert found == [("model.pt:archive/data.pkl", "posix.system")]
    assert _scan(tmp_path, "ok.pth", torch_zip(plain_pickle())) == []
    # whatever its name: .bin (Hugging Face's pytorch_model.bin), or no extension at all
    assert _scan(tmp_path, "pytorch_model.bin", torch_zip(evil_pickle(tmp_path / "m"), "x"))[0][1] == "posix.system"


def test_a_zip_that_cannot_be_read_is_refused_not_skipped(tmp_path):
    data = bytearray(torch_zip(evil_pickle(tmp_path / "m")))
    data[-22:] = b"\0" * 22  # no end of central directory
    with pytest.raises(UnsafePickleError, match=r"^refusing model file model\.pt: it is a zip archive that cannot"):
        _scan(tmp_path, "model.pt", bytes(data))


def test_numpy_object_arrays_are_scanned_numeric_ones_are_not(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([RunsCommand("touch x")], dtype=object), allow_pickle=True)
    assert _scan(tmp_path, "obj.npy", buf.getvalue()) == [("obj.npy", "posix.system")]
    buf = io.BytesIO()
    np.save(buf, np.arange(1000, dtype=np.int64))
    assert _scan(tmp_path, "num.npy", buf.getvalue()) == []
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("a.npy", _npy_of_objects())
    assert _scan(tmp_path, "arrays.npz", npz.getvalue()) == [("arrays.npz:a.npy", "posix.system")]


def _npy_of_objects() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([RunsCommand("touch x")], dtype=object), allow_pickle=True)
    return buf.getvalue()


def test_a_pickle_renamed_to_safetensors_is_caught(tmp_path):
    found = _scan(tmp_path, "weights.safetensors", evil_pickle(tmp_path / "m"))
    assert found == [("weights.safetensors", "posix.system")]
    # compressed and renamed too
    assert _scan(tmp_path, "w.onnx", gzip.compress(evil_pickle(tmp_path / "m")))[0][1] == "posix.system"


def test_safe_formats_are_not_read_past_their_first_bytes(tmp_path, monkeypatch):
    import picklescan.scanner

    def never(*a, **k):
        raise AssertionError("a safe format was handed to the pickle scanner")

    monkeypatch.setattr(picklescan.scanner, "scan_pickle_bytes", never)
    # a safetensors file whose tensor bytes happen to hold a pickle: the header says what it is
    real = safetensors({"w": [1.0, 2.0]}) + evil_pickle(tmp_path / "m")
    assert _scan(tmp_path, "model.safetensors", real) == []
    assert _scan(tmp_path, "model.gguf", b"GGUF\x03\x00\x00\x00" + evil_pickle(tmp_path / "m")) == []
    assert _scan(tmp_path, "model.onnx", b"\x08\x07\x12\x07pytorch" + bytes(100)) == []
    assert _scan(tmp_path, "config.json", b'{"cos\\nsystem": 1}') == []
    assert _scan(tmp_path, "empty.bin", b"") == []


def test_check_folder_names_the_file_and_the_global_and_allow_lets_it_through(tmp_path, caplog):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "sub" / "est.pkl").write_bytes(evil_pickle(tmp_path / "m"))
    (model / "ok.pkl").write_bytes(plain_pickle())
    with pytest.raises(UnsafePickleError) as e:
        pickles.check_folder(model)
    assert (e.value.path, e.value.global_name) == ("sub/est.pkl", "posix.system")
    assert str(e.value) == (
        "refusing model file sub/est.pkl: its pickle imports posix.system, which runs code when it is loaded "
        "(once reviewed, pass --allow-unsafe-pickle sub/est.pkl)"
    )
    caplog.clear()
    pickles.check_folder(model, ["sub/est.pkl"])
    assert [r.getMessage() for r in caplog.records if r.name == "modelship"] == [
        "sub/est.pkl imports posix.system, which runs code when it is loaded: let through by --allow-unsafe-pickle"
    ]
    pickles.check_folder(model, [model / "sub" / "est.pkl"])  # a path to the same file works as well


def test_a_library_call_prints_nothing(tmp_path):
    """picklescan logs its findings at WARNING: with no logging set up Python would print them to stderr."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "a.pkl").write_bytes(evil_pickle(tmp_path / "m"))
    (model / "b.pt").write_bytes(b"\x80\x02garbage that is no pickle")
    code = (
        "import sys; from pathlib import Path; from modelship.trust import pickles\n"
        "try:\n    pickles.check_folder(Path(sys.argv[1]))\nexcept Exception as e:\n    print(type(e).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=60)
    assert (r.stdout, r.stderr) == ("UnsafePickleError\n", "")


def test_raw_weights_that_start_with_an_opcode_byte_pass(tmp_path):
    # a quarter of random byte strings start with a pickle opcode; raw float weights are such bytes, and a
    # model of 16 random shards was refused as "its pickle cannot be followed" (test_build_log caught it)
    import random

    rng = random.Random(7)
    opcode_first = [b for b in (rng.randbytes(4096) for _ in range(2000)) if b[0] in pickles._OPCODES][:300]
    assert len(opcode_first) == 300
    for i, data in enumerate(opcode_first):
        assert _scan(tmp_path, f"shard-{i:03d}.bin", data) == [], data[:16]


def test_what_picklescan_cannot_follow_is_refused_when_it_is_a_pickle(tmp_path):
    # a protocol 2-5 header says pickle: a stream picklescan gives up on is refused, not waved through
    with pytest.raises(UnsafePickleError, match="cannot be followed"):
        _scan(tmp_path, "weights.bin", b"\x80\x04\x93" + b"\xff" * 64)
    # the same opcode without the header, as raw bytes have it: no pickle, nothing imported
    assert _scan(tmp_path, "weights.bin", b"\x93" + b"\xff" * 64) == []
    # a protocol 0 pickle broken after it imported and called os.system: what pickle.load ran is found
    payload = b"cos\nsystem\n(S'touch /nonexistent/m'\ntR" + b"\xff\xfe junk"
    assert _scan(tmp_path, "weights.bin", payload) == [("weights.bin", "os.system")]
