"""The base image, read from its registry: the platform's manifest and config, and what its files say.

No engine runs the base image: what a build needs to know about it is read from its layers, once per base
digest (then remembered in the modelship cache): the interpreter (``usr/local/bin/python3.N``, else
``usr/bin/python3.N``), the C library and its version (glibc's ``libc.so.6`` names its release; musl has
``ld-musl-ARCH.so.1``) -- together the :class:`~modelship.image.wheels.Target` that wheels are resolved for --,
and ``etc/passwd`` and ``etc/group``, which the build extends with the app user. Layers are read in order with
their whiteouts, so a file a later layer deletes is gone.
"""

from __future__ import annotations

import contextlib
import json
import re
import tarfile
from dataclasses import asdict, dataclass
from typing import Any

from ..cache import default_root
from ..errors import ModelshipError, NotFoundError, UsageError
from ..image.wheels import Target
from ..oci.layers import remember
from ..oci.reference import Reference
from ..oci.registry import INDEX_TYPES, MANIFEST_TYPES, RegistryClient
from ..oci.remote import platform_of

FACTS = "modelship-base-facts-v1"  # part of the cache file's name: change it when BaseFacts changes
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l", "386": "i686", "ppc64le": "ppc64le",
             "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip
_PYTHON = re.compile(r"^(usr/local/bin|usr/bin)/python(3\.\d+)$")
_GLIBC_FILE = re.compile(r"(?:^|/)libc-(\d+\.\d+)\.so$")
_GLIBC_TEXT = re.compile(rb"GNU C Library[^\n\0]*? version (\d+\.\d+)")
_MUSL = re.compile(r"(?:^|/)ld-musl-[^/]+\.so\.1$")
_MUSL_TEXT = re.compile(rb"\0(1\.\d+)\.\d+\0")
_READ_MAX = 16 * 1024 * 1024  # the largest file whose content is read (libc.so.6 is about 2 MB)


@dataclass(frozen=True)
class BaseFacts:
    """What the base image's files say (see the module doc)."""

    python: str  # "/usr/local/bin/python3.11"
    version: str  # "3.11"
    libc: str  # "glibc" | "musl"
    libc_version: str
    passwd: str
    group: str

    def target(self, machine: str) -> Target:
        return Target(self.python, self.version, "cpython", self.libc, self.libc_version, machine)


@dataclass(frozen=True)
class Base:
    """One platform's image of the base: where it is, its manifest and config, and its facts."""

    ref: Reference  # as given
    digest: str  # of what the reference named (an index digest for a multi-platform base)
    manifest: dict[str, Any]
    config: dict[str, Any]
    platform: str  # "linux/amd64"
    facts: BaseFacts

    @property
    def target(self) -> Target:
        arch = str(self.config.get("architecture") or "amd64")
        return self.facts.target(_MACHINES.get(arch, arch))


def not_in_registry(ref: str, why: str) -> NotFoundError:
    return NotFoundError(
        f"base image {ref} cannot be read from its registry ({why}): the registry builder reads the base from a "
        "registry, not from a Docker engine; push it to one (docker push, or modelship copy) and pass "
        "--base-image REGISTRY/REPO:TAG"
    )


def platform_manifests(client: RegistryClient, ref: Reference, platforms: list[str]) -> tuple[str, list]:
    """(the digest ``ref`` names, [(platform, manifest digest)]) for the platforms asked for."""
    try:
        top = client.get_manifest(ref.repository, ref.reference)
    except ModelshipError as e:
        raise not_in_registry(str(ref), str(e).rstrip(".")) from None
    if top.media_type not in MANIFEST_TYPES + INDEX_TYPES:
        raise UsageError(f"base image {ref} is not an image ({top.media_type or 'no media type'})")
    if not top.is_index:
        return top.digest, [("", top.digest)]
    entries = [e for e in top.json().get("manifests") or [] if platform_of(e) not in ("", "unknown/unknown")]
    out = []
    for want in platforms:
        chosen = next((e for e in entries if platform_of(e) == want or platform_of(e).startswith(want + "/")), None)
        if chosen is None:
            have = ", ".join(sorted({platform_of(e) for e in entries})) or "none"
            raise NotFoundError(f"base image {ref} has no {want} image (it has {have}); pick one with --platform")
        out.append((platform_of(chosen), str(chosen["digest"])))
    return top.digest, out


def read_base(client: RegistryClient, ref: Reference, digest: str, top: str, asked: str) -> Base:
    """The base image of one platform: manifest ``digest`` of ``ref``'s repository."""
    manifest = client.get_manifest(ref.repository, digest).json()
    config_digest = str((manifest.get("config") or {}).get("digest") or "")
    if not config_digest:
        raise UsageError(f"base image {ref}: its manifest has no config (schema 1 is not supported)")
    config = client.blob_json(ref.repository, config_digest)
    parts = (config.get("os"), config.get("architecture"), config.get("variant"))
    platform = asked or "/".join(str(x) for x in parts if x)
    cache = default_root() / "appimage" / "bases" / f"{config_digest.replace(':', '-')}.{FACTS}.json"
    facts = None
    with contextlib.suppress(OSError, ValueError, TypeError):  # not read yet, or written by another version
        facts = BaseFacts(**json.loads(cache.read_text()))
    if facts is None:
        facts = _scan(client, ref, manifest)
        remember(cache, asdict(facts))
    return Base(ref, top, manifest, config, platform, facts)


def _scan(client: RegistryClient, ref: Reference, manifest: dict[str, Any]) -> BaseFacts:
    """Read every layer once, in order, keeping what the facts need (whiteouts applied)."""
    files: dict[str, bytes | None] = {}  # path -> content when wanted, else None (present)
    for layer in manifest.get("layers") or []:
        digest = str(layer.get("digest") or "")
        media = str(layer.get("mediaType") or "")
        if "zstd" in media:
            raise UsageError(f"base image {ref}: layer {digest[:19]}… is zstd-compressed; use a gzip or plain base")
        resp = client.open_blob(ref.repository, digest)
        try:
            with tarfile.open(fileobj=resp.raw, mode="r|*") as tar:
                for member in tar:
                    _apply(files, tar, member)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ModelshipError(f"base image {ref}: layer {digest[:19]}… is not a readable tar ({e})") from None
        finally:
            resp.close()
    return _facts(ref, files)


def _wanted(name: str) -> bool:
    return name in ("etc/passwd", "etc/group") or name.endswith("libc.so.6") or bool(_MUSL.search(name))


def _apply(files: dict[str, bytes | None], tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    name = member.name
    while name.startswith(("./", "/")):
        name = name[1:] if name.startswith("/") else name[2:]
    base, _, leaf = name.rpartition("/")
    if leaf == ".wh..wh..opq":  # opaque directory: what lower layers had under it is gone
        prefix = base + "/"
        for k in [k for k in files if k.startswith(prefix)]:
            del files[k]
        return
    if leaf.startswith(".wh."):
        gone = (base + "/" if base else "") + leaf[4:]
        for k in [k for k in files if k == gone or k.startswith(gone + "/")]:
            del files[k]
        return
    if not (member.isfile() or member.issym() or member.islnk()):
        return
    content: bytes | None = None
    if member.isfile() and _wanted(name) and member.size <= _READ_MAX:
        f = tar.extractfile(member)
        content = f.read() if f is not None else None
    elif member.issym() or member.islnk():
        content = b"->" + member.linkname.encode()
    files[name] = content


def _facts(ref: Reference, files: dict[str, bytes | None]) -> BaseFacts:
    pythons = sorted((m.group(1) != "usr/local/bin", m.group(0)) for k in files if (m := _PYTHON.match(k)))
    if not pythons:
        raise UsageError(f"base image {ref} has no python3.N in /usr/local/bin or /usr/bin; use a Python base image")
    python = "/" + pythons[0][1]
    version = _PYTHON.match(pythons[0][1]).group(2)  # type: ignore[union-attr]
    libc, libc_version = "", ""
    for name, content in files.items():
        if _MUSL.search(name):
            m = _MUSL_TEXT.search(content or b"")
            libc, libc_version = "musl", m.group(1).decode() if m else "1.1"
            break
        m = _GLIBC_FILE.search(name)
        if m:
            libc, libc_version = "glibc", m.group(1)
            break
        if name.endswith("libc.so.6") and content and not content.startswith(b"->"):
            t = _GLIBC_TEXT.search(content)
            if t:
                libc, libc_version = "glibc", t.group(1).decode()
                break
    if not libc:
        raise UsageError(f"base image {ref}: no glibc or musl found in its layers; use a Debian, Ubuntu or Alpine one")

    def text(name: str) -> str:
        content = files.get(name)
        return content.decode("utf-8", "replace") if content and not content.startswith(b"->") else ""

    return BaseFacts(python, version, libc, libc_version, text("etc/passwd"), text("etc/group"))


__all__ = ["Base", "BaseFacts", "not_in_registry", "platform_manifests", "read_base"]
