"""The gate: a cases file's ``compare:`` section as one test item, the candidate against the baseline.

``--modelship-baseline REF`` names the image production runs. ``open_baseline`` prepares it while the
candidate boots (a tag that is not local is pulled: the baseline is what production serves, not a local
build) and starts its container in the background, with the run's settings (the port and ready path the
user did not set come from the baseline image itself). ``GateItem`` sends every probe to both containers
at once through a bounded pool, compares the answers (compare.py) and fails with the report, the baseline's
log tail attached (the run's reporter attaches the candidate's, as for the smoke cases).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from .compare import Answer, CompareSpec, Outcome, Probe, judge, outcome
from .items import ItemFailed, ModelshipItem

if TYPE_CHECKING:
    import docker

    from ._protocol import Run
    from .client import ModelshipClient
    from .container import Lifecycle, ModelshipContainer
    from .modelimage import ModelVolume
    from .pool import ContainerPool
    from .settings import Settings

    class GateRun(Run, Protocol):
        """What the gate needs of the run besides what every item does (``session.ModelshipRun`` has it)."""

        settings: Settings | None
        baseline: Baseline | None
        pool: ContainerPool
        model: ModelVolume | None
        worker: str
        run_id: str


IN_FLIGHT = 8  # requests at once, both containers together: enough to overlap, few enough for small CI agents
GATE_ITEM = "compare"
AGREEMENT_PROPERTY = "modelship_agreement"
COMPARE_PROPERTY = "modelship_compare"


@dataclass
class Baseline:
    """The baseline's lifecycle, or why there is none (its image could not be had)."""

    lifecycle: Lifecycle | None
    problem: str | None = None
    model: ModelVolume | None = None  # its own model volume (--modelship-baseline-model-image), removed at the end


def open_baseline(run: GateRun, client: docker.DockerClient) -> Baseline:
    """Prepare the baseline image (pulled when absent) and start its container in the background."""
    from . import modelimage
    from .errors import SetupError
    from .images import get_image
    from .reaper import container_labels
    from .settings import fill_from_image

    settings = run.settings
    assert settings is not None and settings.baseline
    ref = settings.baseline
    model_ref = settings.baseline_model_image or settings.model_image
    own = replace(settings, image=ref, model_image=model_ref, env=dict(settings.env), sources=dict(settings.sources))
    # a port or ready path the user did not give comes from each image's own EXPOSE / HEALTHCHECK
    if settings.sources.get("port") == "image EXPOSE":
        own.port = None
    if settings.sources.get("ready_path") in ("image HEALTHCHECK", "default"):
        own.ready_path = None
    model = None
    try:
        try:
            image = get_image(client, ref, settings.pull)
        except SetupError:
            image = get_image(client, ref, True)  # a tag not present locally: pulled, as production would
        fill_from_image(own, image)
        worker = f"{run.worker}-baseline"
        if settings.baseline_model_image:
            model = modelimage.prepare(client, model_ref, settings.pull, container_labels(run.run_id, worker))
            image = modelimage.with_model(image, model)
        elif run.model is not None:
            image = modelimage.with_model(image, run.model)
    except SetupError as e:
        return Baseline(None, f"the baseline {ref} could not be prepared: {e}", model)
    lifecycle = run.pool.add(own, image, model or run.model, worker)  # its own model, else the run's
    lifecycle.start_background(*run.pool.hooks(own))
    return Baseline(lifecycle, None, model)


def thresholds(spec: CompareSpec, settings: Settings | None) -> CompareSpec:
    """The spec with the thresholds given as options (a pipeline's parameters) over the cases file's."""
    if settings is not None and settings.min_agreement is not None:
        spec = replace(spec, min_agreement=settings.min_agreement)
    if settings is not None and settings.max_latency_ratio is not None:
        spec = replace(spec, max_latency_ratio=settings.max_latency_ratio)
    return spec


class GateFailed(ItemFailed):
    """The gate's failure: the whole report is its text."""


class GateItem(ModelshipItem):
    """A compare section: every probe sent to the candidate and the baseline, the answers compared."""

    given, shown = "spec", "modelship compare with the baseline"
    spec: CompareSpec
    run: GateRun

    def setup(self) -> None:
        if not (self.run.settings and self.run.settings.baseline):
            pytest.skip("no baseline to compare with: pass --modelship-baseline REF (or set MODELSHIP_BASELINE)")
        self.run.container()  # the candidate: its failure is reported with its log, like the smoke cases'

    def runtest(self) -> None:
        baseline = self._baseline_container()
        candidate = self.run.container()
        settings = self.run.settings
        assert settings is not None and settings.baseline
        spec = thresholds(self.spec, settings)
        outcomes = send_all(spec, candidate.url, baseline.url)
        verdict = judge(spec, outcomes, settings.image, settings.baseline)
        self.user_properties.append((AGREEMENT_PROPERTY, round(verdict.agreement, 6)))
        self.user_properties.append((COMPARE_PROPERTY, verdict.summary))
        if not verdict.passed:
            raise GateFailed(self.run.redact(verdict.report) + self._baseline_log())

    def _baseline_container(self) -> ModelshipContainer:
        """The ready baseline container; a baseline that cannot start fails the gate with its log tail."""
        from .errors import ContainerError

        b = self.run.baseline
        if b is None or b.lifecycle is None:
            raise GateFailed(f"modelship: {b.problem if b else 'the baseline was not prepared'}")
        lifecycle = b.lifecycle
        try:
            c = lifecycle.start(*self.run.pool.hooks(lifecycle.settings))
        except ContainerError as e:
            raise GateFailed(f"modelship: the baseline could not start: {e}{self._baseline_log()}") from None
        if c.exited:
            raise GateFailed(f"modelship: the baseline stopped: {c.exit_report()}{self._baseline_log()}")
        return c

    def _baseline_log(self) -> str:
        b = self.run.baseline
        tail = b.lifecycle.log_tail() if b and b.lifecycle else None
        if tail is None:
            return ""
        title = f" modelship baseline container log: {b.lifecycle.started_name} "  # type: ignore[union-attr]
        return f"\n{title.center(80, '-')}\n{self.run.redact(tail)}"


def send_all(spec: CompareSpec, candidate_url: str, baseline_url: str) -> list[Outcome]:
    """Each probe sent to both containers at once, ``IN_FLIGHT`` requests at a time; outcomes in probe order."""
    from .client import ModelshipClient

    with ModelshipClient(candidate_url) as cand, ModelshipClient(baseline_url) as base:
        pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="modelship-gate")
        try:
            pairs = [(pool.submit(_send, cand, p), pool.submit(_send, base, p)) for p in spec.probes]
            return [outcome(spec, p, c.result(), b.result()) for p, (c, b) in zip(spec.probes, pairs, strict=True)]
        finally:
            # an interrupt (Ctrl-C) drops the probes not sent yet; the ones in flight end with their timeout
            pool.shutdown(wait=False, cancel_futures=True)


def _send(client: ModelshipClient, probe: Probe) -> Answer:
    import requests

    kwargs = probe.send_kwargs()
    t0 = time.perf_counter()
    try:
        r = client.request(probe.method, probe.path, **kwargs)
    except requests.RequestException as e:
        return Answer(None, None, (time.perf_counter() - t0) * 1000, f"{type(e).__name__}: {e}")
    latency = (time.perf_counter() - t0) * 1000
    try:
        body: Any = r.json()
    except ValueError:
        body = r.text
    return Answer(r.status_code, body, latency)
