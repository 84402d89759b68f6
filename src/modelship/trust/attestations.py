"""Attestations in cosign's format: DSSE-signed in-toto statements about an image digest, kept in its registry.

What ``cosign attest --key --type TYPE`` writes (sigstore/cosign ``cmd/cosign/cli/attest``, its
``specs/ATTESTATION_SPEC.md``), and what ``cosign verify-attestation --key --type`` accepts:

- the **statement**: in-toto Statement v1 ``{"_type": "https://in-toto.io/Statement/v1", "subject": [{"name":
  REGISTRY/REPO, "digest": {"sha256": HEX}}], "predicateType": URI, "predicate": {...}}`` (modelship's compact,
  sorted JSON: the same predicate gives the same bytes); one statement may name several images (``attest_image``'s
  ``subjects``: the plugin's verdict of an app image run with a model image), stored at each image's tag;
- in a **DSSE envelope** (``modelship.trust.dsse``: payload type ``application/vnd.in-toto+json``, ECDSA
  P-256/SHA-256 over the PAE), stored as a **layer** of media type ``application/vnd.dsse.envelope.v1+json``
  with the annotations ``predicateType: URI`` and ``dev.cosignproject.cosign/signature: ""``;
- in the manifest tagged ``sha256-<hex>.att``, appended to the attestations there, none dropped; the same
  statement signed again by the same key adds nothing (cosign's dupe detector cannot match a DSSE layer, so
  cosign appends one more; modelship keeps one);
- and, where the registry answers the referrers API, as a referrer of artifact type
  ``application/vnd.in-toto+json`` (cosign's ``--registry-referrers-mode=oci-1-1``). Storage is shared with
  signatures: ``modelship.trust._store``.

Reading (:func:`verify_attestations`) keeps a statement only when its envelope verifies with one of the keys
and one of its subjects carries exactly the image's sha256 (the subject's *name* is not compared, as cosign
does not: a digest copied to another registry keeps its evidence). The test-result verdict is judged there
too: asking for ``test-result`` passes only when every verified test-result statement for the digest says
``PASSED`` (a FAILED run is not outvoted by a later PASSED one: that digest failed once; test a new build).
``modelship verify --attestation test-result`` and promote's ``--require-attestation`` apply the same rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import NotFoundError, SignatureError, UsageError
from ..oci.reference import Reference
from ..oci.registry import RegistryClient, sha256_digest
from ..oci.write import dumps
from . import dsse
from ._store import append, attach, candidates, kind_tag, open_client, pinned, read_held
from .cosign import SIGNATURE_ANNOTATION, load_sign_key
from .oms import fingerprint, load_public_keys

log = logging.getLogger("modelship")

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
_STATEMENT_TYPES = (STATEMENT_TYPE, "https://in-toto.io/Statement/v0.1")  # cosign wrote v0.1 for years
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
PREDICATE_TYPES = {
    "slsa": "https://slsa.dev/provenance/v1",
    "cyclonedx": "https://cyclonedx.org/bom",
    "test-result": TEST_RESULT,
}
PREDICATE_ANNOTATION = "predicateType"
ATT_ARTIFACT_TYPE = dsse.PAYLOAD_TYPE  # cosign's referrer artifactType for attestations
_ENVELOPE_MAX = 64 * 1024 * 1024  # an ML-BOM of a large model and its wheels stays far below
_NOUN = "an attestation"


def predicate_uri(name: str) -> str:
    """The predicate-type URI of ``name`` (slsa, cyclonedx, test-result, or a URI as is); UsageError else."""
    if name in PREDICATE_TYPES:
        return PREDICATE_TYPES[name]
    if "://" in name and " " not in name:
        return name
    raise UsageError(f"{name!r} is no attestation type; use {', '.join(PREDICATE_TYPES)} or a predicate-type URI")


def type_name(uri: str) -> str:
    """The short name of a predicate-type URI when it has one (else the URI): what messages say."""
    return next((n for n, u in PREDICATE_TYPES.items() if u == uri), uri)


def attestation_tag(digest: str) -> str:
    """``sha256-<hex>.att``: the tag cosign stores the attestations of ``digest`` under."""
    return kind_tag(digest, "att")


def statement(
    repository: str,
    digest: str,
    predicate_uri: str,
    predicate: Mapping[str, Any],
    also: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The in-toto statement (JSON bytes) that ``predicate`` holds for the image ``digest`` in ``repository``
    (and for each (repository, digest) of ``also``: one statement about several images, each a subject)."""
    subjects = []
    for name, d in [(repository, digest), *also]:
        algorithm, _, hexdigest = d.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise UsageError(f"{d!r}: attestations name a sha256 image digest")
        subjects.append({"name": name, "digest": {"sha256": hexdigest}})
    value = {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": predicate_uri,
        "predicate": dict(predicate),
    }
    try:
        json.dumps(value, allow_nan=False)  # what Go's decoders read: no NaN, no Infinity, no Python objects
    except (TypeError, ValueError) as e:
        raise UsageError(f"the {type_name(predicate_uri)} predicate is not plain JSON ({str(e)[:100]})") from e
    return dumps(value)


@dataclass(frozen=True)
class Attestation:
    """A statement that verified for exactly ``image_digest``: its predicate, whose key, found where."""

    predicate_type: str
    predicate: dict[str, Any]
    signer: str  # sha256:<hex> fingerprint of the key
    image_digest: str
    attestation: str  # REGISTRY/REPO:sha256-<hex>.att, or REGISTRY/REPO@<referrer digest>

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AttestResult:
    """What ``modelship attest`` did: the image (pinned), the statement's type, where it is kept, by whom."""

    ref: str
    image_digest: str
    predicate_type: str
    attestation: str  # REGISTRY/REPO:sha256-<hex>.att
    attestation_digest: str  # the .att manifest's digest after the write
    signer: str
    unchanged: bool  # the same key had attested the same statement already: nothing written
    referrer: str | None  # digest of the referrer manifest, when the registry has the referrers API

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- writing ------------------------------------------------------------------------------------------------


def attest(
    ref: str,
    predicate_type: str,
    predicate: Mapping[str, Any],
    *,
    key: str | Path | ec.EllipticCurvePrivateKey,
    username: str | None = None,
    password: str | None = None,
    timeout: float | None = None,
    azure_credential: Any = None,
) -> AttestResult:
    """Attest ``predicate`` (of type slsa, cyclonedx, test-result or a URI) about the image ``ref``
    (REGISTRY/REPO@sha256:…), signed with ``key`` (a PEM EC P-256 private key file, or the key)."""
    r = pinned(ref, "attest")
    uri = predicate_uri(predicate_type)
    if not isinstance(predicate, Mapping):
        raise UsageError(f"attest {ref}: the predicate must be a JSON object, not {type(predicate).__name__}")
    private = key if isinstance(key, ec.EllipticCurvePrivateKey) else load_sign_key(key)
    with open_client(r, username, password, timeout=timeout, azure_credential=azure_credential) as client:
        return attest_image(client, r, uri, predicate, private)


def attest_image(
    client: RegistryClient,
    r: Reference,
    predicate_type: str,
    predicate: Mapping[str, Any],
    key: ec.EllipticCurvePrivateKey,
    *,
    subjects: Sequence[Reference] = (),
) -> AttestResult:
    """:func:`attest` over an open client: append the signed statement at the image's ``.att`` tag (nothing
    when ``key`` attested the same statement already) and attach it as a referrer where the API is served.
    ``subjects``: every image (pinned) the statement is about, ``r`` among them, in that order (default: ``r``)."""
    uri = predicate_uri(predicate_type)
    digest, repo = str(r.digest), r.repository
    named = [(s.name, str(s.digest)) for s in subjects] or [(r.name, digest)]
    if (r.name, digest) not in named:
        raise UsageError(f"attest {r.name}@{digest}: the statement's subjects must include it")
    subject = client.get_manifest(repo, digest)  # the image must exist (NotFoundError otherwise)
    payload = statement(*named[0], uri, predicate, named[1:])
    tag = attestation_tag(digest)
    where = f"{r.name}:{tag}"
    held = read_held(client, repo, tag, where, _NOUN)
    public = key.public_key()
    layer, data = _same(client, repo, held, uri, payload, public)
    unchanged = layer is not None
    if layer is None or data is None:
        data = dsse.sign(payload, key)
        annotations = {PREDICATE_ANNOTATION: uri, SIGNATURE_ANNOTATION: ""}
        layer = {"mediaType": dsse.ENVELOPE_MEDIA_TYPE, "digest": sha256_digest(data), "size": len(data),
                 "annotations": annotations}  # fmt: skip
        att_digest = append(client, repo, tag, held, layer, data, "attesting")
    else:
        assert held is not None
        att_digest = held.digest
    referrer = attach(client, repo, subject, layer, data, ATT_ARTIFACT_TYPE)
    log.info("%s@%s attested (%s): %s (%s)", r.name, digest, type_name(uri), where,
             "already there" if unchanged else "appended")  # fmt: skip
    signer = fingerprint(public)
    return AttestResult(f"{r.name}@{digest}", digest, uri, where, att_digest, signer, unchanged, referrer)


def _same(
    client: RegistryClient, repo: str, held: Any, uri: str, payload: bytes, key: ec.EllipticCurvePublicKey
) -> tuple[dict[str, Any] | None, bytes | None]:
    """The layer (and its bytes) at the tag holding ``payload`` signed by ``key``, if there is one."""
    for desc in held.json()["layers"] if held else []:
        if desc.get("mediaType") != dsse.ENVELOPE_MEDIA_TYPE:
            continue
        if (desc.get("annotations") or {}).get(PREDICATE_ANNOTATION) != uri or not 0 < desc["size"] <= _ENVELOPE_MAX:
            continue
        data = client.get_blob(repo, desc["digest"], _ENVELOPE_MAX)
        try:
            env = dsse.parse(data, "")
        except SignatureError:
            continue
        if env.payload == payload and env.payload_type == dsse.PAYLOAD_TYPE and env.signer([key]) is not None:
            return desc, data
    return None, None


def read_predicate(path: str | Path) -> dict[str, Any]:
    """The JSON object in the file at ``path`` (``attest --predicate``); UsageError naming the file else."""
    try:
        with open(path, "rb") as f:
            data = f.read(_ENVELOPE_MAX + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read the predicate ({e.strerror or e})") from e
    try:
        predicate = json.loads(data, parse_constant=_no_constant)
    except ValueError as e:
        raise UsageError(f"{path}: the predicate is not JSON ({str(e)[:100]})") from e
    if not isinstance(predicate, dict):
        raise UsageError(f"{path}: the predicate must be a JSON object, not {type(predicate).__name__}")
    return predicate


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ---- reading ------------------------------------------------------------------------------------------------


def _statement(payload: bytes) -> tuple[str, dict[str, Any], list[str]] | None:
    """(predicate type, predicate, subject sha256s) of an in-toto statement; None when it is not one."""
    try:
        st = json.loads(payload)
        if st["_type"] not in _STATEMENT_TYPES or not isinstance(st["predicateType"], str):
            return None
        predicate = st.get("predicate") or {}
        if not isinstance(predicate, dict):
            return None
        digests = [str(s["digest"]["sha256"]).lower() for s in st["subject"] if "sha256" in (s.get("digest") or {})]
        return st["predicateType"], predicate, digests
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class _Tally:
    """Why a type asked for found nothing: what was seen of it, for the one line."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}  # type -> envelopes seen (by annotation or unverified payload)
        self.other: dict[str, tuple[str, str]] = {}  # type -> (signer, the digest its subject names)
        self.malformed: dict[str, str] = {}  # type -> where

    def count(self, uri: str) -> None:
        self.seen[uri] = self.seen.get(uri, 0) + 1


def _claimed_type(desc: dict[str, Any], env: dsse.Envelope | None) -> str:
    """The type an envelope says it holds, unverified: for counting and messages only."""
    ann = (desc.get("annotations") or {}).get(PREDICATE_ANNOTATION)
    if isinstance(ann, str):
        return ann
    st = _statement(env.payload) if env else None
    return st[0] if st else "?"


def _public(keys: Sequence[ec.EllipticCurvePublicKey | str | Path]) -> list[ec.EllipticCurvePublicKey]:
    paths = [k for k in keys if not isinstance(k, ec.EllipticCurvePublicKey)]
    return [k for k in keys if isinstance(k, ec.EllipticCurvePublicKey)] + load_public_keys(paths)


def verify_attestations(
    client: RegistryClient,
    ref: Reference | str,
    keys: Sequence[ec.EllipticCurvePublicKey | str | Path],
    types: Sequence[str] = (),
) -> list[Attestation]:
    """The statements about the image ``ref`` (pinned) of ``types`` (names or URIs; none: every type) that
    verify with one of ``keys`` (public keys or PEM paths) and name exactly its digest. Every type asked for
    must have one (and a test-result must say PASSED): SignatureError in one line otherwise."""
    r = pinned(ref, "verify") if isinstance(ref, str) else ref
    uris = list(dict.fromkeys(predicate_uri(t) for t in types))
    public = _public(keys)
    if not public:
        raise UsageError("no key to verify attestations with; pass --key PUB.pem")
    digest, pinned_ref = str(r.digest), f"{r.name}@{r.digest}"
    hexdigest = digest.partition(":")[2]
    if client.head_manifest(r.repository, digest) is None:
        raise NotFoundError(f"{pinned_ref}: no such image in {r.registry}")
    out: list[Attestation] = []
    tally, done = _Tally(), set()
    for where, layers in candidates(client, r, "att", ATT_ARTIFACT_TYPE, _NOUN):
        for desc in layers:
            if not isinstance(desc, dict) or desc.get("mediaType") != dsse.ENVELOPE_MEDIA_TYPE:
                continue
            claimed = _claimed_type(desc, None)
            if uris and claimed not in uris and claimed != "?":
                continue
            size = desc.get("size")
            if desc.get("digest") in done or not isinstance(size, int) or not 0 < size <= _ENVELOPE_MAX:
                continue
            done.add(desc.get("digest"))
            data = client.get_blob(r.repository, str(desc.get("digest")), _ENVELOPE_MAX)
            try:
                env = dsse.parse(data, where)
            except SignatureError:
                tally.malformed.setdefault(claimed, where)
                continue
            claimed = _claimed_type(desc, env)
            tally.count(claimed)
            key = env.signer(public) if env.payload_type == dsse.PAYLOAD_TYPE else None
            st = _statement(env.payload) if key is not None else None
            if key is None or st is None:
                if key is not None:
                    tally.malformed.setdefault(claimed, where)
                continue
            uri, predicate, subjects = st
            if uris and uri not in uris:
                continue
            if hexdigest not in subjects:
                tally.other.setdefault(uri, (fingerprint(key), f"sha256:{subjects[0]}" if subjects else "none"))
                continue
            out.append(Attestation(uri, predicate, fingerprint(key), digest, where))
    for uri in uris:
        if not any(a.predicate_type == uri for a in out):
            raise _missing(pinned_ref, uri, tally, public)
    if TEST_RESULT in uris:
        _passed(pinned_ref, [a for a in out if a.predicate_type == TEST_RESULT])
    return out


def _missing(pinned_ref: str, uri: str, tally: _Tally, keys: Sequence[ec.EllipticCurvePublicKey]) -> SignatureError:
    name = type_name(uri)
    if uri in tally.other:
        signer, named = tally.other[uri]
        return SignatureError(
            f"{pinned_ref}: the {name} attestation by {signer} is about another image ({named[:19]}…), not this digest",
            kind=SignatureError.OTHER_IMAGE,
            fingerprints=(signer,),
        )
    if tally.seen.get(uri):
        prints = tuple(fingerprint(k) for k in keys)
        return SignatureError(
            f"{pinned_ref}: none of its {tally.seen[uri]} {name} attestation(s) is signed by the given key(s) "
            f"({', '.join(prints)})",
            kind=SignatureError.UNKNOWN_KEY,
            fingerprints=prints,
        )
    if uri in tally.malformed:
        return SignatureError(
            f"{pinned_ref}: its {name} attestation at {tally.malformed[uri]} is not a DSSE in-toto statement",
            kind=SignatureError.MALFORMED,
        )
    return SignatureError(
        f"{pinned_ref}: no {name} attestation (none at {attestation_tag(pinned_ref.rpartition('@')[2])}); "
        f"write one with modelship attest --type {name}",
        kind=SignatureError.UNSIGNED,
    )


def _passed(pinned_ref: str, results: list[Attestation]) -> None:
    """SignatureError (failed verdict) unless every test-result says ``"result": "PASSED"``."""
    for a in results:
        result = a.predicate.get("result")
        if result != "PASSED":
            failed = a.predicate.get("failedTests")
            names = ""
            if isinstance(failed, list) and failed:
                names = f" (failed: {', '.join(str(t)[:80] for t in failed[:3])}{', …' if len(failed) > 3 else ''})"
            raise SignatureError(
                f"{pinned_ref}: its test-result by {a.signer} says {str(result)[:20]}{names}, not PASSED; "
                "fix and test a new build",
                kind=SignatureError.FAILED_VERDICT,
                fingerprints=(a.signer,),
            )


__all__ = [
    "PREDICATE_TYPES",
    "AttestResult",
    "Attestation",
    "attest",
    "attest_image",
    "attestation_tag",
    "predicate_uri",
    "read_predicate",
    "statement",
    "verify_attestations",
]
