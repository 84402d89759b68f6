"""What a build leaves in the engine, and removing it when the build does not finish.

The classic builder commits an image after every step and keeps those images when a build fails or is
cancelled: ``<none>`` images nobody asked for. ``BuildTrace`` reads the build log to learn which images a
build made (not cache hits) and which step was in flight; ``discard`` removes them after a failure or an
interrupt. Hanging up cancels the build, but the engine still finishes the step in flight (a COPY of a
large model runs to its end) and commits it *after* we hung up, so ``discard`` waits, bounded, for that
late image and removes it too. On success, ``keep_stages`` names the images of intermediate stages (stage
``deps`` of the generated Dockerfile): they are the cache that keeps the dependency layer identical on a
model-only rebuild, and a name (``modelship-cache/stage``) keeps them from being dangling ``<none>`` images.

Builds running at the same time on one engine share images: a step one build committed is the next one's
cache hit, a child of it the next step. So ``discard`` removes nothing another build holds: every build keeps
the ids of the images it used (``Holds``: one small file per build under the modelship cache, per engine),
and what a live build lists is left alone, as are the step containers on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import pid_alive, write_atomic

CACHE_REPO = "modelship-cache/stage"
# the engine cannot cancel a COPY/ADD in progress: how long to wait for it to land so it can be removed
COPY_WAIT_S = 120.0
STEP_WAIT_S = 5.0  # any other step: the engine stops a RUN at once and commits metadata steps in ms
QUIET_S = 0.5  # no new image for this long after hanging up: the engine has stopped
_POLL_S = 0.1

_STEP = re.compile(r"^Step \d+/\d+ : (.*)$")
_RESULT = re.compile(r"^---> ([0-9a-f]{12,64})$")
_RUNNING = re.compile(r"^---> Running in ([0-9a-f]{12,64})$")


@dataclass
class BuildTrace:
    """What one engine build call reported: the images it made and the step still in flight."""

    started: float = field(default_factory=time.time)
    created: list[str] = field(default_factory=list)  # step images made by this build (no cache hits), oldest first
    used: list[str] = field(default_factory=list)  # every image a step of this build gave, cache hits included
    stages: list[str] = field(default_factory=list)  # last image of each stage but the final one
    parent: str | None = None  # the image the next (or in-flight) step builds on
    step: str | None = None  # the instruction in flight: its "Step" line came, its result not yet
    container: str | None = None  # the container of the step in flight, if the log named one
    ended: bool = False  # the engine finished the build (result or error): nothing can land later
    holds: Holds | None = None  # where the images this build uses are listed for other builds
    _cached: bool = False
    _steps: int = 0

    def feed(self, line: str) -> None:
        """One stripped line of the classic builder's log."""
        if m := _STEP.match(line):
            instruction = m.group(1)
            if _keyword(instruction) == "FROM" and self._steps and self.parent is not None:
                self.stages.append(self.parent)  # a new stage begins: the previous one ended with `parent`
            self.step, self.container, self._cached = instruction, None, False
            self._steps += 1
        elif line == "---> Using cache":
            self._cached = True
        elif m := _RUNNING.match(line):
            self.container = m.group(1)
        elif (m := _RESULT.match(line)) and self.step is not None:
            image = m.group(1)
            if not self._cached and _keyword(self.step) != "FROM" and image not in self.created:
                self.created.append(image)
            if image not in self.used:
                self.used.append(image)
                if self.holds is not None:
                    self.holds.note(self.used)
            self.parent, self.step, self.container, self._cached = image, None, None, False


class Holds:
    """The images one build uses, where the other modelship builds on the same engine see them.

    One JSON file per build (``/tmp/modelship-holds/<engine>/<pid>-<token>.json``, written whole), gone when
    the build ends; a file whose process died is stale and removed by the next reader. A build lists an image
    as soon as its log names it, before the next step can build on it. The folder is the machine's, not under
    the modelship cache: builds with caches of their own (two pipelines on one agent, tests) share the engine.
    """

    def __init__(self, engine: str, root: Path | None = None) -> None:
        key = hashlib.sha256(engine.encode()).hexdigest()[:16]
        self.folder = (root or _holds_root()) / key
        self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
        self._listed: set[str] = set()

    def note(self, images: list[str]) -> None:
        """List ``images`` (short ids) as used by this build; cheap when nothing is new."""
        if set(images) <= self._listed:
            return
        self._listed |= set(images)
        with contextlib.suppress(OSError):  # a read-only cache: no protection, but no failed build either
            write_atomic(self.path, json.dumps(sorted(self._listed)), durable=False)

    def others(self) -> set[str]:
        """The images the other live builds on this engine list."""
        held: set[str] = set()
        try:
            files = [p for p in self.folder.iterdir() if p.suffix == ".json" and p != self.path]
        except OSError:
            return held
        for p in files:
            pid = p.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    p.unlink()  # its build is gone: nothing holds these any more
                continue
            with contextlib.suppress(OSError, ValueError):
                held.update(str(i)[:12] for i in json.loads(p.read_text()) if isinstance(i, str))
        return held

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _holds_root() -> Path:
    """``/tmp/modelship-holds`` (sticky and world-writable, like /tmp: every user's builds on the engine meet
    there); the modelship cache when it cannot be made."""
    root = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / "modelship-holds"
    try:
        root.mkdir(exist_ok=True)
        if root.stat().st_uid == os.getuid():
            os.chmod(root, 0o1777)  # noqa: S103 - sticky like /tmp: one may add files, remove only its own
        return root
    except (OSError, AttributeError):  # AttributeError: no os.getuid (Windows)
        from ..cache import default_root

        return default_root() / "build" / "engines"


def _nobody() -> set[str]:
    return set()


def _keyword(instruction: str) -> str:
    return instruction.split(None, 1)[0].upper() if instruction.strip() else ""


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def _matches_step(client: Any, image_id: str, step: str) -> bool:
    """Whether ``image_id`` is what ``step`` commits (its recorded command names the same instruction)."""
    try:
        cfg = client.api.inspect_image(image_id).get("ContainerConfig") or {}
    except Exception:  # noqa: BLE001 - gone meanwhile: not ours to remove anyway
        return False
    cmd = " ".join(cfg.get("Cmd") or [])
    keyword = _keyword(step)
    if "#(nop)" not in cmd:
        return keyword == "RUN" and " ".join(step.split()[1:]) in " ".join(cmd.split())
    if keyword in ("COPY", "ADD"):  # "#(nop) COPY dir:<hash> in /dest "
        return f"{keyword} " in cmd and cmd.rstrip().endswith(f" in {step.split()[-1]}")
    return f" {keyword} " in f" {cmd.split('#(nop)', 1)[1].strip()} "


class _Sweep:
    """Finds the images a cancelled build committed after it hung up."""

    def __init__(self, client: Any, trace: BuildTrace, held: Callable[[], set[str]]) -> None:
        self.client, self.trace, self.held = client, trace, held
        self.ours = set(trace.created)
        self.landed = False  # the step in flight committed its image

    def poll(self) -> bool:
        """Adopt late images; True if any was found."""
        trace, found = self.trace, False
        try:
            images = self.client.api.images(all=True)
        except Exception:  # noqa: BLE001 - engine gone: nothing more can be removed
            return False
        held = self.held()
        for img in images:
            short, parent = _short(img["Id"]), _short(img.get("ParentId") or "")
            if short in self.ours or not parent or (img.get("RepoTags") or ["<none>:<none>"]) != ["<none>:<none>"]:
                continue
            if short in held:
                continue  # another build's step (the same step on the same parent, or a child of ours)
            if parent in self.ours:
                pass  # a child of an image this build made: ours
            elif (
                parent == (trace.parent or "")
                and trace.step is not None
                and img.get("Created", 0) >= int(trace.started) - 1
                and _matches_step(self.client, img["Id"], trace.step)
            ):
                pass  # the step in flight, on a shared parent (base or cache hit): recognised by its command
            else:
                continue
            self.ours.add(short)
            trace.created.append(short)
            self.landed = self.landed or parent == (trace.parent or "")
            found = True
        return found

    def container_gone(self) -> bool:
        if self.trace.container is None:
            return True
        try:
            self.client.api.inspect_container(self.trace.container)
        except Exception:  # noqa: BLE001 - NotFound (or engine gone)
            return True
        return False


def _settle(client: Any, trace: BuildTrace, quiet: bool, held: Callable[[], set[str]]) -> None:
    """Wait (bounded) until the engine stopped the cancelled build, adopting any image it committed late."""
    if trace.ended:
        return
    sweep = _Sweep(client, trace, held)
    copying = trace.step is not None and _keyword(trace.step) in ("COPY", "ADD")
    start = time.monotonic()
    deadline = start + (COPY_WAIT_S if copying else STEP_WAIT_S)
    quiet_until = start + QUIET_S
    told = False
    try:
        while time.monotonic() < deadline:
            if sweep.poll():
                quiet_until = time.monotonic() + QUIET_S
            waiting_for_copy = copying and not sweep.landed
            if not waiting_for_copy and sweep.container_gone() and time.monotonic() >= quiet_until:
                return
            if waiting_for_copy and not told and time.monotonic() - start > 1 and not quiet:
                told = True
                print(
                    f"modelship: waiting for the engine to finish '{trace.step[:60]}' so its image can be removed "
                    "(interrupt again to leave it)",
                    file=sys.stderr,
                )
            if not _engine_tick(client, _POLL_S):
                return  # the engine is gone: nothing more will land, nothing more can be removed
    except BaseException:  # noqa: BLE001 - interrupted again: stop waiting, still remove what is known
        return


def _engine_tick(client: Any, seconds: float, since: float | None = None) -> bool:
    """Wait up to ``seconds`` for the engine's next container event (a step container going away, say) from
    ``since`` (a ``time.time()``; default now) on; False if the engine cannot be asked. It reports no event when
    a step commits its image, so ``_settle`` looks again after each tick."""
    now = time.time()
    try:
        events = client.events(since=since or now, until=now + seconds, filters={"type": "container"}, decode=True)
        try:
            for _ in events:
                break
        finally:
            events.close()  # hang up at once: the stream would stay open until ``until``
    except Exception:  # noqa: BLE001 - any failure to reach the engine means the same here
        return False
    return True


def discard(client: Any, traces: list[BuildTrace], *, quiet: bool = False, holds: Holds | None = None) -> list[str]:
    """Remove the untagged images and step containers of builds that did not finish; returns the image ids.

    With ``holds``, what another live build on the engine lists is left alone (see ``Holds``).
    """

    held = holds.others if holds is not None else _nobody
    removed: list[str] = []
    for trace in reversed(traces):
        _settle(client, trace, quiet, held)
        ours = set(trace.created) - held()
        _remove_containers(client, ours, trace.container)
        deadline = time.monotonic() + STEP_WAIT_S
        for image in reversed(trace.created):  # newest first: each is a leaf when its turn comes
            if image not in ours or image in held():  # asked again: a build may have reached it meanwhile
                continue  # another build is on it: its cache hit, or the parent of its next step
            if _remove_image(client, image, deadline, held):
                removed.append(image)
    return removed


def _remove_containers(client: Any, images: set[str], container: str | None = None) -> None:
    """Remove ``container`` (the step in flight) and every container on one of ``images`` (short ids)."""
    import docker.errors

    with contextlib.suppress(Exception):
        for c in client.api.containers(all=True):
            if c["Id"][:12] == (container or "")[:12] or _short(c.get("ImageID") or "") in images:
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_container(c["Id"], force=True, v=True)


def _remove_image(client: Any, image: str, deadline: float, held: Callable[[], set[str]]) -> bool:
    """Remove one untagged image of ours; False if it is tagged, gone, or another image is built on it."""
    import docker.errors

    while True:
        tried = time.time()
        try:
            if client.api.inspect_image(image).get("RepoTags"):
                return False  # tagged: a finished result (or someone's), never debris
            # noprune: the parents this build found in the cache are not its to remove
            client.api.remove_image(image, noprune=True)
            return True
        except docker.errors.APIError as e:
            # "image is being used by (running|stopped) container": the step container the engine created
            # just as we hung up, before the log named it and after the sweep above; the engine removes it
            # itself (forcerm), so wait for that and try again, bounded. The container is never removed here:
            # it may be another build's step on the same cache hit, whose hold is not written yet (removing
            # it failed that build with "unknown parent image ID"). A dependent child image, or gone already,
            # is not ours to force.
            if "used by" not in str(e) or time.monotonic() > deadline or image in held():
                return False
        # until the engine's next container event since the attempt (that container going away), or the deadline
        if not _engine_tick(client, max(0.0, deadline - time.monotonic()), since=tried):
            return False


def keep_stages(client: Any, traces: list[BuildTrace]) -> list[str]:
    """Name the intermediate stage images of a finished build, so they are cache, not ``<none>`` debris."""
    named = []
    for trace in traces:
        for image in trace.stages:
            with contextlib.suppress(Exception):
                client.api.tag(image, CACHE_REPO, image, force=True)
                named.append(f"{CACHE_REPO}:{image}")
    return named


def response_of(events: Any) -> Any:
    """The HTTP response behind docker-py's build event generator, so an interrupt can hang up at once.

    ``APIClient.build`` returns ``_stream_helper(response, ...)`` before iterating it; its frame holds the
    response. Without it the connection stays open until garbage collection and the engine builds on.
    """
    frame = getattr(events, "gi_frame", None)
    return frame.f_locals.get("response") if frame is not None else None


def hang_up(response: Any) -> None:
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
