"""The download engine against real stores: chunk digests, ranges read again alone, the store's own range
checks (Azure's transactional MD5), a lock's digests for a store without any, connections on a shaped link,
and what the CLI prints."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import pytest
import requests

import modelship
from modelship import cli
from modelship._connections import START
from modelship.manifest import CHUNK_SIZE, Lock
from support.cli import run_cli
from support.faults import Fault, FaultProxy, Request
from support.models import make_model
from support.servers import file_server
from support.shaped_proxy import ShapedProxy
from support.trees import tree_sha

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


def times_read(reads: list[tuple[int, int]], size: int, block: int = 64 * 1024) -> list[int]:
    """How often each 64 KiB block of a file was asked for (pieces start and end on such blocks)."""
    counts = [0] * -(-size // block)
    for first, last in reads:
        for b in range(first // block, last // block + 1):
            counts[b] += 1
    return counts


def chunk_of(size: int, chunk: int, block: int = 64 * 1024) -> list[int]:
    """The chunk each 64 KiB block of a file belongs to."""
    return [b * block // chunk for b in range(-(-size // block))]


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
    size = (src / "w.bin").stat().st_size
    # The damaged chunk (the second) is read twice, whole or in pieces; every other byte once.
    counts = times_read(plan.model_reads("w.bin"), size)
    assert counts == [2 if c == 1 else 1 for c in chunk_of(size, CHUNK_SIZE)], counts
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert lines == [
        f"retrying w.bin bytes {CHUNK_SIZE}-{2 * CHUNK_SIZE - 1} (damaged bytes: sha256 mismatch), attempt 2/5"
    ]


def test_an_answer_cut_short_is_read_again_not_taken_whole(tmp_path, blob_container, azure_env, monkeypatch):
    """The manifest's answer ends cleanly (FIN) half-way through its body: a streamed read must notice that it
    got fewer bytes than asked for and read again, not hand the parser half a manifest."""
    src = make_model(tmp_path / "m", {f"f{i:02d}.bin": 1000 + i for i in range(40)})  # a manifest of ~8 KB
    uri = f"az://devstoreaccount1/{blob_container.container_name}/cut"
    modelship.publish(src, uri, version="1", progress=False)
    host, port, _ = _azurite(azure_env)
    cut = []

    def plan(req: Request) -> Fault | None:
        if req.method == "GET" and req.target.split("?")[0].endswith("/modelship.json") and not cut:
            cut.append(req.target)
            return Fault.close(3000)
        return None

    with FaultProxy((host, port), plan=plan, lifetime=60) as proxy:
        _through(monkeypatch, azure_env, proxy.url)
        modelship.fetch(uri, tmp_path / "out", progress=False)
    assert cut and tree_sha(tmp_path / "out") == tree_sha(src)


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
    twice = [r for r in set(reads) if reads.count(r) == 2]
    assert len(twice) == 1 and twice[0][0] == 4 * MiB and len(reads) == len(set(reads)) + 1, reads


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
    counts = times_read(plan.model_reads("w.bin"), len(data))
    assert counts == [3 if c == 0 else 1 for c in chunk_of(len(data), CHUNK_SIZE)], counts


# ---------------------------------------------------------------------------------------------- connections


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


def test_a_file_of_few_chunks_is_read_over_many_connections_and_checked_reads_stay_within_memory(
    tmp_path, azure_model, azure_env, monkeypatch
):
    """Through a link paced to 2 MB/s per connection: the three-chunk file is shared out over more connections
    than it has chunks, streamed (the engine's ceiling, not the SDK's memory, bounds them); the same file stored
    by another tool is read with Azure's MD5 checks, whose answers the SDK holds in memory: at most 12."""
    src, published, plain = azure_model
    host, port, _ = _azurite(azure_env)
    for uri, n in ((published, 0), (plain, 1)):
        with ShapedProxy((host, port), delay=0.02, rate=2e6, lifetime=120) as link:
            _through(monkeypatch, azure_env, link.url)
            result = modelship.fetch(uri, tmp_path / f"out{n}", cache_dir=tmp_path / f"c{n}", progress=False)
        assert tree_sha(tmp_path / f"out{n}") == tree_sha(src)
        if uri == published:
            assert link.stats.peak > 3 and result.connections >= START, (link.stats.peak, result.connections)
        else:
            assert link.stats.peak <= 12 and result.connections <= 12, (link.stats.peak, result.connections)


def test_shaped_proxy_paces_each_connection_and_delays_each_request():
    data = os.urandom(5 * MiB)
    with (
        file_server({"/x": data}) as (addr, _),
        ShapedProxy(addr, delay=0.05, rate=10e6, lifetime=30) as link,
        requests.Session() as s,
    ):
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
            if req.method == "GET" and req.range and req.range[0] == 0 and resets[0] < 4:
                resets[0] += 1
                return Fault.reset(5000)  # inside the body: a broken stream
            return None

        with FaultProxy((host, port), plan=plan, lifetime=90) as proxy:
            env = {**os.environ, "MODELSHIP_CACHE_DIR": str(tmp_path / f"cache{n}")}
            env["AZURE_STORAGE_CONNECTION_STRING"] = azure_env.replace(
                _azurite(azure_env)[2], f"{proxy.url}/devstoreaccount1"
            )
            proc = run_cli(*verbosity, "fetch", uri, str(tmp_path / f"out{n}"), "--no-progress", env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert resets[0] == 4
        return proc

    quiet = run([], 0)
    assert quiet.stderr == "", quiet.stderr
    assert quiet.stdout.startswith("fetched ")
    verbose = run(["-v"], 1).stderr
    assert re.search(r"^modelship: retrying w\.bin bytes 0-\d+ \(connection reset\), attempt 2/5$", verbose, re.M), (
        verbose
    )
    assert all(line.startswith("modelship: ") and not line.startswith("modelship: [") for line in verbose.splitlines())
    debug = run(["-vv"], 2).stderr
    assert "modelship: [azure." in debug and "modelship: [urllib3." in debug
    assert key not in debug and key[:24] not in debug
