"""The CLI as users type it: options anywhere on the line, a missing DEST named, JSON keys that say what they are."""

from __future__ import annotations

import pytest

from modelship import cli
from support.cli import run_cli

REF = "127.0.0.1:5000/team/iris@sha256:" + "0123456789abcdef" * 4

# Every verb of the CLI (DESIGN.md's list): its positionals, in order, and its options as users pass them.
VERBS: dict[str, tuple[list[str], list[list[str]]]] = {
    "ls": (["oci://registry.example/models/iris"], [["--username", "ci"], ["--json"]]),
    "copy": (["registry.example/a/m:1.0", "other.example/b/m"], [["--username", "ci"], ["--json"]]),
    "publish": (["./model", "az://acct/models/iris"], [["--version", "1.3.0"], ["--force"], ["--json"]]),
    "resolve": (["az://acct/models/iris"], [["--version", "1.3.0"], ["--pre"], ["--json"]]),
    "sign-model": (["az://acct/models/iris"], [["--version", "1.3.0"], ["--sign-key", "team.pem"], ["--json"]]),
    "lock": (["az://acct/models/iris"], [["-o", "pinned.lock"], ["--version", "1.3.0"], ["--json"]]),
    "fetch": (
        ["az://acct/models/iris", "./model"],
        [["--version", "1.0.0"], ["--lock", "modelship.lock"], ["--workers", "2"], ["--json"]],
    ),
    "build": (
        ["./app"],
        [
            ["--model", "./model"],
            ["--tag", "reg/iris:1"],
            ["-t", "reg/iris:latest"],
            ["--port", "9000"],
            ["--ready-path", "/ready"],
            ["--live-path", "/alive"],
            ["--quiet"],
        ],
    ),
    "push": (["reg/iris:1"], [["--username", "ci"], ["--password-stdin"], ["--json"]]),
    "inspect": (["reg/iris:1"], [["--json"], ["-v"]]),
    "assemble": (
        ["reg/iris-app:1"],
        [["--model", "./model"], ["--tag", "reg/iris:2"], ["--platform", "linux/amd64"], ["--json"]],
    ),
    "promote": ([REF], [["--tag", "reg/iris:prod"], ["--tag", "reg/iris:stable"], ["--json"]]),
    "sign": ([REF], [["--key", "team.pem"], ["--username", "ci"], ["--json"]]),
    "attest": ([REF], [["--key", "team.pem"], ["--type", "slsa"], ["--predicate", "p.json"], ["--json"]]),
    "cache prune": ([], [["--keep-days", "30"], ["--max-size", "20G"], ["--dry-run"], ["--json"]]),
    "verify": (["./model"], [["--allow-extra"], ["--json"]]),
    "probes record": ([], [["--from", "access.log"], ["--out", "probes.jsonl"], ["--json"]]),
    "deploy render": (
        [],
        [
            ["--image", REF],
            ["--out", "k8s"],
            ["--name", "iris"],
            ["--replicas", "3"],
            ["--port", "9000"],
            ["--policy", "kyverno"],
            ["--key", "team.pub"],
            ["--require-attestation", "slsa"],
            ["--require-attestation", "test-result"],
        ],
    ),
}


def _parsed(argv: list[str]) -> dict:
    ns = vars(cli.build_parser().parse_args(argv))
    ns.pop("func")
    return ns


def _placements(positionals: list[str], options: list[list[str]]) -> dict[str, list[str]]:
    """The same command line with the options first, in the middle (split around a positional) and last."""
    flat = [arg for opt in options for arg in opt]
    half = len(options) // 2
    before, after = [a for o in options[:half] for a in o], [a for o in options[half:] for a in o]
    middle = [*positionals[:1], *before, *positionals[1:], *after] if len(positionals) > 1 else None
    if middle is None:  # one positional (or none): options on both sides of it
        middle = [*before, *positionals, *after]
    return {"first": [*flat, *positionals], "middle": middle, "last": [*positionals, *flat]}


def test_the_cases_cover_every_verb_of_the_parser():
    parser = cli.build_parser()
    (sub,) = (a for a in parser._actions if a.dest == "command")
    verbs = set()
    for name, sp in sub.choices.items():
        nested = [a for a in sp._actions if a.dest in ("deploy_command", "cache_command", "probes_command")]
        verbs |= {f"{name} {n}" for n in nested[0].choices} if nested else {name}
    assert verbs == set(VERBS), "add the new verb's command line to VERBS"


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_options_anywhere_on_the_line_mean_the_same(verb):
    positionals, options = VERBS[verb]
    lines = _placements(positionals, options)
    parsed = {where: _parsed([*verb.split(), *argv]) for where, argv in lines.items()}
    assert parsed["first"] == parsed["middle"] == parsed["last"], lines
    # and each option really arrived (not swallowed as a positional or dropped)
    ns = parsed["last"]
    if positionals:
        first_positional = {
            "publish": "model_dir",
            "build": "app_dir",
            "push": "image",
            "inspect": "image",
            "assemble": "app_image",
            "promote": "ref",
            "sign": "ref",
            "attest": "ref",
            "verify": "target",
            "ls": "repository",
            "copy": "src",
        }
        assert ns[first_positional.get(verb, "uri")] == positionals[0]
    if verb == "fetch":
        assert (ns["uri"], ns["dest"], ns["version"], ns["lock"], ns["workers"]) == (
            "az://acct/models/iris",
            "./model",
            "1.0.0",
            "modelship.lock",
            2,
        )
    if verb == "build":
        assert ns["tag"] == ["reg/iris:1", "reg/iris:latest"] and ns["live_path"] == "/alive" and ns["port"] == 9000
    if verb == "deploy render":
        assert (ns["policy"], ns["key"], ns["require_attestation"]) == ("kyverno", "team.pub", ["slsa", "test-result"])


def test_global_options_before_or_after_the_verb():
    assert _parsed(["-v", "--no-progress", "resolve", "u"]) == _parsed(["resolve", "u", "-v", "--no-progress"])
    assert _parsed(["-vv", "resolve", "u"])["verbose"] == 2


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["fetch", "az://acct/models/iris"], "missing DEST: modelship fetch URI DEST"),
        (["fetch", "az://acct/models/iris", "--version", "1.0.0"], "missing DEST: modelship fetch URI DEST"),
        (["fetch", "--lock", "modelship.lock"], "missing DEST: modelship fetch [URI] --lock FILE DEST"),
        (["fetch"], "missing URI and DEST"),
    ],
)
def test_a_missing_dest_is_named_and_is_a_usage_error(argv, missing):
    proc = run_cli(*argv)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()  # one line, like every failure: no usage block first
    assert line.startswith(f"modelship: error: {missing}"), proc.stderr
    assert line.endswith("(see 'modelship fetch --help')") and "no model URI given" not in line


def test_other_usage_errors_are_one_line_and_exit_2(capsys):
    assert cli.main(["build", "./app"]) == 2
    assert capsys.readouterr().err == (
        "modelship: error: the following arguments are required: --tag/-t (see 'modelship build --help')\n"
    )
    assert cli.main(["fetch", "u", "d", "--bogus"]) == 2
    assert capsys.readouterr().err == "modelship: error: unrecognized arguments: --bogus (see 'modelship --help')\n"


def test_fetch_with_a_lock_takes_its_one_positional_as_dest():
    ns = _parsed(["fetch", "--lock", "modelship.lock", "./model"])
    assert ns["uri"] is None and ns["dest"] == "./model"
    ns = _parsed(["fetch", "./model", "--lock", "modelship.lock", "--json"])
    assert ns["uri"] is None and ns["dest"] == "./model" and ns["json"] is True


def test_build_without_a_model_has_no_model_version_to_tag(tmp_path, capsys):
    from support.builds import make_app

    app = make_app(tmp_path / "app")
    argv = ["build", str(app), "--tag", "reg.io/app:1", "--entrypoint", "python app.py", "--tag-model-version"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "modelship: error: --tag-model-version needs a model (--model DIR); an app-only image has no version\n"
    )


@pytest.mark.parametrize("verbose", [[], ["-v"], ["-vv"]])
def test_an_in_process_run_leaves_the_hosts_logging_as_it_was(tmp_path, verbose):
    import logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = []  # a host without handlers of its own: the CLI adds its one handler for the run
    root.setLevel(logging.DEBUG)
    try:
        assert cli.main(["fetch", *verbose, "az:/x", str(tmp_path / "d")]) != 0
        assert (root.handlers, root.level) == ([], logging.DEBUG)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_ctrl_c_before_a_verb_starts_is_one_line_and_130(monkeypatch, capsys):
    """A SIGINT that lands while the command line is parsed (a slow start, a fault test's random moment)."""
    from modelship import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["resolve", "file:///nowhere"]) == 130
    assert capsys.readouterr().err == "modelship: interrupted; nothing half-written was left behind\n"
