"""The one HTTP app of the test images: stdlib only, so it runs on the bare base image without a wheel.

It serves ``GET`` ready path (default /health/ready: 503 for APP_READY_DELAY seconds after the start and while
the model's modelship.json is unreadable, then 200, logging ``READY <epoch>`` once), live path (default
/health/live), /model (the manifest), /version, and ``POST /predict`` (a label for a vector ``x``, 422 for
anything else); every other path is 404. How a test makes it misbehave, by environment variable:

- ``APP_MODE=crash``: exits with 3 at once, like an app whose weights do not load;
- ``EXIT_AFTER=N``, ``EXIT_WHEN=during|after``: dies with code 7 on prediction N+1 (mid-request) or right after
  answering prediction N, like an app that runs out of memory;
- ``API_TOKEN``: logged at the start, for the plugin to mask;
- ``APP_ACCESS_LOG=json``: one JSON object per request with the User-Agent and no request line, as structured
  loggers do (default: the stdlib server's request line);
- for the gate's tests, a retrained or slower model: ``APP_MODEL_VERSION`` adds ``model_version`` to each
  prediction, ``APP_THRESHOLD`` (default 0) moves the cat/dog boundary of ``sum(x)``, ``APP_DELAY_MS`` adds
  that many milliseconds to every prediction.

``PORT`` (default: what :func:`app_source` was given), ``MODELSHIP_MODEL_DIR`` (default /opt/modelship/model).
"""

from __future__ import annotations

_APP = r"""
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("APP_MODE", "good")
PORT = int(os.environ.get("PORT", "{port}"))
READY_PATH, LIVE_PATH = {ready_path!r}, {live_path!r}
DELAY = float(os.environ.get("APP_READY_DELAY", "0"))
EXIT_AFTER = int(os.environ.get("EXIT_AFTER", "0"))
EXIT_WHEN = os.environ.get("EXIT_WHEN", "during")
MODEL_VERSION = os.environ.get("APP_MODEL_VERSION")
THRESHOLD = float(os.environ.get("APP_THRESHOLD", "0"))
DELAY_S = float(os.environ.get("APP_DELAY_MS", "0")) / 1000
MODEL_DIR = os.environ.get("MODELSHIP_MODEL_DIR", "/opt/modelship/model")
print(f"starting smoke app in mode {MODE}, token={os.environ.get('API_TOKEN', '-')}", flush=True)
if MODE == "crash":
    print("fatal: cannot load model weights.bin: corrupt header", flush=True)
    sys.exit(3)
if EXIT_AFTER:
    print(f"boot: pid {os.getpid()}, will die after {EXIT_AFTER} predictions ({EXIT_WHEN})", flush=True)
STARTED = time.time()
lock, served, ready_logged = threading.Lock(), 0, False


def manifest():
    with open(os.path.join(MODEL_DIR, "modelship.json")) as f:
        return json.load(f)


def die():
    print(f"fatal: out of memory after {EXIT_AFTER} predictions", flush=True)
    os._exit(7)


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global ready_logged
        if self.path == READY_PATH:
            try:
                manifest()
            except (OSError, ValueError) as e:
                return self._send(503, {"ready": False, "error": str(e)})
            if time.time() - STARTED < DELAY:
                return self._send(503, {"ready": False})
            if not ready_logged:
                ready_logged = True
                print(f"READY {time.time():.6f}", flush=True)
            return self._send(200, {"ready": True})
        if self.path == LIVE_PATH:
            return self._send(200, {"live": True})
        if self.path == "/model":
            return self._send(200, manifest())
        if self.path == "/version":
            return self._send(200, {"version": manifest()["version"]})
        return self._send(404, {"error": "not found"})

    def do_POST(self):
        global served
        if self.path != "/predict":
            return self._send(404, {"error": "not found"})
        with lock:
            served += 1
            n = served
        if EXIT_AFTER and n > EXIT_AFTER:
            die()
        data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        x = data.get("x")
        if not isinstance(x, list):
            return self._send(422, {"error": "x must be a list of numbers"})
        total = sum(x)
        label = "cat" if total > THRESHOLD else "dog"
        answer = {"label": label, "score": round(1 / (1 + 2.718281828 ** -total), 4), "n": len(x)}
        if MODEL_VERSION:
            answer["model_version"] = MODEL_VERSION
        if DELAY_S:
            time.sleep(DELAY_S)
        self._send(200, answer)
        if EXIT_AFTER and n == EXIT_AFTER and EXIT_WHEN == "after":
            self.wfile.flush()
            die()

    def log_message(self, fmt, *args):
        if os.environ.get("APP_ACCESS_LOG") == "json":
            entry = {"method": self.command, "path": self.path, "agent": self.headers.get("User-Agent")}
            sys.stderr.write(json.dumps(entry) + "\n")
            return
        sys.stderr.write("request: " + (fmt % args) + "\n")


server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
try:
    VERSION = manifest()["version"]
except (OSError, ValueError, KeyError):
    VERSION = None
print(f"serving model {VERSION} on port {PORT}", flush=True)
print(f"LISTENING {time.time():.6f}", flush=True)
server.serve_forever()
"""


def app_source(port: int = 8000, ready_path: str = "/health/ready", live_path: str = "/health/live") -> str:
    """The app's source: ``port`` is its default ``PORT``; it answers its probes at these paths only."""
    return (
        _APP.replace("{port}", str(port))
        .replace("{ready_path!r}", repr(ready_path))
        .replace("{live_path!r}", repr(live_path))
    )


APP = app_source()
