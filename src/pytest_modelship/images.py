"""The image under test: what the plugin needs from ``docker image inspect``, and getting it (pulled if asked)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelship._docker import local_image, short_reason
from modelship.conventions import APP_PORT_LABEL, MODEL_DIR, MODEL_DIR_ENV, MODEL_DIR_LABEL

from .errors import SetupError

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

DEFAULT_MODEL_DIR = MODEL_DIR

_HEALTHCHECK_URL = re.compile(r"https?://[^/\s'\"]+(/[^\s'\"\\)]*)")


@dataclass(frozen=True)
class ImageInfo:
    """What the plugin needs from ``docker image inspect``."""

    ref: str
    id: str
    exposed_ports: tuple[str, ...]
    healthcheck: tuple[str, ...] | None
    user: str
    env: tuple[str, ...]
    labels: dict[str, str]
    history: tuple[str, ...] | None = None  # CreatedBy of every layer; None: fetched on first use
    history_loader: Callable[[], tuple[str, ...]] | None = field(default=None, compare=False, repr=False)
    pulled: str | None = None  # why this run pulled it ("--modelship-pull", "digest not present locally"), if it did

    def layer_history(self) -> tuple[str, ...]:
        """The build history (one API call, made only by the checks that need it)."""
        if self.history is not None:
            return self.history
        return self.history_loader() if self.history_loader else ()

    @classmethod
    def from_image(cls, ref: str, image: Image, pulled: str | None = None) -> ImageInfo:
        cfg = image.attrs.get("Config") or {}

        def load_history() -> tuple[str, ...]:
            return tuple(h.get("CreatedBy") or "" for h in image.history())

        hc = cfg.get("Healthcheck") or {}
        test = tuple(hc.get("Test") or ())
        return cls(
            ref=ref,
            id=image.id,
            exposed_ports=tuple(sorted((cfg.get("ExposedPorts") or {}).keys())),
            healthcheck=test if test and test[0] != "NONE" else None,
            user=cfg.get("User") or "",
            env=tuple(cfg.get("Env") or ()),
            labels=dict(cfg.get("Labels") or {}),
            history_loader=load_history,
            pulled=pulled,
        )

    def env_dict(self) -> dict[str, str]:
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.env)

    @property
    def model_dir(self) -> str:
        """Where the model is: $MODELSHIP_MODEL_DIR (what the app reads), else the model dir label, else the default."""
        return self.env_dict().get(MODEL_DIR_ENV) or self.labels.get(MODEL_DIR_LABEL) or DEFAULT_MODEL_DIR

    def tcp_ports(self) -> list[int]:
        """The EXPOSEd TCP ports, sorted."""
        return sorted({int(p.split("/")[0]) for p in self.exposed_ports if p.endswith("/tcp") or "/" not in p})

    def declared_ports(self) -> set[int]:
        """Every port the image names for its app: EXPOSE and the io.modelship.app.port label."""
        label = self.labels.get(APP_PORT_LABEL, "")
        return set(self.tcp_ports()) | ({int(label)} if label.isdigit() else set())

    def describe_ports(self) -> str:
        """What the image says about its port, e.g. ``exposes 9000`` or ``exposes 9000, 9001 and its label ...``."""
        tcp = self.tcp_ports()
        parts = [f"exposes {', '.join(str(p) for p in tcp)}"] if tcp else []
        label = self.labels.get(APP_PORT_LABEL, "")
        if label.isdigit() and int(label) not in tcp:
            parts.append(f"names port {label} in its label {APP_PORT_LABEL}")
        return " and ".join(parts) or "declares no port"

    def default_port(self) -> int:
        tcp = self.tcp_ports()
        if len(tcp) == 1:
            return tcp[0]
        if not tcp:
            raise SetupError(f"image {self.ref} exposes no TCP port: pass --modelship-port PORT")
        listed = ", ".join(str(p) for p in tcp)
        raise SetupError(f"image {self.ref} exposes several ports ({listed}): choose one with --modelship-port")

    def healthcheck_path(self) -> str | None:
        """The URL path of an HTTP HEALTHCHECK command, e.g. ``/health/ready``."""
        if not self.healthcheck:
            return None
        match = _HEALTHCHECK_URL.search(" ".join(self.healthcheck[1:]))
        return match.group(1) if match else None


def get_image(client: docker.DockerClient, ref: str, pull: bool) -> ImageInfo:
    """Inspect the image, pulling it first when asked, or when it is a digest not present locally.

    A digest names one image for good, so pulling it cannot test something else than was asked for; the
    engine fetches only the layers it lacks. A tag that is not local is an error unless ``pull``: which image
    a tag means is the user's choice.
    """

    pulled = None
    if pull:
        _pull(client, ref)
        pulled = "--modelship-pull"
    elif _is_digest(ref) and not _present(client, ref):
        _pull(client, ref)
        pulled = "digest not present locally"
    image = local_image(client, ref, lambda why: SetupError(f"could not inspect image {ref} ({why})"))
    if image is None:
        raise SetupError(f"image {ref} not found locally: build it first, or pass --modelship-pull to pull it")
    return ImageInfo.from_image(ref, image, pulled)


def _present(client: docker.DockerClient, ref: str) -> bool:
    import docker.errors

    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.DockerException:
        return True  # another failure: the inspect below reports it in its own words
    return True


def _is_digest(ref: str) -> bool:
    """Whether ``ref`` names its image by digest (``REPO@sha256:...``)."""
    return bool(re.search(r"@sha256:[0-9a-f]{64}$", ref))


def _pull(client: docker.DockerClient, ref: str) -> None:
    """Pull ``ref`` through the engine (it fetches only the layers it lacks); one line naming what to do if not."""
    import docker.errors
    from docker.utils import parse_repository_tag

    name, _, digest = ref.partition("@")
    # REPO[:TAG]@DIGEST pulls the digest; a name without tag pulls latest, as `docker pull` does
    repo, tag = parse_repository_tag(name)
    try:
        # the engine reports some failures inside the progress stream, after a 200 (docker-py's images.pull
        # drops them and then only finds no image): read them
        for event in client.api.pull(repo, tag=digest or tag or "latest", stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise _StreamError(str(event["error"]))
    except (docker.errors.DockerException, _StreamError) as e:
        text = str(getattr(e, "explanation", None) or e)
        platform = re.search(r"no matching manifest for (\S+)", text)
        if platform:
            wanted = f"{repo}@{digest}" if digest else f"{repo}:{tag or 'latest'}"
            raise SetupError(_no_platform(client, ref, wanted, platform.group(1))) from None
        raise SetupError(_pull_problem(ref, repo, e)) from None


class _StreamError(Exception):
    """A failure the engine reported inside a pull's progress stream."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.explanation = text  # as docker-py's errors carry the engine's words


def _no_platform(client: docker.DockerClient, ref: str, name: str, platform: str) -> str:
    """The index ``name`` holds no image for the engine's ``platform``: say which platforms it has."""
    try:  # the engine's own registry access (its credentials and insecure-registry settings), like the pull
        found = client.api.inspect_distribution(name).get("Platforms") or []
        listed = sorted(
            {"/".join(p for p in (d.get("os"), d.get("architecture"), d.get("variant")) if p) for d in found}
            - {"unknown/unknown"}  # attestation manifests in buildx indexes, not images
        )
        platforms = ", ".join(listed) or "none"
    except Exception as e:  # noqa: BLE001 - the list is a detail of the message, never its reason
        platforms = f"not listed: {short_reason(e)}"
    return (
        f"could not pull image {ref}: no {platform} image in the index (platforms: {platforms}): "
        f"build and push the image for {platform}, or test it on an engine of a listed platform"
    )


def _pull_problem(ref: str, repo: str, e: BaseException) -> str:
    """A failed pull as one line: the image, the registry and what to do (the engine's words only as a hint)."""
    from docker.auth import resolve_repository_name

    try:
        registry = resolve_repository_name(repo)[0]
    except Exception:  # noqa: BLE001 - an unparsable name: the engine's reason says what is wrong with it
        registry = "its registry"
    text = " ".join(str(getattr(e, "explanation", None) or e).split())
    low = text.lower()
    if "pull access denied" in low:  # Docker Hub's answer for a missing and for a private repository alike
        return (
            f"could not pull image {ref}: {registry} has no such repository, or it needs a login: check the name, "
            f"or run 'docker login {registry}'"
        )
    if any(s in low for s in ("unauthorized", "authentication required", "no basic auth", "denied")):
        return f"could not pull image {ref}: {registry} denied access: run 'docker login {registry}' first"
    if any(s in low for s in ("manifest unknown", "not found", "name unknown", "does not exist")):
        what = "digest" if _is_digest(ref) else "tag"
        return f"image {ref} not found in {registry}: check the repository and {what}, or push the image there first"
    if any(s in low for s in _UNREACHABLE):
        why = next(s for s in _UNREACHABLE if s in low)
        return (
            f"could not pull image {ref}: registry {registry} not reachable ({why}): "
            "check its address and that it is running"
        )
    why = short_reason(e)
    return f"could not pull image {ref} from {registry} ({why}): check the name and 'docker login {registry}'"


# engine words for a registry it could not talk to, the most telling first
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "tls handshake timeout",
    "server gave http response to https client",
    "certificate",
    "connection reset",
    "timeout",
    "dial tcp",
)
