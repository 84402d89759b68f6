"""A small offline checker for Azure Pipelines templates (used by test_pipelines_*.py).

What Azure would only tell us at queue time, checked here:
- every ``template:`` reference resolves to a file;
- it is passed only declared parameters, every required one, with values of the declared type;
- every ``${{ parameters.x }}`` in a file names a parameter that file declares;
- every ``modelship ...`` command line in a script step, with parameters filled in as the callers pass
  them, parses with modelship's real CLI parser (a bash array expansion, ``"${args[@]}"``, is left out: its
  words exist at run time only, and the test of that step runs its script).

Expressions are not evaluated, except ``join('sep', parameters.list)`` and ``${{ if eq|ne(parameters.x,
'literal') }}`` with x known (the branch ruled out, or its ``${{ else }}``, is skipped); other ``${{ if }}``
/ ``${{ else }}`` / ``${{ each }}`` blocks are all walked (every branch is checked); other ``${{ ... }}``,
``$[ ... ]`` and ``$(var)`` become placeholders.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support import ROOT

REPOS = {"self": ROOT, "modelship": ROOT}  # the README's consumer refers to this repository as @modelship

TEMPLATE_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)
PARAM_REF = re.compile(r"\bparameters\.([A-Za-z_][A-Za-z0-9_]*)")
WHOLE_PARAM = re.compile(r"^\$\{\{\s*parameters\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
MACRO = re.compile(r"\$\(([A-Za-z0-9_.]+)\)")
RUNTIME = re.compile(r"\$\[.*?\]", re.S)
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
BOOLEANS = {"true", "false"}
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", "(", ")", ";;"}
REDIRECTIONS = {">", ">>", "<", ">&", "<&", "&>", ">|", "<<<"}
ARRAY_EXPANSION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\[@\]")  # ${args[@]}, ${args[@]+"${args[@]}"}
SHELL_KEYWORDS = {"then", "do", "else", "!", "exec", "time"}
LIST_TYPES = {"stepList", "jobList", "stageList", "deploymentList", "containerList"}
MAPPING_TYPES = {"step", "job", "stage", "deployment", "container"}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    has_default: bool
    default: Any = None
    values: tuple[str, ...] = ()


@dataclass
class Command:
    """One ``modelship ...`` invocation found in a script step."""

    where: str
    line: str
    args: list[str]


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    templates_seen: set[Path] = field(default_factory=set)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return data


def declared(path: Path) -> dict[str, Param]:
    """The typed parameters a template (or a pipeline's runtime parameters) declares."""
    raw = load(path).get("parameters") or []
    if isinstance(raw, dict):  # the old untyped form: name -> default
        return {k: Param(k, "object", True, v) for k, v in raw.items()}
    out = {}
    for p in raw:
        out[p["name"]] = Param(
            p["name"], p.get("type", "string"), "default" in p, p.get("default"), tuple(p.get("values", ()))
        )
    return out


def resolve_ref(ref: str, from_file: Path, repos: dict[str, Path]) -> Path:
    """Where Azure looks for a template: relative to the including file, '/' from the repo root, @alias."""
    path, _, alias = ref.partition("@")
    if alias and alias != "self":
        if alias not in repos:
            raise KeyError(f"unknown repository alias {alias!r}")
        return repos[alias] / path.lstrip("/")
    if path.startswith("/"):
        return repos["self"] / path.lstrip("/")
    return (from_file.parent / path).resolve()


# ------------------------------------------------------------------------------------- value checks


def _is_expression(v: Any) -> bool:
    return isinstance(v, str) and ("${{" in v or "$[" in v or "$(" in v)


def check_value(param: Param, value: Any, caller_params: dict[str, Param]) -> str | None:
    """Why ``value`` does not fit ``param`` (None when it does)."""
    m = WHOLE_PARAM.match(value) if isinstance(value, str) else None
    if m and m.group(1) in caller_params:
        src = caller_params[m.group(1)]
        if param.type in ("string", "object") or src.type == param.type:
            if param.values and src.values and not set(src.values) <= set(param.values):
                return f"may receive {sorted(set(src.values) - set(param.values))} (not in its values)"
            return None
        return f"is {param.type} but receives parameter {src.name!r} of type {src.type}"
    if _is_expression(value):
        # computed at queue/run time; only a string (or the expression itself) can be checked
        return None if param.type in ("string", "number", "boolean", "object") or "${{" in value else "expression"
    if param.type == "string":
        if isinstance(value, (dict, list)):
            return f"is a string but gets a {type(value).__name__}"
    elif param.type == "number":
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or NUMBER.match(str(value))):
            return f"is a number but gets {value!r}"
    elif param.type == "boolean":
        if not (isinstance(value, bool) or str(value).lower() in BOOLEANS):
            return f"is a boolean but gets {value!r}"
    elif param.type in LIST_TYPES:
        if not isinstance(value, list):
            return f"is a {param.type} but gets a {type(value).__name__}"
    elif param.type in MAPPING_TYPES and not isinstance(value, dict):
        return f"is a {param.type} but gets a {type(value).__name__}"
    if param.values and not isinstance(value, (dict, list)) and str(value) not in param.values:
        return f"gets {value!r}, not one of {list(param.values)}"
    return None


# ------------------------------------------------------------------------------------------ walking


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _template_refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping with a ``template:`` key (steps, jobs, stages, extends, variables)."""
    if isinstance(node, dict):
        if isinstance(node.get("template"), str):
            yield node
        for v in node.values():  # parameter values passed may hold inline steps with templates too
            yield from _template_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _template_refs(v)


def substitute(text: str, env: dict[str, Any]) -> str:
    """Fill ``${{ parameters.x }}`` from env; other expressions and macros become placeholder words."""

    def expr(m: re.Match[str]) -> str:
        inner = m.group(1).strip()
        pm = re.fullmatch(r"parameters\.([A-Za-z_][A-Za-z0-9_]*)", inner)
        if pm:
            value = env.get(pm.group(1), f"P_{pm.group(1)}")
            return str(value).lower() if isinstance(value, bool) else str(value)
        jm = re.fullmatch(r"join\(\s*'([^']*)'\s*,\s*parameters\.([A-Za-z_][A-Za-z0-9_]*)\s*\)", inner)
        if jm and isinstance(env.get(jm.group(2)), list):  # join(' --tag ', parameters.tags): the list's words
            return jm.group(1).join(substitute(str(v), env) for v in env[jm.group(2)])
        return "EXPR"

    text = TEMPLATE_EXPR.sub(expr, text)
    text = RUNTIME.sub("RUNTIME", text)
    return MACRO.sub(lambda m: m.group(1), text)


def _fill(value: Any, env: dict[str, Any]) -> Any:
    if isinstance(value, str):
        m = WHOLE_PARAM.match(value)
        if m and m.group(1) in env and not isinstance(env[m.group(1)], str):
            return env[m.group(1)]  # objects and lists pass through whole
        return substitute(value, env)
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    return value


IF_EXPR = re.compile(r"^\$\{\{\s*if\s+(eq|ne)\(\s*parameters\.([A-Za-z_][A-Za-z0-9_]*)\s*,\s*'([^']*)'\s*\)\s*\}\}$")
ELSE_EXPR = re.compile(r"^\$\{\{\s*else\s*\}\}$")


def _decide(key: str, env: dict[str, Any]) -> bool | None:
    """Whether ``${{ if eq|ne(parameters.x, 'literal') }}`` holds for a known x; None when it is not known."""
    m = IF_EXPR.match(key)
    if not m or m.group(2) not in env:
        return None
    value = env[m.group(2)]
    if isinstance(value, bool):
        value = str(value).lower()
    if not isinstance(value, (str, int)) or str(value).startswith("P_") or "${{" in str(value) or "$[" in str(value):
        return None  # a placeholder or an expression: walk both branches
    return (str(value) == m.group(3)) == (m.group(1) == "eq")


def prune(node: Any, env: dict[str, Any]) -> Any:
    """``node`` without the ``${{ if }}`` / ``${{ else }}`` branches that known parameter values rule out."""
    if isinstance(node, dict):
        out, last = {}, None
        for k, v in node.items():
            if isinstance(k, str) and ELSE_EXPR.match(k):
                if last is True:
                    continue
            elif isinstance(k, str):
                last = _decide(k, env)
                if last is False:
                    continue
            out[k] = prune(v, env)
        return out
    if isinstance(node, list):
        items, last = [], None
        for v in node:
            key = next(iter(v)) if isinstance(v, dict) and len(v) == 1 else None
            if isinstance(key, str) and ELSE_EXPR.match(key):
                if last is True:
                    continue
            elif isinstance(key, str) and IF_EXPR.match(key):
                last = _decide(key, env)
                if last is False:
                    continue
            items.append(prune(v, env))
        return items
    return node


def passed_items(passed: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The parameters a template reference passes, those under a ``${{ if }}``/``${{ else }}`` key included
    (a branch ``prune`` could not rule out counts as passed)."""
    for name, value in passed.items():
        if isinstance(name, str) and (IF_EXPR.match(name) or ELSE_EXPR.match(name)) and isinstance(value, dict):
            yield from passed_items(value)
        else:
            yield name, value


def _scripts(node: Any) -> Iterator[tuple[str, str]]:
    """(description, script text) of script-like steps, outside nested template references."""
    if isinstance(node, dict):
        if "template" in node and isinstance(node["template"], str):
            return
        for key in ("script", "bash"):
            if isinstance(node.get(key), str):
                yield node.get("displayName", key), node[key]
        if str(node.get("task", "")).startswith("AzureCLI@") and isinstance(node.get("inputs"), dict):
            inline = node["inputs"].get("inlineScript")
            if isinstance(inline, str):
                yield node.get("displayName", "AzureCLI"), inline
        for k, v in node.items():
            if k not in ("script", "bash", "parameters"):
                yield from _scripts(v)
    elif isinstance(node, list):
        for v in node:
            yield from _scripts(v)


def modelship_commands(script: str) -> Iterator[tuple[str, list[str] | None]]:
    """(line, argv after 'modelship') for every modelship invocation; argv None if the line is unparsable."""
    lines = script.replace("\\\n", " ").splitlines()
    heredoc_end: str | None = None
    for raw in lines:
        line = raw.strip()
        if heredoc_end is not None:
            if line == heredoc_end:
                heredoc_end = None
            continue
        m = re.search(r"<<-?\s*['\"]?([A-Za-z_]+)['\"]?", line)
        if m:
            heredoc_end = m.group(1)
            line = line[: m.start()]
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"(?<=\s)\d+(?=[<>])", "", line)  # "2>/dev/null": the fd number is not an argument
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            lex.commenters = "#"
            tokens = list(lex)
        except ValueError:
            if re.search(r"(^|[\s;|&(])modelship\s", line):
                yield line, None
            continue
        segment: list[str] = []
        skip_next = False
        for tok in [*tokens, ";"]:
            if skip_next:
                skip_next = False
                continue
            if tok in REDIRECTIONS:
                skip_next = True
                continue
            if ARRAY_EXPANSION.match(tok):  # "${args[@]}": words known at run time only (the step's test runs it)
                continue
            if tok in SHELL_OPERATORS:
                while segment and segment[0] in SHELL_KEYWORDS:
                    segment.pop(0)
                if segment and segment[0] == "modelship":
                    yield line, segment[1:]
                segment = []
                continue
            segment.append(tok)


# ------------------------------------------------------------------------------------------ checker


class Checker:
    def __init__(self, repos: dict[str, Path]):
        self.repos = repos
        self.report = Report()
        self._instantiated: set[tuple[Path, str]] = set()

    def rel(self, path: Path) -> str:
        for root in self.repos.values():
            with contextlib.suppress(ValueError):
                return path.resolve().relative_to(root.resolve()).as_posix()
        return str(path)

    def check_file(self, path: Path) -> None:
        """References and parameter use of one file (not following references)."""
        doc = load(path)
        own = declared(path)
        body = {k: v for k, v in doc.items() if k != "parameters"}
        for s in _strings(body):
            for expr in TEMPLATE_EXPR.findall(s):
                for name in PARAM_REF.findall(expr):
                    if name not in own:
                        self.report.problems.append(f"{self.rel(path)}: ${{{{ parameters.{name} }}}} is not declared")
        for ref in _template_refs(body):
            self.check_reference(path, ref, own)

    def check_reference(self, path: Path, ref: dict[str, Any], own: dict[str, Param]) -> None:
        where = f"{self.rel(path)}: template {ref['template']}"
        try:
            target = resolve_ref(ref["template"], path, self.repos)
        except KeyError as e:
            self.report.problems.append(f"{where}: {e.args[0]}")
            return
        if not target.is_file():
            self.report.problems.append(f"{where}: no such file {target}")
            return
        self.report.templates_seen.add(target.resolve())
        params = declared(target)
        passed = ref.get("parameters") or {}
        if not isinstance(passed, dict):
            self.report.problems.append(f"{where}: parameters must be a mapping")
            return
        passed = dict(passed_items(passed))
        for name, value in passed.items():
            if name not in params:
                self.report.problems.append(f"{where}: passes undeclared parameter {name!r}")
                continue
            why = check_value(params[name], value, own)
            if why:
                self.report.problems.append(f"{where}: parameter {name!r} {why}")
        for name, p in params.items():
            if not p.has_default and name not in passed:
                self.report.problems.append(f"{where}: required parameter {name!r} not passed")

    def instantiate(self, path: Path, env: dict[str, Any], trail: str = "") -> None:
        """Walk ``path`` with its parameters set to ``env`` (defaults for the rest); collect commands."""
        params = declared(path)
        full = {n: env.get(n, p.default if p.has_default else f"P_{n}") for n, p in params.items()}
        trail = f"{trail} > {self.rel(path)}" if trail else self.rel(path)
        # per call path: each caller's commands are reported under its own trail
        key = (trail, repr(sorted(full.items(), key=lambda kv: kv[0])))
        if key in self._instantiated:
            return
        self._instantiated.add(key)
        body = prune({k: v for k, v in load(path).items() if k != "parameters"}, full)
        for name, script in _scripts(body):
            for line, args in modelship_commands(substitute(script, full)):
                self.report.commands.append(Command(f"{trail} ({substitute(str(name), full)})", line, args or []))
                if args is None:
                    self.report.problems.append(f"{trail}: cannot split {line!r} into words")
        for ref in _template_refs(body):
            try:
                target = resolve_ref(ref["template"], path, self.repos)
            except KeyError:
                continue
            if target.is_file():
                passed = ref.get("parameters") or {}
                self.instantiate(target, {k: _fill(v, full) for k, v in passed_items(passed)}, trail)

    def parse_commands(self, build_parser: Any) -> None:
        for cmd in self.report.commands:
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    build_parser().parse_args(cmd.args)
            except SystemExit as e:
                if e.code != 0:
                    last = err.getvalue().strip().splitlines()[-1:] or ["(no message)"]
                    self.report.problems.append(f"{cmd.where}: {cmd.line!r} does not parse: {last[0]}")


def check(files: list[Path], repos: dict[str, Path], build_parser: Any) -> Report:
    """Run every check over ``files`` (pipelines and templates)."""
    checker = Checker(repos)
    for f in files:
        checker.check_file(f)
        checker.instantiate(f, {})
    checker.parse_commands(build_parser)
    return checker.report
