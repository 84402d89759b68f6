"""Benchmark: the gate's 1,000 probes against two containers vs. the same requests as smoke cases against one.

Both sides are whole pytest processes (interpreter start to exit) on the stdlib test image, built untimed;
the gate compares the image with a second tag of itself (two containers, identical answers), the smoke side
sends the same 1,000 requests as cases without expectations to one container. Same run, alternating, median
of N rounds. Targets (issue #22): gate <= 1.3x the single run, 1,000 probes < 60 s on 2 cores.

    python benchmarks/gate.py [--probes 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support

from support import testbed


def documents(n: int) -> tuple[str, str]:
    """The same n requests as smoke cases and as a compare section (JSON is YAML)."""
    requests = [{"path": "/predict", "json": {"x": [i % 7 - 3, i % 5]}} for i in range(n)]
    cases = {"cases": [{"name": f"p{i:04d}", **r} for i, r in enumerate(requests)]}
    return json.dumps(cases), json.dumps({"compare": {"probes": requests}})


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return took


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    tb = testbed.for_script("MODELSHIP_BASE_IMAGE")
    testbed.export_testcontainers_settings(tb)
    env = {**os.environ}
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    import docker

    from support.plugin_images import build_image

    client = docker.from_env()
    print("building the stdlib test image ...", flush=True)
    image = build_image(client, tb["MODELSHIP_BASE_IMAGE"])
    baseline = image.replace(":", ":baseline-", 1)
    client.images.get(image).tag(baseline)
    try:
        with tempfile.TemporaryDirectory(prefix="modelship-bench-") as tmp:
            work = Path(tmp)
            cases, compare = documents(args.probes)
            (work / "cases.yaml").write_text(cases)
            (work / "compare.yaml").write_text(compare)
            (work / "pytest.ini").write_text("[pytest]\n")
            common = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
            common += ["--modelship-image", image, "--deselect", "modelship-image"]
            smoke = [*common, "--modelship-cases", str(work / "cases.yaml")]
            gate = [*common, "--modelship-cases", str(work / "compare.yaml"), "--modelship-baseline", baseline]
            run(gate, env, work)  # warm-up: page cache, bytecode
            times: dict[str, list[float]] = {"smoke": [], "gate": []}
            for i in range(args.rounds):
                for name, cmd in (("smoke", smoke), ("gate", gate)):
                    times[name].append(run(cmd, env, work))
                print(f"round {i + 1}/{args.rounds}: smoke {times['smoke'][-1]:.2f} s, gate {times['gate'][-1]:.2f} s")
    finally:
        for tag in (baseline, image):
            client.images.remove(tag, force=True)
    s, g = statistics.median(times["smoke"]), statistics.median(times["gate"])
    print(f"{args.probes} requests: smoke cases, one container {s:.2f} s; gate, two containers {g:.2f} s")
    print(f"ratio gate / smoke {g / s:.2f} (target <= 1.3); gate {'<' if g < 60 else '>='} 60 s")


if __name__ == "__main__":
    main()
