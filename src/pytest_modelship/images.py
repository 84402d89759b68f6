"""The image under test: what the plugin needs from ``docker image inspect``, and getting it (pulled if asked)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelship._docker import short_reason

from .errors import SetupError

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

DEFAULT_MODEL_DIR = "/opt/modelship/model"
APP_PORT_LABEL = "io.modelship.app.port"  # written by `modelship build`

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

    def layer_history(self) -> tuple[str, ...]:
        """The build history (one API call, made only by the checks that need it)."""
        if self.history is not None:
            return self.history
        return self.history_loader() if self.history_loader else ()

    @classmethod
    def from_image(cls, ref: str, image: Image) -> ImageInfo:
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
        )

    def env_dict(self) -> dict[str, str]:
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in self.env)

    @property
    def model_dir(self) -> str:
        return self.env_dict().get("MODELSHIP_MODEL_DIR") or DEFAULT_MODEL_DIR

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
    """Inspect the image, pulling it first when asked; one-line errors when it is missing."""
    import docker.errors
    from docker.utils import parse_repository_tag

    if pull:
        # a digest comes back as the tag ("sha256:..."), which docker-py pulls as REPO@DIGEST; no tag: latest
        repo, tag = parse_repository_tag(ref)
        try:
            client.images.pull(repo, tag=tag)
        except docker.errors.DockerException as e:
            raise SetupError(
                f"could not pull image {ref} ({short_reason(e)}): check the name and 'docker login'"
            ) from None
    try:
        return ImageInfo.from_image(ref, client.images.get(ref))
    except docker.errors.ImageNotFound:
        raise SetupError(
            f"image {ref} not found locally: build it first, or pass --modelship-pull to pull it"
        ) from None
    except docker.errors.DockerException as e:
        raise SetupError(f"could not inspect image {ref} ({short_reason(e)})") from None
