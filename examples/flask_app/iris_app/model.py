"""The served model: an ONNX classifier plus its class labels, loaded from a modelship model folder.

Nothing here knows about HTTP. ``IrisModel.load`` reads and checks the folder, ``predict`` maps a
float32 matrix to labels and probabilities, ``self_check`` proves the session answers before the
app reports ready.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger("iris_app")

MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "modelship.json"  # written by `modelship fetch` / `modelship build`; absent in a bare training dir


class ModelLoadError(Exception):
    """The model folder is missing something or the model does not behave like a classifier."""


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


class IrisModel:
    """An ONNX classifier with ``label`` (int64 [N]) and ``probabilities`` (float [N, C]) outputs."""

    def __init__(self, session: ort.InferenceSession, labels: list[str], manifest: dict[str, Any] | None) -> None:
        self.session = session
        self.labels = labels
        self.manifest = manifest
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        width = inp.shape[1] if len(inp.shape) == 2 else None
        if not isinstance(width, int):
            raise ModelLoadError(f"model input {inp.name!r} has shape {inp.shape}; expected [batch, n_features]")
        self.n_features = width
        outputs = {o.name for o in session.get_outputs()}
        if not {"label", "probabilities"} <= outputs:
            raise ModelLoadError(
                f"model outputs are {sorted(outputs)}; expected 'label' and 'probabilities' (export with zipmap off)"
            )

    @property
    def version(self) -> str | None:
        return (self.manifest or {}).get("version")

    @classmethod
    def load(cls, model_dir: str | Path) -> IrisModel:
        """Read ``model.onnx``, ``labels.json`` and (when present) ``modelship.json`` from ``model_dir``."""
        root = Path(model_dir)
        if not root.is_dir():
            raise ModelLoadError(f"model directory {root} does not exist; set MODELSHIP_MODEL_DIR")
        try:
            labels = json.loads((root / LABELS_FILE).read_text())
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{root / LABELS_FILE}: cannot read the class labels ({e})") from e
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ModelLoadError(f"{root / LABELS_FILE}: expected a non-empty JSON list of class names")
        manifest = None
        if (root / MANIFEST_FILE).is_file():
            try:
                manifest = json.loads((root / MANIFEST_FILE).read_text())
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"{root / MANIFEST_FILE}: not valid JSON ({e})") from e
        opts = ort.SessionOptions()
        # Several gunicorn workers x threads share the container's CPUs; one intra-op thread per
        # request avoids oversubscription (the model is tiny, parallelism comes from concurrent requests).
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(root / MODEL_FILE), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelLoadError(f"{root / MODEL_FILE}: onnxruntime cannot load it ({e})") from e
        return cls(session, labels, manifest)

    def predict(self, x: np.ndarray) -> list[Prediction]:
        """Predict a float32 matrix of shape [N, n_features]."""
        label_idx, probs = self.session.run(["label", "probabilities"], {self.input_name: x})
        out = []
        for idx, row in zip(label_idx, probs, strict=True):
            out.append(
                Prediction(
                    label=self.labels[int(idx)],
                    probabilities={name: float(p) for name, p in zip(self.labels, row, strict=True)},
                )
            )
        return out

    def self_check(self) -> None:
        """One prediction on a neutral input; raises ModelLoadError unless the answer is well-formed."""
        x = np.zeros((1, self.n_features), dtype=np.float32)
        try:
            label_idx, probs = self.session.run(["label", "probabilities"], {self.input_name: x})
        except Exception as e:
            raise ModelLoadError(f"self-check prediction failed: {e}") from e
        if probs.shape != (1, len(self.labels)):
            raise ModelLoadError(
                f"self-check: model gives {probs.shape[1] if probs.ndim == 2 else probs.shape} probabilities "
                f"but labels.json names {len(self.labels)} classes"
            )
        if not 0 <= int(label_idx[0]) < len(self.labels):
            raise ModelLoadError(f"self-check: label index {int(label_idx[0])} outside labels.json")
        total = float(probs.sum())
        if not math.isfinite(total) or abs(total - 1.0) > 1e-3:
            raise ModelLoadError(f"self-check: probabilities sum to {total}, expected 1")


class ModelSlot:
    """Holds the model once it is loaded and self-checked; the app's readiness is this slot's state.

    States: ``loading`` (nothing yet), ``ready``, ``failed`` (with the reason). Loading may run on a
    background thread so the process answers liveness probes while a large model loads.
    """

    def __init__(self, model_dir: str | Path | None) -> None:
        self.model_dir = model_dir
        self.model: IrisModel | None = None
        self.error: str | None = None
        self._done = threading.Event()

    @property
    def state(self) -> str:
        if self.model is not None:
            return "ready"
        return "failed" if self.error else "loading"

    def load(self) -> None:
        """Load and self-check; never raises (the failure is kept and reported by /health/ready)."""
        try:
            if not self.model_dir:
                raise ModelLoadError("MODELSHIP_MODEL_DIR is not set; point it at the model folder")
            model = IrisModel.load(self.model_dir)
            model.self_check()
        except ModelLoadError as e:
            self.error = str(e)
            log.error("model not loaded: %s", e)
        else:
            self.model = model
            log.info(
                "model ready: version=%s digest=%s labels=%s",
                model.version,
                (model.manifest or {}).get("digest"),
                model.labels,
            )
        finally:
            self._done.set()

    def start(self, background: bool) -> None:
        if background:
            threading.Thread(target=self.load, name="model-loader", daemon=True).start()
        else:
            self.load()

    def wait(self, timeout: float) -> bool:
        """Wait until loading finished (ready or failed); True if it finished in time."""
        return self._done.wait(timeout)
