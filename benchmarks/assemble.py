#!/usr/bin/env python
"""Benchmark: a model update by `modelship assemble` vs today's path, against the floor, same run.

For a new model version (the previous one already shipped, so caches and the registry are warm as they are
in a pipeline):

- update: `modelship fetch` + `modelship assemble` onto the app image in the registry (no engine);
- today:  `modelship fetch` + `modelship build --model` (engine; its dependency stage cached) + `modelship push`;
- floor:  the SDK's download (`download_blob(max_concurrency=8).readinto`) + sha256 + one monolithic blob PUT
  per file to the same registry: the bytes have to come down, be checked and go up, nothing else.

Then: a no-change assemble (bytes uploaded, same digest, time), the peak RSS of an assemble process on a
2 GB model (once; --rss-gb 0 skips it), and what ``--sign-key`` costs: `modelship assemble` of a new --mb model
into a fresh repository, as a process of its own (imports count), with and without the key (signature +
provenance + ML-BOM), alternating, --sign-rounds times each (0 skips it).

    .venv/bin/python benchmarks/assemble.py [--mb 256] [--rss-gb 2] [--sign-rounds 3]

Targets (issue #12): update <= 1.3x the floor; >= 3x faster than today's path; no-change 0 bytes, same
digest, < 2 s; peak RSS < 200 MB on 2 GB. Issue #21: --sign-key adds <= 0.5 s to a 256 MB model update.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support

from support import ROOT
from support.bench import bench_run, push_app_image, timed
from support.cli import run_cli
from support.models import make_model

MiB = 1024 * 1024

APP = """\
import http.server, os

MODEL_DIR = os.environ["MODELSHIP_MODEL_DIR"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists(os.path.join(MODEL_DIR, "modelship.json"))
        self.send_response(200 if ok else 503)
        self.end_headers()


http.server.HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""
APP_DOCKERFILE = """\
FROM {base}
COPY app.py /app/app.py
WORKDIR /app
ENV MODELSHIP_MODEL_DIR=/opt/modelship/model
CMD ["python3", "app.py"]
"""
_RSS_CHILD = """\
import re, sys
from modelship.oci._assemble import assemble
r = assemble(sys.argv[1], sys.argv[2], sys.argv[3], quiet=True)
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(r.uploaded_bytes, r.image_digest, hwm)
"""


def floor(container, names: list[str], registry: str, repo: str, dest: Path) -> None:
    """SDK download + sha256 + one monolithic blob PUT per file."""
    import requests

    dest.mkdir(parents=True)
    for name in names:
        path = dest / name.rsplit("/", 1)[-1]
        blob = container.get_blob_client(name)
        with open(path, "wb") as f:
            blob.download_blob(max_concurrency=8).readinto(f)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        loc = requests.post(f"http://{registry}/v2/{repo}/blobs/uploads/", timeout=60).headers["Location"]
        with open(path, "rb") as f:
            sep = "&" if "?" in loc else "?"
            requests.put(f"{loc}{sep}digest={digest}", data=f, timeout=600).raise_for_status()


def sign_cost(app_tag: str, target: str, work: Path, mb: int, rounds: int) -> dict[bool, list[tuple[float, float]]]:
    """(wall, CPU) seconds of `modelship assemble` (its own process) of a new ``mb`` model into fresh repositories,
    without (False) and with (True) --sign-key, alternating. CPU time (user + system of the process) says the
    same as wall time on an idle machine, and much less noisily on a busy one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = work / "sign-key.pem"
    private = ec.generate_private_key(ec.SECP256R1())
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    model = make_model(work / "signed-model", {"weights.bin": mb * MiB}, seed=77, uri="az://acct/models/s", version="3")
    env = {"PYTHONPATH": str(ROOT / "src")}
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for i in range(rounds):
        for signed in (False, True) if i % 2 == 0 else (True, False):
            argv = [
                "assemble",
                app_tag,
                "--model",
                str(model),
                "--tag",
                f"{target}-{'s' if signed else 'p'}{i}:m",
                "--json",
            ]
            argv += ["--sign-key", str(key)] if signed else []
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t, proc = timed(lambda argv=argv: run_cli(*argv, env=env))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                sys.exit(f"benchmark: assemble{' --sign-key' if signed else ''} failed: {proc.stderr.strip()[-300:]}")
            out = json.loads(proc.stdout)
            assert out["uploaded_bytes"] >= mb * MiB and len(out["attestations"]) == (2 if signed else 0), out
            times[signed].append((t, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="size of one model file (default 256)")
    ap.add_argument("--rss-gb", type=int, default=2, help="model size for the peak-RSS run (0: skip)")
    ap.add_argument("--sign-rounds", type=int, default=3, help="runs each with and without --sign-key (0: skip)")
    args = ap.parse_args()
    import modelship

    rows, checks = [], []
    with bench_run("asm") as bench:
        registry, base, client, container, cname, work = (
            bench.registry, bench.base, bench.client, bench.container, bench.cname, bench.work,
        )  # fmt: skip
        repo = f"modelship-bench/assemble-{bench.run}"
        app_tag = f"{registry}/{repo}:app"
        print("benchmark: building and pushing the app image (untimed)", file=sys.stderr)
        push_app_image(bench, app_tag, APP_DOCKERFILE, APP)
        (work / "app").mkdir(exist_ok=True)
        (work / "app" / "app.py").write_text(APP)  # the build context of today's path
        models = {f"1 x {args.mb} MB": {"weights.bin": args.mb * MiB}}
        models[f"4 x {args.mb} MB"] = {f"shard-{i}.bin": args.mb * MiB for i in range(4)}

        def one(label: str, files: dict[str, int], seed: int) -> None:
            prefix = label.split()[0] + "x"
            uri = f"az://devstoreaccount1/{cname}/{prefix}"
            for version in ("1", "2"):
                src = work / "src" / prefix / version
                make_model(src, files, seed=10 * seed + int(version))
                modelship.publish(src, uri, version=version, progress=False)
                shutil.rmtree(src)

            def fetch(version: str, tag: str) -> Path:
                dest = work / "fetched" / f"{prefix}-{version}-{tag}"
                cache = work / "caches" / f"{prefix}-{version}-{tag}"
                modelship.fetch(uri, dest, version=version, cache_dir=cache, progress=False)
                return dest

            def today(version: str) -> None:
                model = fetch(version, "today")
                tag = f"{registry}/{repo}-today:{prefix}-{version}"
                bench.local_tags.append(tag)
                modelship.build(
                    work / "app", model, tag, base_image=base, entrypoint="python3 app.py", quiet=True,
                    docker_client=client,
                )  # fmt: skip
                modelship.push(tag, quiet=True, docker_client=client)

            def update(version: str):
                model = fetch(version, "update")
                return modelship.assemble(app_tag, model, f"{registry}/{repo}:{prefix}-{version}", quiet=True)

            print(f"benchmark: {label}: previous version through both paths (warm-up, untimed)", file=sys.stderr)
            today("1")
            update("1")
            print(f"benchmark: {label}: the new version", file=sys.stderr)
            t_floor, _ = timed(
                lambda: floor(
                    container, [f"{prefix}/2/{n}" for n in files], registry, f"{repo}-floor", work / f"floor-{prefix}"
                )
            )
            t_today, _ = timed(lambda: today("2"))
            t_update, result = timed(lambda: update("2"))
            model = work / "fetched" / f"{prefix}-2-update"
            t_same, same = timed(
                lambda: modelship.assemble(app_tag, model, f"{registry}/{repo}:{prefix}-2", quiet=True)
            )
            rows.append((label, t_floor, t_today, t_update, t_same, result.uploaded_bytes, same))
            checks.append(same.image_digest == result.image_digest and same.uploaded_bytes == 0)

        for seed, (label, files) in enumerate(models.items()):
            one(label, files, seed)

        signing = None
        if args.sign_rounds:
            print(f"benchmark: assemble of a {args.mb} MB model with and without --sign-key", file=sys.stderr)
            signing = sign_cost(app_tag, f"{registry}/{repo}-sign", work, args.mb, args.sign_rounds)

        rss = None
        if args.rss_gb:
            print(f"benchmark: peak RSS of assembling a {args.rss_gb} GB model", file=sys.stderr)
            big = work / "big"
            make_model(big, {"weights.bin": args.rss_gb * 1024 * MiB}, seed=99, uri="file:///bench/big", version="1")
            env2 = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DOCKER_HOST": "tcp://127.0.0.1:1"}
            proc = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, app_tag, str(big), f"{registry}/{repo}:rss"],
                capture_output=True, text=True, env=env2, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"benchmark: the RSS run failed: {proc.stderr.strip()[-500:]}")
            uploaded, _, hwm = proc.stdout.split()
            rss = (int(hwm) // 1024, int(uploaded))

    print("\nmodel update benchmark (one run each, all measured in this run; registry and Azurite on this machine)\n")
    head = (
        f"{'model':<12} {'floor':>7} {'today':>8} {'assemble':>9} {'vs floor':>9} {'today/asm':>10} "
        f"{'uploaded':>10} {'no-change':>10} {'bytes':>6} {'same digest':>12}"
    )
    print(head)
    print("-" * len(head))
    for (label, t_floor, t_today, t_update, t_same, uploaded, same), ok in zip(rows, checks, strict=True):
        print(
            f"{label:<12} {t_floor:>6.2f}s {t_today:>7.2f}s {t_update:>8.2f}s {t_update / t_floor:>8.2f}x "
            f"{t_today / t_update:>9.2f}x {uploaded / MiB:>7.0f} MB {t_same:>9.2f}s {same.uploaded_bytes:>6} "
            f"{'yes' if ok else 'NO':>12}"
        )
    print("\ntargets: assemble <= 1.3x floor; today/assemble >= 3x; no-change 0 bytes, same digest, < 2 s")
    if signing:
        print(f"\nassemble of a new {args.mb} MB model, its own process, median of {len(signing[False])} runs each:")
        for i, what in enumerate(("wall", "CPU")):
            plain, signed = (statistics.median(t[i] for t in signing[k]) for k in (False, True))
            print(
                f"  {what:<4}: {plain:6.2f}s without --sign-key, {signed:6.2f}s with (signature + provenance + "
                f"ML-BOM): {signed - plain:+.2f}s ({signed / plain:.2f}x)"
            )
        print("  target (issue #21): --sign-key adds <= 0.5 s")
    if rss:
        mb = rss[1] / MiB
        print(f"peak RSS assembling a {args.rss_gb} GB model: {rss[0]} MB ({mb:.0f} MB uploaded); target < 200 MB")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
