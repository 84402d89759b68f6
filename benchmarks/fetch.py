"""Fetch benchmark on Azurite: modelship fetch vs. the SDK's best effort and vs. a sequential loop.

Run with the testbed up (`make bench`, or `scripts/testbed.sh up` then `python benchmarks/fetch.py`).
Every number is measured in this run; ratios compare against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support
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


def measure(container, work: Path, uri: str, names: list[str], repeat: int) -> tuple[float, ...]:
    """Baselines A and B, cold and warm modelship fetches, and peak RSS, for one published model."""
    import modelship

    counter = iter(range(10**6))

    def timed(fn) -> float:
        def once():
            d = work / f"run-{next(counter)}"
            fn(d)
            shutil.rmtree(d)

        return median_time(once, repeat)

    def cold(d: Path) -> None:
        cache = work / f"cache-{uuid.uuid4().hex[:6]}"
        modelship.fetch(uri, d, cache_dir=cache, progress=False)
        shutil.rmtree(cache)

    t_a = timed(lambda d: baseline_sdk_parallel(container, names, d))
    cpu = machine_cpu()
    cpu0 = cpu() if cpu else 0.0
    t_b = timed(lambda d: baseline_sequential(container, names, d))
    cpu_b = (cpu() - cpu0) / repeat if cpu else None  # the machine's CPU seconds per run of B
    t_ms = timed(cold)
    warm_dest, warm_cache = work / "warm", work / "warm-cache"
    modelship.fetch(uri, warm_dest, cache_dir=warm_cache, progress=False)
    t_warm = median_time(lambda: modelship.fetch(uri, warm_dest, cache_dir=warm_cache, progress=False), repeat)
    t_warm_new_dest = timed(lambda d: modelship.fetch(uri, d, cache_dir=warm_cache, progress=False))
    shutil.rmtree(warm_dest)
    shutil.rmtree(warm_cache)
    _, rss = fetch_in_subprocess(uri, work / "rss", work / "rss-cache")
    shutil.rmtree(work / "rss")
    shutil.rmtree(work / "rss-cache")
    return t_a, t_b, t_ms, t_warm, t_warm_new_dest, rss, cpu_b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-mb", type=int, default=256)
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--file-mb", type=int, default=4)
    args = ap.parse_args()

    env = testbed.for_script("MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = env["MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"]
    import modelship

    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    cname = f"bench-{uuid.uuid4().hex[:8]}"
    container = service.create_container(cname)
    work = Path(tempfile.mkdtemp(prefix="modelship-bench-"))
    rows = []
    try:
        models = {
            f"single {args.big_mb} MB": {"weights.bin": args.big_mb * MiB},
            f"{args.files} x {args.file_mb} MB": {f"shard-{i:03d}.bin": args.file_mb * MiB for i in range(args.files)},
        }
        for seed, (label, files) in enumerate(models.items()):
            prefix = label.split()[0]
            src = make_model(work / "src" / prefix, files, seed=seed)
            uri = f"az://devstoreaccount1/{cname}/{prefix}"
            modelship.publish(src, uri, version="1.0.0", progress=False)
            shutil.rmtree(src)
            names = [f"{prefix}/1.0.0/{n}" for n in files]
            rows.append((label, sum(files.values()), *measure(container, work, uri, names, args.repeat)))
    finally:
        container.delete_container()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nfetch benchmark on Azurite (median of {args.repeat}; every row measured in this run)\n")
    head = (
        f"{'model':<16} {'A: sdk x8':>10} {'B: seq':>9} {'modelship':>10} {'vs A':>7} {'B/ms':>7} "
        f"{'warm':>8} {'warm new dest':>14} {'peak RSS':>9} {'cpu bound':>10}"
    )
    print(head)
    print("-" * len(head))
    cores = os.cpu_count() or 1
    for label, _total, t_a, t_b, t_ms, t_warm, t_wn, rss, cpu_b in rows:
        bound = f"{t_b / (cpu_b / cores):>9.2f}x" if cpu_b else f"{'n/a':>10}"
        print(
            f"{label:<16} {t_a:>9.2f}s {t_b:>8.2f}s {t_ms:>9.2f}s {t_ms / t_a:>6.2f}x {t_b / t_ms:>6.2f}x "
            f"{t_warm:>7.3f}s {t_wn:>13.3f}s {rss:>6} MB {bound}"
        )
    print(
        "\ntargets: modelship/A <= 1.15 (hashing and verifying included); B/modelship >= 2 on the many-file model; "
        "warm re-fetch < 0.3 s; peak RSS < 150 MB"
    )
    print(
        f"cpu bound: how much faster than B the same work could run if it kept all {cores} cores busy (B's CPU "
        "time on this machine, store and client, over the cores); no client beats B by more, hashing not counted"
    )
    print(f"throughput of modelship cold fetch: {rows[0][1] / rows[0][4] / MiB:.0f} MB/s (single file)")


if __name__ == "__main__":
    main()
