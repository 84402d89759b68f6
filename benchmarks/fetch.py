"""Fetch benchmark on Azurite: modelship fetch vs. the SDK's best effort and vs. a sequential loop.

Run with the testbed up (`make bench`, or `scripts/testbed.sh up` then `python benchmarks/fetch.py`).
Every number is measured in this run; ratios compare against baselines measured in the same run.

Two modes, both by default:

- loopback: straight to Azurite on this machine. Store and client share the cores, so this measures what the
  client costs (hashing and verifying included), not what parallelism buys.
- shaped (``--shaped-only`` / ``--no-shaped``): through tests/support/shaped_proxy.py, a user-space proxy that
  adds a delay per request and paces every connection (defaults 20 ms and 25 MB/s, like a storage account
  across a WAN). The link's limit for the connections modelship used (connections × pace) is the best any
  client could do with them. On a small machine the cores, not the link, set the pace at 25 MB/s (the ``cpu
  busy`` column says so): ``--shaped-only --rate-mb 2 --big-mb 64 --repeat 1`` measures the link's limit at a
  pace they can carry.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import _path  # tests/ on sys.path, for support (and for the shaped proxy's process)
from azure.storage.blob import BlobServiceClient

from support import testbed
from support.models import make_model

MiB = 1024 * 1024


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_cpu() -> Callable[[], float] | None:
    """CPU seconds all processes of this machine have used so far (Linux /proc/stat), or None elsewhere.

    Store and client share the machine's cores here: the CPU time the sequential baseline needs, spread over
    every core, is the shortest time any client could take for the same work, which bounds the speed-up over B.
    """
    try:
        tick = os.sysconf("SC_CLK_TCK")

        def used() -> float:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            return (sum(fields) - fields[3] - fields[4]) / tick  # everything but idle and iowait

        used()
        return used
    except (OSError, ValueError, IndexError):
        return None


def baseline_sdk_parallel(container, names: list[str], dest: Path) -> None:
    """Baseline A: the SDK's own parallel download into a file, no hashing, no verification."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        with open(dest / name.replace("/", "_"), "wb") as f:
            container.download_blob(name, max_concurrency=8).readinto(f)


def baseline_sequential(container, names: list[str], dest: Path) -> None:
    """Baseline B: one stream per file, one after another (an `az storage blob download` loop)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        with open(dest / name.replace("/", "_"), "wb") as f:
            container.download_blob(name, max_concurrency=1).readinto(f)


# The child reports its own peak (VmHWM belongs to its address space): ru_maxrss of a child would also
# count the benchmark's pages it shared between fork and exec.
_FETCH_AND_REPORT = """
import re, sys
from modelship.cli import main
rc = main(["fetch", "--no-progress", *sys.argv[1:]])
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print("PEAK_RSS_KB", hwm, file=sys.stderr)
sys.exit(rc)
"""


def fetch_in_subprocess(uri: str, dest: Path, cache: Path) -> tuple[float, int]:
    """Wall time and peak RSS (MB) of a `modelship fetch` process."""
    env = {**os.environ, "MODELSHIP_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _FETCH_AND_REPORT, uri, str(dest)], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"modelship fetch failed for {uri}: {proc.stderr.strip()}")
    return elapsed, int(proc.stderr.split("PEAK_RSS_KB")[1].split()[0]) // 1024


class Run:
    """Timed runs in fresh folders under ``work``."""

    def __init__(self, work: Path, repeat: int):
        self.work, self.repeat, self._n = work, repeat, 0

    def timed(self, fn: Callable[[Path], object]) -> float:
        def once() -> None:
            self._n += 1
            d = self.work / f"run-{self._n}"
            fn(d)
            shutil.rmtree(d)

        return median_time(once, self.repeat)

    def cold_fetch(self, uri: str, connections: list[int]) -> Callable[[Path], None]:
        import modelship

        def fetch(d: Path) -> None:
            cache = self.work / f"cache-{uuid.uuid4().hex[:6]}"
            connections.append(modelship.fetch(uri, d, cache_dir=cache, progress=False).connections)
            shutil.rmtree(cache)

        return fetch


def measure_loopback(container, work: Path, uri: str, names: list[str], repeat: int) -> dict[str, float]:
    """Baselines A and B, cold and warm modelship fetches, and peak RSS, for one published model."""
    import modelship

    run = Run(work, repeat)
    conns: list[int] = []
    t_a = run.timed(lambda d: baseline_sdk_parallel(container, names, d))
    cpu = machine_cpu()
    cpu0 = cpu() if cpu else 0.0
    t_b = run.timed(lambda d: baseline_sequential(container, names, d))
    cpu_b = (cpu() - cpu0) / repeat if cpu else 0.0  # the machine's CPU seconds per run of B
    t_ms = run.timed(run.cold_fetch(uri, conns))
    warm_dest, warm_cache = work / "warm", work / "warm-cache"
    modelship.fetch(uri, warm_dest, cache_dir=warm_cache, progress=False)
    t_warm = median_time(lambda: modelship.fetch(uri, warm_dest, cache_dir=warm_cache, progress=False), repeat)
    t_warm_new = run.timed(lambda d: modelship.fetch(uri, d, cache_dir=warm_cache, progress=False))
    shutil.rmtree(warm_dest)
    shutil.rmtree(warm_cache)
    _, rss = fetch_in_subprocess(uri, work / "rss", work / "rss-cache")
    shutil.rmtree(work / "rss")
    shutil.rmtree(work / "rss-cache")
    times = {"a": t_a, "b": t_b, "ms": t_ms, "warm": t_warm, "warm_new": t_warm_new}
    return {**times, "rss": rss, "cpu_b": cpu_b, "conns": statistics.median(conns)}


def measure_shaped(container, work: Path, uri: str, names: list[str], repeat: int, rate: float) -> dict[str, float]:
    """Baselines A and B and cold modelship fetches through the shaped link (the caller points both at it)."""
    run = Run(work, repeat)
    conns: list[int] = []
    t_a = run.timed(lambda d: baseline_sdk_parallel(container, names, d))
    t_b = run.timed(lambda d: baseline_sequential(container, names, d))
    cpu = machine_cpu()
    cpu0 = cpu() if cpu else 0.0
    t_ms = run.timed(run.cold_fetch(uri, conns))
    # How busy the machine was during modelship's runs (store, proxy and client): near 100 % the cores, not the
    # link, set the pace, and the link's limit cannot be reached on this machine.
    busy = ((cpu() - cpu0) / repeat) / ((os.cpu_count() or 1) * t_ms) if cpu else 0.0
    return {"a": t_a, "b": t_b, "ms": t_ms, "conns": statistics.median(conns), "rate": rate, "busy": busy}


@contextlib.contextmanager
def shaped_link(host: str, port: int, delay_ms: float, rate_mb: float) -> Iterator[str]:
    """tests/support/shaped_proxy.py in a process of its own (in this one it would compete with the client for
    the GIL); yields its URL."""
    argv = [sys.executable, "-m", "support.shaped_proxy", f"{host}:{port}"]
    argv += ["--delay-ms", str(delay_ms), "--rate-mb", str(rate_mb)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_path.TESTS, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)  # a module: it imports support
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            sys.exit(f"the shaped proxy did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(15)


def _azurite_endpoint(cs: str) -> tuple[str, int, str]:
    endpoint = dict(p.split("=", 1) for p in cs.split(";") if "=" in p)["BlobEndpoint"]
    host, port = endpoint.split("//", 1)[1].split("/", 1)[0].split(":")
    return host, int(port), endpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=256)
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--file-mb", type=int, default=4)
    ap.add_argument("--delay-ms", type=float, default=20.0, help="shaped link: delay per request (default 20)")
    ap.add_argument("--rate-mb", type=float, default=25.0, help="shaped link: MB/s per connection (default 25)")
    ap.add_argument("--shaped-only", action="store_true", help="only the shaped-link rows")
    ap.add_argument("--no-shaped", action="store_true", help="only the loopback rows")
    ap.add_argument("--rss-mb", type=int, default=0, help="also report the peak RSS of fetching one file this big")
    args = ap.parse_args()

    key = "MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"
    cs = testbed.for_script(key)[key]
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = cs
    import modelship

    service = BlobServiceClient.from_connection_string(cs)
    cname = f"bench-{uuid.uuid4().hex[:8]}"
    container = service.create_container(cname)
    work = Path(tempfile.mkdtemp(prefix="modelship-bench-"))
    loop_rows, shaped_rows, big_rss = [], [], None
    link_desc = ""
    try:
        models = {
            f"single {args.big_mb} MB": {"weights.bin": args.big_mb * MiB},
            f"{args.files} x {args.file_mb} MB": {f"shard-{i:03d}.bin": args.file_mb * MiB for i in range(args.files)},
        }
        published = []
        for seed, (label, files) in enumerate(models.items()):
            prefix = label.split()[0]
            src = make_model(work / "src" / prefix, files, seed=seed)
            uri = f"az://devstoreaccount1/{cname}/{prefix}"
            modelship.publish(src, uri, version="1.0.0", progress=False)
            shutil.rmtree(src)
            published.append((label, sum(files.values()), uri, [f"{prefix}/1.0.0/{n}" for n in files]))
        if not args.shaped_only:
            for label, total, uri, names in published:
                loop_rows.append((label, total, measure_loopback(container, work, uri, names, args.repeat)))
        if not args.no_shaped:
            host, port, endpoint = _azurite_endpoint(cs)
            rate = args.rate_mb * 1e6
            link_desc = f"{args.delay_ms:.0f} ms per request, {args.rate_mb:.0f} MB/s per connection"
            with shaped_link(host, port, args.delay_ms, args.rate_mb) as url:
                shaped_cs = cs.replace(endpoint, f"{url}/devstoreaccount1")
                os.environ["AZURE_STORAGE_CONNECTION_STRING"] = shaped_cs
                shaped = BlobServiceClient.from_connection_string(shaped_cs).get_container_client(cname)
                for label, total, uri, names in reversed(published):  # the many-file model first
                    shaped_rows.append((label, total, measure_shaped(shaped, work, uri, names, args.repeat, rate)))
            os.environ["AZURE_STORAGE_CONNECTION_STRING"] = cs
        if args.rss_mb:
            src = make_model(work / "src" / "rss", {"big.bin": args.rss_mb * MiB}, seed=len(models))
            uri = f"az://devstoreaccount1/{cname}/rss"
            modelship.publish(src, uri, version="1", progress=False)
            shutil.rmtree(src)
            _, big_rss = fetch_in_subprocess(uri, work / "rss-big", work / "rss-big-cache")
    finally:
        container.delete_container()
        shutil.rmtree(work, ignore_errors=True)

    cores = os.cpu_count() or 1
    if loop_rows:
        print(f"\nfetch on loopback Azurite (median of {args.repeat}; every row measured in this run)\n")
        head = (
            f"{'model':<16} {'A: sdk x8':>10} {'B: seq':>9} {'modelship':>10} {'ms/A':>6} {'B/ms':>6} {'conns':>6} "
            f"{'warm':>8} {'warm new dest':>14} {'peak RSS':>9} {'cpu bound':>10}"
        )
        print(head)
        print("-" * len(head))
        for label, _total, r in loop_rows:
            bound = f"{r['b'] / (r['cpu_b'] / cores):>9.2f}x" if r["cpu_b"] else f"{'n/a':>10}"
            print(
                f"{label:<16} {r['a']:>9.2f}s {r['b']:>8.2f}s {r['ms']:>9.2f}s {r['ms'] / r['a']:>6.2f} "
                f"{r['b'] / r['ms']:>5.2f}x {r['conns']:>6.0f} {r['warm']:>7.3f}s {r['warm_new']:>13.3f}s "
                f"{r['rss']:>6} MB {bound}"
            )
        print(
            "\ntargets: single file ms/A <= 1.0 (hashing and verifying included); warm re-fetch < 0.3 s; "
            "peak RSS < 150 MB"
        )
        print(
            f"cpu bound: how much faster than B the same work could run if it kept all {cores} cores busy (B's CPU "
            "time on this machine, store and client, over the cores); no client beats B by more, hashing not counted"
        )
        print(f"throughput of modelship cold fetch: {loop_rows[0][1] / loop_rows[0][2]['ms'] / MiB:.0f} MB/s (single)")
    if shaped_rows:
        print(f"\nfetch through a shaped link ({link_desc}; median of {args.repeat}; measured in this run)\n")
        head = (
            f"{'model':<16} {'A: sdk x8':>10} {'B: seq':>9} {'modelship':>10} {'B/ms':>6} {'A/ms':>6} "
            f"{'conns':>6} {'link limit':>11} {'ms/limit':>9} {'cpu busy':>9}"
        )
        print(head)
        print("-" * len(head))
        for label, total, r in shaped_rows:
            limit = total / (r["conns"] * r["rate"])
            print(
                f"{label:<16} {r['a']:>9.2f}s {r['b']:>8.2f}s {r['ms']:>9.2f}s {r['b'] / r['ms']:>5.2f}x "
                f"{r['a'] / r['ms']:>5.2f}x {r['conns']:>6.0f} {limit:>10.2f}s {r['ms'] / limit:>9.2f} "
                f"{100 * r['busy']:>8.0f}%"
            )
        print(
            "\nconns: connections modelship settled at; link limit: the model's bytes "
            "over (conns × the pace per connection), the fastest any client could be with those connections"
        )
        print(
            "cpu busy: the machine's cores (all processes: Azurite, the proxy, modelship) during modelship's runs; "
            "near 100 % the cores, not the link, set the pace"
        )
        print(f"targets: B/ms >= 8 on {args.files} x {args.file_mb} MB; ms/limit <= 1.3")
    if big_rss is not None:
        print(f"\npeak RSS of `modelship fetch` of one {args.rss_mb} MB file: {big_rss} MB (target < 200 MB for 2 GB)")


if __name__ == "__main__":
    main()
