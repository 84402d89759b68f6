#!/usr/bin/env python
"""Benchmark: the model as its own image, against the same run's baselines.

For a new model version (the previous one already shipped: the registry holds the app image and the
previous model, as in a pipeline), starting from the model folder on disk:

- split:    `modelship publish DIR oci://…/model --version V` + `modelship deploy render --image APP@sha256
            --model-image MODEL@sha256` (the model-only update of the split shape, end to end);
- baked:    `modelship publish DIR az://…` + `modelship fetch` + `modelship assemble APP --model DEST --tag …`
            (the same update when the model is baked into a new app image, end to end), and the assemble
            step alone;

bytes uploaded and time of each; then a second publish of the unchanged model (bytes, digest, time); then
`modelship fetch` of that model from `oci://` against `modelship fetch` of the same files from Azurite,
each into a fresh cache (the ratio is the target).

    .venv/bin/python benchmarks/modelimage.py [--mb 256] [--files 1]

Targets (issue #13): a second publish of an unchanged model uploads 0 bytes; fetch from oci:// within
1.2x of the same model from Azurite.
"""

from __future__ import annotations

import argparse
import shutil
import sys

import _path  # noqa: F401 - tests/ on sys.path, for support

from support.bench import bench_run, push_app_image, timed
from support.models import make_model

MiB = 1024 * 1024
APP = """\
import http.server
http.server.HTTPServer(("0.0.0.0", 8000), http.server.BaseHTTPRequestHandler).serve_forever()
"""
APP_DOCKERFILE = """\
FROM {base}
COPY app.py /app/app.py
ENV MODELSHIP_MODEL_DIR=/opt/modelship/model
LABEL io.modelship.app.port=8000 io.modelship.app.ready-path=/ io.modelship.app.live-path=/
CMD ["python3", "/app/app.py"]
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="size of one model file (default 256)")
    ap.add_argument("--files", type=int, default=1, help="number of large files (default 1)")
    args = ap.parse_args()
    import modelship
    from modelship.deploy import render
    from modelship.oci.modelimage import publish_image

    with bench_run("mi") as bench:
        cname, work = bench.cname, bench.work
        repo = f"{bench.registry}/modelship-bench/mi-{bench.run}"
        model_uri = f"oci://{repo}-model"
        app_tag = f"{repo}-app:app"
        files = {f"shard-{i}.bin": args.mb * MiB for i in range(args.files)}
        total = sum(files.values())
        print("benchmark: building and pushing the app image (untimed)", file=sys.stderr)
        app = push_app_image(bench, app_tag, APP_DOCKERFILE, APP)
        for seed, version in enumerate(("1.0.0", "2.0.0")):
            make_model(work / version, files, seed=seed, uri=model_uri, version=version)
        print("benchmark: the previous version through both paths (warm-up, untimed)", file=sys.stderr)
        publish_image(work / "1.0.0", model_uri, version="1.0.0", quiet=True)
        modelship.assemble(app_tag, work / "1.0.0", f"{repo}-app:m1", quiet=True)

        print("benchmark: the new version, split shape vs assemble", file=sys.stderr)

        def split():
            published = publish_image(work / "2.0.0", model_uri, version="2.0.0", quiet=True)
            render(app, work / "k8s", model_image=published.ref, port=8000, ready_path="/", live_path="/")
            return published

        t_split, published = timed(split)
        az_uri = f"az://devstoreaccount1/{cname}/model"
        src = work / "2.0.0-src"
        shutil.copytree(work / "2.0.0", src, ignore=shutil.ignore_patterns("modelship.json"))
        t_az_publish, _ = timed(lambda: modelship.publish(src, az_uri, version="2.0.0", progress=False))
        t_az_fetch, _ = timed(lambda: modelship.fetch(az_uri, work / "baked", version="2.0.0",
                                                     cache_dir=work / "c-baked", progress=False))  # fmt: skip
        t_asm, assembled = timed(lambda: modelship.assemble(app_tag, work / "baked", f"{repo}-app:m2", quiet=True))
        t_same, same = timed(lambda: publish_image(work / "2.0.0", model_uri, version="2.0.0", quiet=True))

        print("benchmark: fetch from oci:// vs from Azurite (fresh caches)", file=sys.stderr)
        t_az, _ = timed(lambda: modelship.fetch(az_uri, work / "from-az", version="2.0.0", cache_dir=work / "c-az",
                                               progress=False))  # fmt: skip
        t_oci, fetched = timed(lambda: modelship.fetch(model_uri, work / "from-oci", version="2.0.0",
                                                      cache_dir=work / "c-oci", progress=False))  # fmt: skip

    print(f"\nmodel image benchmark ({args.files} x {args.mb} MB; one run each, all measured in this run; registry")
    print("and Azurite on this machine)\n")
    head = f"{'model-only update':<40} {'time':>8} {'uploaded':>12}"
    print(head)
    print("-" * len(head))
    t_baked = t_az_publish + t_az_fetch + t_asm
    print(f"{'split: publish model image + render':<40} {t_split:>7.2f}s {published.uploaded_bytes / MiB:>9.1f} MB")
    print(f"{'baked: publish az:// + fetch + assemble':<40} {t_baked:>7.2f}s {assembled.uploaded_bytes / MiB:>9.1f} MB"
          f" (+ {total / MiB:.0f} MB to the store)")  # fmt: skip
    print(f"{'  of which assemble a new app image':<40} {t_asm:>7.2f}s {assembled.uploaded_bytes / MiB:>9.1f} MB")
    ok_same = same.uploaded_bytes == 0 and same.image_digest == published.image_digest and same.unchanged
    print(f"{'second publish, unchanged model':<40} {t_same:>7.2f}s {same.uploaded_bytes:>9} B "
          f"(same digest: {'yes' if ok_same else 'NO'})")  # fmt: skip
    ratio = t_oci / t_az
    print(f"\nfetch {total / MiB:.0f} MB: oci:// {t_oci:.2f}s, Azurite {t_az:.2f}s: {ratio:.2f}x "
          f"({fetched.downloaded_bytes / MiB:.0f} MB of layers)")  # fmt: skip
    print("\ntargets: second publish 0 bytes, same digest; fetch from oci:// <= 1.2x Azurite")
    return 0 if ok_same and ratio <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
