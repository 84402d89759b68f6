"""Small test images for the pytest plugin's tests and benchmark: the test app (support.apps) serving a model.

Built with the docker SDK (classic builder) on the local base image, following the image contract:
model + modelship.json in /opt/modelship/model, io.modelship.* labels, USER 10001, HEALTHCHECK, EXPOSE.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from modelship.manifest import FileEntry, Manifest
from support.engine import remove_built

from .apps import APP

LABEL_SESSION = "io.modelship.session"

MODEL_FILES = {"weights.bin": b"\x00modelship-test-weights\x01" * 64, "config/labels.txt": b"cat\ndog\n"}
MODEL_URI = "az://models/smoke"
MODEL_VERSION = "1.0.0"


def manifest_for(files: dict[str, bytes]) -> Manifest:
    entries = [FileEntry(p, len(b), hashlib.sha256(b).hexdigest()) for p, b in files.items()]
    return Manifest.create(MODEL_URI, MODEL_VERSION, entries, stamp=False)


@dataclass
class Variant:
    """How a test image differs from the good one."""

    user: str | None = "10001:10001"
    env: dict[str, str] | None = None
    tamper_model: bool = False  # ship weights that do not match modelship.json
    expose: tuple[int, ...] = (8000,)
    healthcheck: bool = True
    app: str = APP  # the app's source (python3, stdlib only)


def dockerfile(base_image: str, manifest: Manifest, v: Variant) -> str:
    labels = {
        "org.opencontainers.image.title": "modelship-smoke-test",
        "io.modelship.model.uri": manifest.uri,
        "io.modelship.model.version": manifest.version,
        "io.modelship.model.digest": manifest.digest,
        "io.modelship.model.manifest": manifest.without_timestamp().to_json(compact=True),
    }
    lines = [
        f"FROM {base_image}",
        "ENV MODELSHIP_MODEL_DIR=/opt/modelship/model PYTHONUNBUFFERED=1",
        "COPY model/ /opt/modelship/model/",
        "COPY app.py /app/app.py",
        "WORKDIR /app",
    ]
    lines += [f"ENV {k}={json.dumps(val)}" for k, val in (v.env or {}).items()]
    lines.append("LABEL " + " ".join(f"{k}={json.dumps(val)}" for k, val in labels.items()))
    lines += [f"EXPOSE {p}" for p in v.expose]
    if v.healthcheck:
        probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"
        lines.append(f'HEALTHCHECK --interval=30s --timeout=3s CMD ["python3", "-c", "{probe}"]')
    if v.user:
        lines.append(f"USER {v.user}")
    lines.append('CMD ["python3", "/app/app.py"]')
    return "\n".join(lines) + "\n"


def _context(base_image: str, v: Variant) -> bytes:
    manifest = manifest_for(MODEL_FILES)
    shipped = dict(MODEL_FILES)
    if v.tamper_model:
        shipped["weights.bin"] = b"tampered" + shipped["weights.bin"][8:]
    files = {f"model/{p}": b for p, b in shipped.items()}
    files["model/modelship.json"] = manifest.to_json().encode()
    files["app.py"] = v.app.encode()
    files["Dockerfile"] = dockerfile(base_image, manifest, v).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


APP_ONLY = """\
FROM {base}
ENV MODELSHIP_MODEL_DIR=/opt/modelship/model PYTHONUNBUFFERED=1
COPY app.py /app/app.py
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD ["python3", "-c", "{probe}"]
USER 10001:10001
CMD ["python3", "/app/app.py"]
"""


def build_app_only(client, base_image: str) -> str:
    """The test app without a model (what the split shape deploys), built by the engine; returns its tag."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"
        for name, text in (("Dockerfile", APP_ONLY.format(base=base_image, probe=probe)), ("app.py", APP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tag = f"modelship-split-app:{uuid.uuid4().hex[:8]}"
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True)
    return tag


def build_image(client, base_image: str, variant: Variant | None = None, tag: str | None = None) -> str:
    """Build a test image serving the test app and return its tag (unique per call unless given)."""
    tag = tag or f"modelship-plugin-test:{uuid.uuid4().hex[:10]}"
    ctx = _context(base_image, variant or Variant())
    client.images.build(fileobj=io.BytesIO(ctx), custom_context=True, tag=tag, rm=True, forcerm=True, pull=False)
    return tag


@contextlib.contextmanager
def alias(client, image: str, repo: str) -> Iterator[str]:
    """A tag of ``image`` for one test, so the containers of that test are counted without ambiguity under
    xdist (other workers run containers of ``image`` meanwhile); removed with its containers afterwards."""
    ref = f"{repo}:own-{uuid.uuid4().hex[:8]}"
    client.images.get(image).tag(ref)
    try:
        yield ref
    finally:
        remove_image(client, ref)


def remove_image(client, tag: str) -> None:
    import docker.errors

    # Not the `ancestor` filter: it matches by image id, and own_tag aliases share the good image's id,
    # so it would remove the containers of tests running in parallel.
    for c in containers_of(client, tag, labelled=False):
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
    remove_built(client, tag)


def containers_of(client, image: str, labelled: bool = True) -> list:
    """Containers created from exactly ``image`` (by the plugin, unless ``labelled`` is False)."""
    # sparse: no per-container inspect, which would race with containers removed meanwhile
    filters = {"label": LABEL_SESSION} if labelled else {}
    found = client.containers.list(all=True, sparse=True, filters=filters)
    return [c for c in found if c.attrs.get("Image") == image]


GOOD_CASES = """\
cases:
  - name: predict_cat
    path: /predict
    json: {x: [1, 2, 3]}
    expect:
      status: 200
      json: {label: cat, score: 0.9975, n: 3}
      approx: 0.001
      max_latency_ms: 2000
  - name: predict_dog_subset
    path: /predict
    json: {x: [-1, -2]}
    expect:
      json_subset: {label: dog}
  - name: version_schema
    path: /version
    expect:
      schema:
        type: object
        required: [version]
        properties: {version: {type: string}}
  - name: bad_input_422
    path: /predict
    json: {x: "nope"}
    expect: {status: 422}
"""


def push_index(registry: str, repo: str, tag: str, platforms: list[str]) -> str:
    """An image index with one small image per ``os/arch[/variant]`` in ``platforms``, pushed without an
    engine (an engine pushes only its own platform). Returns the index digest."""
    from .modelimage import file_member, push_blob, push_manifest, tar_layer

    layer = tar_layer([file_member("hello.txt", b"hello\n")])
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": push_blob(registry, repo, layer)}
    layer_desc["size"] = len(layer)
    entries = []
    for platform in platforms:
        os_, arch, *variant = platform.split("/")
        described = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
        rootfs = {"type": "layers", "diff_ids": [layer_desc["digest"]]}
        config = json.dumps({**described, "config": {}, "rootfs": rootfs}).encode()
        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config)}
        config_desc["digest"] = push_blob(registry, repo, config)
        manifest = {"schemaVersion": 2, "config": config_desc, "layers": [layer_desc]}
        manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
        data = json.dumps(manifest).encode()  # the bytes push_manifest sends: pushed by their own digest
        digest = push_manifest(registry, repo, "sha256:" + hashlib.sha256(data).hexdigest(), manifest)
        entries.append({"mediaType": manifest["mediaType"], "digest": digest, "size": len(data), "platform": described})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    return push_manifest(registry, repo, tag, index)
