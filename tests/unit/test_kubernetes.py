"""The Kubernetes manifests (deploy/kubernetes/) agree with the Kubernetes API and with Flowline.

Pure: the files are parsed and validated, nothing is applied. Every built-in object is checked
against the Kubernetes JSON schemas that the `kubernetes-validate` package bundles, strictly (an
unknown field fails), for the oldest and the newest version the manifests support. KEDA's
ScaledObject is a custom resource whose CRD schema no package on PyPI or npm ships as a file
(deploy/schemas/README.md), so its fields are checked here by hand against KEDA's documentation
of the `redis-streams` scaler. Then the manifests are held to Flowline: the settings they name,
the commands the image runs, the probes, and the stream and group the autoscaler watches.
"""

from __future__ import annotations

import copy
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.deployment import KNOWN_SETTINGS, command_problems
from workflow_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
KEDA = "keda.sh/v1alpha1"


@cache
def documents(name: str) -> tuple[dict[str, Any], ...]:
    loaded = [doc for doc in yaml.safe_load_all((FOLDER / name).read_text()) if doc]
    assert all(isinstance(doc, dict) for doc in loaded), name
    return tuple(loaded)


def kustomization() -> dict[str, Any]:
    return documents("kustomization.yaml")[0]


def applied() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/kubernetes` creates."""
    return [doc for name in kustomization()["resources"] for doc in documents(name)]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in applied() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"no single {kind} {name}"
    return matches[0]


def container(kind: str, name: str) -> dict[str, Any]:
    (only,) = find(kind, name)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    return dict(find(kind, name)["spec"]["template"]["spec"])


def config() -> dict[str, str]:
    return dict(find("ConfigMap", "flowline-config")["data"])


def secret_keys() -> set[str]:
    (secret,) = documents("secret.example.yaml")
    return set(secret["stringData"])


def environment(kind: str, name: str) -> dict[str, str]:
    """The container's environment: its ConfigMap and Secret (keys only), then its own env."""
    found: dict[str, str] = {}
    for source in container(kind, name).get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "flowline-config"
            found.update(config())
        else:
            assert source["secretRef"]["name"] == "flowline-secrets"
            found.update(dict.fromkeys(secret_keys(), "<secret>"))
    found.update({item["name"]: item["value"] for item in container(kind, name).get("env", [])})
    return found


WORKLOADS = [
    ("Deployment", "flowline-api"),
    ("Deployment", "flowline-worker"),
    ("Job", "flowline-migrate"),
]


# --- the files and kustomize


def test_kustomize_applies_every_manifest_but_the_example_secret() -> None:
    listed = set(kustomization()["resources"])
    present = {path.name for path in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}
    assert not [d for d in applied() if d["kind"] == "Secret"], "no secret belongs in git"


def test_the_image_tag_is_the_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (image,) = kustomization()["images"]
    assert image["name"] == "flowline" and image["newTag"] == version
    for kind, name in WORKLOADS:
        assert container(kind, name)["image"] == "flowline"


# --- the Kubernetes API's own schemas


def builtin_objects() -> list[dict[str, Any]]:
    objects = [d for d in applied() if d["apiVersion"] != KEDA]
    return [*objects, *documents("secret.example.yaml")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_builtin_object_is_valid_for_kubernetes(version: str) -> None:
    kinds = set()
    for document in builtin_objects():
        kubernetes_validate.validate(document, version, strict=True)
        kinds.add(document["kind"])
    assert kinds >= {"ConfigMap", "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget"}


def test_the_schema_check_catches_a_mistake() -> None:
    broken = copy.deepcopy(find("Deployment", "flowline-api"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(find("Service", "flowline-api"))
    broken["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# --- KEDA's ScaledObject, by hand (KEDA 2.x: keda.sh docs, concepts/scaling-deployments and
# scalers/redis-streams)

SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
REDIS_STREAMS_METADATA = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
    "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex",
}  # fmt: skip


def scaled_object() -> dict[str, Any]:
    (found,) = [d for d in applied() if d["apiVersion"] == KEDA and d["kind"] == "ScaledObject"]
    return found


def test_the_scaled_object_has_only_fields_keda_knows() -> None:
    scaled = scaled_object()
    assert set(scaled) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(scaled["spec"]) <= SCALED_OBJECT_SPEC
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert set(behavior) <= {"scaleUp", "scaleDown"}
    for trigger in scaled["spec"]["triggers"]:
        assert set(trigger) <= {"type", "metadata", "authenticationRef", "name", "useCachedMetrics"}
        assert all(isinstance(value, str) for value in trigger["metadata"].values()), (
            "KEDA's trigger metadata is a map of strings"
        )


def test_the_workers_scale_on_the_groups_pending_entries() -> None:
    spec = scaled_object()["spec"]
    assert spec["scaleTargetRef"] == {"name": "flowline-worker"}
    find("Deployment", "flowline-worker")
    assert spec["minReplicaCount"] >= 1, "a worker fires the durable timers: never scale to 0"
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis-streams"
    metadata = trigger["metadata"]
    assert set(metadata) <= REDIS_STREAMS_METADATA
    assert int(metadata["pendingEntriesCount"]) >= 1
    assert not {"streamLength", "lagCount"} & set(metadata), "pending entries, nothing else"
    settings = config()
    assert metadata["stream"] == settings["REDIS_STREAM_NAME"]
    assert metadata["consumerGroup"] == settings["REDIS_CONSUMER_GROUP"]
    assert metadata["databaseIndex"] == settings.get("REDIS_DB", "0")
    worker_env = environment("Deployment", "flowline-worker")
    for key in ("hostFromEnv", "portFromEnv", "passwordFromEnv"):
        assert metadata[key] in worker_env, f"{key}: the worker has no {metadata[key]}"


# --- Flowline's side


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_every_variable_is_a_setting_and_the_settings_are_valid(kind: str, name: str) -> None:
    env = environment(kind, name)
    unknown = sorted(set(env) - KNOWN_SETTINGS)
    assert not unknown, f"{name} sets variables Flowline does not read: {unknown}"
    values = {k.lower(): v for k, v in env.items() if v != "<secret>"}
    Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_secret_holds_what_must_stay_secret() -> None:
    assert secret_keys() == {
        "DATABASE_URL", "REDIS_PASSWORD", "API_ADMIN_KEY", "TASK_LINK_SECRET", "SMTP_USER",
        "SMTP_PASSWORD"
    }  # fmt: skip
    assert not secret_keys() & set(config()), "a secret in the ConfigMap"
    (secret,) = documents("secret.example.yaml")
    Settings(_env_file=None, database_url=secret["stringData"]["DATABASE_URL"])  # type: ignore[call-arg]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_every_command_and_probe_exists_in_the_image(kind: str, name: str) -> None:
    spec = container(kind, name)
    commands = [spec["command"]]
    commands += [
        probe["exec"]["command"]
        for key in ("startupProbe", "livenessProbe", "readinessProbe")
        if "exec" in (probe := spec.get(key, {}))
    ]
    problems = [problem for command in commands for problem in command_problems(command)]
    assert not problems


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_the_pods_run_as_the_images_user_on_a_read_only_root(kind: str, name: str) -> None:
    assert pod_spec(kind, name)["securityContext"]["runAsUser"] == 10001  # the Dockerfile's
    assert container(kind, name)["securityContext"]["readOnlyRootFilesystem"] is True
    if kind == "Deployment":
        mounts = {m["mountPath"] for m in container(kind, name).get("volumeMounts", [])}
        assert "/tmp" in mounts


def test_migrations_run_as_a_job_with_make_migrates_command() -> None:
    makefile = (ROOT / "Makefile").read_text()
    module = re.search(r"^migrate:.*\n\t\$\(PY\) -m (\S+)", makefile, re.M)
    assert module is not None
    assert container("Job", "flowline-migrate")["command"] == ["python", "-m", module[1]]
    assert pod_spec("Job", "flowline-migrate")["restartPolicy"] in ("OnFailure", "Never")


def test_the_api_runs_replicas_behind_a_service_with_health_probes() -> None:
    api = find("Deployment", "flowline-api")
    assert api["spec"]["replicas"] >= 2
    spec = container("Deployment", "flowline-api")
    env = environment("Deployment", "flowline-api")
    (port,) = spec["ports"]
    assert env["API_HOST"] == "0.0.0.0" and int(env["API_PORT"]) == port["containerPort"]
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    service = find("Service", "flowline-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    grace = Settings.model_fields["worker_shutdown_grace_seconds"].default
    assert pod_spec("Deployment", "flowline-api")["terminationGracePeriodSeconds"] > grace + 5


def test_the_worker_is_probed_on_its_health_file_and_given_time_to_stop() -> None:
    env = environment("Deployment", "flowline-worker")
    assert env["WORKER_HEALTH_FILE"].startswith("/tmp/")
    assert "WORKER_CONSUMER_NAME" not in env, "replicas need distinct consumer names"
    spec = container("Deployment", "flowline-worker")
    for probe in ("startupProbe", "livenessProbe"):
        assert spec[probe]["exec"]["command"] == ["python", "-m", "services.worker.healthcheck"]
    grace = Settings.model_fields["worker_shutdown_grace_seconds"].default
    assert pod_spec("Deployment", "flowline-worker")["terminationGracePeriodSeconds"] > grace
    dead_after = Settings.model_fields["worker_dead_after_seconds"].default
    live = spec["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= dead_after
