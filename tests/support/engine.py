"""Images and containers of one test, told apart from those of tests running in parallel by a label of its own."""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from dataclasses import dataclass, field

RUN_LABEL = "io.modelship.test.run"


def labelled_base(client, base_image: str) -> tuple[str, str]:
    """A base image of our own: ``base_image`` + one LABEL. Every image built on it (each build step, each
    stage) inherits the label, so this test's images are told apart from those of tests running in parallel."""
    run = uuid.uuid4().hex[:12]
    text = f"FROM {base_image}\nLABEL {RUN_LABEL}={run}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    tag = f"modelship-test/hardening-base:{run}"
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True, forcerm=True)
    return tag, f"{RUN_LABEL}={run}"


@dataclass
class EngineState:
    """The images carrying a run label, and the containers on them."""

    images: list[dict] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)  # untagged leaves: what `docker images` shows as <none>
    containers: list[str] = field(default_factory=list)

    @property
    def tags(self) -> set[str]:
        return {t for i in self.images for t in (i.get("RepoTags") or []) if t != "<none>:<none>"}


def engine_state(client, label: str) -> EngineState:
    images = client.api.images(all=True, filters={"label": label})
    ids = {i["Id"] for i in images}
    dangling = [i["Id"] for i in client.api.images(filters={"label": label, "dangling": True})]
    on_ours = [c for c in client.api.containers(all=True) if c["ImageID"] in ids]
    containers = [f"{c['Id'][:12]} {c['State']} {c['Command'][:60]}" for c in on_ours]
    return EngineState(images, dangling, containers)


def remove_labelled(client, label: str) -> None:
    """Remove every container and image carrying ``label`` (tags first, the labelled base last)."""
    import docker.errors

    state = engine_state(client, label)
    ids = {i["Id"] for i in state.images}
    for c in client.api.containers(all=True):
        if c["ImageID"] in ids:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
    for tag in sorted(state.tags, key=lambda t: ("hardening-base" in t, t)):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(tag, force=True)
    for img in client.api.images(all=True, filters={"label": label}):  # anything left untagged
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(img["Id"], force=True)
