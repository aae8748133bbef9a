"""Import Feast without typeguard's import-time instrumentation of Feast's own classes.

Feast 0.67 decorates its definition classes (``FeatureView``, ``OnDemandFeatureView``, ``DataSource``, ...)
with typeguard 4's ``@typechecked``, which re-parses and recompiles the *whole* defining module once per
method: ~2,250 ``compile`` calls, 5-9 s of every process that imports Feast on a 2-core box (the Serve
replicas, the CLI, Ray workers). typeguard itself treats this as a debug aid: the decorator is a no-op under
``python -O``. This module gives Feast's classes that treatment alone (every other ``@typechecked`` target is
instrumented as before), so ``import feast`` costs ~3 s instead of ~8 s here.

``ARGUSRANK_FEAST_TYPECHECKS=1`` keeps the instrumentation (Feast then type-checks its constructors'
arguments at run time, as with a plain ``import feast``). Installed from ``argusrank.features`` (every
argusrank path to Feast goes through it) before Feast is imported; a no-op once Feast is already loaded.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any

ENV_KEEP = "ARGUSRANK_FEAST_TYPECHECKS"


def _is_feast(target: Any) -> bool:
    module = getattr(target, "__module__", None) or ""
    return module == "feast" or module.startswith("feast.")


def skip_feast_typechecks() -> bool:
    """Make ``typeguard.typechecked`` return Feast's classes and functions unchanged; returns whether it did."""
    if os.environ.get(ENV_KEEP) == "1" or "feast" in sys.modules:
        return False
    try:
        import typeguard
    except ImportError:  # no Feast installed with it: nothing to skip
        return False
    original = typeguard.typechecked
    if getattr(original, "_argusrank_skips_feast", False):
        return True

    @functools.wraps(original)
    def typechecked(target: Any = None, **kwargs: Any) -> Any:
        if target is None:  # @typechecked(...) with options
            return lambda t: typechecked(t, **kwargs)
        if _is_feast(target):
            return target
        return original(target, **kwargs)

    typechecked._argusrank_skips_feast = True  # type: ignore[attr-defined]
    typeguard.typechecked = typechecked
    return True
