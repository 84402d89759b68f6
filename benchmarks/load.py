"""Benchmark: the example Iris service in its container under load from a second process.

Starts the image with the pod's hardening (uid 10001, read-only root, /tmp tmpfs, no capabilities) on a
random 127.0.0.1 port, then sends N requests at concurrency C over keep-alive connections, twice:

    baseline  GET  /health/live    the same server, no model work (measured in the same run)
    predict   POST /predict        one Iris sample per request, answer checked against the expected label

and prints errors (must be 0), p50/p90/p99/max latency and throughput for both, and predict/baseline
ratios. Bounded: every request has a timeout and each phase a deadline; an incomplete phase is an error.

    python benchmarks/load.py                         # trains + builds the example image on the testbed base
    python benchmarks/load.py --image iris-service:1  # an image you built (modelship build examples/flask_app ...)
    python benchmarks/load.py --requests 2000 --concurrency 16 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support

from support import ROOT, testbed
from support.example import run_like_the_pod, wait_ready

EXAMPLE = ROOT / "examples" / "flask_app"
SAMPLES = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([7.0, 3.2, 4.7, 1.4], "versicolor"),
    ([6.3, 3.3, 6.0, 2.5], "virginica"),
]


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    planned: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def done(self) -> int:
        return len(self.latencies_ms) + sum(self.errors.values())

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))] if xs else float("nan")

    def summary(self) -> dict:
        return {
            "requests": self.done,
            "planned": self.planned,
            "errors": sum(self.errors.values()) + (self.planned - self.done),
            "error_kinds": self.errors,
            "p50_ms": round(self.pct(50), 2),
            "p90_ms": round(self.pct(90), 2),
            "p99_ms": round(self.pct(99), 2),
            "max_ms": round(max(self.latencies_ms, default=float("nan")), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else None,
            "throughput_rps": round(self.done / self.wall_s, 1) if self.wall_s else 0.0,
            "wall_s": round(self.wall_s, 2),
        }


def run_phase(name: str, port: int, method: str, path: str, n: int, concurrency: int, deadline_s: float) -> Phase:
    """n requests shared by `concurrency` threads, each with its own keep-alive connection."""
    phase = Phase(name, planned=n)
    lock = threading.Lock()
    issued = 0
    stop_at = time.monotonic() + deadline_s

    def take() -> int | None:
        nonlocal issued
        with lock:
            if issued >= n or time.monotonic() > stop_at:
                return None
            issued += 1
            return issued - 1

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        lat: list[float] = []
        errs: list[str] = []
        while (i := take()) is not None:
            body, headers, expected = None, {}, None
            if method == "POST":
                features, expected = SAMPLES[i % len(SAMPLES)]
                body = json.dumps({"instances": [features]})
                headers = {"Content-Type": "application/json"}
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                errs.append(type(e).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            elapsed = (time.perf_counter() - t0) * 1000
            if resp.status != 200:
                errs.append(f"HTTP {resp.status}")
            elif expected is not None and json.loads(data)["predictions"][0]["label"] != expected:
                errs.append("wrong label")
            else:
                lat.append(elapsed)
        conn.close()
        with lock:
            phase.latencies_ms.extend(lat)
            for e in errs:
                phase.error(e)

    threads = [threading.Thread(target=worker, name=f"load-{k}") for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall_s = time.perf_counter() - t0
    return phase


def build_example(work: Path) -> str:
    """Train the example model and build the example image with modelship (as the pipeline does)."""
    import modelship

    sys.path.insert(0, str(EXAMPLE))
    import train

    model = train.export(train.train(), work / "model")
    tag = f"modelship-bench/iris-service:{uuid.uuid4().hex[:8]}"
    print(f"building {tag} from {EXAMPLE.relative_to(ROOT)} ...", file=sys.stderr)
    base = testbed.for_script("MODELSHIP_BASE_IMAGE")["MODELSHIP_BASE_IMAGE"]
    modelship.build(EXAMPLE, model, tag, base_image=base, quiet=True)
    return tag


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="image to test (default: build the example)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds per phase (default 120)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)

    import docker

    client = docker.from_env()
    built = None
    with tempfile.TemporaryDirectory(prefix="modelship-load-") as tmp:
        image = args.image or build_example(Path(tmp))
        built = None if args.image else image
        try:
            with run_like_the_pod(client, image, "io.modelship.bench") as (container, port):
                ready_s = wait_ready(container, port, 60)
                run_phase("warm-up", port, "POST", "/predict", 100, args.concurrency, 30)
                base = run_phase(
                    "baseline", port, "GET", "/health/live", args.requests, args.concurrency, args.deadline
                )
                pred = run_phase("predict", port, "POST", "/predict", args.requests, args.concurrency, args.deadline)
                logs = container.logs().decode(errors="replace")
        except RuntimeError as e:  # the app exited or never got ready: its logs are in the message
            sys.exit(f"load.py: {e}")
        finally:
            if built:
                client.images.remove(built, force=True)
            client.close()

    b, p = base.summary(), pred.summary()
    result = {
        "image": image,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared by client and container), loopback",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "ready_after_s": round(ready_s, 2),
        "baseline_live": b,
        "predict": p,
        "ratio_predict_vs_live": {
            "p50": round(p["p50_ms"] / b["p50_ms"], 2) if b["p50_ms"] else None,
            "p99": round(p["p99_ms"] / b["p99_ms"], 2) if b["p99_ms"] else None,
            "throughput": round(p["throughput_rps"] / b["throughput_rps"], 2) if b["throughput_rps"] else None,
        },
        "server_tracebacks": logs.count("Traceback"),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{image}: ready after {result['ready_after_s']} s; {result['machine']}")
        print(f"{args.requests} requests per phase at concurrency {args.concurrency}")
        print(f"{'phase':<10} {'errors':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8}")
        for name, s in (("live", b), ("predict", p)):
            print(
                f"{name:<10} {s['errors']:>6} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} {s['p99_ms']:>8.2f} "
                f"{s['max_ms']:>8.2f} {s['throughput_rps']:>8.1f}"
            )
        r = result["ratio_predict_vs_live"]
        print(f"predict / live: p50 x{r['p50']}, p99 x{r['p99']}, throughput x{r['throughput']}")
    failed = b["errors"] or p["errors"] or result["server_tracebacks"]
    if failed:
        print(f"load.py: FAILED: errors {p['error_kinds'] or b['error_kinds']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
