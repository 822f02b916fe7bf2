"""Where a benchmark's figures go: printed as JSON and kept in bench/results/<kind>-<time>.json."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def publish(kind: str, results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(results, indent=1)
    (RESULTS / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(text)
    print(text)
