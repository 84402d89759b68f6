"""Builds at the same time on one engine (two pipelines on one agent, `make test -n 2`): a build that fails
removes what it made, and nothing another build holds (issue 19 item 14: "failed to set parent sha256:…:
unknown parent image ID" after another build's cleanup removed an image this build was using).

MODELSHIP_CANCEL_RUNS (default 3; `make reliability` raises it) sets how many rounds of two builds run.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from modelship import build
from modelship.errors import BuildError
from modelship.image import debris
from support.builds import make_app
from support.engine import engine_state, labelled_base, remove_labelled
from support.record import record_run

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
ROUNDS = max(1, int(os.environ.get("MODELSHIP_CANCEL_RUNS", "3")))


def _context(dockerfile: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _failed_build(client, base: str) -> debris.BuildTrace:
    """A build that commits two steps of its own and then fails, traced as modelship traces its builds."""
    trace = debris.BuildTrace()
    dockerfile = f"FROM {base}\nENV MADE=1\nRUN echo made > /made\nRUN false\n"
    for ev in client.api.build(fileobj=_context(dockerfile), custom_context=True, rm=True, forcerm=True, decode=True):
        for line in ev.get("stream", "").splitlines():
            trace.feed(line.strip())
        if "error" in ev:
            trace.ended = True
    assert trace.ended and len(trace.created) == 2, trace
    return trace


def _exists(client, image: str) -> bool:
    import docker.errors

    try:
        client.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def test_a_failed_build_leaves_what_another_build_holds(tmp_path, docker_client, base_image):
    base, label = labelled_base(docker_client, base_image)
    try:
        trace = _failed_build(docker_client, base)
        env_step, run_step = trace.created
        mine = debris.Holds("engine", root=tmp_path)
        other = debris.Holds("engine", root=tmp_path)  # another build got the RUN step as a cache hit ...
        other.note([env_step, run_step])
        step = docker_client.api.create_container(run_step, ["true"])["Id"]  # ... and runs its next step on it
        assert debris.discard(docker_client, [trace], holds=mine) == []
        assert _exists(docker_client, env_step) and _exists(docker_client, run_step)
        assert docker_client.api.inspect_container(step)["Id"] == step

        other.close()  # that build ended (its container gone with it); a stale file of a dead build holds nothing
        docker_client.api.remove_container(step, force=True)
        (mine.folder / "999999999-dead.json").write_text(f'["{run_step}"]')
        assert debris.discard(docker_client, [trace], holds=mine) == [run_step, env_step]
        assert not _exists(docker_client, run_step) and not (mine.folder / "999999999-dead.json").exists()
    finally:
        remove_labelled(docker_client, label)


def test_a_step_container_created_after_the_sweep_does_not_keep_the_image(
    tmp_path, docker_client, base_image, monkeypatch
):
    """A cancel just as a RUN step starts: the engine creates the step's container after discard listed the
    containers (the log had not named it yet), so removing the image under it meets a conflict. The engine
    removes that container itself a moment later (played here by a timer); discard waits for it and then removes
    the image (a clean-clone CI run once left that image as <none>), but never removes the container itself: it
    may be another build's step on the same cache hit."""
    import docker.errors

    base, label = labelled_base(docker_client, base_image)
    try:
        trace = _failed_build(docker_client, base)
        env_step, run_step = trace.created
        listed, late, engine_removed = docker_client.api.containers, [], []

        def the_engine_removes_it() -> None:
            docker_client.api.remove_container(late[0], force=True)  # fails if discard had removed it
            engine_removed.append(late[0])

        def the_engine_creates_one_just_after(*args, **kwargs):
            found = listed(*args, **kwargs)
            if not late:
                late.append(docker_client.api.create_container(run_step, ["true"])["Id"])
                threading.Timer(1.0, the_engine_removes_it).start()
            return found

        monkeypatch.setattr(docker_client.api, "containers", the_engine_creates_one_just_after)
        assert debris.discard(docker_client, [trace], holds=debris.Holds("engine", root=tmp_path)) == [
            run_step,
            env_step,
        ]
        assert engine_removed == late and not _exists(docker_client, run_step) and not _exists(docker_client, env_step)
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(late[0])
    finally:
        remove_labelled(docker_client, label)


SHARED = "ENV SHARED=1\nCOPY .modelship/wheels/ /wheels/\nRUN echo deps > /deps\n"  # the first steps of both apps


def _app(root: Path, base: str, rest: str) -> Path:
    """An app whose Dockerfile begins with the SHARED steps. Both folders are named ``app`` and
    SOURCE_DATE_EPOCH is set, so both builds get the same labels and the engine shares their cache."""
    app = make_app(root / "app")
    (app / "Dockerfile").write_text(f"FROM {base}\n{SHARED}{rest}")
    return app


def _wait_for_images(client, label: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(client.api.images(all=True, filters={"label": label})) < count and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_builds_at_once_do_not_break_each_other(round_, tmp_path, docker_client, base_image, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    base, label = labelled_base(docker_client, base_image)  # a fresh cache every round: the steps race
    good_tag = f"modelship-test/concurrent-good:{label.rsplit('=', 1)[1]}"
    results: dict[str, BaseException | str] = {}

    def run(name: str, app: Path, tag: str) -> None:
        if name == "good":  # once the failing build made the shared steps: the good one gets them from the cache
            _wait_for_images(docker_client, label, 4)  # the base and the three SHARED steps
        try:
            results[name] = build(app, None, tag, base_image=base, dockerfile=app / "Dockerfile").id
        except BaseException as e:  # noqa: BLE001 - reported below
            results[name] = e

    # the failing build fails while the good one runs a long step on the last shared image
    bad = _app(tmp_path / "bad", base, f"COPY . /app/\nRUN sleep {1 + round_ % 2} && false\n")
    good = _app(tmp_path / "good", base, "RUN sleep 4\nCOPY . /app/\n")
    threads = [
        threading.Thread(target=run, args=("bad", bad, f"modelship-test/concurrent-bad:{round_}")),
        threading.Thread(target=run, args=("good", good, good_tag)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        state = engine_state(docker_client, label)
    finally:
        remove_labelled(docker_client, label)
    problems = []
    if not isinstance(results.get("bad"), BuildError):
        problems.append(f"the failing build ended with {results.get('bad')!r}")
    if not isinstance(results.get("good"), str):
        problems.append(f"the other build broke: {results.get('good')!r}")
    if state.dangling or state.containers:
        problems.append(f"left behind: {state.dangling} {state.containers}")
    record_run(
        "concurrent-builds", "failing-build-next-to-a-good-one", "pass" if not problems else "violation", problems
    )
    assert not problems, problems


def test_builds_with_caches_of_their_own_see_each_others_holds(tmp_path, monkeypatch):
    """Two pipelines on one agent, or two tests, each with its own MODELSHIP_CACHE_DIR, build on one engine: the
    holds live in the machine's folder, so one build's cleanup leaves what the other uses (a clean-clone CI run
    failed with "unknown parent image ID" when they lived under each cache)."""
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache-a"))
    first = debris.Holds(f"engine-{tmp_path.name}")
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path / "cache-b"))
    second = debris.Holds(f"engine-{tmp_path.name}")
    try:
        first.note(["0123456789ab"])
        assert second.others() == {"0123456789ab"}
        assert oct(first.folder.parent.stat().st_mode & 0o7777) == oct(0o1777)
    finally:
        first.close()
        second.close()
    assert second.others() == set()
