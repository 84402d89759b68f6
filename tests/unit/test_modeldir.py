"""The one model-folder reader (modelship.modeldir) and the verbs that read through it: names, links, special
files and plain folders are treated alike by publish, build's context, and the daemonless image layers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from modelship import modeldir, publish
from modelship.errors import IntegrityError, UsageError
from modelship.image import context as ctx
from modelship.manifest import Manifest, tree_digest
from modelship.oci.layers import model_layers
from support.models import make_model
from support.trees import file_sha256

IMAGE_DIR = "/opt/modelship/model"


def _hf_snapshot(cache: Path) -> Path:
    """A Hugging Face cache as ``huggingface_hub`` lays it out: snapshot files are links into ../../blobs/."""
    repo = cache / "models--org--tiny"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    snap = repo / "snapshots" / "0123abcd"
    (snap / "sub").mkdir(parents=True)
    for rel, data in {"config.json": b'{"a": 1}', "model.safetensors": b"w" * 5000, "sub/vocab.txt": b"a\nb\n"}.items():
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, (snap / rel).parent), snap / rel)
    return snap


def _refused(root: Path, needle: str) -> str:
    with pytest.raises(UsageError) as e:
        modeldir.files(root)
    message = str(e.value)
    assert needle in message and "\n" not in message, message
    return message


def test_regular_files_sorted_without_the_folders_own_manifest(tmp_path):
    root = make_model(tmp_path / "m", {"b.bin": b"b", "a/x.json": b"{}", "a/modelship.json": b"{}"}, uri="file:///m")
    assert modeldir.files(root) == ["a/modelship.json", "a/x.json", "b.bin"]


def test_links_inside_the_folder_are_followed(tmp_path):
    root = make_model(tmp_path / "m", {"weights/w.bin": b"w" * 5000, "config.json": b"{}"})
    os.symlink("weights/w.bin", root / "latest.bin")  # a file link inside
    os.symlink("weights", root / "current")  # a folder link inside
    assert modeldir.files(root) == ["config.json", "current/w.bin", "latest.bin", "weights/w.bin"]
    m = modeldir.compute_manifest(root)
    assert {f.path: f.size for f in m.files}["latest.bin"] == 5000


def test_links_out_of_the_folder_broken_links_and_loops_are_refused_by_name(tmp_path):
    (tmp_path / "secret.txt").write_text("AccountKey=abc")
    root = make_model(tmp_path / "m", {"w.bin": b"w"})
    os.symlink("../secret.txt", root / "escape.txt")
    assert f"{root / 'escape.txt'} is a symlink to {tmp_path / 'secret.txt'}, outside the model folder" in _refused(
        root, "outside the model folder"
    )
    (root / "escape.txt").unlink()
    os.symlink("/etc", root / "etc")  # a folder link out
    _refused(root, f"{root / 'etc'} is a symlink to /etc, outside")
    (root / "etc").unlink()
    os.symlink("nowhere.bin", root / "broken.bin")
    _refused(root, "broken.bin is a broken symlink")
    (root / "broken.bin").unlink()
    os.symlink("self", root / "self")
    _refused(root, "self is a symlink loop")
    (root / "self").unlink()
    (root / "d").mkdir()
    os.symlink("..", root / "d" / "up")  # a folder link to a folder above it: a walk that follows never ends
    _refused(root, "d/up is a symlink loop")


def test_special_files_are_refused_without_being_opened(tmp_path):
    root = make_model(tmp_path / "m", {"w.bin": b"w"})
    os.mkfifo(root / "pipe")  # reading it would block forever
    _refused(root, f"{root / 'pipe'} is a FIFO; a model folder holds regular files")
    with pytest.raises(UsageError, match="is a FIFO"):
        modeldir.compute_manifest(root)


def test_a_hugging_face_snapshot_is_a_model_folder(tmp_path):
    snap = _hf_snapshot(tmp_path / "hub")
    m = modeldir.model_manifest(snap)
    assert [(f.path, f.size) for f in m.files] == [
        ("config.json", 8),
        ("model.safetensors", 5000),
        ("sub/vocab.txt", 4),
    ]
    os.symlink("../../../../elsewhere.bin", snap / "other.bin")  # a link out of the cache is still refused
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    _refused(snap, "other.bin is a symlink to")


def test_manifest_entries_are_checked_like_names_on_disk(tmp_path):
    """Issue 19 item 6: an entry ``../secret.txt`` with the right sha256 must not put that file in an image."""
    (tmp_path / "secret.txt").write_bytes(b"AccountKey=abc")
    root = make_model(tmp_path / "m", {"w.bin": b"w"}, uri="file:///m", version="1")
    data = json.loads((root / "modelship.json").read_text())
    data["files"].append({"path": "../secret.txt", "size": 14, "sha256": file_sha256(tmp_path / "secret.txt")})
    data["digest"] = tree_digest((f["path"], f["sha256"]) for f in data["files"])
    (root / "modelship.json").write_text(json.dumps(data))
    for read in (modeldir.model_manifest, lambda r: model_layers(r, image_model_dir=IMAGE_DIR)):
        with pytest.raises(UsageError, match=r"file path '\.\./secret\.txt' is not a plain relative path"):
            read(root)
    # a listed name that is a link out of the folder is refused when it is read
    manifest = Manifest.load(make_model(tmp_path / "n", {"w.bin": b"w"}, uri="file:///n").joinpath("modelship.json"))
    (tmp_path / "n" / "w.bin").unlink()
    os.symlink(tmp_path / "secret.txt", tmp_path / "n" / "w.bin")
    with pytest.raises(UsageError, match="outside the model folder"):
        modeldir.path_of(tmp_path / "n", "w.bin")
    with pytest.raises(UsageError, match="outside the model folder"):
        ctx.add_model(ctx.ContextWriter(open(os.devnull, "wb")), tmp_path / "n", manifest)  # noqa: SIM115
    (tmp_path / "n" / "w.bin").unlink()
    with pytest.raises(IntegrityError, match="listed in the manifest but missing"):
        modeldir.path_of(tmp_path / "n", "w.bin")


def test_every_verb_reads_a_plain_folder_alike(tmp_path):
    """publish, build's context and the daemonless layers see the same files with the same hashes."""
    snap = _hf_snapshot(tmp_path / "hub")
    os.symlink("model.safetensors", snap / "alias.safetensors")
    expected = modeldir.compute_manifest(snap)
    published = publish(snap, f"file://{tmp_path / 'store'}", version="1")
    assert [(f.path, f.sha256) for f in published.files] == [(f.path, f.sha256) for f in expected.files]
    assert published.model_digest == expected.digest
    assert (tmp_path / "store" / "1" / "model.safetensors").read_bytes() == b"w" * 5000
    layered, _ = model_layers(snap, image_model_dir=IMAGE_DIR)
    assert layered.digest == expected.digest
    buf = io.BytesIO()
    w = ctx.ContextWriter(buf)
    assert ctx.add_model(w, snap, modeldir.model_manifest(snap), "m") == sum(f.size for f in expected.files)
    w.close()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as t:
        got = {m.name[2:]: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert got["alias.safetensors"] == got["model.safetensors"] == b"w" * 5000 and "modelship.json" in got


def test_publish_refuses_a_link_out_of_the_folder_instead_of_dropping_it(tmp_path):
    """Issue 19 item 8: a symlinked weight was silently left out ("5 files, 17 B")."""
    (tmp_path / "big.bin").write_bytes(b"w" * 5000)
    root = make_model(tmp_path / "m", {"config.json": b"{}"})
    os.symlink(tmp_path / "big.bin", root / "weights.bin")
    with pytest.raises(UsageError, match=r"weights\.bin is a symlink to .*big\.bin, outside the model folder"):
        publish(root, f"file://{tmp_path / 'store'}", version="1")
    assert not (tmp_path / "store").exists()
