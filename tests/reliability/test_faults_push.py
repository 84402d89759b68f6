"""modelship push under registry network faults (a TCP proxy between the Docker engine and the registry), seeded.

Each run pushes a fresh layer (1-2 MiB of random bytes, so the upload really happens) through the proxy. It either
succeeds, and the registry -- asked directly, not through the proxy -- holds for the tag exactly the manifest
modelship reported, whose config is the local image and whose layers are all there with the sizes it lists; or it
fails with one clean error line naming the image and what to do, and the tag is absent or points to such a
correct manifest, never to another one. The faults are transient: in the seeded cells a run in which one fired
must succeed (modelship's whole-push retries or the engine's own layer retries); with MODELSHIP_MAX_ATTEMPTS=1
the cells whose faults only modelship retries fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass

import pytest
import requests

from modelship import cli
from modelship.image._push import PUSH_ATTEMPTS
from support.faults import Fault, FaultProxy, RandomFaults, Request, first, response_fault
from support.faults.checks import error_line_problems, recovery_problems, secrets_in
from support.record import record_run, recovery, rng_for, seeds

# Response faults hit any exchange (ping, HEAD, upload, manifest); "-upload" ones hit blob upload bodies (PATCH
# and PUT of /blobs/uploads/, digest-checked by the registry); "flip-manifest" hits the manifest PUT body, which
# nothing but modelship's read-back check covers over plain http.
KINDS = ["reset", "close", "stall", "status503", "status500", "reset-upload", "flip-upload", "flip-manifest"]
REPO = "modelship-faults/push-{kind}"
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
SECRET = "FAKE-REGISTRY-PASSWORD-modelship-7d41a9"  # must never show up in any output
HINTS = ("push again", "docker login", "build or tag it first")  # what a push error line tells the user to do

pytestmark = pytest.mark.timeout(180)  # a hang is a failure, found in minutes


class EngineFaultProxy(FaultProxy):
    """FaultProxy for the Docker engine, which tries TLS first on an insecure registry and falls back to http
    when the server answers in plain HTTP. A TLS ClientHello is answered like the registry answers it (a plain
    400) instead of waiting for a request head that never comes: the engine would wait out its 10 s TLS
    handshake timeout on every push."""

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            byte = await asyncio.wait_for(creader.readexactly(1), 30)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            cwriter.transport.abort()
            return
        if byte == b"\x16":  # a TLS handshake record
            cwriter.write(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
            with contextlib.suppress(OSError):
                await cwriter.drain()
            cwriter.close()
            return
        reader = asyncio.StreamReader(limit=1 << 20)  # the byte read above, then the rest of the stream
        reader.feed_data(byte)

        async def copy() -> None:
            try:
                while data := await creader.read(1 << 16):
                    reader.feed_data(data)
                reader.feed_eof()
            except OSError as e:
                reader.set_exception(e)

        pump = asyncio.ensure_future(copy())
        try:
            await super()._accept(reader, cwriter)
        except asyncio.CancelledError:
            pass  # the proxy is stopping while the engine keeps an idle connection open: end quietly
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(pump, return_exceptions=True)


def make_fault(kind: str, rng: random.Random, req: Request) -> Fault | None:
    """A fault of ``kind`` for this exchange, at a position it reaches (or None: not this one)."""
    length = int(req.headers.get("content-length", "0") or 0)
    if kind == "flip-manifest":
        if req.method != "PUT" or "/manifests/" not in req.target or not length:
            return None
        return Fault.flip(rng.randrange(length), mask=rng.randrange(1, 256), direction="request")
    if kind.endswith("-upload"):
        chunked = "chunked" in req.headers.get("transfer-encoding", "")
        if req.method not in ("PATCH", "PUT") or "/blobs/uploads/" not in req.target or not (length or chunked):
            return None  # the engine sends the bytes in a PATCH; its closing PUT is empty
        # The layer is 1-2 MiB, the image config about 2 KiB.
        at = rng.randrange(1 << 20) if rng.random() < 0.75 else rng.randrange(256)
        if kind == "reset-upload":
            return Fault.reset(at, direction="request")
        return Fault.flip(at, mask=rng.randrange(1, 256), direction="request")
    at = rng.randrange(220)  # registry answers are short (a HEAD's is ~250 bytes): anywhere in head or body
    return response_fault(kind, at, rng)


def _context(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _build(docker_client, files: dict[str, bytes], tag: str) -> str:
    image, _ = docker_client.images.build(
        fileobj=_context(files), custom_context=True, tag=tag, rm=True, forcerm=True, network_mode="none"
    )
    return image.id


def _delete_tag(registry: str, repo: str, tag: str) -> None:
    """Remove what a run left under its tag in the registry (it has deletes enabled), so runs leave no debris."""
    resp = requests.get(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=30)
    if resp.ok:
        digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
        requests.delete(f"http://{registry}/v2/{repo}/manifests/{digest}", timeout=30)


@pytest.fixture(scope="module")
def push_base(docker_client, base_image, registry):
    """One small image of our own (a file of the base image, a unique label), already in every repository the
    runs push to, so each run uploads just its own fresh layer, its config and its manifest. Small, because the
    engine uploads a layer again in full when the registry's answer to "do you have it?" fails."""
    base = f"modelship-faults/push-base:{uuid.uuid4().hex[:12]}"
    dockerfile = f"FROM {base_image} AS src\nFROM scratch\nCOPY --from=src /etc/os-release /etc/os-release\n"
    _build(docker_client, {"Dockerfile": f"{dockerfile}LABEL io.modelship.test.run={base}\n".encode()}, base)
    try:
        for kind in KINDS:
            repo = f"{registry}/{REPO.format(kind=kind)}"
            docker_client.api.tag(base, repo, "base")
            try:
                for ev in docker_client.api.push(repo, tag="base", stream=True, decode=True):
                    assert "error" not in ev, f"cannot push the base image to {repo}: {ev['error']}"
            finally:
                docker_client.images.remove(f"{repo}:base")
        yield base
    finally:
        for kind in KINDS:
            _delete_tag(registry, REPO.format(kind=kind), "base")
        docker_client.images.remove(base)


def registry_problems(registry: str, repo: str, tag: str, image_id: str, layers: int, digest: str | None) -> list[str]:
    """What is wrong with what the registry holds for ``repo:tag``, asked directly (not through the proxy).

    ``digest`` None: the push failed, so the tag may be absent; if it is there, it must be a correct manifest.
    """
    url = f"http://{registry}/v2/{repo}"
    resp = requests.get(f"{url}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=30)
    if resp.status_code == 404 and digest is None:
        return []
    if not resp.ok:
        return [f"the registry answers HTTP {resp.status_code} for the pushed tag"]
    held = "sha256:" + hashlib.sha256(resp.content).hexdigest()
    problems = []
    if digest is not None and held != digest:
        problems.append(f"the registry holds {held[:19]} for the tag, modelship reported {digest[:19]}")
    if resp.headers.get("Docker-Content-Digest", held) != held:
        problems.append("the registry's Docker-Content-Digest is not the digest of the manifest it sent")
    try:
        manifest = json.loads(resp.content)
        config, blobs = manifest["config"], manifest["layers"]
    except (ValueError, KeyError, TypeError):
        return [*problems, "the tag holds a manifest that is not a valid image manifest"]
    if config.get("digest") != image_id:
        problems.append(
            f"the manifest's config {str(config.get('digest'))[:19]} is not the local image {image_id[:19]}"
        )
    if len(blobs) != layers:
        problems.append(f"the manifest lists {len(blobs)} layers, the image has {layers}")
    for blob in [config, *blobs]:
        head = requests.head(f"{url}/blobs/{blob.get('digest')}", timeout=30)
        if head.status_code != 200:
            problems.append(f"blob {str(blob.get('digest'))[:19]} of the manifest: HTTP {head.status_code}")
        elif int(head.headers.get("Content-Length", -1)) != blob.get("size"):
            problems.append(
                f"blob {blob['digest'][:19]} has {head.headers.get('Content-Length')} bytes, the manifest says "
                f"{blob.get('size')}"
            )
    return problems


@dataclass
class Run:
    kind: str
    rc: int
    out: str
    err: str
    seconds: float
    proxy: EngineFaultProxy
    problems: list[str]

    def record(self, *, transient: bool = True, **fields: object) -> None:
        """One run for docs/reliability.md; ``transient``: its faults were meant to be recovered from."""
        record_run(
            "push",
            self.kind,
            "success" if self.rc == 0 else "clean-failure",
            self.problems,
            injected=len(self.proxy.stats.injected),
            **recovery(needed=transient and bool(self.proxy.stats.injected), ok=self.rc == 0),
            secrets=secrets_in(self.out + self.err, [SECRET]),
            error=self.err.strip().splitlines()[-1] if self.rc else "",
            seconds=self.seconds,
            push_retries=self.err.count("; retrying ("),
            engine_retries=self.err.count("the engine retries it"),
            **fields,
        )


def _push(ref: str, monkeypatch, capsys, process: tuple[str, ...] | None) -> tuple[int, str, str]:
    """``modelship push REF --password-stdin`` in this process, with modelship's -v lines (retries) captured
    into stderr; or, with ``process`` (extra options), as a real process, as a user runs it."""
    argv = ["push", ref, "--username", "modelship", "--password-stdin"]
    if process is not None:
        proc = subprocess.run(
            [sys.executable, "-m", "modelship.cli", *argv, *process],
            input=SECRET + "\n",
            capture_output=True,
            text=True,
            timeout=150,
        )
        return proc.returncode, proc.stdout, proc.stderr
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("modelship: %(message)s"))
    logger = logging.getLogger("modelship")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as -v: one line per retry
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    out, err = capsys.readouterr()
    return rc, out, err + lines.getvalue()


def push_through_faults(
    docker_client, registry, base, monkeypatch, capsys, kind, plan, size, process: tuple[str, ...] | None = None
) -> Run:
    """Build a child of ``base`` with a fresh ``size``-byte layer, push it through a proxy running ``plan``
    (with a recognisable password, which the open registry never asks for), check the result against the
    registry, then remove the local image and the run's tag. ``process``: push as a real process (see _push)."""
    repo = REPO.format(kind=kind)
    run = f"{kind}-{uuid.uuid4().hex[:8]}"
    child = f"modelship-faults/push-run:{run}"
    files = {"Dockerfile": f"FROM {base}\nCOPY r.bin /r.bin\n".encode(), "r.bin": os.urandom(size)}
    image_id = _build(docker_client, files, child)
    n_layers = len(docker_client.images.get(image_id).attrs["RootFS"]["Layers"])
    ref = ""
    host, port = registry.rsplit(":", 1)
    try:
        with EngineFaultProxy((host, int(port)), plan=plan, lifetime=150) as proxy:
            ref = f"127.0.0.1:{proxy.port}/{repo}:{run}"
            docker_client.api.tag(image_id, ref.rsplit(":", 1)[0], run)
            start = time.monotonic()
            rc, out, err = _push(ref, monkeypatch, capsys, process)
            seconds = round(time.monotonic() - start, 2)

        problems = []
        if rc == 0:
            digest = out.split()[-1]  # "pushed REF DIGEST"
            problems += registry_problems(registry, repo, run, image_id, n_layers, digest)
        else:
            problems += error_line_problems(rc, err)
            line = next((x for x in err.splitlines() if x.startswith("modelship: error:")), "")
            if ref not in line:
                problems.append(f"the error line does not name {ref}")
            if not any(h in line for h in HINTS):
                problems.append("the error line does not say what to do")
            problems += registry_problems(registry, repo, run, image_id, n_layers, None)
        if secrets_in(out + err, [SECRET]):
            problems.append("the registry password is in the output")
        return Run(kind, rc, out, err, seconds, proxy, problems)
    finally:
        if ref:
            docker_client.images.remove(ref)
        docker_client.images.remove(child)  # the last tag: the image and its build steps go
        _delete_tag(registry, repo, run)


@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("kind", KINDS)
def test_push_under_faults(docker_client, registry, push_base, monkeypatch, capsys, kind, seed):
    rng = rng_for("push", kind, seed)
    # Few faults: the engine waits 5 s, then 10 s, ... before it uploads a failed layer again.
    budget = 1 if rng.random() < 0.75 else 2
    p = {"flip-manifest": 1.0, "reset-upload": 0.75, "flip-upload": 0.75}.get(kind, 0.3)
    plan = RandomFaults(rng.randrange(1 << 30), lambda r, req: make_fault(kind, r, req), p=p, budget=budget)
    size = rng.randint(1 << 20, 2 << 20)  # fresh random bytes: never "Layer already exists"
    run = push_through_faults(docker_client, registry, push_base, monkeypatch, capsys, kind, plan, size)
    run.problems += recovery_problems(run.rc, len(run.proxy.stats.injected), run.err)
    run.record(seed=seed)
    assert not run.problems, f"{run.problems} (faults: {run.proxy.stats.injected}; stderr: {run.err.strip()[-800:]})"


def test_push_gives_up_cleanly_when_the_registry_keeps_failing(docker_client, registry, push_base, monkeypatch, capsys):
    """Every manifest PUT answered 503 (the engine does not retry it): three pushes, two retry notes, then one
    error line; nothing under the tag."""
    plan = first(PUSH_ATTEMPTS, Fault.answer(503), lambda req: req.method == "PUT" and "/manifests/" in req.target)
    run = push_through_faults(
        docker_client, registry, push_base, monkeypatch, capsys, "status503-every-push", plan, 1 << 20
    )
    run.record(seed=0, transient=False)  # a registry that keeps failing, or a 4xx: giving up is right
    assert not run.problems, run.err
    assert run.rc == 1 and run.proxy.stats.by_kind == {"status": PUSH_ATTEMPTS}
    assert run.err.count("; retrying (") == PUSH_ATTEMPTS - 1
    assert f"failed {PUSH_ATTEMPTS} times, last: the registry answered HTTP 503" in run.err


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "-v"])
def test_push_retry_lines_only_at_v(docker_client, registry, push_base, monkeypatch, capsys, verbose):
    """A push that gives up after its retries, run as a user runs it: at the default verbosity the error line
    is all it prints; with -v, modelship's own one line per retry comes first."""
    plan = first(PUSH_ATTEMPTS, Fault.answer(503), lambda req: req.method == "PUT" and "/manifests/" in req.target)
    options = ("-v", "--no-progress") if verbose else ("--no-progress",)
    run = push_through_faults(
        docker_client, registry, push_base, monkeypatch, capsys, "status503-quiet", plan, 1 << 20, process=options
    )
    assert not run.problems, run.err
    lines = [line for line in run.err.splitlines() if line.startswith("modelship: ")]
    retries = [line for line in lines if "; retrying (" in line]
    assert len(retries) == (PUSH_ATTEMPTS - 1 if verbose else 0), run.err
    assert all(line.startswith("modelship: push of ") and "the registry answered HTTP 503" in line for line in retries)
    if not verbose:  # (the engine's per-layer status lines stand in for the progress bar off a terminal)
        assert len(lines) == 1 and lines[0].startswith("modelship: error: push of "), run.err


def test_push_does_not_retry_what_a_new_push_cannot_fix(docker_client, registry, push_base, monkeypatch, capsys):
    """A 4xx the engine cannot read (no registry error JSON) is no network fault: one push, one error line."""
    plan = first(1, Fault.answer(400), lambda req: req.method == "PUT" and "/manifests/" in req.target)
    run = push_through_faults(docker_client, registry, push_base, monkeypatch, capsys, "status400", plan, 1 << 20)
    run.record(seed=0, transient=False)  # a registry that keeps failing, or a 4xx: giving up is right
    assert not run.problems, run.err
    assert run.rc == 1 and run.proxy.stats.by_kind == {"status": 1}
    assert "retrying" not in run.err
