"""What the image benchmarks (benchmarks/assemble.py, benchmarks/modelimage.py) share: one run's testbed
resources (Docker client, Azurite container, work folder), all removed at the end, an app image built and pushed
untimed, and a timer."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import testbed
from .engine import build_from_files
from .oci import push_image

_T = TypeVar("_T")
AZURITE_KEY = "MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING"


def timed(fn: Callable[[], _T]) -> tuple[float, _T]:
    """Seconds ``fn`` took, and what it returned."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


@dataclass
class BenchRun:
    """One benchmark run: ``cname`` is its Azurite container, ``work`` its folder (the cache is in it), and
    ``local_tags`` the images to remove from the engine at the end."""

    registry: str
    base: str
    connection_string: str
    client: Any  # docker.DockerClient
    container: Any  # azure.storage.blob.ContainerClient
    cname: str
    run: str
    work: Path
    local_tags: list[str] = field(default_factory=list)


@contextlib.contextmanager
def bench_run(name: str) -> Iterator[BenchRun]:
    """The testbed's registry, base image, engine and a fresh Azurite container ``bench-<name>-<run>``; exits with
    one line when the testbed is not up. Sets AZURE_STORAGE_CONNECTION_STRING and MODELSHIP_CACHE_DIR."""
    import docker
    from azure.storage.blob import BlobServiceClient

    env = testbed.for_script(AZURITE_KEY, "MODELSHIP_TESTBED_REGISTRY", "MODELSHIP_BASE_IMAGE")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = env[AZURITE_KEY]
    client = docker.from_env()
    run = uuid.uuid4().hex[:8]
    cname = f"bench-{name}-{run}"
    container = BlobServiceClient.from_connection_string(env[AZURITE_KEY]).create_container(cname)
    work = Path(tempfile.mkdtemp(prefix=f"modelship-bench-{name}-"))
    os.environ["MODELSHIP_CACHE_DIR"] = str(work / "cache")
    bench = BenchRun(
        env["MODELSHIP_TESTBED_REGISTRY"], env["MODELSHIP_BASE_IMAGE"], env[AZURITE_KEY], client, container, cname,
        run, work,
    )  # fmt: skip
    try:
        yield bench
    finally:
        for tag in bench.local_tags:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                client.images.remove(tag, force=True)
        container.delete_container()
        client.close()
        shutil.rmtree(work, ignore_errors=True)


def push_app_image(bench: BenchRun, tag: str, dockerfile: str, app: str) -> str:
    """Build ``dockerfile`` (its ``{base}`` filled in) with ``app`` as app.py, push it as ``tag``; its pinned
    reference (``repo@sha256:…``). The tag is removed from the engine at the end of the run."""
    bench.local_tags.append(tag)
    build_from_files(bench.client, tag, {"Dockerfile": dockerfile.format(base=bench.base), "app.py": app})
    try:
        digest = push_image(bench.client, tag)
    except (RuntimeError, AssertionError) as e:
        sys.exit(f"benchmark: push of the app image {tag} failed: {e}")
    return f"{tag.rpartition(':')[0]}@{digest}"
