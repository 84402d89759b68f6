"""What the run reports: the header, log tails in failure reports, the ready time and the latency summary.

``ModelshipReporter`` is a plugin object of its own, registered by the run (as pytest-xdist's ``DSession``
registers its ``TerminalDistReporter``): it only reads the pool's containers and writes reports. The log
tail goes into the failure text itself, so the JUnit XML carries it in ``<failure>``/``<error>`` without any
``junit_logging`` setting. Under xdist the ready time and the latencies travel to the controller in the
reports' ``user_properties``, and the controller's reporter prints the summary.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .pool import needs_container
from .redact import mask_env

if TYPE_CHECKING:
    from .pool import ContainerPool

READY_PROPERTY = "modelship_ready_s"
CONTAINER_PROPERTY = "modelship_container"
# after a request that got no answer, how long the engine may take to report the app's exit (seconds; it
# takes milliseconds on an idle machine, more on a loaded CI agent); a wrong answer waits for nothing
EXIT_NOTICE_S = 3.0


class ModelshipReporter:
    """The run's reporting, a plugin object: header lines, log tails in failures, the summary at the end."""

    def __init__(self, pool: ContainerPool) -> None:
        self.pool = pool
        self.warnings: list[str] = []  # printed as notes in the summary
        self.reaped: list[str] = []  # containers of killed runs removed at the start
        self.latencies: list[tuple[str, str, float]] = []  # (case, outcome, ms)
        self.ready: list[tuple[float, str]] = []  # (seconds to ready, "worker name url") per container
        self.compared: list[tuple[str, str, str]] = []  # (gate item, outcome, agreement and latency line)
        self._ready_reported = False
        self._logs_attached: set[str] = set()  # items whose report got the log tail

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        main = self.pool.main
        if main is None:
            return []
        s, image, model = main.settings, main.image, main.model
        src = s.sources

        def line(label: str, value: Any, key: str) -> str:
            return f"modelship {label}: {value} (from {src.get(key, 'default')})"

        lines = [line("image", f"{s.image} [{image.id[7:19]}]", "image")]
        lines.append(line("cases", s.cases or "none", "cases"))
        lines.append(line("port", s.port, "port"))
        lines.append(line("ready path", s.ready_path, "ready_path"))
        lines.append(line("timeout", f"{s.timeout:g} s", "timeout"))
        if s.env:
            shown = " ".join(f"{k}={v}" for k, v in mask_env(s.env).items())
            lines.append(line("env", shown, "env"))
        if image.pulled and not s.pull:  # a digest that was not local: pulled without being asked to
            lines.append(f"modelship pull: yes ({image.pulled})")
        else:
            lines.append(line("pull", "yes" if s.pull else "no", "pull"))
        if s.baseline:
            lines.append(line("baseline", s.baseline, "baseline"))
        if s.verify_keys:
            lines.append(line("verify keys", ", ".join(s.verify_keys), "verify_key"))
        if s.attest_key:
            lines.append(line("attest key", s.attest_key, "attest_key"))
        if model is not None:
            mounted = f"{s.model_image} [{model.image_id[7:19]}] read-only at {image.model_dir}"
            lines.append(line("model image", mounted, "model_image"))
        if self.reaped:
            lines.append(f"modelship: removed {len(self.reaped)} container(s) left by killed runs")
        return lines

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        pool = self.pool
        lc = pool.lifecycle_of(item)
        if lc is not None and report.failed and call.when in ("setup", "call") and needs_container(item):
            c = lc.container
            # a request failing because the app just died: give the engine's exit notice a moment to arrive
            wait = EXIT_NOTICE_S if _request_failed(call) else 0.0
            if c is not None and call.when == "call" and not pool.is_down(lc) and c.wait_exited(wait):
                reason = c.exit_report()
                pool.mark_down(lc, item.nodeid, reason)
                _add_note(report, f"modelship: {reason}")
            if item.nodeid not in self._logs_attached and item.nodeid not in pool.referred:
                self._logs_attached.add(item.nodeid)
                tail = lc.log_tail()
                if tail is not None:
                    # in the failure text itself: the JUnit XML carries it in <failure>/<error> without any
                    # junit_logging setting, and passing tests get no (empty) section at all
                    _add_section(report, f"modelship container log: {lc.started_name}", tail)
        c = pool.main.container if pool.main is not None else None  # the summary names the run's
        if c is not None and c.ready_after_s is not None and not self._ready_reported:
            # once per process; under xdist the report carries it to the controller's summary
            self._ready_reported = True
            report.user_properties.append((READY_PROPERTY, round(c.ready_after_s, 3)))
            report.user_properties.append((CONTAINER_PROPERTY, f"{pool.worker} {c.name} {c.url}"))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from .cases import CASE_PROPERTY, LATENCY_PROPERTY
        from .gate import COMPARE_PROPERTY

        props = dict(report.user_properties)
        if report.when == "call" and COMPARE_PROPERTY in props:
            self.compared.append((report.nodeid, report.outcome, str(props[COMPARE_PROPERTY])))
        if report.when == "call" and LATENCY_PROPERTY in props:
            self.latencies.append((str(props.get(CASE_PROPERTY)), report.outcome, float(props[LATENCY_PROPERTY])))
        if READY_PROPERTY in props:
            self.ready.append((float(props[READY_PROPERTY]), str(props.get(CONTAINER_PROPERTY, ""))))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        main = self.pool.main
        notes = [*self.warnings, *(main.notes if main else [])]
        if main is None or not (self.latencies or self.ready or notes or self.compared):
            return
        tr = terminalreporter
        tr.write_sep("=", "modelship")
        for took, where in self.ready:
            worker, _, rest = where.partition(" ")
            name, _, url = rest.partition(" ")
            tr.write_line(f"image {main.settings.image}: container {name} ({worker}) at {url} ready after {took:.2f} s")
        if self.latencies:
            width = max(len(name) for name, _, _ in self.latencies)
            for name, outcome, ms in self.latencies:
                tr.write_line(f"  {name:<{width}}  {outcome:<7} {ms:8.1f} ms")
            values = [ms for _, _, ms in self.latencies]
            tr.write_line(
                f"latency over {len(values)} case(s): p50 {percentile(values, 50):.1f} ms, "
                f"p95 {percentile(values, 95):.1f} ms, max {max(values):.1f} ms"
            )
        for nodeid, outcome, summary in self.compared:
            tr.write_line(f"{nodeid} vs baseline {main.settings.baseline}: {outcome}: {summary}")
        for note in notes:
            tr.write_line(f"note: {note}")


def _request_failed(call: pytest.CallInfo[None]) -> bool:
    """Whether the test failed for want of any answer from the app (a smoke case's or the client's request)."""
    if call.excinfo is None:
        return False
    import requests

    no_answer = (requests.ConnectionError, requests.Timeout)  # not HTTPError: that app answered
    return bool(getattr(call.excinfo.value, "request_failed", False)) or call.excinfo.errisinstance(no_answer)


def _add_note(report: pytest.TestReport, note: str) -> None:
    """Put ``note`` at the top of a failure report, whatever shape its longrepr has."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        report.longrepr = f"{note}\n{longrepr}"
    else:
        _add_section(report, "modelship container", note)


def _add_section(report: pytest.TestReport, title: str, text: str) -> None:
    """Append a titled section to the failure text (what the terminal shows and JUnit's <failure> holds)."""
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        report.longrepr = f"{longrepr}\n{f' {title} '.center(80, '-')}\n{text}"
    elif hasattr(longrepr, "addsection"):
        longrepr.addsection(title, text)  # type: ignore[union-attr]
    else:
        report.sections.append((title, text))


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolated percentile (the 'inclusive' method), exact for small samples too."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if p < 100 else max(values)
