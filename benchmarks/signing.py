"""Benchmark: model signatures (issue #20) — what signing and verifying cost, in time and bytes read.

1. Signing a model of --gb GiB: `modelship publish --sign-key` (the statement built from the sha256s publish
   computes anyway) vs. `modelship publish` unsigned, `modelship sign-model` of the published version (signs
   the recorded sha256s) and the reference `model_signing sign key` on the same folder (it hashes every byte).
2. `modelship fetch --verify-key` vs. `modelship fetch`, the same version from a folder store, fresh caches.

Each side runs in its own process; "read" is that process's read() bytes (``rchar`` of /proc/self/io) over the
work alone, so a page cache cannot hide a second pass over the weights. Same run, alternating, median of
--rounds. Targets: signing reads no weight byte twice (signed publish reads ~1x the model, sign-model ~0);
fetch with --verify-key <= 1.03x without.

    python benchmarks/signing.py [--gb 2] [--files 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support

from support.models import make_model
from support.oms import keypair

GiB = 1024**3

# Runs one job in a fresh interpreter and prints {"seconds", "read"} for the job alone (imports excluded).
RUNNER = r"""
import json, sys, time
def rchar():
    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])
kind, args = sys.argv[1], json.loads(sys.argv[2])
import modelship
from model_signing import signing
from modelship.trust.published import sign_version
r0, t0 = rchar(), time.perf_counter()
if kind == "publish":
    modelship.publish(args["src"], args["uri"], version=args["version"], sign_key=args.get("key"), progress=False)
elif kind == "sign-model":
    sign_version(args["uri"], version=args["version"], sign_key=args["key"])
elif kind == "reference":
    signing.Config().use_elliptic_key_signer(private_key=args["key"]).sign(args["src"], args["sig"])
elif kind == "fetch":
    modelship.fetch(args["uri"], args["dest"], version=args["version"], verify_keys=args["keys"], progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "read": rchar() - r0}))
"""


def job(kind: str, cache: Path, **args: object) -> dict[str, float]:
    env = {"MODELSHIP_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "MODELSHIP_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, kind, json.dumps(args, default=str)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0, help="model size in GiB (default 2)")
    ap.add_argument("--files", type=int, default=4, help="files the model is split into (default 4)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="modelship-bench-sign-"))
    try:
        size = int(args.gb * GiB)
        print(f"making a {size / GiB:.1f} GiB model of {args.files} files ...", flush=True)
        src = make_model(work / "model", {f"shard-{i}.bin": size // args.files for i in range(args.files)}, seed=7)
        private, public = keypair(work)
        store = f"file://{work}/store/model"
        rows: dict[str, list[dict[str, float]]] = {}

        def add(name: str, result: dict[str, float]) -> None:
            rows.setdefault(name, []).append(result)

        for r in range(args.rounds):
            cache = work / f"cache-{r}"
            add("publish (unsigned)", job("publish", cache / "u", src=src, uri=store, version=f"u{r}"))
            add("publish --sign-key", job("publish", cache / "s", src=src, uri=store, version=f"s{r}", key=private))
            add("sign-model (published)", job("sign-model", cache / "m", uri=store, version=f"u{r}", key=private))
            sig = work / f"reference-{r}.sig"
            add("model_signing sign key", job("reference", cache / "r", src=src, key=private, sig=sig))
            for name, keys in (("fetch", []), ("fetch --verify-key", [str(public)])):
                dest = work / f"dest-{r}-{len(keys)}"
                add(name, job("fetch", cache / f"f{len(keys)}", uri=store, version=f"s{r}", dest=dest, keys=keys))
                shutil.rmtree(dest)

        print(f"\nmodel: {size / GiB:.1f} GiB in {args.files} files; medians of {args.rounds} rounds\n")
        print(f"{'':28}{'seconds':>10}{'read (x model)':>16}")
        med = {
            name: {k: statistics.median(x[k] for x in results) for k in ("seconds", "read")}
            for name, results in rows.items()
        }
        for name, m in med.items():
            print(f"{name:28}{m['seconds']:10.2f}{m['read'] / size:16.2f}")
        print()
        signed, unsigned = med["publish --sign-key"]["seconds"], med["publish (unsigned)"]["seconds"]
        print(f"signing at publish: {signed / unsigned:.3f}x the unsigned publish (target: no second read)")
        ratio = med["model_signing sign key"]["seconds"] / max(med["sign-model (published)"]["seconds"], 1e-9)
        print(f"sign-model vs model_signing sign key: {ratio:.1f}x faster (reads nothing of the weights)")
        verify = med["fetch --verify-key"]["seconds"] / med["fetch"]["seconds"]
        print(f"fetch --verify-key / fetch: {verify:.3f} (target <= 1.03)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
