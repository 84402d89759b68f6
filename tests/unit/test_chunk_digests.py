"""Chunk digests on a local store: manifests and locks that carry them, what publish records, damage at rest
named by its range; the download engine's queue of ranges (the number of connections: test_connections.py)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os

import pytest

import modelship
from modelship import cli
from modelship._download import MIN_PIECE, _Queue
from modelship._filejob import Piece, Range
from modelship.errors import UsageError
from modelship.manifest import CHUNK_SIZE, FileEntry, Lock, Manifest
from support.models import make_model
from support.trees import leftovers, snapshot

MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------- manifests


def test_chunk_digests_round_trip_and_older_manifests_and_locks_still_load(tmp_path):
    data = os.urandom(CHUNK_SIZE + 10)
    chunks = (hashlib.sha256(data[:CHUNK_SIZE]).hexdigest(), hashlib.sha256(data[CHUNK_SIZE:]).hexdigest())
    entry = FileEntry("w.bin", len(data), hashlib.sha256(data).hexdigest(), chunk_size=CHUNK_SIZE, chunks=chunks)
    m = Manifest.create("az://a/b/c", "1", [entry, FileEntry("e", 0, hashlib.sha256(b"").hexdigest())])
    m.write(tmp_path / "m.json")
    back = Manifest.load(tmp_path / "m.json")
    by_path = {f.path: f for f in back.files}
    assert back == m and by_path["e"].chunks is None and by_path["w.bin"].chunks == chunks
    doc = json.loads((tmp_path / "m.json").read_text())
    for f in doc["files"]:  # a manifest from before chunk digests
        f.pop("chunks", None), f.pop("chunk_size", None)
    (tmp_path / "old.json").write_text(json.dumps(doc))
    assert Manifest.load(tmp_path / "old.json").digest == m.digest
    doc["files"][0]["chunk_size"], doc["files"][0]["chunks"] = CHUNK_SIZE, chunks  # "e": two chunks for 0 bytes
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="not a modelship manifest"):
        Manifest.load(tmp_path / "bad.json")
    lk = Lock("az://a/b/c", "1", m.files, m.digest, "now")
    lk.write(tmp_path / "l.lock")
    assert Lock.load(tmp_path / "l.lock").files[1].chunks == chunks


def test_publish_records_a_sha256_per_8_mib_chunk(tmp_path):
    src = make_model(tmp_path / "m", {"w.bin": 2 * CHUNK_SIZE + 1, "e": b""})
    modelship.publish(src, f"file://{tmp_path}/store", version="1", progress=False)
    doc = json.loads((tmp_path / "store" / "1" / "modelship.json").read_text())
    files = {f["path"]: f for f in doc["files"]}
    data = (src / "w.bin").read_bytes()
    assert files["w.bin"]["chunk_size"] == CHUNK_SIZE == 8 * MiB
    assert files["w.bin"]["chunks"] == [
        hashlib.sha256(data[i : i + CHUNK_SIZE]).hexdigest() for i in range(0, len(data), CHUNK_SIZE)
    ]
    assert files["e"]["chunks"] == []
    # DEST's manifest names sha256s only: chunk digests serve fetching, and DEST's manifest goes into image labels.
    out = modelship.fetch(f"file://{tmp_path}/store", tmp_path / "out", progress=False)
    assert all(f.chunks is None for f in out.manifest.files)
    assert "chunks" not in (tmp_path / "out" / "modelship.json").read_text()


def test_store_manifest_with_chunk_digests_that_cannot_fit_fails_at_resolve(tmp_path, capsys):
    src = make_model(tmp_path / "m", {"w.bin": 100})
    modelship.publish(src, f"file://{tmp_path}/store", version="1", progress=False)
    path = tmp_path / "store" / "1" / "modelship.json"
    doc = json.loads(path.read_text())
    doc["files"][0]["chunks"].append("0" * 64)
    path.write_text(json.dumps(doc))
    assert cli.main(["fetch", f"file://{tmp_path}/store", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "is not a valid modelship manifest" in err and "re-publish" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------- damage


def test_range_damaged_at_rest_is_named_and_dest_untouched(tmp_path, capsys):
    """Chunk digests name the damaged range; the same wrong bytes twice means the store holds them."""
    store = f"file://{tmp_path}/store"
    modelship.publish(make_model(tmp_path / "v1", {"w.bin": 10}), store, version="1", progress=False)
    src = make_model(tmp_path / "v2", {"w.bin": 3 * CHUNK_SIZE - 5})
    modelship.publish(src, store, version="2", progress=False)
    dest = tmp_path / "out"
    assert cli.main(["fetch", store, str(dest), "--version", "1"]) == 0
    before = snapshot(dest)
    stored = tmp_path / "store" / "2" / "w.bin"
    with open(stored, "r+b") as f:  # bit rot in the second chunk: same size, other bytes
        f.seek(CHUNK_SIZE + 77)
        byte = f.read(1)
        f.seek(CHUNK_SIZE + 77)
        f.write(bytes([byte[0] ^ 0x10]))
    capsys.readouterr()
    assert cli.main(["fetch", store, str(dest)]) == 1
    err = capsys.readouterr().err
    assert f"w.bin bytes {CHUNK_SIZE}-{2 * CHUNK_SIZE - 1} are damaged in the store" in err, err
    assert "re-publish" in err and err.count("\n") == 1
    assert snapshot(dest) == before and leftovers(tmp_path) == []


def test_file_without_chunk_digests_damaged_at_rest_fails_after_a_second_download(tmp_path, capsys):
    """No chunk digests (an older lock, a folder of plain files): the whole-file digest is wrong twice with the
    same bytes, so the file is damaged where it is stored; one line, DEST untouched."""
    folder = make_model(tmp_path / "plain", {"w.bin": CHUNK_SIZE + 3})
    lock = tmp_path / "m.lock"
    modelship.lock(f"file://{folder}", output=lock, cache_dir=tmp_path / "lock-cache", progress=False)
    doc = json.loads(lock.read_text())
    assert doc["files"][0]["chunks"]  # `lock` records chunk digests for files that had none
    doc["files"][0].pop("chunks"), doc["files"][0].pop("chunk_size")
    lock.write_text(json.dumps(doc))
    data = bytearray((folder / "w.bin").read_bytes())
    data[5] ^= 1
    (folder / "w.bin").write_bytes(bytes(data))
    capsys.readouterr()
    assert cli.main(["-v", "fetch", "--lock", str(lock), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is damaged in the store: sha256 mismatch twice with the same wrong bytes" in err, err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- the queue


def _ranges(*sizes: int) -> list[Range]:
    """Ranges of a pretend file, back to back (the queue looks at offsets and lengths only)."""
    out, offset = [], 0
    for size in sizes:
        out.append(Range(None, 0, offset, size, None, False))  # type: ignore[arg-type]
        offset += size
    return out


def _drain(q: _Queue, connections: int) -> list[Piece]:
    taken = []
    while (p := q.take(connections, timeout=0)) is not None:
        taken.append(p)
    return taken


def test_the_queue_hands_out_whole_ranges_while_much_is_left_and_shares_out_the_last_ones():
    ranges = _ranges(*[8 * MiB] * 6)
    q = _Queue()
    for r in ranges:
        q.put(Piece(r, r.offset, r.length))
    taken = _drain(q, connections=3)
    assert [p.length for p in taken[:4]] == [8 * MiB] * 4  # 48, 40, 32, 24 MiB left: a connection's share ≥ 8
    assert len(taken) > 6 and all(p.length >= MIN_PIECE for p in taken)
    tail = [p.length for p in taken[4:]]
    assert max(tail) < 8 * MiB and tail[-1] < MiB, tail  # the last two ranges in shares, down to small pieces
    for r in ranges:  # every byte exactly once, in order
        pieces = [p for p in taken if p.range is r]
        assert pieces[0].offset == r.offset and sum(p.length for p in pieces) == r.length
        assert all(a.offset + a.length == b.offset for a, b in itertools.pairwise(pieces))


def test_a_file_of_two_chunks_is_shared_over_every_connection():
    q = _Queue()
    for r in _ranges(8 * MiB, 8 * MiB):
        q.put(Piece(r, r.offset, r.length))
    first = [q.take(12, timeout=0) for _ in range(12)]  # twelve connections start at once
    assert all(p is not None and p.length <= 2 * MiB for p in first), [p and p.length for p in first]
    rest = _drain(q, 12)
    assert sum(p.length for p in first + rest) == 16 * MiB


def test_a_damaged_range_goes_back_to_the_front_of_the_queue():
    a, b = _ranges(MiB, MiB)
    q = _Queue()
    q.put(Piece(b, b.offset, b.length))
    q.put(Piece(a, a.offset, a.length), front=True)
    assert q.take(1, timeout=0).range is a
