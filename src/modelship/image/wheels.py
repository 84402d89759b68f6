"""Host-side dependency resolution: a wheelhouse for the base image's interpreter and platform.

Nothing inside the image build talks to a package index: the requirements are downloaded here, on the
host (where proxies, CA bundles and index credentials are already configured), as binary wheels for the
*target* interpreter, then installed in the image with ``pip install --no-index``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._docker import local_image, short_reason
from .._fs import temp_name, write_atomic
from ..cache import default_root
from ..errors import BuildError, DockerError, NotFoundError, UsageError
from ..uri import redact

if TYPE_CHECKING:
    from packaging.version import Version

# Prints what pip needs to pick wheels for this interpreter. Runs inside the base image, so it must only
# use the standard library of any CPython >= 3.6.
_PROBE = r"""
import glob, json, platform, sys
libc, libc_version = platform.libc_ver()
if not libc and glob.glob("/lib/ld-musl-*"):
    libc = "musl"
    import subprocess
    out = subprocess.run([glob.glob("/lib/ld-musl-*")[0]], stderr=subprocess.PIPE).stderr.decode()
    libc_version = next((l.split()[1] for l in out.splitlines() if l.startswith("Version")), "1.1")
print(json.dumps({"python": sys.executable, "version": "%d.%d" % sys.version_info[:2],
                  "implementation": sys.implementation.name, "libc": libc, "libc_version": libc_version,
                  "machine": platform.machine()}))
"""
_IMPL_TAGS = {"cpython": "cp", "pypy": "pp"}
WHEELHOUSE_REQUIREMENTS = "requirements.txt"  # pinned list written next to the wheels


@dataclass(frozen=True)
class Target:
    """The interpreter and platform of a base image, as pip needs them for ``pip download``."""

    python: str  # interpreter path inside the image
    version: str  # "3.11"
    implementation: str  # "cpython"
    libc: str  # "glibc" | "musl"
    libc_version: str  # "2.36"
    machine: str  # "x86_64"

    @property
    def platforms(self) -> list[str]:
        """Every platform tag a wheel may carry and still run here, newest first."""
        arch = self.machine
        major, _, minor = self.libc_version.partition(".")
        try:
            maj, mnr = int(major), int(minor.split(".")[0] or 0)
        except ValueError:
            maj, mnr = 0, 0
        if self.libc == "glibc" and maj == 2:
            tags = [f"manylinux_2_{m}_{arch}" for m in range(mnr, 4, -1)]
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            tags += [f"{name}_{arch}" for m, name in legacy.items() if m <= mnr]
            return tags
        if self.libc == "musl" and maj == 1:
            return [f"musllinux_1_{m}_{arch}" for m in range(mnr, -1, -1)]
        raise UsageError(
            f"base image libc {self.libc or 'unknown'} {self.libc_version} on {arch}: no binary wheel platform "
            "known for it; use a glibc (Debian/Ubuntu) or musl (Alpine) based Python image"
        )

    @property
    def pip_args(self) -> list[str]:
        impl = _IMPL_TAGS.get(self.implementation)
        if impl is None:
            raise UsageError(f"base image runs {self.implementation}; only CPython and PyPy wheels can be resolved")
        nodot = self.version.replace(".", "")
        args = ["--python-version", self.version, "--implementation", impl]
        if impl == "cp":
            args += ["--abi", f"cp{nodot}"]
        for p in self.platforms:
            args += ["--platform", p]
        return args

    def describe(self) -> str:
        return f"{self.implementation} {self.version} {self.libc} {self.libc_version} {self.machine}"


def build_cache_dir() -> Path:
    return default_root() / "build"


def detect_target(client, image: str) -> Target:
    """Run the base image once to learn its interpreter; cached by image id (an id never changes content)."""
    found = local_image(client, image, lambda why: DockerError(f"cannot inspect base image {image}: {why}"))
    if found is None:
        raise NotFoundError(
            f"base image {image} not found locally: pull or build it first (docker pull {image}), or pass --base-image"
        )
    image_id = found.id
    cache_file = build_cache_dir() / "targets" / f"{image_id.replace(':', '-')}.json"
    if cache_file.is_file():
        try:
            return Target(**json.loads(cache_file.read_text()))
        except (ValueError, TypeError):
            cache_file.unlink(missing_ok=True)  # written by another version: probe again
    out = b""
    for python in ("python3", "python"):
        out = _run_probe(client, image, image_id, python)
        if out:
            break
    if not out:
        raise UsageError(f"base image {image} has no python3 or python on PATH; use a Python base image")
    try:
        target = Target(**json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, TypeError, IndexError) as e:
        raise DockerError(f"base image {image}: unexpected interpreter probe output {out[:200]!r}") from e
    write_atomic(cache_file, json.dumps(asdict(target)), durable=False)
    return target


def _run_probe(client, image: str, image_id: str, python: str) -> bytes:
    """stdout of the probe run with ``python``; b"" when that interpreter does not exist in the image."""
    import docker.errors

    container = None
    # named, so an interrupt during the create call (container made, id not yet returned) can still remove it
    name = f"modelship-probe-{uuid.uuid4().hex[:12]}"
    asked = time.time()
    try:
        container = client.containers.create(
            image_id, entrypoint=[python, "-c", _PROBE], command=[], network_disabled=True, user="0", name=name
        )
        container.start()
        status = container.wait(timeout=120)
        if status.get("StatusCode") != 0:
            return b""
        return container.logs(stdout=True, stderr=False)
    except docker.errors.APIError as e:
        if "executable file not found" in str(e) or "no such file" in str(e).lower():
            return b""
        raise DockerError(f"cannot run base image {image} to detect its Python: {short_reason(e)}") from e
    except BaseException:
        if container is None:  # interrupted in the create call: the engine may create it after we hung up
            _remove_late(client, name, asked)
        raise
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):  # already gone
                container.remove(force=True)


def _remove_late(client, name: str, since: float, timeout: float = 2.0) -> None:
    """Remove container ``name`` once the engine created it (bounded): an abandoned create call may complete."""
    import docker.errors

    with contextlib.suppress(BaseException):  # best effort, and a second interrupt ends it
        # the engine's own event stream (which replays events since `since`) says when it exists; it ends at `until`
        events = client.events(
            since=int(since) - 1,
            until=int(time.time() + timeout) + 1,
            filters={"type": "container", "event": "create", "container": name},
            decode=True,
        )
        for _ in events:
            break
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(name, force=True)


def _local_find_links(requirements: Path) -> list[Path]:
    """Local directories named by --find-links/-f lines: their content is part of what pip resolves."""
    dirs = []
    for line in requirements.read_text().splitlines():
        m = re.match(r"^\s*(?:--find-links|-f)(?:\s+|=)(\S+)", line)
        if m and "://" not in m.group(1):
            d = (requirements.parent / m.group(1)).resolve()
            if d.is_dir():
                dirs.append(d)
    return dirs


def wheelhouse_key(requirements: Path | None, target: Target) -> str:
    h = hashlib.sha256(json.dumps(asdict(target), sort_keys=True).encode())
    if requirements is not None:
        h.update(b"\0requirements\0" + requirements.read_bytes())
        for d in _local_find_links(requirements):
            for p in sorted(d.iterdir()):
                if p.is_file():
                    st = p.stat()
                    h.update(f"\0{p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _no_wheel_name(stderr: str) -> str | None:
    for pattern in (
        r"No matching distribution found for (\S+)",
        r"Could not find a version that satisfies the requirement (\S+)",
    ):
        m = re.search(pattern, stderr)
        if m:
            return m.group(1)
    return None


def pinned_requirements(wheel_dir: Path) -> str:
    """``name==version`` for every wheel: installs exactly the resolved set, nothing else."""
    lines = []
    for whl in sorted(wheel_dir.glob("*.whl")):
        name, version = whl.name.split("-")[:2]
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + ("\n" if lines else "")


def wheel_version(wheel_dir: Path, project: str) -> Version | None:
    """The version of ``project``'s wheel in a wheelhouse; None when the wheelhouse has none."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    want = canonicalize_name(project)
    for whl in wheel_dir.glob("*.whl"):
        try:
            name, version, _, _ = parse_wheel_filename(whl.name)
        except InvalidWheelFilename:
            continue
        if name == want:
            return version
    return None


def installed(wheel_dir: Path) -> list[tuple[str, str]]:
    """(name, version) of every wheel in a wheelhouse: what the app image installs (its dependencies label)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    out = []
    for whl in wheel_dir.glob("*.whl"):
        try:
            name, version, _, _ = parse_wheel_filename(whl.name)
        except InvalidWheelFilename:
            continue
        out.append((str(name), str(version)))
    return sorted(out)


def wheelhouse(requirements: Path | None, target: Target, *, quiet: bool = False) -> Path:
    """A directory of wheels for ``requirements`` on ``target``, cached by hash(requirements + target).

    Raises BuildError naming the requirement that has no binary wheel for the target.
    """
    key = wheelhouse_key(requirements, target)
    root = build_cache_dir() / "wheels"
    final = root / key
    if (final / WHEELHOUSE_REQUIREMENTS).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / temp_name(f".{key}")
    tmp.mkdir()
    try:
        if requirements is not None:
            cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off"]
            cmd += ["--only-binary=:all:", *target.pip_args, "-d", str(tmp), "-r", str(requirements)]
            if not quiet:
                print(f"modelship: resolving {requirements.name} for {target.describe()}", file=sys.stderr)
            proc = subprocess.run(cmd, cwd=requirements.parent, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                missing = _no_wheel_name(proc.stderr)
                if missing:
                    raise BuildError(
                        f"no binary wheel of {missing} for the base image ({target.describe()}): pin a version "
                        "that ships a wheel for it, build a wheel yourself and name its folder in the "
                        "requirements file (a line '--find-links ./wheels'), or change the base image"
                    )
                last = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "pip failed")
                raise BuildError(f"resolving {requirements} failed: {redact(last.strip())}")
        (tmp / WHEELHOUSE_REQUIREMENTS).write_text(pinned_requirements(tmp))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / WHEELHOUSE_REQUIREMENTS).is_file():  # lost a race to an identical wheelhouse
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
