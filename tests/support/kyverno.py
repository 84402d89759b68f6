"""Kyverno, as far as the tests need it: its ClusterPolicy schema (vendored, tests/data/kyverno/README.md) and a
reader of how it finds and names images, written from its source (pkg/utils/api/image.go, pkg/utils/image/
infos.go, pkg/engine/utils/image.go) apart from modelship's policy writer."""

from __future__ import annotations

import fnmatch
import functools
import json

import jsonschema

from support import ROOT

SCHEMA = ROOT / "tests" / "data" / "kyverno" / "clusterpolicy-v1.schema.json"


def _strict(node):
    """The schema as the API server applies it with strict field validation: a field the schema does not
    name is an error, except where it keeps unknown fields (x-kubernetes-preserve-unknown-fields) or is a map."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        keeps_unknown = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in node and not keeps_unknown:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def _validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_strict(json.loads(SCHEMA.read_text())))


def policy_errors(doc: dict) -> list[str]:
    """What the API server would refuse in the ClusterPolicy ``doc`` (CEL rules aside), one line each."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(doc)]


def built_in_extractors(pod_spec: str) -> list[dict]:
    """Kyverno's own extractors (BuildStandardExtractors): the containers of each kind, no volumes."""
    return [
        {"path": f"{pod_spec}/{field}/*", "value": "image", "key": "name"}
        for field in ("initContainers", "containers", "ephemeralContainers")
    ]


def _extract(node, fields: list[str], value: str, pointer: str, out: dict[str, str]) -> None:
    if node is None:
        return
    if fields and fields[0] == "*":
        items = enumerate(node) if isinstance(node, list) else node.items()
        for i, v in items:
            _extract(v, fields[1:], value, f"{pointer}/{i}", out)
        return
    if not fields:
        image = node.get(value)
        if isinstance(image, str) and image.strip():
            out[f"{pointer}/{value}"] = image
        return
    _extract(node.get(fields[0]), fields[1:], value, f"{pointer}/{fields[0]}", out)


def images(resource: dict, extractors: list[dict]) -> dict[str, str]:
    """JSON pointer -> image, as lookupImageExtractor + extract find them."""
    out: dict[str, str] = {}
    for e in extractors:
        fields = [f.strip() for f in e["path"].split("/") if f.strip()]
        value = e.get("value") or fields.pop()
        _extract(resource, fields, value, "", out)
    return out


def image_name(image: str) -> str:
    """ImageInfo.String(): registry/path@digest when pinned (the tag dropped), else registry/path:tag."""
    name, _, digest = image.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = name[colon + 1 :] if colon > slash else "latest"
    name = name[:colon] if colon > slash else name
    first = name.split("/")[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if "/" in name else "library/" + name)
    return f"{name}@{digest}" if digest else f"{name}:{tag}"


def verified_by(policy: dict, image: str) -> list[dict]:
    """The verifyImages entries whose imageReferences match ``image`` (Kyverno's wildcard match)."""
    (rule,) = policy["spec"]["rules"]
    name = image_name(image)
    return [v for v in rule["verifyImages"] if any(fnmatch.fnmatchcase(name, p) for p in v["imageReferences"])]
