"""The download engine against real stores: chunk digests, ranges read again alone, the store's own range
checks, whole-file retries, damage at rest, the number of connections, and what the CLI prints."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

import modelship
from _store_helpers import leftovers, make_model, snapshot, tree_sha
from faults import Fault, FaultProxy, Request
from faults.upstream import file_server
from modelship import cli
from modelship._download import START, _Tuner
from modelship.errors import UsageError
from modelship.manifest import CHUNK_SIZE, FileEntry, Lock, Manifest
from support.shaped_proxy import ShapedProxy

pytest_plugins = ["faults.stores"]  # moto_server

MiB = 1024 * 1024


def _azurite(cs: str) -> tuple[str, int, str]:
    """(host, port, blob endpoint) of the testbed's Azurite."""
    endpoint = dict(p.split("=", 1) for p in cs.split(";") if "=" in p)["BlobEndpoint"]
    host, port = endpoint.split("//", 1)[1].split("/", 1)[0].split(":")
    return host, int(port), endpoint


def _through(monkeypatch, cs: str, proxy_url: str) -> None:
    """Point modelship's Azure credentials at a proxy in front of Azurite."""
    endpoint = _azurite(cs)[2]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", cs.replace(endpoint, f"{proxy_url}/devstoreaccount1"))


class Recorder:
    """A proxy plan that records every request and flips one byte in the n-th read of one range."""

    def __init__(self, flip_range: tuple[int, int] | None = None, times: int = 1):
        self.requests: list[Request] = []
        self.flip_range, self.left = flip_range, times
        self._lock = threading.Lock()

    def __call__(self, req: Request) -> Fault | None:
        with self._lock:
            self.requests.append(req)
            if self.left and req.range and self.flip_range and req.range[0] == self.flip_range[0]:
                self.left -= 1
                return Fault.flip(1234 + 1000 * self.left, mask=0x40)  # other bytes each time: damage in transit
        return None

    def model_reads(self, name: str) -> list[tuple[int, int]]:
        return [
            r.range for r in self.requests if r.method == "GET" and r.range and r.target.split("?")[0].endswith(name)
        ]


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


# ---------------------------------------------------------------------------------------------- Azure


@pytest.fixture
def azure_model(tmp_path, blob_container, azure_env):
    """A 20 MiB file published by modelship (three chunks) and the same file stored by another tool."""
    src = make_model(tmp_path / "m", {"w.bin": 2 * CHUNK_SIZE + 4 * MiB + 1})
    base = f"az://devstoreaccount1/{blob_container.container_name}"
    modelship.publish(src, f"{base}/pub", version="1", progress=False)
    blob_container.upload_blob("plain/w.bin", (src / "w.bin").read_bytes())
    return src, f"{base}/pub", f"{base}/plain"


def test_a_flipped_byte_costs_a_second_read_of_its_range_only(tmp_path, azure_model, azure_env, monkeypatch, caplog):
    src, uri, _ = azure_model
    host, port, _ = _azurite(azure_env)
    plan = Recorder(flip_range=(CHUNK_SIZE, 0))
    caplog.set_level("INFO", logger="modelship")
    with FaultProxy((host, port), plan=plan, lifetime=60) as proxy:
        _through(monkeypatch, azure_env, proxy.url)
        modelship.fetch(uri, tmp_path / "out", progress=False)
    assert tree_sha(tmp_path / "out") == tree_sha(src)
    reads = plan.model_reads("w.bin")
    # Each 8 MiB chunk is read as two 4 MiB GETs (the SDK's unit); the damaged chunk's two are read twice.
    again = [r for r in reads if reads.count(r) > 1]
    assert sorted(set(again)) == [(CHUNK_SIZE, CHUNK_SIZE + 4 * MiB - 1), (CHUNK_SIZE + 4 * MiB, 2 * CHUNK_SIZE - 1)]
    assert len(reads) == len(set(reads)) + 2, reads
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert lines == [
        f"retrying w.bin bytes {CHUNK_SIZE}-{2 * CHUNK_SIZE - 1} (damaged bytes: sha256 mismatch), attempt 2/5"
    ]


def test_without_chunk_digests_azure_checks_each_4_mib_range_itself(tmp_path, azure_model, azure_env, monkeypatch):
    """A blob stored by another tool: every read asks for the range's transactional MD5, which the SDK checks,
    so a flipped byte costs one read of its 4 MiB range."""
    src, _, plain = azure_model
    host, port, _ = _azurite(azure_env)
    plan = Recorder(flip_range=(4 * MiB, 0))
    with FaultProxy((host, port), plan=plan, lifetime=60) as proxy:
        _through(monkeypatch, azure_env, proxy.url)
        modelship.fetch(plain, tmp_path / "out", progress=False)
    assert tree_sha(tmp_path / "out") == tree_sha(src)
    gets = [r for r in plan.requests if r.method == "GET" and r.range and "w.bin" in r.target]
    assert all(r.headers.get("x-ms-range-get-content-md5") == "true" for r in gets)
    assert all(r.range[1] - r.range[0] < 4 * MiB for r in gets)
    reads = [r.range for r in gets]
    assert reads.count((4 * MiB, 8 * MiB - 1)) == 2 and len(reads) == len(set(reads)) + 1


# ---------------------------------------------------------------------------------------------- http + lock


def test_a_lock_gives_chunk_digests_to_a_store_that_has_none(tmp_path, capsys):
    data = os.urandom(2 * CHUNK_SIZE + 9)
    with file_server({"/m/w.bin": data}) as (addr, _), FaultProxy(addr, lifetime=60) as proxy:
        url = f"{proxy.url}/m/w.bin"
        lock = tmp_path / "m.lock"
        modelship.lock(url, output=lock, cache_dir=tmp_path / "lock-cache", progress=False)
        pinned = Lock.load(lock).files[0]
        assert pinned.chunk_size == CHUNK_SIZE and len(pinned.chunks or ()) == 3
        proxy.plan = plan = Recorder(flip_range=(0, 0), times=2)  # the first chunk, twice
        assert cli.main(["fetch", url, str(tmp_path / "out"), "--lock", str(lock)]) == 0
    assert (tmp_path / "out" / "w.bin").read_bytes() == data
    reads = plan.model_reads("w.bin")
    assert reads.count((0, CHUNK_SIZE - 1)) == 3 and len(reads) == 5, reads


# ---------------------------------------------------------------------------------------------- connections


def test_workers_and_modelship_concurrency_fix_the_number_of_connections(tmp_path, monkeypatch, capsys):
    store = f"file://{tmp_path}/store"
    modelship.publish(
        make_model(tmp_path / "m", {f"f{i}": 2 * MiB for i in range(12)}), store, version="1", progress=False
    )
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "3")
    assert modelship.fetch(store, tmp_path / "a", cache_dir=tmp_path / "c1", progress=False).connections == 3
    assert modelship.fetch(store, tmp_path / "b", cache_dir=tmp_path / "c2", workers=5, progress=False).connections == 5
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "lots")
    assert cli.main(["fetch", store, str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "MODELSHIP_CONCURRENCY='lots'" in err and err.count("\n") == 1
    monkeypatch.delenv("MODELSHIP_CONCURRENCY")
    assert cli.main(["fetch", store, str(tmp_path / "c"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("MODELSHIP_CONCURRENCY", "65")
    assert cli.main(["fetch", store, str(tmp_path / "c")]) == 2
    assert "--workers must be at most 64" in capsys.readouterr().err


def _drive(tuner: _Tuner, rate_of) -> None:
    """Feed the tuner range samples of 4 MiB at the per-connection rate ``rate_of(limit)`` until it settles."""
    for _ in range(10_000):
        if tuner.settled:
            return
        tuner.sample(tuner.step, 4 * MiB, 4 * MiB / rate_of(tuner.limit))
    raise AssertionError("the tuner never settled")


def test_tuner_grows_while_throughput_grows_and_stops_where_it_does_not():
    per_connection = 25e6  # a link that paces each connection: every one added brings as much again
    link = _Tuner(None, 32)
    _drive(link, lambda n: per_connection)
    assert link.limit == 32 and link.peak == 32
    machine = _Tuner(None, 32)  # 200 MB/s for all connections together: more only share it
    _drive(machine, lambda n: 200e6 / n)
    assert machine.limit == START and machine.peak > START
    both = _Tuner(None, 64)  # 25 MB/s per connection up to 300 MB/s in all: settles near 12
    _drive(both, lambda n: min(per_connection, 300e6 / n))
    assert 10 <= both.limit <= 18, both.limit
    fixed = _Tuner(6, 32)
    _drive(fixed, lambda n: per_connection)
    assert fixed.limit == fixed.peak == 6


def test_on_a_shaped_link_fetch_opens_more_connections(tmp_path, moto_server, monkeypatch):
    """Each connection to S3 is paced to 1 MB/s (20 ms per request): more connections are what buys throughput,
    so the tuner grows past where it starts. (A slow pace, so that a busy machine still serves them all.)"""
    import boto3

    bucket = f"shaped-{os.getpid()}-{time.monotonic_ns()}"
    direct = f"http://{moto_server[0]}:{moto_server[1]}"
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=direct).create_bucket(Bucket=bucket)
    src = make_model(tmp_path / "m", {f"s{i:02d}": 512 * 1024 for i in range(72)})
    monkeypatch.setenv("AWS_ENDPOINT_URL", direct)
    modelship.publish(src, f"s3://{bucket}/m", version="1", progress=False)
    with ShapedProxy(moto_server, delay=0.02, rate=1e6, lifetime=120) as link:
        monkeypatch.setenv("AWS_ENDPOINT_URL", link.url)
        result = modelship.fetch(f"s3://{bucket}/m", tmp_path / "out", progress=False)
    assert tree_sha(tmp_path / "out") == tree_sha(src)
    assert result.connections > START and link.stats.peak > START, (result.connections, link.stats.peak)


def test_shaped_proxy_paces_each_connection_and_delays_each_request():
    data = os.urandom(5 * MiB)
    with file_server({"/x": data}) as (addr, _), ShapedProxy(addr, delay=0.05, rate=10e6, lifetime=30) as link:
        import requests

        with requests.Session() as s:
            t0 = time.monotonic()
            assert s.head(f"{link.url}/x").status_code == 200
            small = time.monotonic() - t0
            t0 = time.monotonic()
            assert s.get(f"{link.url}/x").content == data
            big = time.monotonic() - t0
    assert small >= 0.05, small  # one exchange pays the whole delay
    assert big >= 5 * MiB / 10e6, big  # no faster than the pace
    assert link.stats.bytes_down >= len(data)


# ---------------------------------------------------------------------------------------------- the CLI's lines


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelship.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_retries_are_modelship_lines_at_v_and_libraries_speak_only_at_vv(tmp_path, azure_model, azure_env):
    """Through the real CLI process: connections reset mid-answer (more often than the SDK retries by itself)
    make the SDK log at WARNING; at the default verbosity nothing but modelship's result reaches the terminal,
    at -v the retry is modelship's own line, at -vv the libraries' lines show, without the account key."""
    _, uri, _ = azure_model
    host, port, _ = _azurite(azure_env)
    key = dict(p.split("=", 1) for p in azure_env.split(";") if "=" in p)["AccountKey"]

    def run(verbosity: list[str], n: int) -> subprocess.CompletedProcess[str]:
        resets = [0]

        def plan(req: Request) -> Fault | None:
            if req.method == "GET" and req.range == (0, 4 * MiB - 1) and resets[0] < 4:
                resets[0] += 1
                return Fault.reset(5000)  # inside the body: a broken stream
            return None

        with FaultProxy((host, port), plan=plan, lifetime=90) as proxy:
            env = {**os.environ, "MODELSHIP_CACHE_DIR": str(tmp_path / f"cache{n}")}
            env["AZURE_STORAGE_CONNECTION_STRING"] = azure_env.replace(
                _azurite(azure_env)[2], f"{proxy.url}/devstoreaccount1"
            )
            proc = _cli([*verbosity, "fetch", uri, str(tmp_path / f"out{n}"), "--no-progress"], env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert resets[0] == 4
        return proc

    quiet = run([], 0)
    assert quiet.stderr == "", quiet.stderr
    assert quiet.stdout.startswith("fetched ")
    verbose = run(["-v"], 1).stderr
    assert re.search(
        rf"^modelship: retrying w\.bin bytes 0-{CHUNK_SIZE - 1} \(connection reset\), attempt 2/5$", verbose, re.M
    ), verbose
    assert all(line.startswith("modelship: ") and not line.startswith("modelship: [") for line in verbose.splitlines())
    debug = run(["-vv"], 2).stderr
    assert "modelship: [azure." in debug and "modelship: [urllib3." in debug
    assert key not in debug and key[:24] not in debug
