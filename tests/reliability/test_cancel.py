"""Cancelled jobs, for real: SIGINT and SIGTERM to `modelship build` and to `pytest --modelship-image` at
seeded random moments. Each interrupted run must end with the conventional exit code, leave no container,
no <none> image of its build and no temp file, and say so in one line.

The build runs on a base image of this test's own (the testbed base + one LABEL): every image the build
makes inherits the label, so the engine state is checked for this test's images only, whatever tests run
in parallel. MODELSHIP_CANCEL_RUNS (default 1; `make reliability` runs more) sets the number of moments per
signal.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from modelship.image import debris
from support.builds import build_cmd, make_app
from support.engine import engine_state, labelled_base, remove_labelled
from support.plugin_images import Variant, build_image, containers_of, remove_image
from support.record import record_table
from support.waiting import wait_for

pytestmark = pytest.mark.docker

RUNS = max(1, int(os.environ.get("MODELSHIP_CANCEL_RUNS", "1")))  # 1: SIGINT early in the build, SIGTERM late
MODEL_MB = 48  # large enough that hashing, the context upload and the model COPY each take a moment
SIGNALS = {"SIGINT": (signal.SIGINT, 130, "interrupted"), "SIGTERM": (signal.SIGTERM, 143, "terminated")}


def _env(work: Path, run: str) -> dict[str, str]:
    """A fresh cache and temp dir per run: every phase (probe, wheelhouse, model stage) happens each time."""
    (work / f"tmp-{run}").mkdir()
    return {
        **os.environ,
        "MODELSHIP_CACHE_DIR": str(work / f"cache-{run}"),
        "TMPDIR": str(work / f"tmp-{run}"),
        "PYTHONUNBUFFERED": "1",
    }


def _leftover_temp(work: Path, run: str, pid: int) -> list[str]:
    """Temp files of process ``pid``: anything in its temp dir, cache entries named with its pid."""
    left = [str(p) for p in (work / f"tmp-{run}").rglob("*")]
    cache = work / f"cache-{run}"
    if cache.exists():
        left += [str(p) for p in cache.rglob("*") if f"-{pid}-" in p.name or p.name.endswith(f".{pid}")]
    return left


@pytest.fixture
def build_setup(docker_client, base_image, tmp_path):
    base, label = labelled_base(docker_client, base_image)
    app = make_app(tmp_path / "app")
    model = tmp_path / "model"
    model.mkdir()
    rnd = random.Random(7)
    (model / "weights.bin").write_bytes(rnd.randbytes(MODEL_MB * 1024 * 1024))
    (model / "config.json").write_text('{"layers": 3}\n')
    yield {"base": base, "label": label, "app": app, "model": model, "work": tmp_path}
    remove_labelled(docker_client, label)


def _reset(client, label: str, base: str) -> None:
    """Back to just the labelled base: the next build starts from nothing, like the baseline did."""
    import docker.errors

    for tag in engine_state(client, label).tags - {base}:
        try:
            client.api.remove_image(tag, force=True)
        except docker.errors.APIError:
            continue
    assert engine_state(client, label).tags == {base}


@pytest.mark.slow
def test_interrupted_build_leaves_nothing_behind(build_setup, docker_client):
    """One baseline build, then RUNS moments for each signal (one test: the baseline is built once)."""
    s = build_setup
    tag = f"modelship-test/cancel:{uuid.uuid4().hex[:8]}"

    # Baseline: a build that finishes leaves the image, its named stage cache, and no <none> image.
    t0 = time.monotonic()
    proc = subprocess.run(
        [*build_cmd(s["app"], s["model"], tag, s["base"]), "--no-progress"],
        env=_env(s["work"], "baseline"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    full = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = engine_state(docker_client, s["label"])
    assert state.dangling == [] and state.containers == [], state
    assert tag in state.tags and any(t.startswith("modelship-cache/stage:") for t in state.tags), state.tags
    _reset(docker_client, s["label"], s["base"])

    # A moment = after the k-th line of the build log (seeded), plus a seeded fraction of a second: spread over
    # every phase (start-up, probe, hashing + upload, each step of both stages) however fast the engine is.
    log_lines = len(proc.stderr.splitlines())
    interrupted = [
        _interrupt_builds(s, docker_client, tag, signame, j, log_lines, full)
        for j, signame in enumerate(sorted(SIGNALS))
    ]
    # a late moment may come after the build finished (then the image must be complete, with no debris left);
    # the early ones interrupt it
    assert sum(interrupted) >= 1, interrupted


def _interrupt_builds(s: dict, docker_client, tag: str, signame: str, j: int, log_lines: int, full: float) -> int:
    """RUNS builds, each sent ``signame`` (the ``j``-th signal) at a seeded moment: the exit code, the line, and
    nothing left behind. Returns how many the signal interrupted."""
    sig, expected_rc, word = SIGNALS[signame]
    rng = random.Random(f"cancel-build-{signame}")
    outcomes = {"interrupted": 0, "finished first": 0, "signal outside main()": 0}
    phases = []
    for i in range(RUNS):
        run = f"{signame}-{i}"
        # stratified over both signals: run i of signal j falls in slice i * 2 + j of the log, so early, middle
        # and late phases all get hit, each half of the build even with one run per signal
        slices, k = RUNS * len(SIGNALS), i * len(SIGNALS) + j
        last = max(slices, log_lines - 3)
        after_line = rng.randrange(k * last // slices, max(k * last // slices + 1, (k + 1) * last // slices))
        extra = rng.uniform(0.0, 0.6)
        t0 = time.monotonic()
        p = subprocess.Popen(
            [*build_cmd(s["app"], s["model"], tag, s["base"]), "--no-progress"],
            env=_env(s["work"], run),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reached = threading.Event()

        def read(stream=p.stderr, lines=lines, reached=reached, k=after_line):
            for line in stream:
                lines.append(line)
                if len(lines) >= k:
                    reached.set()
            reached.set()  # end of output: the process is done

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert reached.wait(300), "the build printed nothing for 5 minutes"
        time.sleep(extra)
        delay = time.monotonic() - t0
        p.send_signal(sig)
        p.wait(timeout=300)
        reader.join(30)
        err = "".join(lines)
        took = time.monotonic() - t0
        steps = [line for line in err.splitlines() if line.startswith("Step ")]
        # "Step 3/8 : RUN /usr/bin/python3 -m venv ..." -> "step 3/8 run" (the first build call is stage model)
        where = " ".join(steps[-1].split()[:4]).replace(" :", "").lower() if steps else "before any build step"
        phases.append(f"line {after_line} + {extra:.2f}s ({delay:.1f}s): {where}")
        state = engine_state(docker_client, s["label"])
        context = f"run {run}: {phases[-1]}, baseline {full:.1f} s; stderr tail:\n{err[-1500:]}"
        if p.returncode == 0:  # the build won the race: a complete image, and still no debris
            outcomes["finished first"] += 1
            assert tag in state.tags, context
        elif p.returncode == -sig:
            # Ended by the signal itself, outside modelship's main(): still importing (nothing started yet) or
            # already returning (the build finished). A shell reports 128 + signal, the same 130/143.
            outcomes["signal outside main()"] += 1
            if f"Successfully tagged {tag}" in err:  # the engine's last word on the build (stderr's log)
                assert tag in state.tags, context
            else:
                assert not steps and state.tags == {s["base"]}, context
        else:
            outcomes["interrupted"] += 1
            assert p.returncode == expected_rc, context
            assert err.strip().splitlines()[-1] == f"modelship: {word}; nothing half-written was left behind", context
            # no image under the tag and no stage cache, unless the engine had tagged the image just before the
            # signal: a complete image keeps its stage cache, as after a build that finished
            tagged = "Successfully tagged" in err
            left = {t for t in state.tags - {s["base"]} if not (tagged and t.startswith(debris.CACHE_REPO + ":"))}
            assert left <= ({tag} if tagged else set()), f"{state.tags}\n{context}"
        assert state.dangling == [], f"<none> images left: {state.dangling}\n{context}"
        assert state.containers == [], f"containers left: {state.containers}\n{context}"
        assert _leftover_temp(s["work"], run, p.pid) == [], context
        assert took < delay + 150, f"took {took:.1f} s to stop\n{context}"
        # an image committed by the engine after the client hung up would show up now, not at once
        time.sleep(1.0)
        late = engine_state(docker_client, s["label"])
        assert late.dangling == [] and late.containers == [], f"{late}\n{context}"
        _reset(docker_client, s["label"], s["base"])

    record_table(
        f"cancel-build-{signame}",
        [
            {
                "what": f"modelship build + {signame} at random moments ({'; '.join(phases)})",
                "runs": RUNS,
                **outcomes,
                "exit code": expected_rc,
                "dangling images left": 0,
                "containers left": 0,
                "temp files left": 0,
            }
        ],
    )
    return outcomes["interrupted"]


# ------------------------------------------------------------------------------------------ pytest run

CONFTEST = """
import pathlib, pytest

@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    pathlib.Path({marker!r}).write_text("configured")  # after the plugin's own configure: handlers are set
"""

HANG = """
import pathlib, time

def test_hang(modelship_url):
    pathlib.Path({marker!r}).write_text(modelship_url)
    time.sleep(120)
"""


@pytest.fixture
def plugin_image(docker_client, base_image):
    tag = build_image(docker_client, base_image, Variant(), tag=f"modelship-test/cancel-plugin:{uuid.uuid4().hex[:8]}")
    yield tag
    remove_image(docker_client, tag)


@pytest.mark.parametrize("signame", sorted(SIGNALS))
def test_interrupted_pytest_run_removes_its_container(plugin_image, docker_client, tmp_path, signame):
    """pytest's own exit code for any interruption is 2 (ExitCode.INTERRUPTED); the plugin turns SIGTERM into
    an interrupt (so the container is removed) and ends a run stopped by a signal with 128 + signal."""
    sig, expected_rc, _ = SIGNALS[signame]
    rng = random.Random(f"cancel-pytest-{signame}")
    phases = []
    outcomes = {"pytest internal error on the interrupt": 0}
    for i in range(RUNS):
        d = tmp_path / f"run{i}"
        d.mkdir()
        configured, started = d / "configured", d / "started"
        (d / "pytest.ini").write_text("[pytest]\n")
        (d / "conftest.py").write_text(CONFTEST.format(marker=str(configured)))
        (d / "test_hang.py").write_text(HANG.format(marker=str(started)))
        # the app answers 503 for 1.5 s: the moments fall while the container is created, while the
        # plugin waits for readiness, and while a test runs
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(d / "pytest.ini"), "-s"]
        cmd += ["--rootdir", str(d), "--modelship-image", plugin_image, "--modelship-env", "APP_READY_DELAY=1.5"]
        cmd += ["-k", "hang"]
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}  # a run that does not stop dumps its threads on SIGABRT
        p = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        wait_for(configured.exists, 60, "the plugin to be configured")
        delay = rng.uniform(0.0, 3.5)
        time.sleep(delay)
        phase = "test running" if started.exists() else "container starting / not ready"
        phases.append(f"{delay:.2f}s: {phase}")
        p.send_signal(sig)
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGABRT)
            out, _ = p.communicate(timeout=30)
            pytest.fail(f"run {i}: still running 60 s after {signame} ({phases[-1]}); threads:\n{out[-6000:]}")
        context = f"run {i}: {signame} {delay:.2f} s after configure ({phase}); output tail:\n{out[-2500:]}"
        # SIGINT: 130, or -2 when CPython ends itself by SIGINT after the cleanup (it does so when the
        # interrupt landed in a dataclass being created by a lazy import); a shell sees 130 then too.
        # pytest itself fails (exit 1, INTERNALERROR) when the interrupt lands on an instruction without a
        # line number (its traceback code does `tb_lineno - 1` on None); rare, upstream, and the cleanup
        # still ran: accepted only with that exact signature.
        pytest_bug = p.returncode == 1 and "tb_lineno - 1" in out and "NoneType' and 'int'" in out
        assert p.returncode == expected_rc or (sig == signal.SIGINT and p.returncode == -sig) or pytest_bug, context
        outcomes["pytest internal error on the interrupt"] += pytest_bug
        assert "KeyboardInterrupt" in out, context
        assert containers_of(docker_client, plugin_image, labelled=False) == [], context
        time.sleep(1.0)  # a container the engine created after the process ended would show up now
        assert containers_of(docker_client, plugin_image, labelled=False) == [], context
    record_table(
        f"cancel-pytest-{signame}",
        [
            {
                "what": f"pytest --modelship-image + {signame} at random moments ({'; '.join(phases)})",
                "runs": RUNS,
                "exit code": expected_rc,
                **outcomes,
                "containers left": 0,
            }
        ],
    )
