"""Where a bench writes its JSON: ``--json -`` prints one object on the last stdout line, a path writes a file."""
from __future__ import annotations

import json
from pathlib import Path


def emit_json(doc: dict, dest: str | None) -> None:
    """Write ``doc`` to ``dest`` (``-``: stdout, one line; None: nowhere)."""
    if dest == "-":
        print(json.dumps(doc, default=str))
    elif dest:
        Path(dest).write_text(json.dumps(doc, indent=1, default=str))
