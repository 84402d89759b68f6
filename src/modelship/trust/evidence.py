"""What ``--sign-key`` writes beside an image's signature: its SLSA provenance and its ML-BOM, attested.

``assemble`` and model-image ``publish`` call :func:`attest_build` for the new digest after signing it and
before its tag moves. An image that was there already keeps the evidence this key wrote for it: nothing is
written when both statements by the key are found (a provenance's times differ from run to run).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..conventions import APP_DEPENDENCIES_LABEL
from ..errors import SignatureError
from . import slsa
from .mlbom import ml_bom

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ..manifest import Manifest
    from ..oci.reference import Reference
    from ..oci.registry import RegistryClient

TYPES = ("slsa", "cyclonedx")  # names of modelship.trust.attestations.PREDICATE_TYPES


@dataclass(frozen=True)
class Evidence:
    """One attestation of the image: its predicate type, where it is kept, by whom, and whether it was there."""

    predicate_type: str
    attestation: str  # REGISTRY/REPO:sha256-<hex>.att (or a referrer)
    signer: str
    unchanged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Build:
    """What the provenance says about the run: the verb, its parameters and when it started."""

    verb: str  # assemble, publish
    external: Mapping[str, Any]
    started: str  # RFC 3339 UTC
    app_ref: str | None = None  # the pinned app image (assemble)
    internal: Mapping[str, Any] | None = None


def now() -> str:
    """The time now, RFC 3339 UTC to the second (startedOn, finishedOn)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def app_dependencies(labels: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The dependencies labels of every platform's app config as one (an ml_bom ``app_labels``)."""
    values = [str(x[APP_DEPENDENCIES_LABEL]) for x in labels if x.get(APP_DEPENDENCIES_LABEL)]
    return {APP_DEPENDENCIES_LABEL: ",".join(values)} if values else {}


def attest_build(
    client: RegistryClient,
    r: Reference,
    key: ec.EllipticCurvePrivateKey,
    build: Build,
    manifest: Manifest,
    *,
    signer: str | None = None,
    app_labels: Mapping[str, str] | None = None,
    held: bool = False,
) -> tuple[Evidence, ...]:
    """Attest the provenance and the ML-BOM of the image ``r`` (pinned) with ``key``. ``signer``: the model's
    verified signer; ``held``: the image was there before this run (its evidence by ``key`` is kept)."""
    from .. import __version__
    from .attestations import attest_image, verify_attestations

    if held:
        try:
            found = verify_attestations(client, r, [key.public_key()], TYPES)
        except SignatureError:
            pass  # some missing: write both
        else:
            first = {a.predicate_type: a for a in reversed(found)}
            return tuple(Evidence(a.predicate_type, a.attestation, a.signer, True) for a in first.values())
    pinned = f"{r.name}@{r.digest}"
    model = slsa.ModelInput(manifest.uri, manifest.version, manifest.digest, signer)
    provenance = slsa.provenance(
        build.verb, build.external, model=model, started=build.started, finished=now(), app_ref=build.app_ref,
        source=slsa.source_from_env(), invocation=slsa.invocation_id(), internal=build.internal,
        builder_version=__version__,
    )  # fmt: skip
    bom = ml_bom(manifest, app_labels, image_ref=pinned, signer=signer, tool_version=__version__)
    out = []
    for kind, predicate in zip(TYPES, (provenance, bom), strict=True):
        done = attest_image(client, r, kind, predicate, key)
        out.append(Evidence(done.predicate_type, done.attestation, done.signer, done.unchanged))
    return tuple(out)


__all__ = ["Build", "Evidence", "app_dependencies", "attest_build", "now"]
