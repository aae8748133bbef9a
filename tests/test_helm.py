"""The Helm chart in helm/argusrank: lint, render offline, validate, check the wiring.

Helm itself comes from the ``helm-python-sdk`` wheel (Helm v4 Go SDK in a shared library,
``test`` extra): ``helm.lint`` is ``helm lint`` and ``Chart.render`` is ``helm template``.
Rendered manifests are validated with ``jsonschema`` against the KubeRay CRD schemas and the
Kubernetes schemas vendored in helm/schemas (see its README). No cluster is needed.
"""
from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import helm_python as helm  # the `test` extra: helm-python-sdk
import jsonschema
import pytest
import yaml

from argusrank.platform import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "argusrank"
SCHEMAS = ROOT / "helm" / "schemas"
SERVE_YAML = ROOT / "platform" / "serve.yaml"
PLATFORM_ENV = {cfgmod.ENV_CONFIG, cfgmod.ENV_HOME, cfgmod.ENV_TRACKING_URI, cfgmod.ENV_REDIS_URL}
STEPS = ["pretrain", "finetune", "promote", "export", "materialize"]


def render(values: dict | None = None, namespace: str = "ml") -> list[dict]:
    """``helm template demo helm/argusrank -n ml`` -> the parsed manifests."""
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values or {}, name="demo", namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith(".txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.protocols.Validator]:
    k8s = json.loads((SCHEMAS / "kubernetes-v1.33.0.json").read_text())
    kuberay = yaml.safe_load((SCHEMAS / "kuberay-v1.yaml").read_text())
    defs = {**k8s["$defs"], **kuberay["$defs"]}
    roots = {**k8s["kinds"], "RayService": "RayService", "RayJob": "RayJob"}
    out = {}
    for kind, name in roots.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": f"#/$defs/{name}", "$defs": defs}
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema)
    return out


def assert_valid(validators, doc: dict) -> None:
    errors = sorted(validators[doc["kind"]].iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{doc['kind']} {doc['metadata']['name']}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors[:5]
    )


def ray_containers(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# --- helm lint / template -----------------------------------------------------------------

def test_helm_lint_strict_has_no_errors_or_warnings():
    report = helm.lint(CHART, strict=True)
    assert report["total_charts_linted"] == 1
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report["errors"], report


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"rayJob": {"enabled": True}},
        {  # external Redis + external MLflow, shared claim, credentials secret
            "redis": {"enabled": False, "existingUrl": "redis.prod:6379,password=s3cret"},
            "mlflow": {"enabled": False, "externalUri": "http://mlflow.tools:5000", "artifactCredentialsSecret": "s3-creds"},
            "home": {"existingClaim": "argusrank-home"},
            "rayJob": {"enabled": True, "steps": ["finetune", "export", "materialize"]},
            "imagePullSecrets": [{"name": "regcred"}],
        },
    ],
    ids=["defaults", "rayjob", "external-services"],
)
def test_rendered_manifests_validate_against_schemas(validators, values):
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert kinds <= set(validators), f"no vendored schema for {kinds - set(validators)}"
    for doc in docs:
        assert_valid(validators, doc)
    assert ("RayJob" in kinds) == values.get("rayJob", {}).get("enabled", False)
    assert ("Deployment" in kinds) == (values.get("redis", {}).get("enabled", True) or values.get("mlflow", {}).get("enabled", True))


def test_schemas_reject_broken_manifests(validators):
    """The validators bite: a typo'd container field or a worker group without bounds fails."""
    docs = render({"rayJob": {"enabled": True}})
    rs = copy.deepcopy(by_kind(docs, "RayService")[0])
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("minReplicas")
    assert not validators["RayService"].is_valid(rs)
    rj = copy.deepcopy(by_kind(docs, "RayJob")[0])
    rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "x"
    assert not validators["RayJob"].is_valid(rj)
    dep = copy.deepcopy(by_kind(docs, "Deployment")[0])
    dep["spec"]["replicas"] = "two"
    assert not validators["Deployment"].is_valid(dep)
    rs2 = copy.deepcopy(by_kind(docs, "RayService")[0])
    rs2["spec"]["serveConfigV2"] = {"applications": []}  # must be a string
    assert not validators["RayService"].is_valid(rs2)


# --- Serve config ---------------------------------------------------------------------------

def test_rayservice_embeds_the_repo_serve_yaml():
    repo_text = SERVE_YAML.read_text()
    assert (CHART / "files" / "serve.yaml").read_text() == repo_text, (
        "helm/argusrank/files/serve.yaml differs from platform/serve.yaml: cp platform/serve.yaml helm/argusrank/files/"
    )
    (rs,) = by_kind(render(), "RayService")
    assert rs["spec"]["serveConfigV2"] == repo_text
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "argusrank.platform.serve_app:build_app"


# --- wiring: env vars, config, commands -------------------------------------------------------

def _env_of(container: dict, secrets: dict[str, dict]) -> dict[str, str]:
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    return env


@pytest.mark.parametrize("values", [{}, {"redis": {"enabled": False, "existingUrl": "r.prod:6380"}, "mlflow": {"enabled": False, "externalUri": "http://mlflow.tools:5000"}}])
def test_argusrank_pods_get_exactly_the_env_config_py_reads(tmp_path, values):
    docs = render({**values, "rayJob": {"enabled": True}})
    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind(docs, "Secret")}
    (cm,) = by_kind(docs, "ConfigMap")
    cfg_file = tmp_path / "argusrank.yaml"
    cfg_file.write_text(cm["data"]["argusrank.yaml"])
    containers = [c for d in by_kind(docs, "RayService") + by_kind(docs, "RayJob") for c in ray_containers(d)]
    assert len(containers) == 4
    for c in containers:
        env = _env_of(c, secrets)
        assert set(env) == PLATFORM_ENV, c["name"]
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert str(Path(env[cfgmod.ENV_CONFIG]).parent) in mounts and env[cfgmod.ENV_HOME] in mounts
        # the platform accepts the ConfigMap's config with this env (real load_config)
        cfg = cfgmod.load_config(cfg_file, env={**env, cfgmod.ENV_CONFIG: str(cfg_file)})
        assert cfg.paths.home == Path(env[cfgmod.ENV_HOME])
        assert cfg.tracking_uri == env[cfgmod.ENV_TRACKING_URI]
        assert cfg.features.online_store == "redis" and cfg.features.redis_url == env[cfgmod.ENV_REDIS_URL]
    expected_redis = "r.prod:6380" if values else "demo-argusrank-redis.ml.svc:6379"
    assert cfg.features.redis_url == expected_redis
    fs = yaml.safe_load(cm["data"]["feature_store.yaml"])
    assert fs["online_store"] == {"type": "redis", "connection_string": expected_redis}
    assert fs["registry"] == str(cfg.paths.feature_repo / "registry.db")  # where features/store.py keeps it


def test_redis_password_stays_in_the_secret():
    docs = render({"redis": {"enabled": False, "existingUrl": "redis.prod:6379,password=s3cret"}})
    (cm,) = by_kind(docs, "ConfigMap")
    assert "s3cret" not in json.dumps(cm)
    (secret,) = by_kind(docs, "Secret")
    assert secret["stringData"]["redis-url"] == "redis.prod:6379,password=s3cret"


def test_mlflow_server_command_and_service():
    docs = render({"mlflow": {"backendStoreUri": "postgresql://u:pw@db:5432/mlflow", "artifactsDestination": "s3://bucket/mlflow"}})
    (dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "demo-argusrank-mlflow"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = c["command"] + c["args"]
    assert args[:2] == ["mlflow", "server"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    assert "--artifacts-destination=s3://bucket/mlflow" in args
    (env,) = c["env"]
    assert env["name"] == "MLFLOW_BACKEND_STORE_URI" and env["valueFrom"]["secretKeyRef"]["key"] == "backend-store-uri"
    (secret,) = by_kind(docs, "Secret")
    assert secret["stringData"]["backend-store-uri"] == "postgresql://u:pw@db:5432/mlflow"
    assert "pw@" not in json.dumps(dep)
    (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "demo-argusrank-mlflow"]
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    hosts = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert "demo-argusrank-mlflow:*" in hosts  # the Host header clients send through the Service
    # the tracking URI handed to Ray pods points at this Service and port
    (rs,) = by_kind(docs, "RayService")
    uri = next(e["value"] for e in ray_containers(rs)[0]["env"] if e["name"] == cfgmod.ENV_TRACKING_URI)
    assert uri == f"http://demo-argusrank-mlflow.ml.svc:{svc['spec']['ports'][0]['port']}"


def test_rayjob_runs_real_argusrank_commands_on_gpu_workers(tmp_path):
    values = {
        "rayJob": {
            "enabled": True,
            "steps": ["pretrain", "finetune"],
            "sets": ["train.epochs=5"],
            "gpuWorkers": {"replicas": 2, "gpusPerWorker": 4, "nodeSelector": {"pool": "a100"},
                           "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        }
    }
    (rj,) = by_kind(render(values), "RayJob")
    commands = [shlex.split(part) for part in rj["spec"]["entrypoint"].split(" && ")]
    assert [c[:2] for c in commands] == [["argusrank", "pretrain"], ["argusrank", "finetune"]]
    from typer.main import get_command

    from argusrank.platform.cli import app

    cli = get_command(app)
    for argv in commands:
        assert argv[1] in cli.commands, f"`argusrank {argv[1]}` is not a command of platform/cli.py"
        assert argv[2:4] == ["--config", "/etc/argusrank/argusrank.yaml"]
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        assert sets == ['train.use_gpu="true"', "train.num_workers=8", "train.epochs=5"]
        cfg = cfgmod.load_config(None, sets, env={})  # the overrides are valid config
        assert (cfg.train.use_gpu, cfg.train.num_workers, cfg.train.epochs) == (True, 8, 5)
    (group,) = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "a100"}  # maps merge with defaults
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_unknown_rayjob_step_fails_to_render():
    with pytest.raises(helm.HelmError, match="unknown argusrank command \"train\""):
        render({"rayJob": {"enabled": True, "steps": ["pretrain", "train"]}})


def test_every_allowed_step_is_documented_in_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = (CHART / "values.yaml").read_text()
    assert set(values["rayJob"]["steps"]) <= set(STEPS)
    assert all(s in text for s in STEPS)
    assert (CHART / "templates" / "rayjob.yaml").read_text().count(" ".join(f'"{s}"' for s in STEPS)) == 1
