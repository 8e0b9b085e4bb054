"""JSON that every parser reads: NaN and infinities are written as ``null``.

Python's ``json`` writes them as the bare words ``NaN`` and ``Infinity``, which are not
JSON (``jq``, browsers and most languages refuse the whole document). A metric that was
NaN is recorded, listed and reported as ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (inside lists, tuples and dicts too) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    return json.dumps(finite(value), allow_nan=False, **options)
