#!/usr/bin/env python
"""Benchmark: `modelship build` vs the tutorial Dockerfile, same app, same 256 MB model, same wheelhouse.

Baseline (measured in the same run): the common tutorial Dockerfile -- model inside the app directory,
`COPY . /app` then `pip install -r requirements.txt` (from the same host-resolved wheelhouse, since builds
here have no network). Scenarios: cold build, no-change rebuild, rebuild after a one-line code change,
rebuild after a model-only change, image size.

    .venv/bin/python benchmarks/build.py [--model-mb 256]

Needs the testbed (scripts/testbed.sh up) and PyPI access on the host (to resolve flask + gunicorn once).
Targets: code change >= 5x faster than baseline; no-change rebuild < 3 s; model-only change reuses the
dependency layer; image size <= base + dependencies + model + 10 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

APP = """\
import os
from flask import Flask, jsonify

app = Flask(__name__)
MODEL_DIR = os.environ.get("MODELSHIP_MODEL_DIR", "/app/model")


@app.get("/health/ready")
def ready():
    return "ok" if os.path.exists(os.path.join(MODEL_DIR, "config.json")) else ("loading", 503)


@app.post("/predict")
def predict():
    return jsonify({"label": "positive", "score": 0.9})
# run RUN_ID
"""
REQUIREMENTS = "flask>=3.0\ngunicorn>=22\n"
TUTORIAL_DOCKERFILE = """\
FROM {base}
WORKDIR /app
COPY . /app
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index --find-links /app/wheels -r requirements.txt
ENV MODELSHIP_MODEL_DIR=/app/model
EXPOSE 8000
CMD ["/opt/venv/bin/gunicorn", "-b", "0.0.0.0:8000", "app:app"]
"""
MB = 1024 * 1024


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def baseline_build(client, ctx_dir: Path, tag: str) -> str:
    image_id = None
    for ev in client.api.build(path=str(ctx_dir), tag=tag, rm=True, forcerm=True, decode=True, pull=False):
        if "error" in ev:
            raise SystemExit(f"baseline build failed: {ev['error']}")
        if isinstance(ev.get("aux"), dict) and "ID" in ev["aux"]:
            image_id = ev["aux"]["ID"]
    assert image_id
    return image_id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-mb", type=int, default=256)
    args = ap.parse_args()
    import docker

    from modelship.image import build
    from modelship.image import wheels as wheels_mod
    from support import testbed
    from support.builds import fs_steps
    from support.models import make_model

    base = testbed.for_script("MODELSHIP_BASE_IMAGE")["MODELSHIP_BASE_IMAGE"]
    client = docker.from_env()
    work = Path(tempfile.mkdtemp(prefix="modelship-bench-build-"))
    os.environ["MODELSHIP_CACHE_DIR"] = str(work / "cache")
    run = uuid.uuid4().hex[:8]
    ms_repo, bl_repo = f"modelship-bench/ms-{run}", f"modelship-bench/tutorial-{run}"
    created: list[str] = []
    rows: list[tuple[str, float | None, float | None, str, str]] = []
    try:
        app = work / "app"
        app.mkdir()
        (app / "app.py").write_text(APP.replace("RUN_ID", run))
        (app / "requirements.txt").write_text(REQUIREMENTS)
        model = work / "model"
        print(f"benchmark: writing a {args.model_mb} MB model", file=sys.stderr)
        # seeded by the run: bytes no earlier run left in the engine's layer store
        config = json.dumps({"labels": ["negative", "positive"]}).encode() + b"\n"
        make_model(model, {"model.onnx": args.model_mb * MB, "config.json": config}, seed=int(run, 16))

        # one wheelhouse for both (resolved once, untimed: both sides need it, neither re-resolves later)
        target = wheels_mod.detect_target(client, base)
        wheel_dir = wheels_mod.wheelhouse(app / "requirements.txt", target, quiet=True)
        tutorial = work / "tutorial"
        tutorial.mkdir()
        shutil.copy(app / "app.py", tutorial / "app.py")
        shutil.copy(app / "requirements.txt", tutorial / "requirements.txt")
        shutil.copytree(wheel_dir, tutorial / "wheels")
        shutil.copytree(model, tutorial / "model", copy_function=os.link)
        (tutorial / "Dockerfile").write_text(TUTORIAL_DOCKERFILE.format(base=base))

        kw = {"base_image": base, "entrypoint": "gunicorn -b 0.0.0.0:8000 app:app", "quiet": True}

        def ms(tag: str):
            created.append(f"{ms_repo}:{tag}")
            return timed(lambda: build(app, model, f"{ms_repo}:{tag}", docker_client=client, **kw))[0]

        def bl(tag: str):
            created.append(f"{bl_repo}:{tag}")
            return timed(lambda: baseline_build(client, tutorial, f"{bl_repo}:{tag}"))[0]

        print("benchmark: cold builds", file=sys.stderr)
        b_cold, m_cold = bl("cold"), ms("cold")
        rows.append(("cold build (deps cached on host)", b_cold, m_cold, "", "-"))

        print("benchmark: no-change rebuilds", file=sys.stderr)
        b_same, m_same = bl("same"), ms("same")
        rows.append(("no-change rebuild", b_same, m_same, "< 3 s", "ok" if m_same < 3 else "MISSED"))

        print("benchmark: one-line code change", file=sys.stderr)
        for d in (app, tutorial):
            (d / "app.py").write_text((d / "app.py").read_text() + "# one-line change\n")
        b_code, m_code = bl("code"), ms("code")
        ratio = b_code / m_code
        rows.append(("rebuild after 1-line code change", b_code, m_code, ">= 5x", "ok" if ratio >= 5 else "MISSED"))

        print("benchmark: model-only change", file=sys.stderr)
        before = {role: step["id"] for role, step in fs_steps(client, f"{ms_repo}:code").items()}
        for d in (model, tutorial / "model"):
            (d / "config.json").unlink()  # a hard link: replace, do not write through
            (d / "config.json").write_text('{"labels": ["negative", "positive"], "revision": 2}\n')
        b_model, m_model = bl("model"), ms("model")
        after = {role: step["id"] for role, step in fs_steps(client, f"{ms_repo}:model").items()}
        deps_reused = after["deps"] == before["deps"] and after["model"] != before["model"]
        assert deps_reused, "model-only change rebuilt the dependency layer"
        rows.append(
            ("rebuild after model-only change", b_model, m_model, "deps reused", "ok" if deps_reused else "MISSED")
        )

        base_size = client.images.get(base).attrs["Size"]
        ms_size = client.images.get(f"{ms_repo}:model").attrs["Size"]
        bl_size = client.images.get(f"{bl_repo}:model").attrs["Size"]
        deps = fs_steps(client, f"{ms_repo}:model")["deps"]["size"]
        model_bytes = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
        budget = base_size + deps + model_bytes + 10 * MB
    finally:
        for tag in created:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(tag, force=True)
        client.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmodelship build benchmark: {args.model_mb} MB model, base {base}, flask + gunicorn\n")
    print(f"{'scenario':36} {'baseline':>10} {'modelship':>10} {'speed-up':>9}  {'target':>12}  result")
    print("-" * 92)
    for name, b, m, target_text, ok in rows:
        print(f"{name:36} {b:9.2f}s {m:9.2f}s {b / m:8.1f}x  {target_text:>12}  {ok}")
    size_ok = ms_size <= budget
    print(
        f"{'image size':36} {bl_size / MB:8.1f}MB {ms_size / MB:8.1f}MB {bl_size / ms_size:8.2f}x  "
        f"{'<= ' + format(budget / MB, '.1f') + 'MB':>12}  {'ok' if size_ok else 'MISSED'}"
    )
    print(
        f"\n(size budget = base {base_size / MB:.1f} MB + deps {deps / MB:.1f} MB + model {model_bytes / MB:.1f} MB "
        "+ 10 MB; speed-up = baseline time / modelship time)"
    )
    return 0 if all(r[4] in ("ok", "-") for r in rows) and size_ok else 1


if __name__ == "__main__":
    sys.exit(main())
