"""Result files: strict JSON (no NaN/Infinity), written atomically (temp file in the same
folder, then rename).

Python's :mod:`json` writes ``NaN`` and ``Infinity`` by default, which are not JSON: browsers,
``jq`` and most other languages' parsers reject such a file. Every JSON file covtl writes goes
through :func:`dumps_json`, which writes a non-finite float as ``null`` and fails loudly
(``allow_nan=False``) on anything it did not convert. Readers turn ``null`` back into NaN where
they expect a number (:func:`json_float`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["dumps_json", "json_float", "strict_json", "write_json_atomic"]


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf; also numpy floats) replaced by ``None``.

    Mappings, lists and tuples are converted recursively (tuples become lists, as JSON writes
    them); anything else is returned as is.
    """
    if isinstance(obj, float):  # numpy.float64 is a float subclass
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "dtype") and obj.dtype.kind == "f":
        v = float(obj)  # numpy.float32/float16 scalars
        return v if math.isfinite(v) else None
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` (``obj``) with ``allow_nan=False``: strict JSON or an error."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def json_float(value: Any) -> float:
    """A number read from a covtl JSON file as a float: ``null`` (a NaN or inf when written) is NaN."""
    return float("nan") if value is None else float(value)


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as strict JSON to ``path`` (NaN/inf as ``null``, see :func:`strict_json`);
    a crash mid-write leaves any old file intact."""
    path = Path(path)
    text = dumps_json(obj, indent=2, sort_keys=False) + "\n"  # before the temp file: an error leaves nothing
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
