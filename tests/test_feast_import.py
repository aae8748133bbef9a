"""Feast imported through argusrank skips typeguard's import-time instrumentation of Feast's classes only
(features/feast_import.py); ARGUSRANK_FEAST_TYPECHECKS=1 keeps it. Each case runs in a fresh interpreter."""
from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json
import argusrank.features.store  # the path every argusrank process takes to Feast
from feast import FeatureView
from typeguard import TypeCheckError, typechecked

@typechecked
def half(x: int) -> int:
    return x // 2

try:
    half("two")
    others_checked = False
except TypeCheckError:
    others_checked = True
names = FeatureView.__init__.__code__.co_names
print(json.dumps({"feast_instrumented": "check_argument_types_internal" in names, "others_checked": others_checked}))
"""


def _probe(tmp_path, **env: str) -> dict:
    script = tmp_path / "probe.py"  # typeguard instruments from source: a file, not `python -c`
    script.write_text(PROBE)
    full = {k: v for k, v in os.environ.items() if k != "ARGUSRANK_FEAST_TYPECHECKS"}
    out = subprocess.run([sys.executable, str(script)], env={**full, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_feast_classes_skip_instrumentation_and_other_typechecked_code_keeps_it(tmp_path):
    assert _probe(tmp_path) == {"feast_instrumented": False, "others_checked": True}


def test_the_environment_switch_keeps_feasts_instrumentation(tmp_path):
    assert _probe(tmp_path, ARGUSRANK_FEAST_TYPECHECKS="1") == {"feast_instrumented": True, "others_checked": True}
