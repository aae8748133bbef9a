"""The report page: one self-contained HTML file (inline CSS, figures as base64 PNG, no script,
no network), rendered from :func:`argusrank.platform.report.collect`'s dict."""
from __future__ import annotations

import base64
import html
import io
import math
import time
from typing import Any

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.note{color:#777;font-style:italic}
img{max-width:100%;display:block;margin:.6em 0}code{background:#f4f4f4;padding:1px 4px}"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def table(rows: list[dict[str, Any]], cols: list[str] | None = None) -> str:
    """An HTML table of ``rows`` (every value escaped)."""
    if not rows:
        return ""
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def figure(fig, alt: str) -> str:
    """A matplotlib figure as an ``<img>`` with a base64 PNG data URI (then closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_figure(stage: str, series: dict[str, list[tuple[int, float]]]) -> str:
    plt = _plt()
    keys = list(series)[:9]
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs, ys = zip(*series[key])
        ax.plot(xs, ys, marker="o" if len(xs) < 50 else None)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step" if key.startswith(("step_", "lr")) else "epoch", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return figure(fig, f"{stage} curves")


def bars_figure(title: str, labels: list[str], values: list[float], ylabel: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(labels, values, color=["tab:gray", "tab:red", "tab:green", "tab:blue", "tab:orange"][: len(labels)])
    lo = min(values)
    ax.set_ylim(max(0.0, lo - (max(values) - lo) * 1.5 - 0.01), max(values) * 1.02)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.4f}", (i, v), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return figure(fig, title)


def scaling_figure(rows: list[dict], metric: str = "ndcg@10") -> str:
    plt = _plt()
    pts = [(math.log10(r["n_parameters"]), r.get(metric), r.get("preset", "")) for r in rows
           if r.get("n_parameters") and isinstance(r.get(metric), (int, float))]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
    for x, y, name in pts:
        ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("log10(encoder parameters)")
    ax.set_ylabel(metric)
    fig.tight_layout()
    return figure(fig, "scaling curve")


def latency_figure(rows: list[dict]) -> str:
    plt = _plt()
    rows = [r for r in rows if r.get("rate_rps") is not None][:16]
    labels = [f"{r['endpoint']} @{r['rate_rps']:.0f}" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r["p99_ms"] for r in rows], height=0.4, label="p99")
    ax.barh([i - 0.2 for i in y], [r["p50_ms"] for r in rows], height=0.4, label="p50")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.set_xlabel("ms")
    ax.legend()
    fig.tight_layout()
    return figure(fig, "serving latency")


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def render(data: dict[str, Any]) -> str:
    """The whole page."""
    parts = []
    ds = data.get("dataset")
    parts.append(_section("Dataset", table([{"stat": k, "value": v} for k, v in ds.items()]) if ds else
                          note("no dataset yet: run `argusrank demo` or `argusrank data synth`.")))
    cur = data.get("curves") or {}
    body = "".join(f"<h3>{s}</h3>" + (curves_figure(s, c) if c else note(f"{s}: no per-epoch history logged."))
                   for s, c in cur.items())
    parts.append(_section("Pre-training and fine-tuning curves", body or note("no training run yet.")))
    ev = data.get("evaluation") or []
    body = table(ev, ["model", "ndcg@10", "recall@10", "ndcg@100", "recall@100", "mrr", "pair_accuracy", "run"])
    pts = [(r["model"], r["ndcg@10"]) for r in ev if isinstance(r.get("ndcg@10"), (int, float))]
    if len(pts) > 1:
        body += bars_figure("NDCG@10 (temporal split, full catalog)", [p[0] for p in pts], [p[1] for p in pts], "NDCG@10")
    if not any(r["model"] == "popularity" for r in ev):
        body += note("popularity baseline not evaluated (`argusrank evaluate --model popularity`).")
    if not any(r["model"].startswith("SASRec") for r in ev):
        body += note("SASRec ablation not run (`argusrank quality --model sasrec`).")
    parts.append(_section("Evaluation", body if ev else note("no evaluation yet.")))
    up = data.get("uplift")
    if up:
        dot_only = up.get("pair_accuracy_dot") is None  # a ranker run from before the ARGUS feature set
        rows = [{"ranker": "baseline features", "PairAccuracy": up.get("pair_accuracy_base"), "NDCG": up.get("ndcg_base")},
                {"ranker": "+ ARGUS dot product", "PairAccuracy": up.get("pair_accuracy_argus" if dot_only else
                                                                       "pair_accuracy_dot"),
                 "NDCG": up.get("ndcg_argus" if dot_only else "ndcg_dot")},
                {"ranker": "+ ARGUS features (the registered ranker)", "PairAccuracy": None if dot_only else
                 up.get("pair_accuracy_argus"), "NDCG": up.get("ndcg_argus")},
                {"ranker": "ARGUS dot alone", "PairAccuracy": up.get("argus_dot_pair_accuracy"), "NDCG": None},
                {"ranker": "oracle (true affinity)", "PairAccuracy": up.get("oracle_pair_accuracy"), "NDCG": None}]
        rows = [r for r in rows if r["PairAccuracy"] is not None]
        body = table(rows) + f"<p>relative PairAccuracy uplift: <b>{_fmt((up.get('uplift_rel') or 0) * 100)} %</b></p>"
        body += bars_figure("final ranker PairAccuracy (held-out requests)", [r["ranker"] for r in rows],
                            [r["PairAccuracy"] for r in rows], "PairAccuracy")
    parts.append(_section("Final-ranker uplift", body if up else note("no ranker run yet (`argusrank ranker train`).")))
    cand = data.get("candidates") or []
    parts.append(_section("Candidate recall (test-window positives, per source)", table(cand) if cand else
                          note("not measured: `argusrank evaluate --candidates` (the demo's candidates stage).")))
    rec = data.get("recall") or []
    parts.append(_section("ANN index recall", table(rec, ["n_items", "index", "ef_search", "recall", "ms_per_query",
                                                          "p99_ms", "source"]) if rec else
                          note("not measured: `python bench/ann.py --json <home>/bench/ann.json`.")))
    sc = data.get("scaling") or []
    parts.append(_section("Scaling curve", scaling_figure(sc) + table(sc, ["preset", "n_parameters", "ndcg@10",
                                                                            "train_seconds"]) if sc else
                          note("not run: `argusrank scaling`.")))
    lat = data.get("latency") or []
    parts.append(_section("Serving latency", latency_figure(lat) + table(
        lat, ["endpoint", "rate_rps", "requests", "errors", "throughput_rps", "p50_ms", "p99_ms", "source"]) if lat else
        note("not measured: `python bench/load_serve.py --json <home>/bench/load_serve.json`.")))
    ver = data.get("versions") or []
    parts.append(_section("Model versions and lineage", table(ver, ["model", "version", "aliases", "stage", "source run",
                                                                    "lineage"]) if ver else
                          note("no registered model yet.")))
    head = (f"<p>home <code>{html.escape(data.get('home', ''))}</code> · MLflow <code>"
            f"{html.escape(data.get('tracking_uri', ''))}</code> (experiment {html.escape(data.get('experiment', ''))})"
            f" · written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>argusrank report</title><style>{CSS}</style>"
            f"</head><body><h1>argusrank report</h1>{head}{''.join(parts)}</body></html>")
