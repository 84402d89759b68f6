"""The data scientist's side: train an Iris classifier, export it to ONNX, optionally publish it.

    python train.py --out model/                                     # write the model folder
    python train.py --out model/ --publish az://models/iris --version 3   # ... and publish it as version 3

The model folder holds ``model.onnx`` (no pickle: the app only needs onnxruntime), ``labels.json``
(class names in output order) and ``metrics.json`` (accuracy on a held-out split). Training is
deterministic: the same code and library versions give byte-identical files, so a re-run does not
produce a "new" model by accident.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

RANDOM_STATE = 0
TEST_SIZE = 0.25
# Pinned so a skl2onnx upgrade does not silently change the graph the image's onnxruntime must run.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "input"


@dataclass(frozen=True)
class Trained:
    pipeline: Pipeline
    labels: list[str]
    feature_names: list[str]
    metrics: dict[str, object]


def train(random_state: int = RANDOM_STATE, c: float = 1.0, flip_labels: float = 0.0) -> Trained:
    """Fit scaler + logistic regression (inverse regularisation ``c``) on a stratified split of Iris;
    score on the held-out part. ``flip_labels``: that share of the training labels replaced by a wrong class
    (seeded), what a broken labelling job does: the model the nightly gate must stop."""
    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=TEST_SIZE, random_state=random_state, stratify=iris.target
    )
    if flip_labels:
        rng = np.random.default_rng(random_state)
        flipped = rng.choice(len(y_train), round(flip_labels * len(y_train)), replace=False)
        y_train = y_train.copy()
        y_train[flipped] = (y_train[flipped] + rng.integers(1, 3, len(flipped))) % 3
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=random_state))
    pipe.fit(x_train.astype(np.float32), y_train)
    accuracy = float(accuracy_score(y_test, pipe.predict(x_test.astype(np.float32))))
    metrics = {
        "accuracy": round(accuracy, 6),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "estimator": "StandardScaler+LogisticRegression",
        "random_state": random_state,
        "C": c,
        "sklearn_version": sklearn.__version__,
    }
    if flip_labels:
        metrics["flip_labels"] = flip_labels
    return Trained(pipe, [str(n) for n in iris.target_names], list(iris.feature_names), metrics)


def export(trained: Trained, out: str | Path) -> Path:
    """Write model.onnx, labels.json and metrics.json into ``out`` (created if needed)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clf = trained.pipeline.steps[-1][1]
    onx = to_onnx(
        trained.pipeline,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(trained.feature_names)]))],
        # zipmap off: probabilities come out as a plain float tensor [N, classes], not a list of dicts
        options={id(clf): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    (out / "labels.json").write_text(json.dumps(trained.labels) + "\n")
    (out / "metrics.json").write_text(json.dumps(trained.metrics, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--publish", metavar="URI", help="model store prefix to publish to, e.g. az://models/iris")
    ap.add_argument("--version", help="version to publish as (required with --publish)")
    ap.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength (default 1.0)")
    ap.add_argument(
        "--flip-labels", type=float, default=0.0, metavar="SHARE", help="train on this share of wrong labels (0.1)"
    )
    ap.add_argument("--sign-key", metavar="KEY.pem", help="sign the published version with this private key")
    ap.add_argument("--force", action="store_true", help="replace the version if it already exists")
    args = ap.parse_args(argv)
    if args.publish and not args.version:
        ap.error("--publish needs --version")
    if args.sign_key and not args.publish:
        ap.error("--sign-key signs what --publish publishes")

    trained = train(c=args.c, flip_labels=args.flip_labels)
    out = export(trained, args.out)
    print(f"trained: accuracy {trained.metrics['accuracy']:.3f} on {trained.metrics['n_test']} held-out samples")
    print(f"wrote {out}/model.onnx, labels.json, metrics.json")
    if args.publish:
        import modelship
        from modelship.errors import ModelshipError

        try:
            published = modelship.publish(
                out, args.publish, version=args.version, force=args.force, sign_key=args.sign_key
            )
        except ModelshipError as e:
            print(f"train.py: error: {e}", file=sys.stderr)
            return e.exit_code
        print(f"published {published.uri} version {published.version} ({published.model_digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
