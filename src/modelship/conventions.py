"""What modelship writes into images and reads back, spelled once: label and annotation keys, the in-image
model folder, and the ``created`` time (``SOURCE_DATE_EPOCH``).

A bottom module: both image paths (``image/`` through a Docker engine, ``oci/`` without one), the CLI,
``deploy`` and the pytest plugin read these names from here; it imports only errors and uri.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import UsageError
from .uri import strip_secrets

if TYPE_CHECKING:
    from .manifest import Manifest

# ---- model versions ----------------------------------------------------------------------------------------


def check_version(version: str, *, pep440: bool = False) -> str:
    """The one rule for a model version's name, in every verb: not empty, no '/', not '.' or '..', no blanks
    around it (it is a folder name); with ``pep440`` (an ``oci://`` version) also a PEP 440 version, because
    'latest' among tags is the highest PEP 440 one (oci.modelimage checks the tag grammar on top)."""
    if not version or version != version.strip() or "/" in version or version in (".", ".."):
        raise UsageError(f"invalid --version {version!r}: give a version name without '/' (e.g. 1.2.0)")
    if pep440:
        from packaging.version import InvalidVersion, Version

        try:
            Version(version)
        except InvalidVersion:
            raise UsageError(
                f"invalid --version {version!r} for an oci:// store: the tag must be a PEP 440 version (e.g. 1.2.0), "
                "so that 'latest' can find it"
            ) from None
    return version


# ---- label and annotation keys ----------------------------------------------------------------------------

OCI = "org.opencontainers.image"  # the OCI pre-defined annotation keys (created, title, version, ...)
OCI_CREATED = f"{OCI}.created"
OCI_TITLE = f"{OCI}.title"

MODEL = "io.modelship.model"  # the model an image carries
MODEL_URI_LABEL = f"{MODEL}.uri"  # where it was published (no secrets)
MODEL_DIGEST_LABEL = f"{MODEL}.digest"  # its manifest digest
MODEL_VERSION_LABEL = f"{MODEL}.version"
MODEL_MANIFEST_LABEL = f"{MODEL}.manifest"  # the manifest itself, when it is small enough
MODEL_DIR_LABEL = f"{MODEL}.dir"  # where the app reads its model: assemble puts model layers there
MODEL_SIGNER_LABEL = f"{MODEL}.signer"  # fingerprint of the key its model.sig was verified against (--verify-key)
MODEL_LAYERS_LABEL = f"{MODEL}.layers"  # diff_ids of the model's own layers (replaced by the next assemble)
MODEL_IMAGE_ANNOTATION = f"{MODEL}.image"  # on a pod (deploy's mount mode): the model image it mounts
MODEL_KIND_LABEL = MODEL_IMAGE_ANNOTATION  # on an image: "model" for a model image (data only)
MODEL_SIGNATURE_LABEL = f"{MODEL}.signature"  # on a model image: the digest of its model.sig layer (oci.modelsig)
MODEL_DIGEST_ANNOTATION = MODEL_DIGEST_LABEL

APP = "io.modelship.app"  # what a deployment needs to know about the app
APP_PORT_LABEL = f"{APP}.port"
APP_READY_PATH_LABEL = f"{APP}.ready-path"
APP_LIVE_PATH_LABEL = f"{APP}.live-path"
# app label -> key in the inspect result's "app" block (and in modelship.deploy.AppSettings)
APP_LABELS = {APP_PORT_LABEL: "port", APP_READY_PATH_LABEL: "ready_path", APP_LIVE_PATH_LABEL: "live_path"}
# the app's Python dependencies as installed from the wheelhouse, "name==version" joined by ",": what the ML-BOM
# lists (modelship.trust.mlbom) without reading any layer; left off above APP_DEPENDENCIES_MAX bytes
APP_DEPENDENCIES_LABEL = f"{APP}.dependencies"
APP_DEPENDENCIES_MAX = 16 * 1024


def dependencies_label(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``{APP_DEPENDENCIES_LABEL: "a==1,b==2"}`` for (name, version) pairs; {} when none or too long."""
    text = ",".join(f"{name}=={version}" for name, version in sorted(set(pairs)))
    return {APP_DEPENDENCIES_LABEL: text} if text and len(text) <= APP_DEPENDENCIES_MAX else {}


def parse_dependencies(text: str | None) -> list[tuple[str, str]]:
    """The (name, version) pairs of an APP_DEPENDENCIES_LABEL value."""
    pairs = (item.strip().partition("==") for item in (text or "").split(","))
    return [(name, version) for name, sep, version in pairs if sep and name and version]


# containers the pytest plugin starts (its reaper finds them by these)
SESSION_LABEL = "io.modelship.session"
WORKER_LABEL = "io.modelship.worker"
CREATED_AT_LABEL = "io.modelship.created-at"
PID_LABEL = "io.modelship.pid"
OWNER_LABEL = "io.modelship.owner"

# The whole manifest goes into a label only up to this size. Labels travel in one Dockerfile LABEL line
# (the engine refuses lines over 64 KiB: about 500 files) and in every `docker inspect`, so a model of
# thousands of files keeps only uri, version and digest there; the full manifest is always the file
# MODELSHIP_MODEL_DIR/modelship.json in the image, and the digest label ties the two together.
MANIFEST_LABEL_MAX = 8 * 1024


def model_labels(manifest: Manifest) -> dict[str, str]:
    """uri (no secrets), digest, version, and the manifest itself when it is under MANIFEST_LABEL_MAX bytes."""
    labels = {MODEL_URI_LABEL: strip_secrets(manifest.uri), MODEL_DIGEST_LABEL: manifest.digest}
    text = manifest.without_timestamp().to_json(compact=True)
    if len(text.encode()) < MANIFEST_LABEL_MAX:
        labels[MODEL_MANIFEST_LABEL] = text
    if manifest.version is not None:
        labels[MODEL_VERSION_LABEL] = str(manifest.version)
    return labels


# ---- the model inside an image ----------------------------------------------------------------------------

MODEL_DIR = "/opt/modelship/model"  # the default in-image model folder
MODEL_DIR_ENV = "MODELSHIP_MODEL_DIR"  # the app's environment variable naming it

# ---- created time -----------------------------------------------------------------------------------------

EPOCH = "1970-01-01T00:00:00Z"
_TIMESTAMP_MAX = 8**11 - 1  # the largest mtime a ustar header holds (year 2242)


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds.org) as seconds, None when unset; a bad value is a usage error."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        epoch = int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a Unix timestamp") from None
    if not 0 <= epoch <= _TIMESTAMP_MAX:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is out of range")
    return epoch


def rfc3339(seconds: int) -> str:
    """``2026-01-02T03:04:05Z`` for a Unix time."""
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat().replace("+00:00", "Z")


def created(fallback: str | None = None) -> str:
    """An image's ``created``: ``SOURCE_DATE_EPOCH`` when set, else ``fallback``, else now (RFC 3339 UTC)."""
    epoch = source_date_epoch()
    if epoch is not None:
        return rfc3339(epoch)
    if fallback:
        return fallback
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
