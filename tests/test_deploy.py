"""What deploy/ hands an operator: manifests that validate, an autoscaler and an exporter that count
the real backlog (real Redis, Postgres and a CPU worker), and a health probe that tells."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import psycopg
import pytest
import redis
import yaml
from kombu import Connection, Consumer, Queue
from prometheus_client.parser import text_string_to_metric_families

from murmur.db import queries
from murmur.db.session import sessions
from murmur.tasks.fleet.queues import CPU_QUEUE, GPU_QUEUE, broker_messages
from murmur.tasks.fleet.client import Client
from murmur.tasks.operations.exporter import BACKLOG_SQL
from murmur.tasks.operations.exporter import backlog as work_left
from murmur.workers.errors import Failure
from tests.conftest import DATA, fresh_postgres, run_cli
from tests.test_distributed import BIN, Worker, _free_port

ROOT = Path(__file__).parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["cpu-only", "gpu"]
KUBERNETES_VERSION = "1.32.0"

# What KEDA 2.x's CRDs require of the fields used here (keda.sh_scaledobjects.yaml,
# keda.sh_triggerauthentications.yaml): trigger metadata is a map of strings, counts are
# integers; unknown fields are refused here to catch typos the API server would drop silently.
_NAME = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}, "additionalProperties": False}
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "keda.sh/v1alpha1"}, "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string"}, "apiVersion": {"type": "string"}}},
                **{k: {"type": "integer", "minimum": 0} for k in ("minReplicaCount", "maxReplicaCount", "pollingInterval",
                                                                   "cooldownPeriod")},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                    "properties": {"type": {"type": "string"}, "name": {"type": "string"}, "authenticationRef": _NAME,
                                   "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}},
    "TriggerAuthentication": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "keda.sh/v1alpha1"}, "spec": {
            "type": "object", "additionalProperties": False, "properties": {"secretTargetRef": {"type": "array", "items": {
                "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
                "properties": {k: {"type": "string"} for k in ("parameter", "name", "key")}}}}}}},
}


def _overlay(name: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its kustomize) is needed to build deploy/k8s; .ci/run installs it"
    built = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / name)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates_against_kubernetes_and_kedas_schemas(overlay):
    docs = _overlay(overlay)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds.count("ScaledObject") == 2 and kinds.count("PodDisruptionBudget") == 2 and "Job" in kinds
    for doc in docs:
        if doc["kind"] in KEDA_SCHEMAS:
            jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"}
    for name in ("murmur-cpu-worker", "murmur-gpu-worker"):
        pod = deployments[name]
        assert pod["terminationGracePeriodSeconds"] >= 120 and pod["securityContext"]["runAsNonRoot"]
        assert pod["containers"][0]["livenessProbe"]["exec"]["command"][:2] == ["murmur", "health"]
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    assert len(pods) == 4
    for pod in pods:  # every pod hardened: no API token, no privileges, a read-only root with a /tmp of its own
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        context = pod["containers"][0]["securityContext"]
        assert context["readOnlyRootFilesystem"] and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    assert not [d for d in docs if d["kind"] == "Secret"]  # no password ships: the operator makes the Secrets
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"] and [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [9808, 9809]
    assert {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}["murmur-config"]["data"]["MURMUR_ALLOWED_ROOTS"] \
        == "/home/murmur/uploads"
    gpu = deployments["murmur-gpu-worker"]["containers"][0]
    device = {e["name"]: e["value"] for e in gpu["env"]}["MURMUR_DEVICE"]
    if overlay == "gpu":
        assert device == "cuda" and gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and gpu["image"] == "murmur:gpu"
    else:
        assert device == "cpu" and "nvidia.com/gpu" not in gpu["resources"].get("limits", {})


def _triggers() -> dict[str, dict]:
    docs = _overlay("gpu")
    return {doc["spec"]["scaleTargetRef"]["name"].split("-")[1]: doc["spec"]["triggers"][0]
            for doc in docs if doc["kind"] == "ScaledObject"}


def test_the_autoscaler_reads_the_exporters_backlog_query_word_for_word():
    triggers = _triggers()
    assert set(triggers) == {"cpu", "gpu"}
    for kind, trigger in triggers.items():
        assert trigger["type"] == "postgresql" and trigger["metadata"]["query"] == BACKLOG_SQL[kind]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    broker = "redis://127.0.0.1:6379/12"
    redis.Redis.from_url(broker).flushdb()
    database = fresh_postgres("murmur_deploy_test", create=False)
    env = {**os.environ, "MURMUR_BROKER_URL": broker, "MURMUR_DATABASE_URL": database, "MURMUR_DEVICE": "cpu",
           "MURMUR_ALLOWED_ROOTS": str(DATA)}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    cpu = Worker("cpu", env, tmp / "cpu.log")
    cpu.wait_for(" ready.")

    class Fleet:
        pass

    fleet = Fleet()
    fleet.env, fleet.cpu, fleet.broker, fleet.database = env, cpu, broker, database
    fleet.client = Client(broker_url=broker, database_url=database)
    try:
        yield fleet
    finally:
        fleet.cpu.stop()
        redis.Redis.from_url(broker).flushdb()


def _scrape(port: int) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


@pytest.mark.services
def test_the_autoscalers_number_is_the_real_backlog_on_real_redis_and_postgres(fleet, tmp_path):
    """Jobs of mixed priorities prepared by a real CPU worker, no GPU worker: every chunk is backlog.
    Three decode messages sit in a consumer's hands (delivered, unacknowledged) and two more jobs
    wait for the CPU worker, now stopped. The trigger's query, the exporter and the broker agree;
    a single LLEN, what KEDA's Redis list trigger reads, does not."""
    client = fleet.client
    planned = [client.submit(str(DATA / name), language="en", priority=p)
               for name, p in [("jfk_inaugural_1961.flac", 0), ("stereo_two_speakers.wav", 5), ("en_5min.flac", 9)]]
    deadline = time.monotonic() + 120
    while any(client.status(j).n_chunks is None for j in planned):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    chunks = sum(client.status(j).n_chunks for j in planned)
    assert chunks >= 3
    messages = broker_messages(fleet.broker)
    deadline = time.monotonic() + 30  # a job is planned just before its decode messages are sent
    while messages()[(GPU_QUEUE, "waiting")] < chunks:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fleet.cpu.stop()
    waiting = [client.submit(str(DATA / "jfk_inaugural_1961.flac"), language="en", priority=p) for p in (3, 7)]
    for failure in (Failure.input, Failure.input, Failure.cancelled):  # ended jobs, counted by their class
        queries.fail_job(client.db, queries.create_job(client.db, "/gone.flac", {}), "failed", failure)

    held = []
    with Connection(fleet.broker) as conn:
        consumer = Consumer(conn, queues=[Queue(GPU_QUEUE)], accept=["json"], on_message=held.append, prefetch_count=3)
        consumer.qos(prefetch_count=3)
        with consumer:
            deadline = time.monotonic() + 10
            while len(held) < 3 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
            consumer.cancel()
            assert len(held) == 3

            counts = messages()
            assert counts[(GPU_QUEUE, "delivered")] == 3 and counts[(GPU_QUEUE, "waiting")] == chunks - 3
            assert counts[(CPU_QUEUE, "waiting")] == len(waiting)
            real = {"gpu": chunks, "cpu": len(waiting)}
            assert {kind: work_left(sessions(fleet.database), kind) for kind in real} == real
            # the trigger's own query, on a libpq connection as KEDA makes one
            libpq = fleet.database.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(libpq) as pg:
                for kind, trigger in _triggers().items():
                    assert pg.execute(trigger["metadata"]["query"]).fetchone()[0] == real[kind], kind
            assert redis.Redis.from_url(fleet.broker).llen(GPU_QUEUE) < chunks  # the trap: one list of several

            port = _free_port()
            exporter = subprocess.Popen([str(BIN / "murmur"), "exporter", "--port", str(port)], env=fleet.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        metrics = _scrape(port)
                        break
                    except OSError:
                        assert time.monotonic() < deadline and exporter.poll() is None
                        time.sleep(0.2)
            finally:
                exporter.terminate()
                exporter.wait(10)
    assert metrics[("murmur_backlog", (("kind", "gpu"),))] == chunks
    assert metrics[("murmur_backlog", (("kind", "cpu"),))] == len(waiting)
    assert metrics[("murmur_queue_messages", (("queue", GPU_QUEUE), ("state", "delivered")))] == 3
    assert metrics[("murmur_jobs", (("state", "queued"),))] == len(waiting)
    assert metrics[("murmur_jobs", (("state", "running"),))] == len(planned)
    failed = {labels[0][1]: n for (name, labels), n in metrics.items() if name == "murmur_jobs_failed_total"}
    assert failed == {**dict.fromkeys(Failure, 0), "input": 2, "cancelled": 1}
    assert metrics[("murmur_exporter_source_up", (("source", "broker"),))] == 1
    assert metrics[("murmur_oldest_unfinished_job_age_seconds", ())] > 0
    assert metrics[("murmur_stage_seconds_count", (("stage", "prepare"),))] == 0  # none done yet
    assert all(queries.get_job(client.db, j).status == "running" for j in planned)


@pytest.mark.services
def test_health_answers_for_the_database_the_broker_and_this_hosts_worker(fleet, tmp_path):
    env = {**fleet.env, "TMPDIR": str(tmp_path)}  # where workers say they run: this test's worker only
    cpu = Worker("cpu", env, tmp_path / "cpu.log")
    try:
        cpu.wait_for(" ready.")
        healthy = run_cli("health", "cpu", env=env, timeout=60)
        assert healthy.returncode == 0 and healthy.stdout.strip() == "healthy", healthy.stderr
        no_gpu = run_cli("health", "gpu", "--timeout", "2", env=env, timeout=60)
        assert no_gpu.returncode == 1 and "no gpu worker runs here" in no_gpu.stderr
        cpu.proc.send_signal(signal.SIGSTOP)  # alive, but its consumer cannot answer: as if hung
        hung = run_cli("health", "--timeout", "2", env=env, timeout=60)
        assert hung.returncode == 1 and f"worker {cpu.name} did not answer a ping" in hung.stderr
        cpu.proc.send_signal(signal.SIGCONT)
    finally:
        cpu.stop()
    gone = run_cli("health", "cpu", "--timeout", "2", env=env, timeout=60)
    assert gone.returncode == 1 and "no cpu worker runs here" in gone.stderr
    away = {**env, "MURMUR_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none",
            "MURMUR_BROKER_URL": "redis://127.0.0.1:1/0"}
    down = run_cli("health", "--timeout", "2", env=away, timeout=60)
    assert down.returncode == 1 and "cannot reach the database" in down.stderr and "cannot reach the broker" in down.stderr


def test_the_dockerfile_passes_hadolint():
    linted = subprocess.run([str(BIN / "hadolint"), str(ROOT / "deploy" / "docker" / "Dockerfile")],
                            capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_compose_config_is_valid_and_keeps_the_rules():
    env = {**os.environ, "MURMUR_DB_PASSWORD": "secret", "FLOWER_BASIC_AUTH": "ops:horse", "MURMUR_REDIS_PASSWORD": "red",
           "MURMUR_CALLBACK_SECRET": "hooks"}
    done = subprocess.run([str(BIN / "podman-compose"), "-f", str(ROOT / "deploy" / "compose.yaml"), "config"],
                          capture_output=True, text=True, env=env, cwd=ROOT / "deploy")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"redis", "postgres", "migrate", "cpu-worker", "gpu-worker", "flower", "exporter"} <= set(services)
    assert "noeviction" in services["redis"]["command"] and "--appendonly" in services["redis"]["command"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"] and services["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert services["cpu-worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["api"]["command"][0] == "serve" and services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    for service in ("api", "cpu-worker", "gpu-worker"):  # uploads are written by the API and read by the workers
        assert any(str(v).startswith("uploads:/home/murmur/uploads") for v in services[service]["volumes"]), service
        environment = services[service]["environment"]
        assert environment["MURMUR_ALLOWED_ROOTS"] == "/home/murmur/uploads", service  # nothing else of the disk
        assert environment["MURMUR_BROKER_URL"] == "redis://:red@redis:6379/0" and environment["MURMUR_CALLBACK_SECRET"] == "hooks"
    assert services["redis"]["command"][-2:] == ["--requirepass", "red"]
    for secret in ("MURMUR_DB_PASSWORD", "MURMUR_REDIS_PASSWORD", "MURMUR_CALLBACK_SECRET"):  # no default for any
        missing = subprocess.run([str(BIN / "podman-compose"), "-f", str(ROOT / "deploy" / "compose.yaml"), "config"],
                                 capture_output=True, text=True, env={k: v for k, v in env.items() if k != secret},
                                 cwd=ROOT / "deploy")
        assert missing.returncode != 0 and secret in missing.stdout + missing.stderr, secret


@pytest.mark.services
def test_every_expression_of_the_grafana_dashboard_names_a_metric_murmur_serves(fleet):
    """deploy/grafana/murmur.json against what a scrape of the exporter (real Postgres and Redis) and a GPU
    worker's batch metrics hold: a renamed metric would leave a panel empty without a word."""
    import json
    import re

    from murmur.settings import Settings
    from murmur.tasks.fleet.batcher import BatchMetrics
    from murmur.tasks.operations.exporter import FleetCollector

    collector = FleetCollector(sessions(fleet.database), Settings(broker_url=fleet.broker))
    families = list(collector.collect()) + list(BatchMetrics(8).registry.collect())
    served = {sample.name for family in families for sample in family.samples}
    assert {"murmur_jobs", "murmur_backlog", "murmur_stage_seconds_bucket", "murmur_batch_fill_ratio_bucket"} <= served
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "murmur.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 12
    named = {name for expr in expressions for name in re.findall(r"\bmurmur_[a-z_]+", expr)}
    assert named and named <= served, named - served
    every_metric = {f.name for f in families}  # each metric the exporter serves has a panel
    assert {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in named} >= {n.removesuffix("_total") for n in every_metric}
