"""push(): an image to its registry through the engine, whole-push retries, the pushed manifest read back."""

from __future__ import annotations

import logging
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .. import progress
from .._docker import docker_host, engine, unreachable
from .._retry import Budget, retrying
from ..errors import AuthError, DockerError, ModelshipError, NotFoundError, UsageError
from ..oci.auth import Credentials, login
from ..oci.reference import Reference, base_url, parse_reference, pinned, split_tag
from ..oci.registry import RegistryClient
from ..uri import redact

if TYPE_CHECKING:
    from ..trust.cosign import ImageSignature

log = logging.getLogger("modelship")

PUSH_ATTEMPTS = 3  # whole pushes; within each, the engine retries a failed layer upload itself (5 s, 10 s, ...)

# Engine messages of failures a new push gets past: the registry or the network to it failed on the way (5xx,
# reset, refused, EOF, timeout), or the registry rejected bytes damaged on the way (digest/manifest invalid,
# blob unknown). The engine does not retry its manifest PUT at all; a new push skips the layers already up.
_RETRYABLE = re.compile(
    r"unexpected http status: 5\d\d|connection reset|connection refused|broken pipe|\beof\b|timeout|timed out"
    r"|transport connection broken|malformed http|closed network connection|server closed"
    r"|deadline exceeded|digest invalid|manifest invalid|blob unknown|blob upload unknown|size invalid",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PushResult:
    """What ``push`` put in the registry (docs/architecture.md's glossary)."""

    image: str  # REGISTRY/REPO:TAG pushed
    image_digest: str  # the registry's manifest digest, sha256:…
    ref: str  # REGISTRY/REPO@sha256:…: what to test, promote and deploy
    image_signature: ImageSignature | None = None  # with a sign key: the pushed digest's cosign signature

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _PushRetry(Exception):
    """One push attempt failed in a way the next attempt may get past."""


def _push_error(image: str, registry: str, message: str) -> ModelshipError:
    low = message.lower()
    if any(s in low for s in ("unauthorized", "denied", "authentication required", "no basic auth")):
        return AuthError(
            f"push of {image} denied by {registry}: run 'docker login {registry}' or pass --username/--password-stdin"
        )
    if "does not exist locally" in low or "no such image" in low:
        return NotFoundError(f"image {image} does not exist locally: build or tag it first (modelship build)")
    return DockerError(
        f"push of {image} failed: {redact(message)}; check the image name and the registry, then push again"
    )


def _push_reason(message: str) -> str:
    """An engine error as one short line (it may list several errors on several lines), without secrets."""
    lines = [s.strip() for s in redact(message).splitlines() if s.strip() and s.strip() != "errors:"]
    reason = "; ".join(lines) or "unknown error"
    reason = re.sub(r"(https?://[^\s\"?]+)\?[^\s\"]*", r"\1", reason)  # upload URLs carry signed state: drop it
    reason = re.sub(r"received unexpected HTTP status: ", "the registry answered HTTP ", reason)
    reason = re.sub(r"unexpected EOF", "connection closed early (EOF)", reason)
    return reason if len(reason) <= 300 else reason[:299] + "…"


def _pushed_manifest_problem(ref: Reference, digest: str, creds: Credentials | None) -> str | None:
    """Why the registry's manifest for the tag is not the one the engine pushed; None when it is or cannot be read.

    Only for plain-http registries on this machine: without TLS nothing stops a byte damaged on the way from
    being stored, and the registry digests what arrived -- it accepts, say, a manifest whose size field changed,
    while the engine reports the digest of what it sent.
    """
    host = docker_host()
    local_engine = host.startswith("unix://") or re.match(r"tcp://(localhost|127\.0\.0\.1|\[::1\])[:/]?", host)
    if not local_engine or not base_url(ref.registry).startswith("http://"):
        return None  # TLS guards the bytes; or the engine's 127.0.0.1 is another machine than ours
    try:
        with RegistryClient(ref.registry, creds) as client:  # no creds: the docker config's, as the engine's
            held = client.get_manifest(ref.repository, ref.reference).digest
    except AuthError:
        return None  # the engine had credentials we cannot read back with: nothing to compare
    except ModelshipError as e:
        return f"reading the pushed manifest back failed: {e}"
    if held != digest:
        return f"{ref.registry} holds manifest {held[:19]}… for the tag, not the pushed {digest[:19]}…"
    return None


def push(
    image: str,
    *,
    username: str | None = None,
    password: str | None = None,
    quiet: bool = True,
    docker_client=None,
    sign_key: str | Path | None = None,
) -> PushResult:
    """Push IMAGE[:TAG] to its registry; returns the tag pushed, its manifest digest and the pinned ``ref``.

    Quiet by default, as a library call should be; ``quiet=False`` shows progress on stderr (the CLI does).

    A transient registry failure (5xx, reset, timeout, damaged upload) gets up to PUSH_ATTEMPTS whole pushes.
    ``sign_key``: a PEM EC P-256 private key (read before the push) that signs the pushed digest in cosign's
    format (modelship.trust.cosign; the engine has moved the tag by then).
    """
    import docker.errors
    import requests

    ref = parse_reference(image)
    if ref.reference.startswith("sha256:"):
        raise UsageError(f"cannot push {image}: give a tag, not a digest")
    key = None
    if sign_key is not None:
        from ..trust.cosign import load_sign_key

        key = load_sign_key(sign_key)
    creds = login(username, password)
    repo, tag = split_tag(image)
    name = f"{repo}:{tag}"
    auth = {"username": username, "password": password} if username is not None else None

    def fail(message: str) -> NoReturn:
        reason = _push_reason(message)
        error = _push_error(name, ref.registry, reason)
        retryable = _RETRYABLE.search(message.replace(repo, ""))  # not fooled by a name like app/timeout-svc
        if isinstance(error, (AuthError, NotFoundError)) or not retryable:
            raise error
        raise _PushRetry(reason)

    def attempt(client) -> str:
        digest = None
        layers: dict[str, tuple[int, int]] = {}  # layer id -> (current, total) bytes
        bar = progress.Progress(None, f"push {name}", show=None if not quiet else False)
        done = 0
        waiting: set[str] = set()  # layers in the engine's own retry countdown
        try:
            for ev in client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth):
                if "error" in ev:
                    fail(ev.get("error", ""))
                if isinstance(ev.get("aux"), dict) and ev["aux"].get("Digest"):
                    digest = ev["aux"]["Digest"]
                layer, status = ev.get("id"), ev.get("status", "")
                detail = ev.get("progressDetail") or {}
                if layer and detail.get("total"):
                    layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
                    bar.total = sum(t for _, t in layers.values())
                    now = sum(c for c, _ in layers.values())
                    if now > done:  # a layer upload the engine restarts counts from 0 again
                        bar.update(now - done)
                        done = now
                        budget.progress()  # bytes moved: a later failure is no stall
                elif layer and not quiet and not progress.enabled() and status in ("Pushed", "Layer already exists"):
                    bar.write(f"{layer}: {status}")
                if layer and status.startswith("Retrying in"):  # a countdown, one event a second: say it once
                    if layer not in waiting and not quiet and log.isEnabledFor(logging.INFO):  # -v
                        bar.write(f"modelship: {layer}: upload failed, the engine retries it ({status.lower()})")
                    waiting.add(layer)
                elif layer:
                    waiting.discard(layer)
        except docker.errors.APIError as e:
            fail(str(getattr(e, "explanation", None) or e))
        except requests.ConnectionError as e:
            raise unreachable(e) from None
        finally:
            bar.close()
        if not digest:
            raise DockerError(f"push of {name} finished without a digest; see the engine log")
        problem = _pushed_manifest_problem(ref, digest, creds)
        if problem:
            raise _PushRetry(problem)
        return digest

    def announce(what: str, n: int, delay: float, e: Exception) -> None:
        # -v only, like every retry: at the default verbosity a push that gets through says nothing of its retries
        log.info("%s failed (%s); retrying (%d/%d)", what, e, n + 1, PUSH_ATTEMPTS)

    def give_up(what: str, retries: int, e: Exception) -> Exception:
        return DockerError(
            f"{what} failed {retries + 1} times, last: {e}; the registry {ref.registry} or the network "
            "to it is failing: check it, then push again"
        )

    budget = Budget(
        f"push of {name}",
        retries=PUSH_ATTEMPTS - 1,
        delay=lambda n: n * (0.5 + random.random()),  # short: the engine waited 5 s per layer retry
        give_up=give_up,
    )
    with engine(docker_client) as client:
        digest = retrying(
            f"push of {name}", lambda: attempt(client), retry_on=(_PushRetry,), on_retry=announce, budget=budget
        )
    signature = None
    if key is not None:
        from ..trust.cosign import sign_image

        with RegistryClient(ref.registry, creds) as registry:
            signature = sign_image(registry, ref.with_digest(digest), key)
    # the CLI prints it once
    return PushResult(image=name, image_digest=digest, ref=pinned(name, digest), image_signature=signature)
