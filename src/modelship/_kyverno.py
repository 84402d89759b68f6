"""``deploy render --policy kyverno --key PUB.pem``: a Kyverno ClusterPolicy that admits the rendered app only
with the key's cosign signature on the app image *and* on every model image, including image volumes.

Kyverno's ``verifyImages`` finds images with its image extractors: for a Pod (and the pod template of a
Deployment, Job, …) those read ``containers``, ``initContainers`` and ``ephemeralContainers`` and nothing else,
so an image volume (``spec.volumes[].image.reference``, KEP-4639) is never verified (kyverno#17555). A validate
rule cannot close that gap: it can compare fields but cannot check a signature. What does is the rule's own
``imageExtractors``: for each kind it lists, Kyverno uses those extractors *instead of* its built-in ones
(``lookupImageExtractor`` in kyverno pkg/utils/api/image.go), so the policy lists the three container
extractors again and adds one for ``volumes/*/image`` (value ``reference``; no ``key``: an image source has no
``name``, and the JSON pointer is the key then). The extracted references go through the same verification,
digest mutation and ``required`` check as the containers'. The rule matches Pod and Deployment at once, which
turns Kyverno's autogen off (its generated controller rules would lose these extractors), and
``imageReferences`` name each image's repository (any tag or digest of it): a pod running another digest
of the same repository must be signed too, where naming only the rendered digests would let others pass
unchecked.

Signatures are checked against the key offline: modelship writes no transparency-log entry, so the attestor
ignores Rekor and the CT log (``cosign verify --insecure-ignore-tlog``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

from ._kube import mappings
from .errors import UsageError

POLICIES = ("kyverno",)
FILE = "clusterpolicy-kyverno.yaml"
# what the smoke test's verdict must say (its predicate's ``result``) for the pod to be admitted
_PASSED = {
    "all": [
        {
            "key": "{{ result }}",
            "operator": "Equals",
            "value": "PASSED",
            "message": "the smoke test's verdict for this digest is not PASSED",
        }
    ]
}
# The kinds checked, and where each keeps its pod spec (the paths of Kyverno's built-in extractors). Every Pod is
# checked, whatever created it: that is what runs. The Deployment too, so that applying the rendered manifests
# with an unsigned image fails at once, not later in the ReplicaSet's events.
_POD_SPECS = {"Pod": "/spec", "Deployment": "/spec/template/spec"}


def prepare(
    policy: str | None, key: str | Path | None, require_attestations: Sequence[str]
) -> tuple[str, list[str]] | None:
    """The public key's PEM and the predicate-type URIs to require, or None without ``policy``; one line for a
    bad option or key file, before anything else is read."""
    if policy is None:
        if key is not None or require_attestations:
            given = "--key" if key is not None else "--require-attestation"
            raise UsageError(f"{given} is for the admission policy: add --policy kyverno")
        return None
    if policy not in POLICIES:
        raise UsageError(f"--policy {policy!r}: choose one of {', '.join(POLICIES)}")
    if key is None:
        raise UsageError("--policy kyverno needs the public key whose signatures it requires: --key PUB.pem")
    return public_key_pem(key), predicate_types(require_attestations)


def public_key_pem(path: str | Path) -> str:
    """The PEM EC P-256 public key at ``path``, written anew from the key (never the file's own text); a file
    holding a private key is refused in one line, so no private key can reach the rendered policy."""
    from .trust.oms import load_public_keys

    if _holds_private_key(path):
        raise UsageError(f"{path}: a private key; --key takes its public half (openssl ec -in KEY.pem -pubout)")
    (key,) = load_public_keys([path])
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def _holds_private_key(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1024 * 1024)
    except OSError:
        return False  # load_public_keys says why, in one line
    return b"PRIVATE KEY-----" in head


def predicate_types(names: Iterable[str]) -> list[str]:
    """The predicate-type URIs of ``names`` (slsa, cyclonedx, test-result, or a URI), in order, once each."""
    from .trust.attestations import predicate_uri

    out: list[str] = []
    for name in names:
        try:
            uri = predicate_uri(name)
        except UsageError as e:
            raise UsageError(f"--require-attestation: {e}") from None
        if uri not in out:
            out.append(uri)
    return out


def image_volume_refs(docs: Iterable[dict[str, Any]]) -> list[str]:
    """The ``image.reference`` of every image volume in ``docs`` (templates may add their own), in order."""
    refs: list[str] = []
    for node in mappings(list(docs)):
        volumes = node.get("volumes")
        for volume in volumes if isinstance(volumes, list) else []:
            source = volume.get("image") if isinstance(volume, dict) else None
            ref = source.get("reference") if isinstance(source, dict) else None
            if isinstance(ref, str) and ref and ref not in refs:
                refs.append(ref)
    return refs


def repository(ref: str) -> str:
    """The repository of ``ref`` as Kyverno names images: the tag and digest dropped, Docker Hub's implied
    ``docker.io`` (and ``library/``) added, as its ``GetImageInfo`` does before matching."""
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]  # a tag
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if rest else "library/" + name)
    return name


def _patterns(refs: Iterable[str]) -> list[str]:
    out: list[str] = []
    for ref in refs:
        repo = repository(ref)
        for pattern in (f"{repo}@*", f"{repo}:*"):  # by digest (how Kyverno writes a pinned one), by tag
            if pattern not in out:
                out.append(pattern)
    return out


def _extractors(pod_spec: str) -> list[dict[str, str]]:
    built_in = [
        {"name": field, "path": f"{pod_spec}/{field}/*", "value": "image", "key": "name"}
        for field in ("initContainers", "containers", "ephemeralContainers")
    ]
    return [*built_in, {"name": "imageVolumes", "path": f"{pod_spec}/volumes/*/image", "value": "reference"}]


def cluster_policy(
    name: str,
    app_images: Sequence[str],
    model_images: Sequence[str],
    key_pem: str,
    attestation_types: Sequence[str] = (),
) -> dict[str, Any]:
    """The ClusterPolicy (kyverno.io/v1) requiring ``key_pem``'s signature on ``app_images`` (with the
    attestations of ``attestation_types``, URIs, signed by the same key) and on ``model_images``."""
    keys = {"publicKeys": key_pem, "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}
    attestors = [{"count": 1, "entries": [{"keys": keys}]}]
    app_refs = _patterns(app_images)
    model_refs = [p for p in _patterns(model_images) if p not in app_refs]
    app: dict[str, Any] = _verify(app_refs, attestors)
    if attestation_types:
        from .trust.attestations import TEST_RESULT

        app["attestations"] = [
            {"type": uri, "attestors": attestors, **({"conditions": [_PASSED]} if uri == TEST_RESULT else {})}
            for uri in attestation_types
        ]
    verify = [app, *([_verify(model_refs, attestors)] if model_refs else [])]
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {
            "name": f"{name}-signed-images",
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "modelship"},
            "annotations": {
                # the rule names Pod and the controllers itself (with their image-volume extractors)
                "pod-policies.kyverno.io/autogen-controllers": "none",
                "policies.kyverno.io/title": f"Signed images of {name}",
                "policies.kyverno.io/description": (
                    "Admits pods of these repositories only with a cosign signature by the given key, for "
                    "containers and image volumes alike (Kyverno's built-in extractors skip "
                    "spec.volumes[].image, kyverno#17555; this rule's imageExtractors add it)."
                ),
            },
        },
        "spec": {
            "validationFailureAction": "Enforce",  # Kyverno < 1.13; newer ones read failureAction below
            "background": False,
            "admission": True,
            "failurePolicy": "Fail",
            "webhookTimeoutSeconds": 30,  # a registry round trip per image and signature
            "rules": [
                {
                    "name": "signed-images",
                    "match": {"any": [{"resources": {"kinds": list(_POD_SPECS)}}]},
                    "imageExtractors": {kind: _extractors(path) for kind, path in _POD_SPECS.items()},
                    "verifyImages": verify,
                }
            ],
        },
    }


def _verify(refs: list[str], attestors: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "imageReferences": refs,
        "type": "Cosign",
        "failureAction": "Enforce",
        "mutateDigest": True,
        "verifyDigest": True,
        "required": True,
        "attestors": attestors,
    }


HEADER = "# Rendered by 'modelship deploy render --policy kyverno'"  # how a later render knows its file


def policy_file(policy: dict[str, Any]) -> str:
    """The policy as the file ``deploy render`` writes: why it lists image volumes, then the YAML."""
    header = (
        HEADER + ". Apply it (cluster-admin) before the app, and\n"
        "# wait for Ready: kubectl wait --for=condition=Ready clusterpolicy/" + policy["metadata"]["name"] + "\n"
        "# Kyverno verifies only containers by default (kyverno#17555): the rule's imageExtractors list them and\n"
        "# every spec.volumes[].image.reference, so the model's image volume needs the signature too.\n"
    )
    return header + yaml.dump(policy, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


class _Dumper(yaml.SafeDumper):
    """No anchors (the attestors appear several times; not every reader follows an alias), and the PEM key as
    the block of lines it is."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


__all__ = [
    "FILE",
    "POLICIES",
    "cluster_policy",
    "image_volume_refs",
    "policy_file",
    "predicate_types",
    "prepare",
    "public_key_pem",
]
