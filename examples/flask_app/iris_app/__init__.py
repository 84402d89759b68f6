"""The Iris classifier service: a Flask application factory (served by gunicorn in the image).

POST /predict      {"instances": [[f1, f2, f3, f4], ...]} -> labels, probabilities, model version
GET  /health/live  the process answers
GET  /health/ready 200 once the model is loaded and a self-check prediction succeeded, else 503
GET  /metadata     the model's modelship.json (what was fetched: uri, version, files, digest)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .model import ModelSlot
from .validation import InvalidInput, parse_instances

__all__ = ["create_app"]

DEFAULTS: dict[str, Any] = {
    "MODEL_DIR": None,  # default: $MODELSHIP_MODEL_DIR
    "MAX_INSTANCES": 100,  # per request; default overridable with $MAX_INSTANCES
    # "eager": each gunicorn worker loads and self-checks the model before it accepts a connection, so no
    # request of a multi-worker pod lands on a worker still loading. "background": answer /health/* at once
    # and load on a thread (for models whose load would outlast gunicorn's worker timeout; /health/ready
    # is 503 meanwhile). "none": tests load by hand. Default overridable with $MODEL_LOAD.
    "MODEL_LOAD": "eager",
    "MAX_CONTENT_LENGTH": 1 << 20,  # 1 MiB of JSON is far beyond 100 rows of 4 floats
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` overrides DEFAULTS and the environment (handy in tests)."""
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config["MODEL_DIR"] = os.environ.get("MODELSHIP_MODEL_DIR")
    if os.environ.get("MODEL_LOAD"):
        app.config["MODEL_LOAD"] = os.environ["MODEL_LOAD"]
    if os.environ.get("MAX_INSTANCES"):
        app.config["MAX_INSTANCES"] = int(os.environ["MAX_INSTANCES"])
    app.config.update(config or {})
    if app.config["MODEL_LOAD"] not in ("background", "eager", "none"):
        raise ValueError(f"MODEL_LOAD must be background, eager or none, not {app.config['MODEL_LOAD']!r}")

    _log_through_gunicorn(app)
    slot = ModelSlot(app.config["MODEL_DIR"])
    app.extensions["iris_model"] = slot

    @app.post("/predict")
    def predict() -> Response | tuple[Response, int]:
        if not request.is_json:
            raise InvalidInput("send the body as Content-Type: application/json", 415, "unsupported_media_type")
        body = request.get_json(silent=True)
        if body is None:
            raise InvalidInput("the body is missing or not valid JSON")
        model = slot.model
        if model is None:
            return _error(503, "not_ready", "the model is not loaded yet; retry when /health/ready answers 200")
        x = parse_instances(body, model.n_features, app.config["MAX_INSTANCES"])
        preds = model.predict(x)
        return jsonify(
            predictions=[{"label": p.label, "probabilities": p.probabilities} for p in preds],
            model_version=model.version,
        )

    @app.get("/health/live")
    def live() -> Response:
        return jsonify(status="alive")

    @app.get("/health/ready")
    def ready() -> Response | tuple[Response, int]:
        if slot.model is not None:
            return jsonify(status="ready", model_version=slot.model.version)
        body: dict[str, Any] = {"status": slot.state}
        if slot.error:
            body["error"] = slot.error
        return jsonify(body), 503

    @app.get("/metadata")
    def metadata() -> Response | tuple[Response, int]:
        if slot.model is None:
            return _error(503, "not_ready", "the model is not loaded yet")
        if slot.model.manifest is None:
            return _error(404, "no_manifest", "the model folder has no modelship.json (not fetched by modelship)")
        return jsonify(slot.model.manifest)

    @app.errorhandler(InvalidInput)
    def invalid_input(e: InvalidInput) -> tuple[Response, int]:
        return _error(e.status, e.kind, e.message)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[Response, int]:
        # 404/405/413 and friends as JSON too, so clients parse every answer the same way
        kind = (e.name or "error").lower().replace(" ", "_")
        return _error(e.code or 500, kind, e.description or e.name)

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> tuple[Response, int]:
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal_error", "unexpected server error; see the service log")

    if app.config["MODEL_LOAD"] != "none":
        slot.start(background=app.config["MODEL_LOAD"] == "background")
    return app


def _log_through_gunicorn(app: Flask) -> None:
    """Under gunicorn, write the app's log lines (model loaded, errors) to gunicorn's error log."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers:
        app.logger.handlers = gunicorn_log.handlers
        app.logger.setLevel(gunicorn_log.level)
        app.logger.propagate = False


def _error(status: int, kind: str, message: str) -> tuple[Response, int]:
    return jsonify(error={"type": kind, "message": message}), status
