"""Request validation: turn a decoded JSON body into a float32 matrix, or say precisely what is wrong."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class InvalidInput(Exception):
    """Bad client input; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_input") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind


def parse_instances(body: Any, n_features: int, max_instances: int) -> np.ndarray:
    """``{"instances": [[f1, ..., fn], ...]}`` -> float32 array [N, n]; finite numbers only."""
    if not isinstance(body, dict):
        raise InvalidInput('body must be a JSON object like {"instances": [[...], ...]}')
    unknown = set(body) - {"instances"}
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}; the body takes only 'instances'")
    instances = body.get("instances")
    if not isinstance(instances, list):
        raise InvalidInput("'instances' must be a list of feature lists")
    if not instances:
        raise InvalidInput("'instances' is empty; send at least one")
    if len(instances) > max_instances:
        raise InvalidInput(
            f"{len(instances)} instances in one request; the limit is {max_instances}, split the batch",
            status=413,
            kind="too_many_instances",
        )
    rows: list[list[float]] = []
    for i, row in enumerate(instances):
        if not isinstance(row, list):
            raise InvalidInput(f"instances[{i}] must be a list of {n_features} numbers")
        if len(row) != n_features:
            raise InvalidInput(f"instances[{i}] has {len(row)} values; the model takes {n_features}")
        values: list[float] = []
        for j, v in enumerate(row):
            # bool is an int subclass in Python, but `true` is not a measurement
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidInput(f"instances[{i}][{j}] is {type(v).__name__}, not a number")
            try:
                f = float(v)  # an integer literal with 400 digits is a valid JSON number, but no float
            except OverflowError:
                f = math.inf
            if not math.isfinite(f):
                raise InvalidInput(f"instances[{i}][{j}] is not a finite number; only finite numbers are accepted")
            values.append(f)
        rows.append(values)
    x = np.asarray(rows, dtype=np.float64)
    # finite as float64 but beyond float32's range (e.g. 1e39) would become inf in the model
    if np.any(np.abs(x) > np.finfo(np.float32).max):
        raise InvalidInput("a value is outside the float32 range the model takes")
    return x.astype(np.float32)
