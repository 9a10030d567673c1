"""Calibration records on disk: one JSON file holding the recorded runs, appended run by run."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RECORDS_FORMAT = "quadtree-tile-teacache-records"
RECORD_KEYS = ("sigma", "uuid", "input_change", "output_change")


def read_records(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a records file; raise with the path and the remedy when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"TeaCache calibration records {path} not found; run a workflow with 'TeaCache Calibrate (Qwen-Image)' "
            "using this records name first"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"TeaCache calibration records {path} is not valid JSON ({e}); delete it and record again"
        ) from e
    if not isinstance(doc, dict) or doc.get("format") != RECORDS_FORMAT or not isinstance(doc.get("runs"), list):
        raise ValueError(
            f"TeaCache calibration records {path} is not a records file (expected format '{RECORDS_FORMAT}' "
            "with a 'runs' list); delete it and record again"
        )
    for i, run in enumerate(doc["runs"]):
        recs = run.get("records") if isinstance(run, dict) else None
        valid = isinstance(recs, list) and all(isinstance(r, dict) and all(k in r for k in RECORD_KEYS) for r in recs)
        if not valid:
            raise ValueError(
                f"TeaCache calibration records {path}: run {i} has no valid 'records' list of {RECORD_KEYS}; "
                "delete the file and record again"
            )
    return doc


def append_run(path: str | os.PathLike, run: dict[str, Any]) -> int:
    """Append one recorded run to the file (created when absent); return how many runs it now holds."""
    path = Path(path)
    doc = read_records(path) if path.exists() else {"format": RECORDS_FORMAT, "version": 1, "runs": []}
    doc["runs"].append(run)
    write_json(path, doc)
    return len(doc["runs"])


def write_json(path: str | os.PathLike, doc: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename) so an interrupted write never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
