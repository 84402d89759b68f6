"""The plugin's options: command line > ``MODELSHIP_*`` environment > ini key > default, each value with
its source for the report header (like pytest-django's). Kept free of Docker: imported on every run."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .redact import MASK, is_secret_name

if TYPE_CHECKING:
    from .images import ImageInfo

DEFAULT_CASES = "modelship-cases.yaml"
DEFAULT_TIMEOUT = 60.0
DEFAULT_READY_PATH = "/health/ready"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass
class Settings:
    """The effective plugin settings and where each came from (shown in the report header)."""

    image: str
    cases: str | None = None
    port: int | None = None
    ready_path: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold secrets: never in a repr
    pull: bool = False
    model_image: str | None = None  # the split shape: this model image mounted read-only at the model dir
    baseline: str | None = None  # the image production runs: compare sections send their probes to both
    baseline_model_image: str | None = None  # the baseline's model image (default: model_image)
    min_agreement: float | None = None  # overrides the compare section's (a pipeline names its thresholds)
    max_latency_ratio: float | None = None
    verify_keys: list[str] = field(default_factory=list)  # PEM public keys: the model_signature check runs
    attest_key: str | None = None  # PEM EC P-256 private key: the run's verdict is attested for the digest
    sources: dict[str, str] = field(default_factory=dict)

    def secret_values(self) -> list[str]:
        return [v for k, v in self.env.items() if is_secret_name(k) and len(v) >= 3]

    def redact(self, text: str) -> str:
        """Replace the values of secret-named --modelship-env keys wherever they appear."""
        for value in sorted(self.secret_values(), key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


def fill_from_image(settings: Settings, image: ImageInfo) -> None:
    """The defaults that come from the image: its single EXPOSEd port, its HEALTHCHECK's path."""
    if settings.port is None:
        settings.port = image.default_port()
        settings.sources["port"] = "image EXPOSE"
    if settings.ready_path is None:
        from_hc = image.healthcheck_path()
        settings.ready_path = from_hc or DEFAULT_READY_PATH
        settings.sources["ready_path"] = "image HEALTHCHECK" if from_hc else "default"


@dataclass(frozen=True)
class _Option:
    key: str
    kind: str  # str | path | paths | key | int | float | env | bool | share | ratio
    help: str
    env_name: str | None = None  # the variable, when it is not MODELSHIP_<KEY>

    @property
    def flag(self) -> str:
        return "--modelship-" + self.key.replace("_", "-")

    @property
    def dest(self) -> str:
        return "modelship_" + self.key

    @property
    def env(self) -> str:
        return self.env_name or "MODELSHIP_" + self.key.upper()

    ini = dest


OPTIONS: tuple[_Option, ...] = (
    _Option("image", "str", "image to test (e.g. myapp:1.2); without it the plugin does nothing"),
    _Option("cases", "path", f"smoke cases file, YAML or JSON (default: {DEFAULT_CASES} in the rootdir, if present)"),
    _Option("port", "int", "container port of the app (default: the image's single EXPOSEd port)"),
    _Option("ready_path", "str", "readiness URL path (default: from the image's HEALTHCHECK, else /health/ready)"),
    _Option("timeout", "float", f"seconds for the container to become ready (default: {DEFAULT_TIMEOUT:g})"),
    _Option("env", "env", "KEY=VALUE for the container, repeatable; values of secret-like keys are masked"),
    _Option("pull", "bool", "pull the image before the run (default: use the local image only)"),
    _Option("model_image", "str", "model image whose content is mounted read-only at the app's model dir"),
    _Option("baseline", "str", "image to compare with (what production runs, REF@DIGEST or a tag; pulled if absent)"),
    _Option("baseline_model_image", "str", "the baseline's model image (default: --modelship-model-image)"),
    _Option("min_agreement", "share", "the gate's min_agreement (a share, 0 < x <= 1), over the cases file's"),
    _Option("max_latency_ratio", "ratio", "the gate's max_latency_ratio (candidate/baseline p95), over the file's"),
    _Option(
        "verify_key",
        "paths",
        "PEM public key: check the model's model.sig in the image against it (repeatable; env: a path list)",
        "MODELSHIP_VERIFY_KEYS",  # the CLI's variable: a pipeline that fetches with it checks the image with it
    ),
    _Option(
        "attest_key",
        "key",
        "PEM EC P-256 private key (or cosign.key with $COSIGN_PASSWORD): after the run, attest its test-result "
        "for the image's digest (in its registry)",
    ),
)
_BY_KEY = {o.key: o for o in OPTIONS}


def add_options(parser: pytest.Parser) -> None:
    """Declare every option on the command line and as an ini key."""
    group = parser.getgroup("modelship", "test a model-serving container image (env MODELSHIP_*, ini modelship_*)")
    for o in OPTIONS:
        help_text = f"{o.help} [env {o.env}, ini {o.ini}]"
        if o.kind == "bool":
            group.addoption(o.flag, action="store_true", default=None, dest=o.dest, help=help_text)
        elif o.kind in ("env", "paths"):
            metavar = "KEY=VALUE" if o.kind == "env" else "PUB.pem"
            group.addoption(o.flag, action="append", default=None, dest=o.dest, metavar=metavar, help=help_text)
        else:
            metavar = {
                "path": "FILE",
                "key": "KEY.pem",
                "int": "PORT",
                "float": "SECONDS",
                "share": "SHARE",
                "ratio": "RATIO",
            }
            metavar = metavar.get(o.kind, o.key.upper())
            group.addoption(o.flag, default=None, dest=o.dest, metavar=metavar, help=help_text)
        parser.addini(o.ini, o.help, type="linelist" if o.kind in ("env", "paths") else "string")


def image_given(config: pytest.Config) -> bool:
    """Whether an image to test is set anywhere: without one the plugin does nothing."""
    return _lookup(config, _BY_KEY["image"]) is not None


def _lookup(config: pytest.Config, o: _Option) -> tuple[Any, str] | None:
    """The raw value and its source, by precedence: command line > environment > ini."""
    value = config.getoption(o.dest, None)
    if value is not None:
        return value, o.flag
    value = os.environ.get(o.env)
    if value:
        return value, o.env
    value = config.getini(o.ini)
    if value:
        ini = config.inipath.name if config.inipath else "ini"
        return value, f"{ini} {o.ini}"
    return None


def resolve_settings(config: pytest.Config) -> Settings:
    """Parse and validate every option; a bad value is a UsageError naming its source."""
    found = {o.key: _lookup(config, o) for o in OPTIONS}
    image_raw = found["image"]
    assert image_raw is not None
    settings = Settings(image=str(image_raw[0]).strip())
    settings.sources["image"] = image_raw[1]
    for key in (
        "cases",
        "port",
        "ready_path",
        "timeout",
        "env",
        "pull",
        "model_image",
        "baseline",
        "baseline_model_image",
        "min_agreement",
        "max_latency_ratio",
        "verify_key",
        "attest_key",
    ):
        raw = found[key]
        if raw is None:
            continue
        value, source = raw
        setattr(settings, "verify_keys" if key == "verify_key" else key, _parse(config, _BY_KEY[key], value, source))
        settings.sources[key] = source
    if found["cases"] is None:
        default = config.rootpath / DEFAULT_CASES
        if default.is_file():
            settings.cases = str(default)
            settings.sources["cases"] = "default"
    elif not Path(settings.cases or "").is_file():
        raise pytest.UsageError(f"modelship: cases file {settings.cases} not found (from {found['cases'][1]})")
    settings.sources.setdefault("timeout", "default")
    settings.sources.setdefault("pull", "default")
    return settings


def _parse(config: pytest.Config, o: _Option, value: Any, source: str) -> Any:
    def bad(why: str) -> pytest.UsageError:
        return pytest.UsageError(f"modelship: {source} {value!r}: {why}")

    if o.kind == "bool":
        if value is True:
            return True
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise bad("expected true or false")
    if o.kind == "int":
        try:
            port = int(str(value))
        except ValueError:
            raise bad("not a port number") from None
        if not 0 < port < 65536:
            raise bad("not a port number (1-65535)")
        return port
    if o.kind == "float":
        try:
            seconds = float(str(value))
        except ValueError:
            raise bad("not a number of seconds") from None
        if seconds <= 0:
            raise bad("must be more than 0 seconds")
        return seconds
    if o.kind in ("share", "ratio"):
        try:
            number = float(str(value))
        except ValueError:
            raise bad("not a number") from None
        if o.kind == "share" and not 0 < number <= 1:
            raise bad("a share of the probes: more than 0, at most 1 (0.98 = 98 %)")
        if not 0 < number < float("inf"):
            raise bad("must be more than 0")
        return number
    if o.kind == "path":
        return _path(config, value, source)
    if o.kind == "paths":
        return _key_paths(config, value, source)
    if o.kind == "key":
        return _sign_key(config, value, source)
    if o.kind == "env":
        items = shlex.split(value) if isinstance(value, str) else list(value)
        env = {}
        for item in items:
            name, sep, val = item.partition("=")
            if not sep or not name.strip() or any(c.isspace() for c in name):
                # never echo the item: it may be a secret value given without its key
                raise pytest.UsageError(f"modelship: {source}: expected KEY=VALUE, got an item without a valid KEY=")
            env[name.strip()] = val
        return env
    text = str(value).strip()
    if o.key == "ready_path" and not text.startswith("/"):
        raise bad("the ready path must start with '/'")
    return text


def _path(config: pytest.Config, value: Any, source: str) -> str:
    base = config.invocation_params.dir
    if source.startswith(config.inipath.name if config.inipath else "\0") and config.inipath:
        base = config.inipath.parent  # ini paths are relative to the ini file, like pytest's own
    return str((base / str(value).strip()).resolve())


def _key_paths(config: pytest.Config, value: Any, source: str) -> list[str]:
    """Verify keys: repeated on the command line, a path list in the environment, lines in the ini file; each
    one a PEM EC public key (checked now: a file that is not a key stops the run in one line)."""
    from modelship.errors import UsageError
    from modelship.trust.oms import load_public_keys

    items = value.split(os.pathsep) if isinstance(value, str) else list(value)
    paths = [_path(config, item, source) for item in items if str(item).strip()]
    try:
        load_public_keys(paths)
    except UsageError as e:
        raise pytest.UsageError(f"modelship: {source}: {e}") from None
    return paths


def _sign_key(config: pytest.Config, value: Any, source: str) -> str:
    """The attest key's path, the key read now: a file that is not a P-256 private key stops the run in one
    line (naming the file, never its content) before any container starts."""
    from modelship.errors import UsageError
    from modelship.trust.cosign import load_sign_key

    path = _path(config, value, source)
    try:
        load_sign_key(path)
    except UsageError as e:
        raise pytest.UsageError(f"modelship: {source}: {e}") from None
    return path
