"""MLproject entry points of the feature platform: export, materialize, ranker.

Same parameter conventions as steps.py (home, config, sets, data); each calls one
stage function (platform/export.py, features/store.py, platform/ranker_job.py)
inside the entry point's MLflow run and prints its result as one JSON line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from steps import config_from_args, step_parser  # same folder: the MLproject runs here


def main(argv: list[str] | None = None) -> dict:
    ap = step_parser("feature_steps.py", ["export", "materialize", "ranker"])
    ap.add_argument("--full", default="false")
    a = ap.parse_args(argv)
    cfg = config_from_args(a)

    from argusrank.platform.pipeline import dataset_dir
    from argusrank.platform.tracking import start_run

    data = Path(a.data).resolve() if a.data else dataset_dir(cfg)
    if a.step == "export":
        from argusrank.platform.export import export_vectors

        out = export_vectors(cfg, data, model_ref=int(a.model) if a.model.isdigit() else a.model)
    elif a.step == "materialize":
        import mlflow

        from argusrank.features.store import materialize

        with start_run(cfg, "materialize"):
            out = materialize(cfg, full=a.full.lower() in ("1", "true", "yes"))
            mlflow.log_metrics({"rows": out["rows"], "rows_per_s": out["rows_per_s"]})
            mlflow.log_dict(out, "materialize.json")
    else:
        from argusrank.platform.ranker_job import train_rankers

        out = train_rankers(cfg, data)
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
