"""The `modelship` command's output: a verb's result as human lines, ``--json``, ``--print KEY`` or
``--pipeline-variable NAME=KEY``; error messages folded to one line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .errors import UsageError
from .uri import redact


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def one_line(message: str, limit: int = 1000) -> str:
    """The promise is one line: fold any newline an SDK message carried, and cut a huge echo of user input."""
    message = redact(" | ".join(part.strip() for part in message.splitlines() if part.strip()))
    if len(message) > limit:
        message = f"{message[: limit - 300]} …({len(message)} characters)… {message[-250:]}"
    return message


def _lookup(data: dict[str, Any], key: str) -> Any:
    """``key`` of a ``--json`` result, dotted for a nested block (``model.version``)."""
    value: Any = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def emit(a: argparse.Namespace, data: dict[str, Any], human: Callable[[], None]) -> None:
    """A verb's result: ``--json`` (the glossary's keys), else the human lines; then any pipeline variables.

    ``--pipeline-variable NAME=KEY`` prints Azure Pipelines' logging command for KEY's value, as an output
    variable of the step (``$(STEP.NAME)``, ``dependencies.JOB.outputs['STEP.NAME']``) and as a variable of the
    later steps of the job (``$(NAME)``): what the templates need, so that no template parses JSON itself.
    """
    if a.json:
        print_json(data)
    elif getattr(a, "print", None):
        print(_single(data, a.print, "--print"))  # for a shell: REF=$(modelship push IMAGE --print ref)
        return
    else:
        human()
    wanted = getattr(a, "pipeline_variable", None) or []
    _set_variables([(name, _single(data, key, f"--pipeline-variable {name}={key}")) for name, key in wanted])


def _set_variables(values: list[tuple[str, str]]) -> None:
    for name, text in values:
        print(f"##vso[task.setvariable variable={name};isOutput=true]{text}")
        print(f"##vso[task.setvariable variable={name}]{text}")


def emit_missing(a: argparse.Namespace) -> None:
    """What ``--missing-ok`` prints for a result that does not exist: ``null``, an empty value, empty variables."""
    if a.json:
        print_json(None)
    elif getattr(a, "print", None):
        print()
    _set_variables([(name, "") for name, _ in getattr(a, "pipeline_variable", None) or []])


def _single(data: dict[str, Any], key: str, option: str) -> str:
    """The value of one ``--json`` key as text (booleans as ``true``/``false``), or a usage error naming the keys."""
    value = _lookup(data, key)
    if value is None or isinstance(value, (dict, list)):
        keys = ", ".join(sorted(k for k, v in data.items() if v is not None and not isinstance(v, (dict, list))))
        raise UsageError(f"{option}: this result has no single value {key!r}; its keys: {keys}")
    return str(value).lower() if isinstance(value, bool) else str(value)
