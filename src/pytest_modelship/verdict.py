"""The smoke test's verdict as evidence (``--modelship-attest-key KEY.pem``): after the run, an in-toto
test-result statement about the digest it tested, signed with the key and stored next to the image in cosign's
format (``modelship.trust.attestations``), so ``modelship verify --attestation test-result`` and promote's
``--require-attestation test-result`` can demand it.

The predicate follows in-toto's test-result v0.1 (``spec/predicates/test-result.md``): ``result`` PASSED or
FAILED, ``passedTests``/``failedTests`` (pytest node ids, every test of the session), ``warnedTests`` when a
passing test warned, and ``configuration``: the cases file (its sha256) and the plugin (its version).

- **Only a digest.** The image is pinned when the run starts: a digest as given, a tag resolved at its registry
  (the engine's credentials, as pulls use); the local image must be that digest (its RepoDigests), else the run
  stops in one line before a container starts.
- **Only what ran.** Every container the run's tests used reports its image id (a report property, so xdist
  workers tell the controller); one of another image (a hook or a fixture override started it) means nothing
  is attested, in one line, and the run exits non-zero.
- **The pair, in the split shape.** With ``--modelship-model-image`` the statement's subjects are both digests,
  the app image's and the model image's (pinned the same way: its local image must be that digest), and it is
  stored at both images' ``.att`` tags: promoting the model image can demand the verdict of the run that
  mounted it. Every container the tests used must have mounted that model image's volume, else nothing is
  attested.
- A failed test, or a session that errored, attests FAILED; an interrupted run (Ctrl-C, SIGTERM) attests nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import SetupError

if TYPE_CHECKING:
    import docker

    from modelship.oci.reference import Reference

    from .images import ImageInfo
    from .modelimage import ModelVolume
    from .session import ModelshipRun

IMAGE_PROPERTY = "modelship_tested_image"  # the image id of a container the tests used (once per process)
MODEL_PROPERTY = "modelship_tested_model"  # the model image id its mounted model volume came from, or "none"
PLUGIN_NAME = "pytest-modelship"


def _same_repo(a: Reference, b: Reference) -> bool:
    return (a.registry, a.repository) == (b.registry, b.repository)


def pin(client: docker.DockerClient, ref: str, image_id: str, what: str = "") -> Reference:
    """``ref`` as REGISTRY/REPO@DIGEST (a tag resolved at its registry), checked to be the local ``image_id``."""
    from modelship.errors import ModelshipError
    from modelship.oci.reference import parse_reference
    from modelship.trust._store import open_client

    try:
        r = parse_reference(ref)
        digest = r.digest
        if digest is None:
            with open_client(r, None, None, timeout=30) as registry:
                digest = registry.head_manifest(r.repository, r.reference)
    except ModelshipError as e:
        raise SetupError(f"--modelship-attest-key: could not resolve {what}{ref} to its digest ({e})") from None
    if digest is None:
        raise SetupError(
            f"--modelship-attest-key: {what}{ref} is not in {r.registry}; push it first: attestations name a digest"
        )
    pinned = r.with_digest(digest)
    held = client.api.inspect_image(image_id).get("RepoDigests") or []
    for repo_digest in held:
        try:
            got = parse_reference(repo_digest)
        except ModelshipError:
            continue
        if got.digest == digest and _same_repo(got, pinned):
            return pinned
    raise SetupError(
        f"--modelship-attest-key: the local {what}{ref} (image {image_id[7:19]}) is not {pinned.name}@{digest}: "
        "pull or push it first, or test the digest"
    )


def run_url(env: Mapping[str, str]) -> str | None:
    """The CI run's page (the predicate's ``url``): Azure Pipelines or GitHub Actions; None elsewhere."""
    from urllib.parse import quote

    collection, project, build = (env.get(k) for k in ("SYSTEM_COLLECTIONURI", "SYSTEM_TEAMPROJECT", "BUILD_BUILDID"))
    if collection and project and build:
        return f"{collection.rstrip('/')}/{quote(project)}/_build/results?buildId={quote(build)}"
    server, repo, run = (env.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repo and run:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{quote(run)}"
    return None


class Verdict:
    """A plugin object of the run: notes what ran and how, and attests it at the end of the session."""

    def __init__(self, run: ModelshipRun, key_path: str) -> None:
        self.run = run
        self.key_path = key_path
        self.subject: Reference | None = None  # set by pin() when the image is prepared
        self.model_subject: Reference | None = None  # --modelship-model-image: set by pin_model()
        self.outcomes: dict[str, str] = {}  # node id -> passed | failed | skipped
        self.warned: set[str] = set()
        self.tested: set[str] = set()  # image ids of containers the tests used (from every process)
        self.tested_models: set[str] = set()  # the model image ids their model volumes came from ("none")
        self._seen: set[str] = set()  # container ids this process reported
        self.interrupted = False
        self.line: str | None = None  # what the summary says

    def pin(self, client: docker.DockerClient, image: ImageInfo) -> None:
        if not self.run.is_worker:  # the controller (or the only process) attests: workers only report images
            self.subject = pin(client, self.run.settings.image if self.run.settings else image.ref, image.id)

    def pin_model(self, client: docker.DockerClient, model: ModelVolume) -> None:
        """The split shape: the model image the run mounts, pinned as the app image is (a second subject)."""
        if not self.run.is_worker:
            self.model_subject = pin(client, model.ref, model.image_id, "model image ")

    # --------------------------------------------------------------------------------- what ran, and how

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        baseline = self.run.baseline.lifecycle if self.run.baseline is not None else None
        for lc in self.run.pool.lifecycles():
            for c in (lc.container, lc.failed) if lc is not baseline else ():
                if c is not None and c.id not in self._seen:
                    self._seen.add(c.id)
                    attrs = c.tc.get_wrapped_container().attrs or {}
                    report.user_properties.append((IMAGE_PROPERTY, str(attrs.get("Image") or "unknown")))
                    report.user_properties.append((MODEL_PROPERTY, self._mounted_model(attrs)))
        return report

    def _mounted_model(self, attrs: Mapping[str, Any]) -> str:
        """The model image id of the run's model volume when the container mounted it, else "none"."""
        model = self.run.model
        names = {m.get("Name") for m in attrs.get("Mounts") or [] if m.get("Type") == "volume"}
        return model.image_id if model is not None and model.volume in names else "none"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == IMAGE_PROPERTY:
                self.tested.add(str(value))
            elif name == MODEL_PROPERTY:
                self.tested_models.add(str(value))
        before = self.outcomes.get(report.nodeid)
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.when == "call" and before != "failed":
            self.outcomes[report.nodeid] = "passed" if report.passed else "skipped"
        elif before is None:
            self.outcomes[report.nodeid] = "skipped" if report.skipped else "passed"

    def pytest_warning_recorded(self, nodeid: str) -> None:
        if nodeid:
            self.warned.add(nodeid)

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    # ------------------------------------------------------------------------------------------ the end

    def predicate(self, exitstatus: int) -> dict[str, Any]:
        """The test-result predicate of the run (in-toto test-result v0.1)."""
        from modelship import __version__

        passed = sorted(n for n, o in self.outcomes.items() if o == "passed" and n not in self.warned)
        warned = sorted(n for n, o in self.outcomes.items() if o == "passed" and n in self.warned)
        failed = sorted(n for n, o in self.outcomes.items() if o == "failed")
        ok = exitstatus == pytest.ExitCode.OK and not failed
        configuration: list[dict[str, Any]] = []
        settings = self.run.settings
        if settings is not None and settings.cases:
            path = Path(settings.cases)
            name = Path(os.path.relpath(path, self.run.config.rootpath)).as_posix()
            configuration.append({"name": name, "digest": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}})
        configuration.append({"name": PLUGIN_NAME, "uri": f"pkg:pypi/modelship@{__version__}"})
        predicate: dict[str, Any] = {"result": "PASSED" if ok else "FAILED", "configuration": configuration}
        url = run_url(os.environ)
        if url:
            predicate["url"] = url
        predicate["passedTests"] = passed
        if warned:
            predicate["warnedTests"] = warned
        predicate["failedTests"] = failed
        return predicate

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.run.is_worker:
            return
        if self.interrupted or self.run.signals.interrupted_by is not None:
            self.line = "interrupted: no test-result attested"
            return
        if self.subject is None or (not self.outcomes and exitstatus == pytest.ExitCode.USAGE_ERROR):
            return  # the image or the run could not be prepared: the run said why in one line, nothing was tested
        if not self.outcomes and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            self.line = "no test ran: no test-result attested"
            return
        expected = self.run.image.id
        other = sorted(self.tested - {expected})
        where = f"{self.subject.name}@{self.subject.digest}"
        if other:
            self.line = (
                f"not attested: a container of image {other[0][7:19]} ran the tests, not {where} "
                f"(image {expected[7:19]})"
            )
            self._fail(session)
            return
        if self.model_subject is not None and self.run.model is not None:
            mounted = self.run.model.image_id
            others = sorted(self.tested_models - {mounted})
            if others:
                what = "no model image" if others[0] == "none" else f"model image {others[0][7:19]}"
                self.line = (
                    f"not attested: a container with {what} mounted ran the tests, not "
                    f"{self.model_subject.name}@{self.model_subject.digest} (image {mounted[7:19]})"
                )
                self._fail(session)
                return
        try:
            self.line = self._attest(self.predicate(int(exitstatus)))
        except Exception as e:  # noqa: BLE001 - any failure to attest is one line, and the run fails
            from modelship.errors import ModelshipError

            why = str(e) if isinstance(e, ModelshipError) else f"{type(e).__name__}: {e}"
            self.line = f"could not attest {where}: {' '.join(why.split())[:300]}"
            self._fail(session)

    def _attest(self, predicate: dict[str, Any]) -> str:
        from modelship.trust._store import open_client
        from modelship.trust.attestations import TEST_RESULT, attest_image
        from modelship.trust.cosign import load_sign_key

        assert self.subject is not None
        key = load_sign_key(self.key_path)
        subjects = [self.subject] if self.model_subject is None else [self.subject, self.model_subject]
        done = []
        for subject in subjects:  # the same statement (about both digests) at each image's .att tag
            with open_client(subject, None, None, timeout=60) as client:
                done.append(attest_image(client, subject, TEST_RESULT, predicate, key, subjects=subjects))
        counts = f"{len(predicate['passedTests'])} passed, {len(predicate['failedTests'])} failed"
        refs = " and ".join(f"{d.ref} at {d.attestation}" for d in done)
        return f"test-result {predicate['result']} ({counts}) attested for {refs}"

    @staticmethod
    def _fail(session: pytest.Session) -> None:
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)  # after the run's summary
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.line is not None:
            terminalreporter.write_line(f"modelship: {self.line}")
