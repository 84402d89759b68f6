"""Running the example image the way its Kubernetes Deployment does, for tests and benchmarks/load.py."""

from __future__ import annotations

import contextlib
import http.client
import time
from collections.abc import Iterator
from typing import Any

# docker-run equivalents of the pod's securityContext in examples/flask_app/k8s/deployment.yaml: uid 10001,
# read-only root, /tmp as the only writable place, all capabilities dropped, no privilege escalation
POD_LIKE: dict[str, Any] = {
    "user": "10001:10001",
    "read_only": True,
    "tmpfs": {"/tmp": "size=64m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}


@contextlib.contextmanager
def run_like_the_pod(client, image: str, label: str) -> Iterator[tuple[Any, int]]:
    """The container (removed afterwards) and its port 8000 published on 127.0.0.1."""
    container = client.containers.run(
        image, detach=True, ports={"8000/tcp": ("127.0.0.1", None)}, labels={label: "example"}, **POD_LIKE
    )
    try:
        container.reload()
        yield container, int(container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"])
    finally:
        container.remove(force=True)


def wait_ready(container, port: int, timeout: float = 60) -> float:
    """Seconds until /health/ready answered 200; RuntimeError with the logs if the app exits or never gets ready."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health/ready")
            if conn.getresponse().status == 200:
                return time.monotonic() - t0
        container.reload()
        if container.status == "exited":
            raise RuntimeError(f"the container exited:\n{container.logs().decode(errors='replace')[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout:.0f} s:\n{container.logs().decode(errors='replace')[-3000:]}")
