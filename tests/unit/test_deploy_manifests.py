"""The deployment files against the code they deploy (deploy/Dockerfile, deploy/compose/,
deploy/k8s/): every service runs, more than once, listens where its probes look, is probed
on a route it really serves, and is given only settings the code reads; the broker is a
3-node cluster (gridflow's queues are quorum queues). No docker or cluster is needed;
``kubectl kustomize`` runs when kubectl is installed."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kombu
import pytest
import yaml
from nameko.web.handlers import HttpRequestHandler

from gridflow import SERVICES
from services.monitor.broker import ManagementApi
from shared.amqp import topology
from shared.config import http_address

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
IMAGE_ROOT = "/app"  # the Dockerfile's WORKDIR: where the repository's files land

# The monitor runs once: its queue-depth history lives in memory (two replicas would show
# two histories) and it is off the reports' path. Every other service runs at least twice.
SINGLE = {"monitor"}
# escalation's /health is 503 while clocks are overdue, the same on every replica: its
# Kubernetes probes are on the TCP port (deploy/k8s/escalation.yaml). The others' readiness
# asks GET /health.
READY_ON_HEALTH = set(SERVICES) - {"escalation"}
# Settings the code reads under a name it builds: the name's pattern, the code building it.
BUILT_NAMES = (
    (re.compile(r"GRIDFLOW_([A-Z]+)_HTTP_ADDRESS"), 'f"GRIDFLOW_{service.upper()}_HTTP_ADDRESS"'),
    (re.compile(r"([A-Z]+)_DATABASE_URL"), 'f"{service.upper()}_DATABASE_URL"'),
)
CHECKED_SETTING = re.compile(r"GRIDFLOW_\w+|AMQP_URI|\w*DATABASE_URL")


# -- reading the files -------------------------------------------------------------------------
def _yaml_files() -> list[Path]:
    return sorted([*COMPOSE_DIR.glob("*.y*ml"), *K8S.glob("*.y*ml")])


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@cache
def _k8s_docs() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return tuple(docs)


def _k8s(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s_docs() if d["kind"] == kind]


def _defaults(value: Any) -> str:
    """A compose value with each ``${VAR:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


@cache
def _dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out = []
    for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8")).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return tuple(out)


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, rest in _dockerfile():
        if op == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(rest))  # type: ignore[misc]
    return env


def _exec_form(op: str) -> list[str]:
    found = [json.loads(rest) for o, rest in _dockerfile() if o == op]
    assert len(found) == 1, f"one {op} in exec (JSON) form expected"
    return found[0]


@cache
def _routes(service: str) -> frozenset[tuple[str, str]]:
    """(method, URL rule) of every HTTP entrypoint of the service's class."""
    module, _, attr = SERVICES[service].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return frozenset(
        (ep.method, ep.url)
        for _, fn in inspect.getmembers(cls, callable)
        for ep in getattr(fn, "nameko_entrypoints", ())
        if isinstance(ep, HttpRequestHandler)
    )


@cache
def _code() -> str:
    """Where the settings are read: the Python of shared/, services/ and gridflow/, and the
    nameko config every service loads (deploy/config/, e.g. GRIDFLOW_MAX_WORKERS)."""
    files = [p for d in ("shared", "services", "gridflow") for p in (ROOT / d).rglob("*.py")]
    files += sorted((ROOT / "deploy" / "config").glob("*.yaml"))
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def _read_by_code(name: str) -> bool:
    if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", _code()):
        return True
    for pattern, builder in BUILT_NAMES:
        m = pattern.fullmatch(name)
        if m and m.group(1).lower() in SERVICES and builder in _code():
            return True
    return False


def _listen_address(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Where ``gridflow.run_service`` makes the service listen, given the container's
    environment (the image's ENV under the manifest's): shared.config.http_address itself."""
    for key in [k for k in os.environ if k.endswith("HTTP_ADDRESS")]:
        monkeypatch.delenv(key)  # this machine's settings must not leak in
    return http_address(service, {**_dockerfile_env(), **env})


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


# -- compose -----------------------------------------------------------------------------------
def _compose_service(service: str) -> dict[str, Any]:
    services = _compose()["services"]
    assert service in services, f"{COMPOSE.name} has no service {service!r}"
    return services[service]


def _compose_env(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    assert isinstance(env, dict), "write compose environments as mappings"
    return {k: _defaults(v) for k, v in env.items()}


def _gridflow_compose_services() -> dict[str, dict[str, Any]]:
    """Every compose service that runs the gridflow image (the services and ``prepare``)."""
    image = _compose_service("intake")["image"]
    return {n: s for n, s in _compose()["services"].items() if s.get("image") == image}


# -- kubernetes --------------------------------------------------------------------------------
def _deployment(service: str) -> dict[str, Any]:
    found = [d for d in _k8s("Deployment")
             if d["spec"]["template"]["spec"]["containers"][0].get("args") == [service]]
    assert len(found) == 1, f"one Deployment runs {service!r} expected, found {len(found)}"
    return found[0]


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: envFrom's ConfigMaps and Secrets, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", "configMapRef") if "configMapRef" in source else (
            "Secret", "secretRef")
        name = source[ref]["name"]
        docs = [d for d in _k8s(kind) if d["metadata"]["name"] == name]
        assert docs, f"envFrom names {kind} {name!r}, which deploy/k8s does not define"
        env.update({k: str(v) for k, v in (docs[0].get("data") or {}).items()})
        env.update({k: str(v) for k, v in (docs[0].get("stringData") or {}).items()})
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", ""))
    return env


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


# -- the tests ---------------------------------------------------------------------------------
def test_every_manifest_parses_and_kustomization_lists_them() -> None:
    for path in _yaml_files():
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        assert docs, f"{path} is empty"
        if path.parent == K8S and path.name != "kustomization.yaml":
            for doc in docs:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
                assert doc["metadata"].get("name"), path
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, "deploy/k8s/kustomization.yaml must list every manifest"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_compose_runs_every_service_in_replicas(service: str) -> None:
    spec = _compose_service(service)
    assert spec.get("command") == [service]
    assert spec["image"] == _compose_service("prepare")["image"]
    replicas = int(_defaults(spec.get("deploy", {}).get("replicas", 1)))
    assert replicas >= (1 if service in SINGLE else 2), f"{service}: {replicas} replicas"
    if service not in SINGLE:
        assert "GRIDFLOW_REPLICAS" in str(spec["deploy"]["replicas"]), "N from the environment"
    assert spec["depends_on"]["prepare"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_compose_healthcheck_asks_a_real_route_where_the_service_listens(
        service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _compose_service(service)
    address = _listen_address(service, _compose_env(spec), monkeypatch)
    assert address.startswith("0.0.0.0:"), f"{service} listens on {address}: unreachable"
    check = " ".join(spec["healthcheck"]["test"])
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/.-]*)", check)
    assert m, f"{service}: the healthcheck asks no local URL: {check}"
    assert int(m.group(1)) == _port(address)
    assert ("GET", m.group(2)) in _routes(service), f"{service} has no GET {m.group(2)}"
    for mapping in spec.get("ports", []):  # published ports lead to the service's port
        assert int(_defaults(mapping).rpartition(":")[2]) == _port(address)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_deployment_in_replicas_probed_on_real_routes(
        service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = _deployment(service)
    assert deployment["spec"]["replicas"] >= (1 if service in SINGLE else 2)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    address = _listen_address(service, _container_env(container), monkeypatch)
    assert address.startswith("0.0.0.0:"), f"{service} listens on {address}: unreachable"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get("http") == _port(address)
    assert container.get("resources", {}).get("requests"), f"{service}: no resource requests"
    probes = {k: container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"] and probes["livenessProbe"], f"{service}: probes missing"
    for kind, probe in probes.items():
        if not probe:
            continue
        action = probe.get("httpGet") or probe.get("tcpSocket")
        assert action, f"{service} {kind}: httpGet or tcpSocket expected"
        assert ports.get(action["port"], action["port"]) == _port(address), f"{service} {kind}"
        if "httpGet" in probe:
            path = probe["httpGet"]["path"]
            assert ("GET", path) in _routes(service), f"{service} {kind}: no GET {path}"
    if service in READY_ON_HEALTH:
        assert probes["readinessProbe"].get("httpGet", {}).get("path") == "/health"


def test_k8s_services_lead_to_the_api_and_the_page() -> None:
    for service in ("intake", "monitor"):
        labels = _deployment(service)["spec"]["template"]["metadata"]["labels"]
        found = [s for s in _k8s("Service") if s["spec"].get("selector") == labels]
        assert found, f"no Service selects the {service} pods"
        assert all(p["targetPort"] == "http" for p in found[0]["spec"]["ports"])


def test_every_setting_given_is_one_the_code_reads() -> None:
    given: dict[str, str] = {name: "deploy/Dockerfile" for name in _dockerfile_env()}
    for name, spec in _gridflow_compose_services().items():
        given.update({k: f"compose {name}" for k in _compose_env(spec)})
    for doc in _k8s("Deployment"):
        for container in _containers(doc):
            given.update({k: doc["metadata"]["name"] for k in _container_env(container)})
    checked = {k: v for k, v in given.items() if CHECKED_SETTING.fullmatch(k)}
    assert {"AMQP_URI", "DATABASE_URL", "GRIDFLOW_METRICS_TOKEN"} <= checked.keys()
    unread = {k: v for k, v in checked.items() if not _read_by_code(k)}
    assert not unread, f"settings no code reads (name: where it is set): {unread}"


def test_the_database_is_postgresql_everywhere() -> None:
    urls = [(n, _compose_env(s).get("DATABASE_URL", "")) for n, s in
            _gridflow_compose_services().items()]
    urls += [(d["metadata"]["name"], _container_env(c).get("DATABASE_URL", ""))
             for d in _k8s("Deployment") for c in _containers(d)]
    assert urls
    for where, url in urls:
        assert url.startswith("postgresql://"), f"{where}: replicas cannot share SQLite"
    postgres = _compose_service("postgres")
    assert postgres["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert _compose_service("prepare")["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_broker_is_a_three_node_cluster() -> None:
    # why three: gridflow's queues are quorum queues, replicated on a majority of members
    assert all(q.arguments["x-queue-type"] == "quorum" for q in topology.queues(["fire"]))
    nodes = {n: s for n, s in _compose()["services"].items()
             if str(s.get("image", "")).startswith("rabbitmq:3.13")}
    assert len(nodes) == 3
    conf = (COMPOSE_DIR / "rabbitmq.conf").read_text(encoding="utf-8")
    assert re.search(r"^cluster_formation\.peer_discovery_backend\s*=\s*classic_config", conf,
                     re.M)
    listed = set(re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+\s*=\s*(\S+)",
                            conf, re.M))
    assert listed == {f"rabbit@{s['hostname']}" for s in nodes.values()}
    assert {s["hostname"] for s in nodes.values()} == set(nodes)  # the node names resolve
    assert len({_compose_env(s)["RABBITMQ_ERLANG_COOKIE"] for s in nodes.values()}) == 1
    for spec in nodes.values():
        assert any(str(v).startswith("./rabbitmq.conf:/etc/rabbitmq/conf.d/")
                   for v in spec["volumes"])
        assert spec.get("healthcheck")
    prepare = _compose_env(_compose_service("prepare"))
    assert int(prepare["PREPARE_RABBITMQ_NODES"]) == len(nodes)
    # the services reach every node (kombu's failover URI); the monitor one node, since it
    # reads the management API's vhost from AMQP_URI's path
    for service in SERVICES:
        uri = _compose_env(_compose_service(service))["AMQP_URI"]
        hosts = {kombu.Connection(alt).hostname for alt in kombu.Connection(uri).alt}
        if service in SINGLE:
            assert ";" not in uri and ManagementApi(uri).vhost == "/"
            assert hosts <= set(nodes)
        else:
            assert hosts == set(nodes), f"{service} does not list every node"
    [cluster] = _k8s("RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["spec"]["replicas"] == 3
    for doc in _k8s("Deployment"):
        for container in _containers(doc):
            env = _container_env(container)
            assert ";" not in env.get("AMQP_URI", ""), "k8s: the cluster's Service balances"
            if "PREPARE_RABBITMQ_NODES" in env:
                assert int(env["PREPARE_RABBITMQ_NODES"]) == cluster["spec"]["replicas"]


def test_the_image_runs_gridflow_run_service_as_a_user() -> None:
    [(_, base)] = [(o, r) for o, r in _dockerfile() if o == "FROM"]
    assert base == "python:3.11-slim"
    user = [r for o, r in _dockerfile() if o == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    entrypoint = _exec_form("ENTRYPOINT")
    assert entrypoint[:3] == ["python", "-m", "gridflow.run_service"]
    assert importlib.util.find_spec(entrypoint[2]) is not None
    config = entrypoint[entrypoint.index("--config") + 1]
    assert (ROOT / Path(config).relative_to(IMAGE_ROOT)).is_file()
    assert _exec_form("CMD")[0] in SERVICES
    copied = [shlex.split(r)[:-1] for o, r in _dockerfile() if o == "COPY"]
    for source in (s for sources in copied for s in sources if not s.startswith("--")):
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    # the one-shot preparation the compose file and the k8s init containers run
    scripts = {_compose_service("prepare")["entrypoint"][1]}
    scripts |= {" ".join(c["command"][1:2]) for d in _k8s("Deployment")
                for c in d["spec"]["template"]["spec"].get("initContainers", [])}
    for script in scripts:
        relative = Path(script).relative_to(IMAGE_ROOT)
        assert (ROOT / relative).is_file()
        assert any(str(relative) in sources for sources in copied), f"{script} not copied"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "RabbitmqCluster", "StatefulSet",
            "Deployment", "Service"} <= kinds
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "gridflow", doc["metadata"]["name"]
