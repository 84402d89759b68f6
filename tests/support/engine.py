"""Images and containers of one test, told apart from those of tests running in parallel by a label of its own."""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

RUN_LABEL = "io.modelship.test.run"


def build_from_files(client, tag: str, files: Mapping[str, str]) -> str:
    """Build ``tag`` from a context of just ``files`` (name: text; a ``Dockerfile`` among them); returns the tag."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True, forcerm=True)
    return tag


def remove_built(client, ref: str) -> None:
    """Remove an image a test built, and the untagged parents only it used, but none that a running modelship
    build holds (``debris.Holds``): the engine's own pruning (``docker rmi``) would take a parent another test's
    build just got as a cache hit and is about to build on ("unknown parent image ID" in that build)."""
    import docker.errors

    from modelship._docker import docker_host
    from modelship.image import debris

    holds = debris.Holds(docker_host())
    try:
        parent = client.api.inspect_image(ref).get("Parent")
        client.api.remove_image(ref, force=True, noprune=True)
    except docker.errors.APIError:
        return
    while parent and debris._short(parent) not in holds.others():
        try:
            info = client.api.inspect_image(parent)
            if info.get("RepoTags"):
                return
            client.api.remove_image(parent, noprune=True)  # refused (409) while it has children or containers
        except docker.errors.APIError:
            return
        parent = info.get("Parent")


def labelled_base(client, base_image: str) -> tuple[str, str]:
    """A base image of our own: ``base_image`` + one LABEL. Every image built on it (each build step, each
    stage) inherits the label, so this test's images are told apart from those of tests running in parallel."""
    run = uuid.uuid4().hex[:12]
    tag = f"modelship-test/hardening-base:{run}"
    build_from_files(client, tag, {"Dockerfile": f"FROM {base_image}\nLABEL {RUN_LABEL}={run}\n"})
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
