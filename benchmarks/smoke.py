"""Benchmark: `pytest --modelship-image` vs. a hand-written testcontainers + requests script.

Both sides start the same image, wait until ready, send the same 20 smoke cases and remove the
container; each is timed as a whole process (interpreter start to exit), alternating, median of N
rounds. Also measured: the readiness-detection delay, from the app's first successful ready answer
(the app logs ``READY <epoch seconds>``) to the start of the first test (plugin) or first request
(script). Targets: overhead ratio <= 1.25, detection delay < 100 ms.

    python benchmarks/smoke.py                       # builds a small stdlib image on the testbed base
    python benchmarks/smoke.py --example             # the example Flask + ONNX image, 20 cases
    python benchmarks/smoke.py --image myapp:1 --cases my-cases.yaml   # any image

For the delay column the image logs ``READY <time.time()>`` on its first 2xx ready answer, or its access
log shows that answer (``<client> ... "GET /health/ready ..." 200``, as gunicorn's does: the engine's
timestamp of that line is used: it comes after the answer, so the delay reads up to a few ms low). It may also log
``LISTENING <time.time()>`` once its socket is bound, which adds the polling gap; without these, n/a.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import _path  # noqa: F401 - tests/ on sys.path, for support

from support import ROOT, testbed

READY_LINE = re.compile(rb"READY (\d+\.\d+)")
LISTEN_LINE = re.compile(rb"LISTENING (\d+\.\d+)")
# An access-log line of the first ready answer to a client outside the container (gunicorn, Flask, most
# servers log '<client> ... "GET <path> ..." 200'); its time is the engine's timestamp of the log line.
ACCESS_LINE = r'^(?!127\.0\.0\.1)\S+ .*"GET {path}[ "].* 200 '


def _engine_time(stamp: bytes) -> float:
    """``2026-11-26T09:44:06.317063514Z`` (the engine's log timestamp, ns) as epoch seconds."""
    text = stamp.decode().rstrip("Z")
    whole, _, frac = text.partition(".")
    return dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc).timestamp() + float(f"0.{frac or 0}")


BASELINE = textwrap.dedent(
    '''
    """What a user would write without the plugin: testcontainers + requests + a polling loop."""
    import json, sys, time
    import requests, yaml
    from testcontainers.core.container import DockerContainer

    image, cases_file, port, ready_path, first_file = sys.argv[1:6]
    port = int(port)
    cases = yaml.safe_load(open(cases_file))["cases"]
    c = DockerContainer(image).with_bind_ports(port, None)
    for pair in sys.argv[6:]:
        c.with_env(*pair.split("=", 1))
    c.start()
    try:
        url = f"http://127.0.0.1:{c.get_exposed_port(port)}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + ready_path, timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                sys.exit("not ready")
            time.sleep(0.05)
        http = requests.Session()
        failures = 0
        for i, case in enumerate(cases):
            if i == 0:
                open(first_file, "w").write(repr(time.time()))
            r = http.request(case.get("method", "POST" if "json" in case else "GET"), url + case["path"],
                             json=case.get("json"), timeout=30)
            expect = case.get("expect", {})
            ok = r.status_code == expect.get("status", r.status_code) and 200 <= r.status_code < 500
            subset = expect.get("json_subset")
            if subset is not None:
                body = r.json()
                ok = ok and all(body.get(k) == v for k, v in subset.items())
            failures += not ok
        print(f"{len(cases) - failures} passed, {failures} failed")
        sys.exit(1 if failures else 0)
    finally:
        c.stop()
    '''
)

CONFTEST = textwrap.dedent(
    """
    import time, os
    _FIRST = []

    def pytest_runtest_call(item):
        if not _FIRST:
            _FIRST.append(time.time())
            with open(os.environ["BENCH_FIRST_FILE"], "w") as f:
                f.write(repr(_FIRST[0]))
    """
)


def example_cases(n: int) -> str:
    """Cases the example app passes that the baseline script can check too (status and top-level keys)."""
    live = {"path": "/health/live", "expect": {"status": 200, "json_subset": {"status": "alive"}}}
    predict = {"path": "/predict", "json": {"instances": [[5.1, 3.5, 1.4, 0.2]]}, "expect": {"status": 200}}
    cases = [{"name": f"{'live' if i % 2 else 'predict'}_{i:02d}", **(live if i % 2 else predict)} for i in range(n)]
    return json.dumps({"cases": cases}, indent=1)


def default_cases(n: int) -> str:
    cases = [{"name": "version", "path": "/version", "expect": {"status": 200}}]
    for i in range(1, n):
        x = [i, -(i % 3), 0.5 * i]
        label = "cat" if sum(x) > 0 else "dog"
        cases.append(
            {
                "name": f"predict_{i:02d}",
                "path": "/predict",
                "json": {"x": x},
                "expect": {"json_subset": {"label": label}},
            }
        )
    return json.dumps({"cases": cases}, indent=1)


class ReadyWatcher:
    """Follows the logs of the next container of ``image`` and notes the app's READY timestamp."""

    seen: set[str] = set()

    def __init__(self, client, image: str, ready_path: str) -> None:
        self.client, self.image = client, image
        self.access = re.compile(ACCESS_LINE.format(path=re.escape(ready_path)).encode())
        self.ready_at: float | None = None
        self.listening_at: float | None = None
        self._since = f"{time.time():.6f}"  # the engine takes seconds.fraction: skip earlier rounds' events
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        events = self.client.events(
            since=self._since, filters={"type": "container", "event": "start", "image": self.image}, decode=True
        )
        for ev in events:
            if ev["id"] not in ReadyWatcher.seen:
                cid = ev["id"]
                ReadyWatcher.seen.add(cid)
                break
        events.close()
        try:
            pending = b""
            logs = self.client.api.logs(cid, stream=True, follow=True, stdout=True, stderr=True, timestamps=True)
            for chunk in logs:
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    stamp, _, text = line.partition(b" ")
                    if listen := LISTEN_LINE.search(text):
                        self.listening_at = float(listen.group(1))
                    if m := READY_LINE.search(text):  # the app says when (the stdlib test app does)
                        self.ready_at = float(m.group(1))
                        return
                    if self.access.search(text):  # else the access log's first ready answer, engine time
                        self.ready_at = _engine_time(stamp)
                        return
        except Exception:  # noqa: BLE001 - the container went away: nothing more to read
            return

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout)


def timed(
    cmd: list[str], env: dict[str, str], cwd: Path, client, image: str, first_file: Path, ready_path: str
) -> tuple[float, float | None, str]:
    first_file.unlink(missing_ok=True)
    watcher = ReadyWatcher(client, image, ready_path)
    time.sleep(0.2)  # let the event stream attach before the container starts
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    watcher.join()
    if proc.returncode != 0:
        sys.exit(f"{cmd[2] if len(cmd) > 2 else cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    delay = listen = None
    if first_file.is_file():
        first = float(first_file.read_text())
        if watcher.ready_at is not None:
            delay = (first - watcher.ready_at) * 1000
        if watcher.listening_at is not None:
            listen = (first - watcher.listening_at) * 1000
    return wall, delay, listen


def _ms(v: float | None) -> str:
    return f"{v:.0f} ms" if v is not None else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", help="image to test (default: build a small stdlib image on the testbed base)")
    ap.add_argument("--example", action="store_true", help="build and test the example app's image")
    ap.add_argument("--cases", type=Path, help="cases file (default: 20 generated cases for the stdlib app)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--ready-path", default="/health/ready")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-cases", type=int, default=20)
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="container env for both sides, e.g. APP_READY_DELAY=1.5 to simulate a model that loads for 1.5 s",
    )
    args = ap.parse_args(argv)

    tb = testbed.for_script("MODELSHIP_BASE_IMAGE")
    testbed.export_testcontainers_settings(tb)  # the testbed knows how containers are reached here (no Ryuk, loopback)
    env = {**os.environ}
    # Python's default bytecode caching, as in any real install: with PYTHONDONTWRITEBYTECODE (set in some
    # sandboxes) pytest would re-compile and re-rewrite the editable plugin's modules on every run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    import docker
    import yaml

    client = docker.from_env()
    built = None
    if args.example:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from load import build_example

        with tempfile.TemporaryDirectory(prefix="modelship-bench-") as tmp:
            built = args.image = build_example(Path(tmp))
    elif args.image is None:
        from support.plugin_images import build_image

        print("building the stdlib test image ...", flush=True)
        built = args.image = build_image(client, tb["MODELSHIP_BASE_IMAGE"])
    try:
        with tempfile.TemporaryDirectory(prefix="modelship-bench-") as tmp:
            work = Path(tmp)
            cases = work / "cases.yaml"
            if args.cases:
                cases.write_text(args.cases.read_text())
            else:
                cases.write_text((example_cases if args.example else default_cases)(args.n_cases))
            (work / "conftest.py").write_text(CONFTEST)
            (work / "pytest.ini").write_text("[pytest]\n")
            (work / "baseline.py").write_text(BASELINE)
            first = work / "first"
            env["BENCH_FIRST_FILE"] = str(first)
            plugin_cmd = [
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                "--modelship-image", args.image, "--modelship-cases", str(cases),
                "--modelship-port", str(args.port), "--modelship-ready-path", args.ready_path,
                "--deselect", "modelship-image",
                *(f"--modelship-env={e}" for e in args.env),
            ]  # fmt: skip
            script_cmd = [
                sys.executable,
                str(work / "baseline.py"),
                args.image,
                str(cases),
                str(args.port),
                args.ready_path,
                str(first),
                *args.env,
            ]
            results: dict[str, list[tuple[float, float | None, float | None]]] = {"plugin": [], "script": []}
            # warm-up: page cache, image layers
            timed(plugin_cmd, env, work, client, args.image, first, args.ready_path)
            for i in range(args.rounds):
                for name, cmd in (("plugin", plugin_cmd), ("script", script_cmd)):
                    results[name].append(timed(cmd, env, work, client, args.image, first, args.ready_path))
                (p_wall, p_delay, _), (s_wall, s_delay, _) = results["plugin"][-1], results["script"][-1]
                print(
                    f"round {i + 1}/{args.rounds}: plugin {p_wall:.2f} s (ready->first {_ms(p_delay)}), "
                    f"script {s_wall:.2f} s (ready->first {_ms(s_delay)})",
                    flush=True,
                )
            doc = yaml.safe_load(cases.read_text())
            ncases = len(doc["cases"] if isinstance(doc, dict) else doc)
    finally:
        if built:
            client.images.remove(built, force=True)

    def med(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None]
        return statistics.median(vals) if vals else None

    pw, sw = med([r[0] for r in results["plugin"]]), med([r[0] for r in results["script"]])
    pd, sd = med([r[1] for r in results["plugin"]]), med([r[1] for r in results["script"]])
    pl, sl = med([r[2] for r in results["plugin"]]), med([r[2] for r in results["script"]])
    ratio = pw / sw  # type: ignore[operator]

    def ms(v: float | None) -> str:
        return f"{v:8.0f} ms" if v is not None else "     n/a"

    print()
    extra = f", env {' '.join(args.env)}" if args.env else ""
    print(f"image {args.image}{extra}, {ncases} cases, median of {args.rounds} rounds (whole process, start to exit)")
    print(f"{'':28} {'wall':>9} {'ready->first test':>18} {'listening->first test':>22}")
    print(f"{'pytest --modelship-image':28} {pw:7.2f} s {ms(pd):>18} {ms(pl):>22}")
    print(f"{'testcontainers + requests':28} {sw:7.2f} s {ms(sd):>18} {ms(sl):>22}")
    verdict = "ok" if ratio <= 1.25 else "OVER TARGET"
    print(f"{'overhead ratio':28} {ratio:7.2f}   (target <= 1.25: {verdict})")
    if pd is not None:
        print(f"{'readiness-detection delay':28} {pd:7.0f} ms (target < 100 ms: {'ok' if pd < 100 else 'OVER TARGET'})")
    return 0 if ratio <= 1.25 and (pd is None or pd < 100) else 1


if __name__ == "__main__":
    sys.exit(main())
