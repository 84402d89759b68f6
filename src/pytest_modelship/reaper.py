"""Labels on every container of the plugin, the identity of the process that owns one, and removing them:
this run's own (the sweep) and those left behind by killed runs (the reaper).

testcontainers' Ryuk does this from a container of its own, which offline CI cannot pull; these labels
and finalizers clean up without it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING

from modelship._fs import pid_alive
from modelship.conventions import CREATED_AT_LABEL, OWNER_LABEL, PID_LABEL, SESSION_LABEL, WORKER_LABEL

if TYPE_CHECKING:
    import docker

LABEL_SESSION = SESSION_LABEL
LABEL_WORKER = WORKER_LABEL
LABEL_CREATED = CREATED_AT_LABEL
LABEL_PID = PID_LABEL
LABEL_OWNER = OWNER_LABEL

STALE_AFTER_S = 3 * 3600  # leftovers whose owner cannot be checked (other host) are reaped after this
LATE_CREATE_S = 10.0  # how long the engine may still take to create a container whose creator hung up


def container_labels(run_id: str, worker: str) -> dict[str, str]:
    """The labels of a container this process creates now for ``run_id`` and ``worker``."""
    return {
        LABEL_SESSION: run_id,
        LABEL_WORKER: worker,
        LABEL_CREATED: f"{time.time():.3f}",
        LABEL_PID: str(os.getpid()),
        LABEL_OWNER: owner_id(),
    }


# ---------------------------------------------------------------------------------------------- owners


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # field 22 (starttime); the command name in field 2 may hold spaces, so split after it
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "-"


def owner_id(pid: int | None = None) -> str:
    """host|pid-namespace|pid|start-time: identifies a process even after its pid is reused."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}|{_pid_namespace()}|{pid}|{_proc_start_time(pid) or '-'}"


def owner_alive(owner: str) -> bool | None:
    """Whether the process that created a container still runs; None when that cannot be told here."""
    try:
        host, ns, pid_s, start = owner.split("|")
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname() or ns != _pid_namespace():
        return None
    if start != "-":
        return _proc_start_time(pid) == start
    return pid_alive(pid)


# ------------------------------------------------------------------------------------------- removing


def is_stale(labels: dict[str, str], now: float, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether what carries ``labels`` was left behind: its owner process is gone, or (owner unknown, e.g. on
    another host) it is older than ``stale_after`` seconds."""
    alive = owner_alive(labels.get(LABEL_OWNER, ""))
    try:
        age = now - float(labels.get(LABEL_CREATED, "0"))
    except ValueError:
        age = float("inf")
    return alive is False or (alive is None and age > stale_after)


def remove_run(client: docker.DockerClient, run_id: str, worker: str) -> int:
    """Remove every container of ``run_id`` and ``worker``; returns how many were found. An engine gone away
    is left to the next reaper."""
    import docker.errors

    try:
        leftovers = client.containers.list(
            all=True, filters={"label": [f"{LABEL_SESSION}={run_id}", f"{LABEL_WORKER}={worker}"]}
        )
        for c in leftovers:
            # NotFound, or a removal already in progress (409): one failure must not end the sweep
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True, v=True)
    except docker.errors.DockerException:
        return 0  # the engine went away; the next session's reaper removes what is left
    return len(leftovers)


def remove_late(client: docker.DockerClient, run_id: str, worker: str, within: float = LATE_CREATE_S) -> None:
    """Wait (bounded) for the container of a create request interrupted before its answer, and remove it: the
    engine creates it anyway, after a sweep by label had found nothing. Waits on the engine's create event for
    the run's labels (from before the sweep, so one that came meanwhile counts), not on a clock."""
    import docker.errors

    since = time.time()
    if remove_run(client, run_id, worker):
        return
    labels = [f"{LABEL_SESSION}={run_id}", f"{LABEL_WORKER}={worker}"]
    filters = {"type": "container", "event": "create", "label": labels}
    try:
        events = client.events(since=since, until=since + within, filters=filters, decode=True)
        try:
            created = next(iter(events), None)
        finally:
            events.close()
    except docker.errors.DockerException:
        return  # the engine went away; the next session's reaper removes what is left
    if created is not None:
        remove_run(client, run_id, worker)


def reap_stale(client: docker.DockerClient, now: float | None = None, stale_after: float = STALE_AFTER_S) -> list[str]:
    """Remove containers left behind by killed runs: owner process gone, or too old to be in use."""
    import docker.errors

    now = time.time() if now is None else now
    removed = []
    # the plain list call (labels included): the SDK's list would inspect each container, and one removed by
    # its own session meanwhile would fail the whole listing
    for c in client.api.containers(all=True, filters={"label": LABEL_SESSION}):
        labels = c.get("Labels") or {}
        if is_stale(labels, now, stale_after):
            try:
                client.api.remove_container(c["Id"], force=True, v=True)
                removed.append((c.get("Names") or [c["Id"][:12]])[0].lstrip("/"))
            except docker.errors.APIError:
                pass  # its own session removed it meanwhile (404), or is removing it (409)
    return removed
