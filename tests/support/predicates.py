"""Judges of the predicates modelship attests, written apart from modelship.trust.slsa and .mlbom.

SLSA provenance v1: in-toto's own Python bindings (in-toto-attestation: the provenance v1 protobuf, parsed
strictly, so a misspelt or mistyped field fails, and its ResourceDescriptor.validate), plus a small JSON Schema of
what https://slsa.dev/provenance/v1 requires that the protobuf cannot say (required fields, RFC 3339 times).
CycloneDX: cyclonedx-python-lib's JsonStrictValidator with the 1.6 schema it ships.
"""

from __future__ import annotations

import json

import jsonschema
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor

_TIMESTAMP = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"}
_DESCRIPTOR = {
    "type": "object",
    "anyOf": [{"required": ["uri"]}, {"required": ["digest"]}, {"required": ["name"]}],
    "properties": {
        "uri": {"type": "string", "minLength": 1},
        "digest": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]+$"}},
        "name": {"type": "string"},
        "annotations": {"type": "object"},
    },
}
# https://slsa.dev/spec/v1.0/provenance: REQUIRED buildDefinition.{buildType, externalParameters},
# runDetails.builder.id; the rest optional but typed
PROVENANCE_SCHEMA = {
    "type": "object",
    "required": ["buildDefinition", "runDetails"],
    "additionalProperties": False,
    "properties": {
        "buildDefinition": {
            "type": "object",
            "required": ["buildType", "externalParameters"],
            "additionalProperties": False,
            "properties": {
                "buildType": {"type": "string", "format": "uri", "pattern": "^https://"},
                "externalParameters": {"type": "object"},
                "internalParameters": {"type": "object"},
                "resolvedDependencies": {"type": "array", "items": _DESCRIPTOR},
            },
        },
        "runDetails": {
            "type": "object",
            "required": ["builder"],
            "additionalProperties": False,
            "properties": {
                "builder": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string", "pattern": "^https://"}, "version": {"type": "object"}},
                },
                "metadata": {
                    "type": "object",
                    "properties": {
                        "invocationId": {"type": "string"},
                        "startedOn": _TIMESTAMP,
                        "finishedOn": _TIMESTAMP,
                    },
                },
                "byproducts": {"type": "array", "items": _DESCRIPTOR},
            },
        },
    },
}


def check_provenance(predicate: dict) -> None:
    """Valid SLSA v1 provenance, by the schema above and by in-toto's protobuf and validators."""
    jsonschema.validate(predicate, PROVENANCE_SCHEMA, format_checker=jsonschema.FormatChecker())
    message = json_format.ParseDict(predicate, provenance_pb2.Provenance())  # unknown field: ParseError
    for rd in message.build_definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(rd).validate()


def bom_error(bom: dict) -> object:
    """What CycloneDX 1.6's strict JSON schema finds wrong in ``bom`` (None: valid)."""
    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom))
