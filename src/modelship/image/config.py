"""Build settings: explicit arguments > ``[tool.modelship]`` in APP_DIR/pyproject.toml > env > defaults.

Loading (TOML), validating (types and ranges) and resolving (precedence, defaults) are kept apart so each
can be read and tested on its own.
"""

from __future__ import annotations

import difflib
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .. import settings
from ..errors import UsageError

if TYPE_CHECKING:  # typing.Unpack is 3.11's; annotations are never evaluated at run time (3.10 too)
    from typing_extensions import Unpack

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEFAULT_PORT = 8000
DEFAULT_READY_PATH = "/health/ready"
DEFAULT_LIVE_PATH = "/health/live"
DEFAULT_HEALTHCHECK_INTERVAL = "10s"

# key in [tool.modelship] -> expected type. `build` is the only reader of that table, so any other key is a
# typo (`entrypont`) and is refused rather than silently ignored.
_KEYS: dict[str, type | tuple[type, ...]] = {
    "base_image": str,
    "requirements": str,
    "dockerfile": str,
    "entrypoint": (str, list),
    "port": int,
    "ready_path": str,
    "live_path": str,
    "healthcheck_interval": str,
    "tag_model_version": bool,
    "include": list,  # .dockerignore patterns put back into the app layer (a secret-looking file you want)
    "exclude": list,  # .dockerignore patterns kept out of it, on top of .dockerignore and the defaults
}
_DURATION = re.compile(r"^\d+(ms|s|m|h)$")


@dataclass(frozen=True)
class BuildConfig:
    """Everything the build needs to know, resolved; paths are absolute."""

    app_dir: Path
    base_image: str
    base_image_explicit: bool  # False when it is only the built-in default
    requirements: Path | None
    dockerfile: Path | None
    entrypoint: tuple[str, ...] | None  # exec form; None only with a dockerfile
    port: int
    ready_path: str
    live_path: str
    healthcheck_interval: str
    tag_model_version: bool
    default_entrypoint: bool = False  # True: modelship's gunicorn command, not one the user gave
    include: tuple[str, ...] = ()  # [tool.modelship] include: patterns the app layer keeps after all
    exclude: tuple[str, ...] = ()  # [tool.modelship] exclude: patterns it leaves out


def load_tool_table(app_dir: Path) -> dict[str, Any]:
    """``[tool.modelship]`` of APP_DIR/pyproject.toml with keys normalised to snake_case ({} if absent)."""
    path = app_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML ({e}); fix the file") from e
    table = data.get("tool", {}).get("modelship", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [tool.modelship] must be a table")
    return {str(k).replace("-", "_"): v for k, v in table.items()}


def project_metadata(app_dir: Path) -> dict[str, str]:
    """name and version from ``[project]`` of APP_DIR/pyproject.toml, when present (for OCI labels)."""
    path = app_dir / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text()).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return {k: str(project[k]) for k in ("name", "version") if isinstance(project.get(k), str)}


# how a type reads in an error message ("must be an integer", not "must be a int")
_TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", list: "a list of strings"}


def validate_table(table: dict[str, Any], source: str) -> dict[str, Any]:
    """Type-check ``[tool.modelship]``; an unknown key is refused, naming the known ones."""
    for key in table:
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"{source}: unknown key {key!r} in [tool.modelship]; {hint}known keys: {', '.join(_KEYS)}")
    out: dict[str, Any] = {}
    for key, expected in _KEYS.items():
        if key not in table:
            continue
        value = table[key]
        # bool is an int subclass: `port = true` must not pass as port 1
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            types = (expected,) if isinstance(expected, type) else expected
            names = " or ".join(_TYPE_WORDS[t] for t in types)
            raise UsageError(f"{source}: [tool.modelship] {key} must be {names}, got {value!r}")
        out[key] = value
    return out


def _entrypoint(value: str | list | tuple | None, source: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as e:
            raise UsageError(f"{source}: entrypoint {value!r} cannot be parsed ({e})") from e
    else:
        parts = [str(p) for p in value]
    if not parts:
        raise UsageError(f"{source}: entrypoint is empty; give the command that starts the app")
    return tuple(parts)


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if m and not line.startswith("-"):
            names.add(re.sub(r"[-_.]+", "-", m.group(1)).lower())
    return names


class AppSettings(TypedDict, total=False):
    """What ``build`` (and this module's :func:`resolve`) take about the app; unset or None: ``[tool.modelship]``,
    the environment, then the defaults."""

    base_image: str | None
    requirements: str | Path | None
    dockerfile: str | Path | None
    entrypoint: str | None
    port: int | None
    ready_path: str | None
    live_path: str | None
    tag_model_version: bool


def resolve(app_dir: str | Path, **given: Unpack[AppSettings]) -> BuildConfig:
    """Merge explicit arguments, ``[tool.modelship]``, the environment and defaults into a BuildConfig."""
    unknown = sorted(set(given) - set(AppSettings.__annotations__))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    base_image, requirements, dockerfile = given.get("base_image"), given.get("requirements"), given.get("dockerfile")
    entrypoint, port = given.get("entrypoint"), given.get("port")
    ready_path, live_path = given.get("ready_path"), given.get("live_path")
    tag_model_version = bool(given.get("tag_model_version", False))
    app = Path(app_dir).expanduser().resolve()
    if not app.is_dir():
        raise UsageError(f"app directory {app_dir} does not exist or is not a directory")
    source = str(app / "pyproject.toml")
    cfg = validate_table(load_tool_table(app), source)

    def pick(explicit: Any, key: str) -> tuple[Any, bool]:
        if explicit is not None:
            return explicit, True
        if key in cfg:
            return cfg[key], False
        return None, False

    def path_of(explicit: str | Path | None, key: str) -> Path | None:
        # explicit paths are relative to the working directory, config paths to APP_DIR
        if explicit is not None:
            return Path(explicit).expanduser().resolve()
        if key in cfg:
            return (app / cfg[key]).resolve()
        return None

    base, _ = pick(base_image, "base_image")
    base = base or settings.current().base_image
    base_explicit = base is not None
    base = base or DEFAULT_BASE_IMAGE

    req = path_of(requirements, "requirements")
    if req is None and (app / "requirements.txt").is_file():
        req = app / "requirements.txt"
    if req is not None and not req.is_file():
        raise UsageError(f"requirements file {req} does not exist")

    dfile = path_of(dockerfile, "dockerfile")
    if dfile is not None and not dfile.is_file():
        raise UsageError(f"Dockerfile {dfile} does not exist")

    port_v, _ = pick(port, "port")
    port_v = DEFAULT_PORT if port_v is None else port_v
    if isinstance(port_v, bool) or not isinstance(port_v, int) or not 1 <= port_v <= 65535:
        raise UsageError(f"port must be an integer between 1 and 65535, got {port_v!r}")

    ready = _probe_path(pick(ready_path, "ready_path")[0] or DEFAULT_READY_PATH, "ready")
    live = _probe_path(pick(live_path, "live_path")[0] or DEFAULT_LIVE_PATH, "live")

    interval = cfg.get("healthcheck_interval", DEFAULT_HEALTHCHECK_INTERVAL)
    if not _DURATION.match(interval):
        raise UsageError(f"{source}: healthcheck_interval must look like 10s, 500ms or 1m, got {interval!r}")

    ep_value, _ = pick(entrypoint, "entrypoint")
    ep = _entrypoint(ep_value, "--entrypoint" if entrypoint is not None else source)
    default_ep = False
    if ep is None and dfile is None:
        if req is not None and "gunicorn" in _requirement_names(req):
            ep, default_ep = default_command(port_v), True
        else:
            raise UsageError(
                "no entrypoint: pass --entrypoint 'CMD' (e.g. 'python app.py') or set entrypoint in "
                "[tool.modelship]; the default 'gunicorn -b 0.0.0.0:PORT app:app' needs gunicorn in requirements"
            )

    tmv = bool(tag_model_version or cfg.get("tag_model_version", False))
    include, exclude = _patterns(cfg, "include", source), _patterns(cfg, "exclude", source)
    return BuildConfig(
        app, base, base_explicit, req, dfile, ep, port_v, ready, live, interval, tmv, default_ep, include, exclude
    )


def _patterns(cfg: dict[str, Any], key: str, source: str) -> tuple[str, ...]:
    """A list of .dockerignore-style patterns (``*.pem``, ``**/.env``, ``secrets/``)."""
    values = cfg.get(key) or []
    bad = [v for v in values if not isinstance(v, str) or not v.strip() or v.strip().startswith("!")]
    if bad:
        raise UsageError(
            f"{source}: [tool.modelship] {key} must be a list of file patterns like '*.pem' or 'conf/.env' "
            f"(no '!': use include), got {bad[0]!r}"
        )
    return tuple(v.strip() for v in values)


def default_command(port: int, *, control_socket_flag: bool = False) -> tuple[str, ...]:
    """The command of an app that gives none: gunicorn serving ``app:app`` of /app on ``port``.

    ``control_socket_flag``: add ``--no-control-socket`` (gunicorn >= 25.1 has it): the control socket it
    otherwise opens under $HOME cannot be created on a read-only root filesystem, as deploy render's pods
    have, and each start would log an ERROR.
    """
    cmd = ("gunicorn", "-b", f"0.0.0.0:{port}", "app:app")
    return (*cmd[:1], "--no-control-socket", *cmd[1:]) if control_socket_flag else cmd


def _probe_path(path: str, what: str) -> str:
    if not path.startswith("/") or any(c.isspace() or c in "'\"\\" for c in path):
        raise UsageError(f"{what} path must start with '/' and contain no spaces or quotes, got {path!r}")
    return path


GUNICORN_CONTROL_SOCKET = "25.1"  # gunicorn >= 25.1 has --no-control-socket


def image_command(cfg: BuildConfig, wheel_dir: Path) -> tuple[str, ...]:
    """The image's CMD (both builders): the user's entrypoint as given; the default gunicorn one fitted to the
    gunicorn version resolved into ``wheel_dir``."""
    assert cfg.entrypoint is not None
    if not cfg.default_entrypoint:
        return cfg.entrypoint
    from packaging.version import Version

    from .wheels import wheel_version

    version = wheel_version(wheel_dir, "gunicorn")
    flag = version is not None and version >= Version(GUNICORN_CONTROL_SOCKET)
    return default_command(cfg.port, control_socket_flag=flag)
