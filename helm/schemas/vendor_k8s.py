"""Regenerate ``kubernetes-<version>.json`` from the ``kubernetes-validate`` wheel.

The wheel (PyPI, Apache-2.0) ships the Kubernetes OpenAPI definitions as JSON
schema. This keeps only the definitions reachable from the kinds the chart
renders, drops descriptions (not used for validation) and writes one bundle:

    pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv
    python helm/schemas/vendor_k8s.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl
"""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

VERSION = "v1.33.0"
ROOTS = {  # kind -> definition name
    "Deployment": "io.k8s.api.apps.v1.Deployment",
    "Service": "io.k8s.api.core.v1.Service",
    "ConfigMap": "io.k8s.api.core.v1.ConfigMap",
    "Secret": "io.k8s.api.core.v1.Secret",
    "PodTemplateSpec": "io.k8s.api.core.v1.PodTemplateSpec",
    "PersistentVolumeClaim": "io.k8s.api.core.v1.PersistentVolumeClaim",
    "NetworkPolicy": "io.k8s.api.networking.v1.NetworkPolicy",
}
PREFIX = "/api/_definitions.json#/$defs/"


def _strip(node):
    """Drop descriptions; point $refs into this bundle's $defs."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                continue
            if k == "$ref" and isinstance(v, str):
                out[k] = "#/$defs/" + v.removeprefix(PREFIX).removeprefix("#/$defs/")
                continue
            out[k] = _strip(v)
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node, acc: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                acc.add(v.rsplit("/", 1)[-1])
            else:
                _refs(v, acc)
    elif isinstance(node, list):
        for v in node:
            _refs(v, acc)


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        path = f"kubernetes_validate/kubernetes-json-schema/{VERSION}-local-strict/_definitions.json"
        defs = json.loads(zf.read(path))["$defs"]
    keep: dict[str, dict] = {}
    todo = list(ROOTS.values())
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = _strip(defs[name])
        found: set[str] = set()
        _refs(keep[name], found)
        todo.extend(found - keep.keys())
    bundle = {
        "$comment": f"Kubernetes {VERSION} definitions (strict: additionalProperties false) from the "
        "kubernetes-validate 1.37.0 wheel; descriptions removed. Regenerate with vendor_k8s.py.",
        "kinds": ROOTS,
        "$defs": dict(sorted(keep.items())),
    }
    out = Path(__file__).with_name(f"kubernetes-{VERSION}.json")
    out.write_text(json.dumps(bundle, indent=None, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {out} ({len(keep)} definitions, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
