"""modelship's settings from the environment, read into one ``Settings`` value and checked.

``current()`` is what every module asks. It reads the variables below on each call and parses them once per
distinct set of values (a small cache keyed on the raw strings): a process that changes its environment
between two calls (a test's ``monkeypatch.setenv``, a notebook) sees the change at the next operation, while a
download asking for its retry count per range costs a few dictionary look-ups, not a parse. A value that does
not parse is refused in one line naming the variable (a ``UsageError``: exit 2 from the CLI), never replaced by
a default in silence.

The variables (modelship's own; credentials and the SDKs' conventional variables, such as
``AZURE_STORAGE_CONNECTION_STRING`` or ``AWS_ENDPOINT_URL``, stay with the stores that use them):

- ``MODELSHIP_READ_TIMEOUT`` seconds a store read may see no bytes before it counts as stalled (30)
- ``MODELSHIP_RETRY_BUDGET`` seconds an operation may go on failing without progress (90)
- ``MODELSHIP_MAX_ATTEMPTS`` attempts of one operation in all, first included (5; ``1``: no retry at all)
- ``MODELSHIP_CONCURRENCY`` connections for fetch and publish (a number up to 64, or ``auto``: the default)
- ``MODELSHIP_NO_PROGRESS``, ``CI`` no progress bars when set (``0``, ``false``, ``no``, ``off``: not set)
- ``MODELSHIP_CACHE_DIR`` the cache (default ``$XDG_CACHE_HOME/modelship``, ``~/.cache/modelship``)
- ``MODELSHIP_REGISTRY_TIMEOUT`` seconds a registry request may see no bytes (120)
- ``MODELSHIP_ACR_REGISTRIES`` extra registry hosts (comma-separated) to treat as Azure Container Registries
- ``MODELSHIP_AZURE_ENDPOINT`` the blob endpoint for ``az://`` URIs without one (Azurite, a sovereign cloud)
- ``MODELSHIP_BASE_IMAGE`` the default base image of ``build``

This module imports nothing of modelship's but ``errors``: it is at the bottom.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

# Connections a store client keeps for reuse, and so the most fetch and publish may use at once: at least as
# many as they read or write over, or each one beyond the pool opens (and closes) a connection of its own.
MAX_CONNECTIONS = 64

_FALSE = ("", "0", "false", "no", "off")
_NAMES = (
    "MODELSHIP_READ_TIMEOUT",
    "MODELSHIP_RETRY_BUDGET",
    "MODELSHIP_MAX_ATTEMPTS",
    "MODELSHIP_CONCURRENCY",
    "MODELSHIP_NO_PROGRESS",
    "CI",
    "MODELSHIP_CACHE_DIR",
    "XDG_CACHE_HOME",
    "HOME",
    "MODELSHIP_REGISTRY_TIMEOUT",
    "MODELSHIP_ACR_REGISTRIES",
    "MODELSHIP_AZURE_ENDPOINT",
    "MODELSHIP_BASE_IMAGE",
)


@dataclass(frozen=True)
class Settings:
    """The environment's settings, parsed and checked (see the module docstring for each variable)."""

    read_timeout: float = 30.0
    retry_budget: float = 90.0
    max_attempts: int = 5
    concurrency: int | None = None  # None: automatic
    no_progress: bool = False
    cache_dir: Path = Path("~/.cache/modelship")
    registry_timeout: float = 120.0
    acr_registries: frozenset[str] = frozenset()
    azure_endpoint: str | None = None
    base_image: str | None = None

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt: ``max_attempts - 1`` (0 with ``MODELSHIP_MAX_ATTEMPTS=1``)."""
        return self.max_attempts - 1


def current() -> Settings:
    """The settings of the environment as it is now (parsed once per distinct set of values)."""
    return _parse(tuple(os.environ.get(name) for name in _NAMES))


@functools.lru_cache(maxsize=16)
def _parse(raw: tuple[str | None, ...]) -> Settings:
    env = {name: value for name, value in zip(_NAMES, raw, strict=True) if value is not None}
    cache = env.get("MODELSHIP_CACHE_DIR") or ""
    if not cache:
        xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache = os.path.join(xdg, "modelship")
    hosts = env.get("MODELSHIP_ACR_REGISTRIES", "")
    return Settings(
        read_timeout=max(0.1, _seconds(env, "MODELSHIP_READ_TIMEOUT", 30.0, zero=False)),
        retry_budget=_seconds(env, "MODELSHIP_RETRY_BUDGET", 90.0, zero=True),
        max_attempts=_count(env, "MODELSHIP_MAX_ATTEMPTS", "attempts in all", "1: no retry; default 5", most=100) or 5,
        concurrency=_concurrency(env),
        no_progress=any(env.get(n, "").strip().lower() not in _FALSE for n in ("MODELSHIP_NO_PROGRESS", "CI")),
        cache_dir=Path(cache),
        registry_timeout=_seconds(env, "MODELSHIP_REGISTRY_TIMEOUT", 120.0, zero=False),
        acr_registries=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
        azure_endpoint=env.get("MODELSHIP_AZURE_ENDPOINT", "").strip() or None,
        base_image=env.get("MODELSHIP_BASE_IMAGE") or None,
    )


def _shown(value: str) -> str:
    return repr(value[:40])


def _seconds(env: dict[str, str], name: str, default: float, *, zero: bool) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        least = "0 or more" if zero else "more than 0"
        raise UsageError(f"{name}={_shown(value)}: give a number of seconds, {least} (default {default:g})")
    return seconds


def _count(env: dict[str, str], name: str, what: str, default: str, *, most: int) -> int | None:
    """A whole number from 1 to ``most``; None when unset (``default`` says what applies then)."""
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise UsageError(f"{name}={_shown(value)}: give a number of {what} from 1 to {most} ({default})")
    return int(value)


def _concurrency(env: dict[str, str]) -> int | None:
    value = env.get("MODELSHIP_CONCURRENCY", "").strip()
    if not value or value.lower() == "auto":
        return None
    return _count(env, "MODELSHIP_CONCURRENCY", "connections", "or 'auto', the default", most=MAX_CONNECTIONS)
