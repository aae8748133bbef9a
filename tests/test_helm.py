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
import stat
import subprocess
import sys
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
STEPS = ["pretrain", "finetune", "promote", "export", "materialize", "ranker"]


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
    return [c for pod in ray_pods(doc) for c in pod["containers"]]


def ray_pods(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [g["template"]["spec"] for g in groups]


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    """Every pod template the release creates, by name: Deployments and Ray head/worker groups."""
    out = {}
    for d in docs:
        if d["kind"] == "Deployment":
            out[d["metadata"]["name"]] = d["spec"]["template"]
        elif d["kind"] in ("RayService", "RayJob"):
            spec = d["spec"].get("rayClusterConfig") or d["spec"]["rayClusterSpec"]
            out[f"{d['metadata']['name']}/head"] = spec["headGroupSpec"]["template"]
            for g in spec.get("workerGroupSpecs", []):
                out[f"{d['metadata']['name']}/{g['groupName']}"] = g["template"]
    return out


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
        {  # NetworkPolicy peers, PVC options, fixed Redis password, no autoscaler
            "networkPolicy": {"extraIngressFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]},
            "mlflow": {"persistence": {"size": "50Gi", "storageClass": "-", "accessModes": ["ReadWriteOncePod"]}},
            "redis": {"password": "Secr3t-pw"},
            "rayService": {"enableInTreeAutoscaling": False},
            "rayJob": {"enabled": True, "sets": ["train.epochs=3'; rm -rf / ;'"]},
        },
    ],
    ids=["defaults", "rayjob", "external-services", "security-options"],
)
def test_rendered_manifests_validate_against_schemas(validators, values):
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert kinds <= set(validators), f"no vendored schema for {kinds - set(validators)}"
    for doc in docs:
        assert_valid(validators, doc)
    assert ("RayJob" in kinds) == values.get("rayJob", {}).get("enabled", False)
    assert ("Deployment" in kinds) == (values.get("redis", {}).get("enabled", True) or values.get("mlflow", {}).get("enabled", True))
    assert ("NetworkPolicy" in kinds) == ("Deployment" in kinds)
    assert ("PersistentVolumeClaim" in kinds) == values.get("mlflow", {}).get("enabled", True)


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
    np = copy.deepcopy(by_kind(docs, "NetworkPolicy")[0])
    np["spec"]["ingress"][0]["from"][0]["podSelectorr"] = np["spec"]["ingress"][0]["from"][0].pop("podSelector")
    assert not validators["NetworkPolicy"].is_valid(np)
    pvc = copy.deepcopy(by_kind(docs, "PersistentVolumeClaim")[0])
    pvc["spec"]["resources"]["requests"] = "10Gi"  # must be a map
    assert not validators["PersistentVolumeClaim"].is_valid(pvc)
    rs3 = copy.deepcopy(by_kind(docs, "RayService")[0])
    rs3["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = "yes"
    assert not validators["RayService"].is_valid(rs3)


# --- Serve config ---------------------------------------------------------------------------

def test_rayservice_embeds_the_repo_serve_yaml_with_the_cluster_host():
    """platform/serve.yaml binds loopback (`serve run` on a laptop); the chart embeds it with
    only http_options.host swapped for rayService.serveHost (0.0.0.0: the serve Service must
    reach the proxies on the pod IP)."""
    repo_text = SERVE_YAML.read_text()
    assert (CHART / "files" / "serve.yaml").read_text() == repo_text, (
        "helm/argusrank/files/serve.yaml differs from platform/serve.yaml: cp platform/serve.yaml helm/argusrank/files/"
    )
    assert yaml.safe_load(repo_text)["http_options"]["host"] == "127.0.0.1"
    for values, host in [({}, "0.0.0.0"), ({"rayService": {"serveHost": "::"}}, "::")]:
        (rs,) = by_kind(render(values), "RayService")
        embedded = rs["spec"]["serveConfigV2"]
        serve = yaml.safe_load(embedded)
        assert serve["http_options"]["host"] == host
        changed = [(a, b) for a, b in zip(repo_text.splitlines(), embedded.splitlines(), strict=True) if a != b]
        assert len(changed) == 1 and changed[0][0].lstrip().startswith("host: 127.0.0.1"), changed
        expected = yaml.safe_load(repo_text)
        expected["http_options"]["host"] = host
        assert serve == expected
    (app,) = serve["applications"]
    module, _, attr = app["import_path"].partition(":")  # a builder of this repo's platform package
    assert module.startswith("argusrank.platform.") and attr == "build_app"
    source = ROOT / "platform" / (module.removeprefix("argusrank.platform.").replace(".", "/") + ".py")
    assert f"def {attr}(" in source.read_text(), app["import_path"]


# --- security: securityContext, NetworkPolicy, Redis password, MLflow volume -------------------

def test_every_pod_runs_as_non_root_with_a_restricted_security_context():
    docs = render({"rayJob": {"enabled": True}})
    pods = pod_templates(docs)
    assert set(pods) == {
        "demo-argusrank/head", "demo-argusrank/serve",  # RayService
        "demo-argusrank-train-1/head", "demo-argusrank-train-1/gpu",  # RayJob
        "demo-argusrank-redis", "demo-argusrank-mlflow",
    }
    for name, pod in pods.items():
        psc = pod["spec"]["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0, name
        assert isinstance(psc["fsGroup"], int), name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert csc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert csc.get("privileged") in (None, False) and csc.get("runAsUser", 1) != 0
    # the KubeRay autoscaler sidecar of the RayService head gets the same container context
    (rs,) = by_kind(docs, "RayService")
    assert rs["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"] == (
        pods["demo-argusrank/head"]["spec"]["containers"][0]["securityContext"])
    # no submitter pod outside these: the operator submits the RayJob over HTTP
    (rj,) = by_kind(docs, "RayJob")
    assert rj["spec"]["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in rj["spec"]
    # image users: rayproject/ray `ray` (1000:100), redis `redis` (999)
    assert pods["demo-argusrank/head"]["spec"]["securityContext"]["runAsUser"] == 1000
    assert pods["demo-argusrank-redis"]["spec"]["securityContext"]["runAsUser"] == 999


def test_security_contexts_are_configurable():
    docs = render({
        "rayJob": {"enabled": True},
        "podSecurityContext": {"runAsUser": 2000, "fsGroup": 3000},
        "containerSecurityContext": {"readOnlyRootFilesystem": True},
        "redis": {"podSecurityContext": {"runAsUser": 4000}},
        "mlflow": {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
    })
    pods = pod_templates(docs)
    for name, pod in pods.items():
        psc = pod["spec"]["securityContext"]
        assert psc["runAsUser"] == (4000 if name.endswith("-redis") else 2000), name
        assert psc["fsGroup"] == (1000 if name.endswith("-redis") else 3000), name
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
        (c,) = pod["spec"]["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is (not name.endswith("-mlflow")), name
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart uses matchLabels only
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_network_policies_admit_only_this_release_to_redis_and_mlflow():
    docs = render({"rayJob": {"enabled": True}})
    pods = pod_templates(docs)
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"demo-argusrank-redis", "demo-argusrank-mlflow"}
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    for name, policy in policies.items():
        spec = policy["spec"]
        # it selects exactly the Redis / MLflow pods
        selected = [n for n, pod in pods.items() if _matches(spec["podSelector"], pod["metadata"]["labels"])]
        assert selected == [name]
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]
        assert set(peer) == {"podSelector"}  # same namespace, no namespaceSelector / ipBlock
        # every pod of the release may connect (Ray head/workers of serving and training) ...
        assert all(_matches(peer["podSelector"], pod["metadata"]["labels"]) for pod in pods.values())
        # ... pods of another release or app may not
        for labels in ({**pods["demo-argusrank/head"]["metadata"]["labels"], "app.kubernetes.io/instance": "other"},
                       {"app": "debug"}, {}):
            assert not _matches(peer["podSelector"], labels)
        (port,) = rule["ports"]
        (svc_port,) = services[name]["spec"]["ports"]
        (c,) = pods[name]["spec"]["containers"]
        assert port == {"protocol": "TCP", "port": c["ports"][0]["containerPort"]}
        assert svc_port["targetPort"] == c["ports"][0]["name"]

    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")
    docs = render({"redis": {"enabled": False, "existingUrl": "r:6379"},
                   "networkPolicy": {"extraIngressFrom": [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}]}})
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["metadata"]["name"] == "demo-argusrank-mlflow"
    assert policy["spec"]["ingress"][0]["from"][1] == {"namespaceSelector": {"matchLabels": {"team": "ml"}}}


def _parse_feast_redis(connection_string: str):
    from feast.infra.online_stores.redis import RedisOnlineStore

    return RedisOnlineStore._parse_connection_string(connection_string)


def test_chart_redis_requires_the_password_from_the_secret():
    docs = render()
    (secret,) = by_kind(docs, "Secret")
    data = secret["stringData"]
    password = data["redis-password"]
    assert len(password) == 32 and password.isalnum()
    (dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "demo-argusrank-redis"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    # requirepass from the env var, which comes from the Secret (kubelet expands $(VAR) in args)
    assert c["args"][c["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    (env,) = c["env"]
    assert env["name"] == "REDIS_PASSWORD"
    assert env["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "redis-password"}
    # ARGUSRANK_REDIS_URL carries it in the form Feast's redis online store parses
    assert data["redis-url"] == f"demo-argusrank-redis.ml.svc:6379,password={password}"
    nodes, kwargs = _parse_feast_redis(data["redis-url"])
    assert nodes == [{"host": "demo-argusrank-redis.ml.svc", "port": "6379"}]
    assert kwargs == {"password": password}
    # only the Secret holds it
    for doc in docs:
        if doc["kind"] != "Secret":
            assert password not in json.dumps(doc), doc["kind"]

    fixed = "Secr3t-pw=x"  # a '=' is fine: Feast splits each item at the first '='
    (secret,) = by_kind(render({"redis": {"password": fixed}}), "Secret")
    assert secret["stringData"]["redis-password"] == fixed
    assert _parse_feast_redis(secret["stringData"]["redis-url"])[1] == {"password": fixed}


@pytest.mark.parametrize("bad", ["a,b", "with space", "12345", "1e5", "true", "null", '"quoted"', "[1]"])
def test_redis_passwords_feast_would_mangle_fail_to_render(bad):
    # Feast splits the connection string at ',' and json-decodes values: 12345 would be an int
    with pytest.raises(helm.HelmError, match="redis.password"):
        render({"redis": {"password": bad}})


def test_mlflow_backend_store_is_on_a_persistent_volume_claim():
    docs = render()
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "demo-argusrank-mlflow"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in pvc["spec"]
    (dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "demo-argusrank-mlflow"]
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # a ReadWriteOnce volume: no overlap
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (c,) = pod["containers"]

    def volume_holding(path: str) -> dict:
        mount = max((m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")),
                    key=lambda m: len(m["mountPath"]))
        return volumes[mount["name"]]

    (secret,) = by_kind(docs, "Secret")
    uri = secret["stringData"]["backend-store-uri"]
    assert uri.startswith("sqlite:////")
    db = "/" + uri.removeprefix("sqlite:////")
    assert volume_holding(db) == {"name": "data", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}
    artifacts = next(a for a in c["args"] if a.startswith("--artifacts-destination=")).split("=", 1)[1]
    assert volume_holding(artifacts + "/x")["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]

    # size / storageClass from values; "-" -> storageClassName "" (no dynamic provisioning)
    for sc, expected in [("fast-ssd", "fast-ssd"), ("-", "")]:
        (pvc,) = by_kind(render({"mlflow": {"persistence": {"size": "50Gi", "storageClass": sc}}}), "PersistentVolumeClaim")
        assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
        assert pvc["spec"]["storageClassName"] == expected
    # an existing claim: no PVC rendered, the Deployment mounts that one
    docs = render({"mlflow": {"persistence": {"existingClaim": "mlflow-data"}}})
    assert not by_kind(docs, "PersistentVolumeClaim")
    (dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "demo-argusrank-mlflow"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "mlflow-data"}} in dep["spec"]["template"]["spec"]["volumes"]
    # persistence off: an emptyDir, no PVC
    docs = render({"mlflow": {"persistence": {"enabled": False}}})
    assert not by_kind(docs, "PersistentVolumeClaim")
    (dep,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "demo-argusrank-mlflow"]
    assert {"name": "data", "emptyDir": {}} in dep["spec"]["template"]["spec"]["volumes"]


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
    if values:
        expected_redis = "r.prod:6380"
    else:  # the chart's Redis, with its password (Feast connection-string form)
        expected_redis = f"demo-argusrank-redis.ml.svc:6379,password={secrets['demo-argusrank']['redis-password']}"
    assert cfg.features.redis_url == expected_redis
    fs = yaml.safe_load(cm["data"]["feature_store.yaml"])
    # host:port only: the password stays in the Secret
    assert fs["online_store"] == {"type": "redis", "connection_string": expected_redis.split(",")[0]}
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


def _expected_argv(step: str, sets: list[str], gpus: int = 1) -> list[str]:
    command = ["ranker", "train"] if step == "ranker" else [step]
    argv = ["argusrank", *command, "--config", "/etc/argusrank/argusrank.yaml"]
    for s in ['train.use_gpu="true"', f"train.num_workers={gpus}", *sets]:
        argv += ["--set", s]
    return argv


def test_rayjob_sets_cannot_break_out_of_their_shell_quoting():
    evil = "train.epochs=3'; rm -rf / ;'"
    (rj,) = by_kind(render({"rayJob": {"enabled": True, "steps": ["pretrain"], "sets": [evil]}}), "RayJob")
    assert shlex.split(rj["spec"]["entrypoint"]) == _expected_argv("pretrain", [evil])
    # the entrypoint reaches the one shell that runs it (Ray's job supervisor, `sh -c`) unchanged:
    # no submitter pod re-parses it (K8sJobMode would paste it into its own `bash -c`)
    assert rj["spec"]["submissionMode"] == "HTTPMode"


SHELL_PAYLOADS = [
    "train.epochs=3'; touch pwned ;'",
    "a='b' && touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    'x="$HOME" \\ \'\' \n*?[a]',
    "",
    "with  two  spaces",
    "#not-a-comment",
]


def test_rayjob_entrypoint_runs_each_step_with_the_exact_sets_in_sh(tmp_path):
    """Execute the rendered entrypoint as Ray does (`sh -c`), with a stand-in `argusrank`
    that records its argv: every step runs, in order, with every value intact, and nothing
    in a value is executed."""
    (rj,) = by_kind(render({"rayJob": {"enabled": True, "steps": ["pretrain", "finetune"], "sets": SHELL_PAYLOADS}}), "RayJob")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "argusrank"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "open(os.environ['ARGV_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "argv.jsonl"
    work = tmp_path / "cwd"
    work.mkdir()
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ARGV_LOG": str(log), "HOME": str(tmp_path)}
    subprocess.run(["/bin/sh", "-c", rj["spec"]["entrypoint"]], cwd=work, env=env, check=True, timeout=60)
    runs = [["argusrank", *json.loads(line)] for line in log.read_text().splitlines()]
    assert runs == [_expected_argv("pretrain", SHELL_PAYLOADS), _expected_argv("finetune", SHELL_PAYLOADS)]
    assert not list(work.iterdir()) and not (tmp_path / "pwned").exists()


def test_rayjob_ranker_step_runs_ranker_train():
    """The `ranker` step is `argusrank ranker train` (a sub-command), with the config and every `--set`."""
    (rj,) = by_kind(render({"rayJob": {"enabled": True, "steps": ["export", "ranker"], "sets": ["seed=3"]}}), "RayJob")
    cmds = rj["spec"]["entrypoint"].split(" && ")
    assert [shlex.split(c) for c in cmds] == [_expected_argv("export", ["seed=3"]), _expected_argv("ranker", ["seed=3"])]


def test_unknown_rayjob_step_fails_to_render():
    with pytest.raises(helm.HelmError, match="unknown argusrank command \"train\""):
        render({"rayJob": {"enabled": True, "steps": ["pretrain", "train"]}})


def test_every_allowed_step_is_documented_in_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = (CHART / "values.yaml").read_text()
    assert set(values["rayJob"]["steps"]) <= set(STEPS)
    assert all(s in text for s in STEPS)
    assert (CHART / "templates" / "rayjob.yaml").read_text().count(" ".join(f'"{s}"' for s in STEPS)) == 1
