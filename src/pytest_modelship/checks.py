"""Image checks, each its own pytest item (deselect one with ``-k 'not <name>'``).

Files are read from the running container through the engine's archive API (``docker cp``), so the
image needs no shell, sha256sum or python for the checks to work.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from modelship.conventions import MODEL

from .items import ItemFailed, ModelshipItem, RunCollector

if TYPE_CHECKING:
    from .container import ModelshipContainer
    from .images import ImageInfo

MANIFEST_NAME = "modelship.json"
SIGNATURE_NAME = "model.sig"  # modelship.manifest.SIGNATURE_NAME
LABEL_PREFIX = f"{MODEL}."

# Values that are secrets whatever the variable is called. Never echo a match: name only its kind.
_SECRET_VALUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Azure storage account key", re.compile(r"AccountKey=[A-Za-z0-9+/]{20,}={0,2}", re.IGNORECASE)),
    ("Azure shared access key", re.compile(r"SharedAccessKey=[A-Za-z0-9+/]{20,}={0,2}", re.IGNORECASE)),
    ("Azure SAS signature", re.compile(r"(?:^|[?&;\s\"'])sig=[A-Za-z0-9%+/]{16,}", re.IGNORECASE)),
    ("Azure SAS in a connection string", re.compile(r"SharedAccessSignature=\S{16,}", re.IGNORECASE)),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    (
        "AWS secret access key",
        re.compile(r"aws_?secret_?access_?key[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9/+]{40}\b", re.IGNORECASE),
    ),
    ("private key", re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY( BLOCK)?-----")),
)
# NAME=value pairs whose name says "secret". Deliberately narrower than the masking list: images
# legitimately carry e.g. GPG_KEY (a public key fingerprint) in ENV.
_SECRET_NAMES = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|CONNECTION_?STRING|ACCOUNT_?KEY|ACCESS_?KEY|API_?KEY|PRIVATE_?KEY|SAS\b|_SAS_",
    re.IGNORECASE,
)
_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|]*)")
_PLACEHOLDER = re.compile(r"^(\$\{?\w+\}?|<[^>]*>|changeme|dummy|none|null|false|true|\*+|x+)$", re.IGNORECASE)


def find_secrets(text: str) -> list[str]:
    """The kinds of secret found in ``text`` (never the values themselves)."""
    kinds = [kind for kind, pattern in _SECRET_VALUES if pattern.search(text)]
    for name, value in _ASSIGNMENT.findall(text):
        value = value.strip("\"'")
        if _SECRET_NAMES.search(name) and len(value) >= 8 and not _PLACEHOLDER.match(value):
            kinds.append(f"value of {name}")
    return list(dict.fromkeys(kinds))


@dataclass(frozen=True)
class Check:
    name: str
    doc: str
    needs_container: bool
    run: Callable[[ImageInfo, ModelshipContainer | None], list[str]]


# ---------------------------------------------------------------------------------------------- checks


def _read_manifest(image: ImageInfo, container: ModelshipContainer) -> tuple[Any, list[str]]:
    from modelship.manifest import Manifest

    path = f"{image.model_dir}/{MANIFEST_NAME}"
    try:
        raw = container.read_file(path)
    except FileNotFoundError:
        return None, [f"no {path} in the image: build it with 'modelship build', or deselect this check with -k"]
    try:
        return Manifest.from_dict(json.loads(raw), path), []
    except ValueError as e:  # json.JSONDecodeError and modelship's UsageError are both ValueErrors or not:
        return None, [f"{path}: not valid JSON ({e})"]
    except Exception as e:  # noqa: BLE001 - modelship.errors.UsageError from a tampered manifest
        return None, [str(e)]


def check_labels(image: ImageInfo, container: ModelshipContainer | None) -> list[str]:
    """io.modelship.model.* labels describe the modelship.json inside the image."""
    assert container is not None
    manifest, problems = _read_manifest(image, container)
    if manifest is None:
        return problems
    expected = {"digest": manifest.digest, "version": manifest.version, "uri": manifest.uri}
    for key, want in expected.items():
        label = LABEL_PREFIX + key
        got = image.labels.get(label)
        if got is None:
            if want is not None:  # an unversioned model has no version label, by design of `modelship build`
                problems.append(f"label {label} missing (modelship.json says {want!r})")
        elif want is None or got != str(want):
            problems.append(f"label {label} is {got!r} but modelship.json says {want!r}")
    label = LABEL_PREFIX + "manifest"
    got = image.labels.get(label)
    # a model of many files has no manifest label (it would not fit): the file read above is the manifest,
    # and the digest label checked above ties it to the labels
    if got is not None:
        try:
            if json.loads(got) != json.loads(manifest.without_timestamp().to_json(compact=True)):
                problems.append(f"label {label} differs from modelship.json in the image")
        except ValueError:
            problems.append(f"label {label} is not JSON")
    return problems


def check_model_files(image: ImageInfo, container: ModelshipContainer | None) -> list[str]:
    """Every model file in the running container has the size and sha256 that modelship.json lists."""
    from modelship.manifest import tree_digest

    from .images import MODEL_DIR_ENV, MODEL_DIR_LABEL

    assert container is not None
    env_dir, label_dir = image.env_dict().get(MODEL_DIR_ENV), image.labels.get(MODEL_DIR_LABEL)
    if env_dir and label_dir and env_dir.rstrip("/") != label_dir.rstrip("/"):
        # the app reads $MODELSHIP_MODEL_DIR; model layers put elsewhere are not what it serves
        return [f"label {MODEL_DIR_LABEL} is {label_dir!r} but {MODEL_DIR_ENV} is {env_dir!r}, which the app reads"]
    manifest, problems = _read_manifest(image, container)
    if manifest is None:
        return problems
    listed = {f.path: f for f in manifest.files}
    found: dict[str, str] = {}
    for member, reader in container.iter_files(image.model_dir):
        if reader is None or member.name in (MANIFEST_NAME, SIGNATURE_NAME):  # model.sig: the model_signature check
            continue
        h = hashlib.sha256()
        for chunk in iter(lambda r=reader: r.read(1 << 20), b""):
            h.update(chunk)
        found[member.name] = h.hexdigest()
        entry = listed.get(member.name)
        if entry is None:
            problems.append(f"{member.name}: in {image.model_dir} but not in modelship.json")
        elif entry.sha256 != found[member.name]:
            problems.append(
                f"{member.name}: sha256 {found[member.name][:12]}... but modelship.json says {entry.sha256[:12]}..."
            )
        elif entry.size != member.size:
            problems.append(f"{member.name}: {member.size} bytes but modelship.json says {entry.size}")
    for path in sorted(listed.keys() - found.keys()):
        problems.append(f"{path}: listed in modelship.json but missing from {image.model_dir}")
    if not problems and tree_digest(found.items()) != manifest.digest:
        problems.append(f"tree digest of {image.model_dir} differs from modelship.json's {manifest.digest}")
    return problems


def check_user(image: ImageInfo, container: ModelshipContainer | None) -> list[str]:
    """The container does not run as root (USER set to a non-zero uid)."""
    user = image.user
    if container is not None:
        user = (container.attrs.get("Config") or {}).get("User") or user
    name = user.split(":", 1)[0].strip()
    if name in ("", "root", "0"):
        return [f"container runs as root (USER is {user or 'not set'}): add 'USER 10001:10001' to the Dockerfile"]
    if name.isdigit() or container is None:
        return []
    # a user name: resolve it with the image's own /etc/passwd (read via the engine, no tool needed)
    try:
        passwd = container.read_file("/etc/passwd").decode("utf-8", "replace")
    except FileNotFoundError:
        return [f"USER {name} cannot be resolved: the image has no /etc/passwd; use a numeric USER"]
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name:
            return [f"USER {name} has uid 0 (root)"] if fields[2] == "0" else []
    return [f"USER {name} is not in the image's /etc/passwd"]


def check_healthcheck(image: ImageInfo, container: ModelshipContainer | None) -> list[str]:
    """The image declares a HEALTHCHECK (orchestrators and 'docker ps' rely on it)."""
    if image.healthcheck is None:
        return [
            "the image has no HEALTHCHECK: add one that requests the ready path, e.g. "
            "HEALTHCHECK CMD python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready')\""
        ]
    return []


def check_secrets(image: ImageInfo, container: ModelshipContainer | None) -> list[str]:
    """No secret-looking values (Azure keys, SAS signatures, AWS keys, private keys...) in ENV, labels, history
    or the app's files (its working directory)."""
    problems = []
    for entry in image.env:
        name = entry.split("=", 1)[0]
        for kind in find_secrets(entry):
            problems.append(f"ENV {name}: {kind}")
    for key, value in image.labels.items():
        for kind in find_secrets(f"{key}={value}"):
            problems.append(f"LABEL {key}: {kind}")
    for i, created_by in enumerate(reversed(image.layer_history())):
        for kind in find_secrets(created_by):
            problems.append(f"history layer {i} ({_layer_summary(created_by)}): {kind}")
    problems += _app_file_secrets(image)
    if problems:
        problems.append("pass secrets at run time (--modelship-env / orchestrator secrets), never bake them in")
    return problems


_APP_FILE_MAX = 1 << 20  # bigger files are data (weights, archives), not where a key is pasted
_ENV_FILE = re.compile(r"(^|/)(\.env(\..*)?|.*\.env)$")


def _app_file_secrets(image: ImageInfo) -> list[str]:
    """Secret values in the files under the image's working directory (the app), read from a created, never
    started container: the check needs no running app. ``.env`` files are also read as NAME=value lines."""
    from modelship._docker import connect

    from .container import _ChunkReader
    from .reaper import container_labels

    client = connect()
    try:
        workdir = ((client.api.inspect_image(image.id).get("Config") or {}).get("WorkingDir") or "").rstrip("/")
        if not workdir:  # no working dir, or "/": the whole system, not an app's folder
            return []
        # labelled as the plugin's own containers: if this process dies before the finally below (a signal, a
        # session torn down mid-check), the next run's reaper removes it as stale (owner gone)
        labels = container_labels("image-check", "-")
        cid = client.api.create_container(
            image.id, command=["true"], entrypoint=[], network_disabled=True, labels=labels
        )["Id"]
        problems = []
        try:
            stream, _stat = client.api.get_archive(cid, workdir)
            with tarfile.open(fileobj=_ChunkReader(stream), mode="r|") as tar:
                for member in tar:
                    reader = tar.extractfile(member) if member.isfile() and member.size <= _APP_FILE_MAX else None
                    if reader is None:
                        continue
                    text = reader.read().decode("utf-8", "replace")
                    name = "/".join(member.name.split("/")[1:])  # the archive's names start with workdir's
                    kinds = find_secrets(text) if _ENV_FILE.search(name) else _secret_values(text)
                    problems += [f"file {workdir}/{name}: {kind}" for kind in kinds]
        finally:
            client.api.remove_container(cid, force=True)
        return problems
    finally:
        client.close()


def _secret_values(text: str) -> list[str]:
    """Only the value patterns: in source code, ``API_KEY=os.environ[...]`` is not a secret."""
    return [kind for kind, pattern in _SECRET_VALUES if pattern.search(text)]


def _layer_summary(created_by: str) -> str:
    text = created_by.replace("/bin/sh -c #(nop) ", "").strip()
    word = text.split()[0] if text else "?"
    return word if word.isupper() else "RUN"


CHECKS: tuple[Check, ...] = (
    Check("labels_match_model", check_labels.__doc__ or "", True, check_labels),
    Check("model_files_sha256", check_model_files.__doc__ or "", True, check_model_files),
    Check("non_root_user", check_user.__doc__ or "", True, check_user),
    Check("healthcheck", check_healthcheck.__doc__ or "", False, check_healthcheck),
    Check("no_secrets", check_secrets.__doc__ or "", False, check_secrets),
)


# --------------------------------------------------------------------------------------------- items


class CheckFailed(ItemFailed):
    pass


class CheckItem(ModelshipItem):
    given, shown = "check", "modelship image check {name}"
    check: Check

    def setup(self) -> None:
        if self.check.needs_container:
            self.run.container()

    def runtest(self) -> None:
        container = self.run.container() if self.check.needs_container else None
        problems = self.check.run(self.run.image, container)
        if problems:
            head = f"image check {self.name} failed for {self.run.image.ref}: {self.check.doc.strip()}"
            raise CheckFailed(self.run.redact("\n".join([head, *(f"  - {p}" for p in problems)])))


class ImageChecks(RunCollector, pytest.Collector):
    """The ``modelship-image`` collector: one item per check (``extra``: those an option adds, model_signature)."""

    extra: tuple[Check, ...] = ()

    def collect(self) -> list[CheckItem]:
        return [CheckItem.from_parent(self, name=c.name, check=c, run=self.run) for c in CHECKS + self.extra]
