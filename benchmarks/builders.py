#!/usr/bin/env python
"""Benchmark: `build --builder registry` vs. `build` (engine) + `push`, the example app, same run.

Scenarios, each builder in turn: a cold build (fresh modelship cache, a fresh repository, a wheelhouse never
built before: a one-off local wheel in the requirements, so the engine's layer cache cannot answer either) and a
rebuild after a one-line code change. The example's wheels (flask, gunicorn, onnxruntime, numpy, ...) are
downloaded from PyPI once per run and resolved from that folder (``--no-index``), so the index is not timed.
Bytes: what the registry builder sent (its result); for the engine, the sizes of the pushed manifest's layers
that the previous manifest did not have (an upper bound: docker push may mount some).

    .venv/bin/python benchmarks/builders.py [--rounds 1]

Targets (issue 23): cold <= 1.0x the engine's build + push, code change >= 3x faster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support

from support.bench import bench_run, timed
from support.builds import make_wheel
from support.oci import manifest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flask_app"
PLATFORM = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:"]
PLATFORM += ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"]


def _layers(registry: str, image: str) -> dict[str, int]:
    repo, tag = image.split("/", 1)[1].rsplit(":", 1)
    return {d["digest"]: d["size"] for d in manifest(registry, repo, tag)[1]["layers"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    import modelship

    with bench_run("builders") as bench:
        base_ref = os.environ.get("MODELSHIP_TESTBED_BASE_REF") or _push_base(bench)
        wheels = bench.work / "wheels"
        reqs = [line for line in (EXAMPLE / "requirements.txt").read_text().splitlines() if "==" in line]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", *PLATFORM, "-d", str(wheels),
             *reqs], check=True,
        )  # fmt: skip
        rows: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for n in range(args.rounds):
            for builder in ("engine", "registry"):
                pad = f"1.{n}.{uuid.uuid4().int % 10**6}"
                make_wheel(wheels, "benchpad", pad)
                app = bench.work / f"app-{builder}-{n}" / "iris"
                shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("tests", "k8s", "*.jsonl"))
                (app / "requirements.txt").write_text(
                    f"--no-index\n--find-links {wheels}\n" + "\n".join(reqs) + f"\nbenchpad=={pad}\n"
                )
                os.environ["MODELSHIP_CACHE_DIR"] = str(bench.work / f"cache-{builder}-{n}")
                image = f"{bench.registry}/bench-builders/{builder}-{bench.run}-{n}:app"
                before: dict[str, int] = {}
                for scenario in ("cold", "code change"):
                    if scenario == "code change":
                        with open(app / "iris_app" / "__init__.py", "a") as f:
                            f.write("\n# a one-line code change\n")
                    if builder == "registry":
                        secs, r = timed(lambda a=app, i=image: modelship.build(
                            a, None, i, builder="registry", base_image=base_ref))  # fmt: skip
                        sent = r.uploaded_bytes
                    else:
                        bench.local_tags.append(image)

                        def engine(a: Path = app, i: str = image) -> None:
                            modelship.build(a, None, i, base_image=bench.base)
                            modelship.push(i)

                        secs, _ = timed(engine)
                        now = _layers(bench.registry, image)
                        sent = sum(size for d, size in now.items() if d not in before)
                        before = now
                    rows.setdefault((scenario, builder), []).append((secs, sent))
                    print(f"  round {n + 1} {builder:8} {scenario:11} {secs:6.1f} s  {sent / 1e6:8.2f} MB", flush=True)
    print("\nscenario     engine build+push   registry builder   ratio (engine / registry)")
    for scenario in ("cold", "code change"):
        e = statistics.median(s for s, _ in rows[(scenario, "engine")])
        r = statistics.median(s for s, _ in rows[(scenario, "registry")])
        eb = statistics.median(b for _, b in rows[(scenario, "engine")]) / 1e6
        rb = statistics.median(b for _, b in rows[(scenario, "registry")]) / 1e6
        print(f"{scenario:12} {e:6.1f} s {eb:8.1f} MB  {r:6.1f} s {rb:8.2f} MB  {e / r:5.1f}x")


def _push_base(bench) -> str:
    """The base image in the testbed's registry (an older testbed did not push it)."""
    from support.oci import push_image

    repo = f"{bench.registry}/modelship/base"
    bench.client.images.get(bench.base).tag(repo, "bench")
    return f"{repo}@{push_image(bench.client, f'{repo}:bench')}"


if __name__ == "__main__":
    main()
