#!/usr/bin/env python3
"""Static checks of the deployment files: the Helm chart (helm/agentsmith), the Kustomize stack
(k8s/) and the Dockerfiles. Nothing here talks to a cluster. In order:

 - values.yaml documents every value and the README's values table matches it;
 - `helm lint --strict` with the test and example values; the values schema accepts the values
   it should and refuses bad ones, and the templates fail with a clear message on contradictory
   ones;
 - every value set of SCENARIOS rendered for Kubernetes 1.20 and 1.37, each checked object by
   object (labels, RBAC rules (secrets written, never read), security contexts, probes, Secrets:
   the generated API token and Redis password, Redis's --requirepass and authenticated probes,
   the dispatcher's Redis URL, Sentinel or Cluster settings, more spawner targets (agentsmith.yml's
   spawners, each kubeconfig Secret mounted read-only where its target looks), optional objects,
   NOTES), and its agentsmith.yml passing `agentsmith config check` with the Deployment's
   environment;
 - every NetworkPolicy evaluated as a network plugin would (chartkit.allowed): which addresses,
   ports and pods agent pods and Redis can and cannot reach, range by range, for the defaults,
   agents in their own namespace, clusterCidrs and extra rules, other public ports, and
   networkPolicy.enabled false (the test cluster enforces no NetworkPolicy: this is where they
   are checked);
 - checksum annotations (stable with generated secrets), webhook source secrets, the
   PodDisruptionBudget's API version, proxies, the agents' disk, Redis Sentinel and WAIT
   (externalRedis.sentinel, externalRedis.minReplicasAcked: the variables and agentsmith.yml
   keys the dispatcher reads, passwords only from Secrets, the defaults left as they were),
   Redis Cluster (externalRedis.cluster: redis.cluster and a hash-tagged redis.prefix in
   agentsmith.yml, the chart refusing exactly the prefixes the dispatcher refuses);
 - both Kustomize overlays (kubectl kustomize), checked the same way;
 - every object valid for Kubernetes 1.20 and 1.37 (scripts/kube-validate, strict);
 - hadolint on the Dockerfiles, the agent kits' (kits/*/Dockerfile) included.

Run it through scripts/chart-check, which installs the tools first and passes their locations in
the environment:

    AGENTSMITH_KUBECTL   a kubectl whose `kustomize` renders k8s/ (the test cluster's, v1.20.2)
    AGENTSMITH_BIN       the agentsmith binary, for `agentsmith config check`
    HADOLINT             the hadolint binary
    PYTHONPATH           with helm-python-sdk (module helm_python) on it

`scripts/chart_check.py --write-readme` regenerates the values table in helm/agentsmith/README.md
from values.yaml (its `# --` comments), which the checks compare.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from chartkit import CHART, ROOT, Checks, Endpoint, allowed, chart_yaml, copy_k8s, merge, policy_types, selects
from chartvalues import TABLE_END, TABLE_START, readme_with_table, values_docs

README = CHART / "README.md"
RELEASE = "demo"
NAMESPACE = "agentsmith"
FULLNAME = "demo-agentsmith"
TOKEN = "chart-check-token-0123456789"
RUNNER_SECRET = "chart-check-runner-secret-0123456789"

# What the dispatcher needs, and no more (README.md, "Run jobs in Kubernetes"): Secrets are
# written (each attempt's one-time credential), never read.
EXPECTED_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete"]},
]
READ_VERBS = {"get", "list", "watch", "*"}
# A generated API token and Redis password: random letters and digits.
GENERATED_TOKEN = re.compile(r"[A-Za-z0-9]{40}")
GENERATED_PASSWORD = re.compile(r"[A-Za-z0-9]{32}")
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Render-time capabilities of the two Kubernetes versions the manifests are validated against.
# helm-python-sdk 0.2.2's Chart.render() does not take them, but its native render options do
# (`kube_version`, `api_versions`, the same as `helm template --kube-version --api-versions`);
# the library refuses unknown option names, so a rename would fail loudly here.
KUBE_120 = {"kube_version": "v1.20.2", "api_versions": ["policy/v1beta1/PodDisruptionBudget"]}
KUBE_137 = {"kube_version": "v1.37.0", "api_versions": ["policy/v1/PodDisruptionBudget"]}
VERSIONS = {"1.20": KUBE_120, "1.37": KUBE_137}

# Kinds no schema knows (custom resources), skipped by name.
CRD_KINDS = {"ServiceMonitor"}


checks = Checks()


# --- rendering ----------------------------------------------------------------------------


def load_chart():
    import helm_python as helm

    return helm, helm.Chart.load(CHART)


def render(chart, values: dict, capabilities: dict | None = None) -> dict[str, str]:
    """The chart's templates rendered offline, as {template path: text}."""
    from helm_python import _native

    opts: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True}
    if capabilities:
        opts.update(capabilities)
    out = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    return json.loads(out)


def objects_of(rendered: dict[str, str]) -> list[dict]:
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objects, kind, name)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


WITH_TOKEN = {"secrets": {"apiTokens": [TOKEN]}}
# Ranges of a cluster whose API server and Services sit on public addresses (as GKE's and
# EKS's public endpoints do), plus a range of one's own and the extras a team may open.
CLUSTER_CIDRS = ["35.1.2.3/32", "34.118.224.0/20", "2600:1900:4000::/44", "fd99::/64"]
OPENED = merge(WITH_TOKEN, {
    "networkPolicy": {"clusterCidrs": CLUSTER_CIDRS, "blockedCidrs": ["203.0.113.0/24"]},
    "agents": {"egress": {
        "publicPorts": [{"port": 443, "protocol": "TCP"}, {"port": 80, "protocol": "TCP"}, {"port": 22, "protocol": "TCP"}],
        "extra": [{"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}]}},
})
USER_CONFIG = """\
server:
  shutdown_grace_secs: 40
  # Overridden by the chart: the dispatcher must listen on the pod network.
  bind: "127.0.0.1:9999"
queue:
  max_concurrent_jobs: 4
spawner:
  kubernetes:
    # Overridden by the chart: in-cluster access.
    kubeconfig: /home/someone/.kube/config
    node_selector:
      pool: agents
    ttl_seconds_after_finished: 120
agents:
  claude:
    command: ["claude", "-p"]
    secret_env:
      ANTHROPIC_API_KEY: anthropic-api-key
    timeout_secs: 3600
  custom:
    command: ["sh", "-c", "true"]
    image: registry.example.com/custom:1
projects:
  payments:
    repo: "https://git.example.com/acme/payments.git"
    agent: claude
    jira_projects: ["PAY"]
sources:
  jira:
    base_url: "https://acme.atlassian.net"
    email: "agentsmith@acme.example"
"""

# agents.profileShapes: the claude profile of USER_CONFIG with a cache volume, a secret file, an
# init container, a sidecar, a runtime and a priority class and placement of its own.
PROFILE_SHAPES = {"claude": {
    "volumes": [{"name": "npm-cache", "persistentVolumeClaim": {"claimName": "npm-cache"}}],
    "volume_mounts": [{"name": "npm-cache", "mountPath": "/cache/npm"}],
    "secret_files": {"/home/agent/.netrc": "netrc"},
    "init_containers": [{"name": "warm", "command": ["true"]}],
    "sidecars": [{"name": "proxy", "image": "registry.example.com/proxy:1"}],
    "runtime_class_name": "gvisor",
    "priority_class_name": "agents-low",
    "node_selector": {"pool": "gpu"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "labels": {"team": "ml"},
    "image_pull_secrets": ["gpu-registry"],
}}

# Two more spawner targets (targets): gpu-eu, another cluster reached through a kubeconfig
# Secret, and gpu-us, the GPU nodes of this one. config.content lays spawners of its own over
# them (a cap for gpu-us, a kubeconfig path for gpu-eu, which the mounted Secret's must beat),
# and has a profile that prefers gpu-eu and overflows to gpu-us, and a project held to gpu-us.
TARGETS = {
    "gpu-eu": {"max_concurrent_jobs": 8, "kubeconfigSecret": {"name": "gpu-eu-kubeconfig"},
               "kubernetes": {"namespace": "agents", "secret_name": "agent-credentials", "node_selector": {"pool": "gpu"}}},
    "gpu-us": {"max_concurrent_jobs": 4,
               "kubernetes": {"namespace": NAMESPACE, "service_account": f"{FULLNAME}-agent", "node_selector": {"pool": "gpu"},
                              "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
}
TARGETS_CONFIG = """\
spawner:
  max_concurrent_jobs: 10
spawners:
  gpu-us:
    max_concurrent_jobs: 2
  gpu-eu:
    kubernetes:
      # Overridden by the chart: the kubeconfig it mounts from the Secret.
      kubeconfig: /home/someone/.kube/gpu-eu
agents:
  gpu:
    command: ["claude", "-p"]
    targets: [gpu-eu, gpu-us]
    overflow: next
  local:
    command: ["sh", "-c", "true"]
projects:
  vision:
    repo: "https://git.example.com/acme/vision.git"
    agent: gpu
    targets: [gpu-us]
"""
TARGETS_VALUES = merge(WITH_TOKEN, {"targets": TARGETS, "config": {"content": TARGETS_CONFIG}})
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
TARGETS_SECRETS = {"gpu-eu-kubeconfig": {"kubeconfig": KUBECONFIG}}

# Redis Sentinel: three sentinels (an address, a name with a port of its own, IPv6 without a
# port), the primary's password and the sentinels' own from one Secret, an ACL user, WAIT on one
# replica.
SENTINEL_PASSWORD = "sentinel0password0123456789"
SENTINEL_DATA_PASSWORD = "primary0password0123456789"
SENTINEL = merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {
    "minReplicasAcked": 1,
    "sentinel": {"masterName": "mymaster", "nodes": ["10.0.0.1:26379", "redis://sentinel-1.example.com:26380", "[fd00::5]"],
                 "username": "agentsmith", "existingSecret": "redis-sentinel",
                 "existingSecretSentinelPasswordKey": "sentinel-password"}}})
SENTINEL_SECRETS = {"redis-sentinel": {"redis-password": SENTINEL_DATA_PASSWORD, "sentinel-password": SENTINEL_PASSWORD}}

# Redis Cluster: a managed cluster's configuration endpoint by host, its password from a Secret,
# TLS, WAIT on the shard's replica; no prefix given (the chart's hash-tagged one applies).
CLUSTER_PASSWORD = "cluster0password0123456789"
CLUSTER = merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {
    "cluster": True, "host": "clustercfg.agentsmith.abc123.euw1.cache.amazonaws.com", "existingSecret": "redis-cluster",
    "tls": {"enabled": True}, "minReplicasAcked": 1}})
CLUSTER_SECRETS = {"redis-cluster": {"redis-password": CLUSTER_PASSWORD}}

# name -> (values, Secrets that exist outside the chart: {name: {key: value}})
SCENARIOS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "an API token given": (WITH_TOKEN, {}),
    "values.local.yaml.example": (chart_yaml("values.local.yaml.example"), {}),
    "values.prod.yaml.example": (
        chart_yaml("values.prod.yaml.example"),
        {"agentsmith-secrets": {"api-tokens": f"{TOKEN},{TOKEN}-2", "runner-secret": RUNNER_SECRET}},
    ),
    "external Redis URL": (
        merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {"url": "redis://:pw@redis.example.com:6379/0"}}),
        {},
    ),
    "external Redis Secret": (
        merge(WITH_TOKEN, {"redis": {"enabled": False},
                           "externalRedis": {"existingSecret": "redis-creds", "existingSecretKey": "url"}}),
        {"redis-creds": {"url": "redis://redis.example.com:6379/0"}},
    ),
    "external Redis host, password Secret, TLS": (
        merge(WITH_TOKEN, {"redis": {"enabled": False},
                           "externalRedis": {"host": "redis.example.com", "port": 6380, "existingSecret": "redis-creds",
                                             "tls": {"enabled": True}}}),
        {"redis-creds": {"redis-password": "external0password0123456789"}},
    ),
    "external Redis through Sentinel, WAIT on a replica": (SENTINEL, SENTINEL_SECRETS),
    "external Redis Cluster by host, password Secret, TLS, WAIT on a replica": (CLUSTER, CLUSTER_SECRETS),
    "Redis password from an existing Secret": (
        merge(WITH_TOKEN, {"redis": {"auth": {"existingSecret": "redis-auth", "existingSecretKey": "password"}}}),
        {"redis-auth": {"password": "mine0password0123456789"}},
    ),
    "existing Secret": (
        {"secrets": {"existingSecret": "my-secrets"}},
        {"my-secrets": {"api-tokens": TOKEN}},
    ),
    "ingress": (
        merge(WITH_TOKEN, {"ingress": {"enabled": True, "className": "nginx", "hosts": ["agentsmith.example.com"],
                                       "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                                       "tls": [{"secretName": "agentsmith-tls", "hosts": ["agentsmith.example.com"]}]}}),
        {},
    ),
    "rbac.create false, an existing ServiceAccount": (
        merge(WITH_TOKEN, {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "platform-agentsmith"}}),
        {},
    ),
    "a ServiceAccount of another name": (merge(WITH_TOKEN, {"serviceAccount": {"name": "dispatcher"}}), {}),
    "networkPolicy.enabled false": (merge(WITH_TOKEN, {"networkPolicy": {"enabled": False}}), {}),
    "agents in another namespace": (merge(WITH_TOKEN, {"agents": {"namespace": "agents"}}), {}),
    "agents in another namespace, with the CA bundle": (
        merge(WITH_TOKEN, {"agents": {"namespace": "agents"},
                           "extraCaBundle": {"content": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}),
        {},
    ),
    "clusterCidrs, blockedCidrs, SSH and an extra rule": (OPENED, {}),
    "PodDisruptionBudget (2 replicas)": (merge(WITH_TOKEN, {"replicas": 2}), {}),
    "ServiceMonitor": (merge(WITH_TOKEN, {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}), {}),
    "the dispatcher's placement and log level": (
        merge(WITH_TOKEN, {"replicas": 2, "dispatcher": {
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                    "matchLabels": {"app.kubernetes.io/name": "agentsmith"}}}}]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                           "whenUnsatisfiable": "ScheduleAnyway",
                                           "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "agentsmith"}}}],
            "priorityClassName": "system-cluster-critical",
            "logLevel": "info,agentsmith::notify=debug",
        }}),
        {},
    ),
    "config.content, agent Secret, CA bundle, pull secrets": (
        merge(WITH_TOKEN, {
            "config": {"content": USER_CONFIG, "installation": "team-a"},
            "secrets": {"runnerSecret": RUNNER_SECRET, "slack": {"signingSecret": "s", "botToken": "b"},
                        "github": {"webhookSecret": "g", "token": "gt"}, "gitlab": {"webhookToken": "l", "token": "lt"},
                        "jira": {"webhookSecret": "j", "apiToken": "jt"}},
            "agents": {"secret": {"data": {"anthropic-api-key": "sk-test"}},
                       "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
                       "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                           "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["agents"]}]}]}}},
                       "profileShapes": PROFILE_SHAPES},
            "imagePullSecrets": ["registry-credentials"],
            "extraCaBundle": {"content": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
            "dispatcher": {"extraEnv": [{"name": "TZ", "value": "UTC"}]},
        }),
        {},
    ),
    "two more spawner targets, one in another cluster (a kubeconfig Secret)": (TARGETS_VALUES, TARGETS_SECRETS),
}


# --- the checks ---------------------------------------------------------------------------


# Chart.yaml, read once: the version the checks hold every name to.
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def check_chart_version() -> None:
    checks.start("Chart.yaml's version and appVersion, and the names that carry them")
    version = str(CHART_META["version"])
    checks.ok(f"version {version} is SemVer 2", SEMVER.match(version))
    cargo = (ROOT / "Cargo.toml").read_text()
    workspace = re.search(r'^version = "([^"]+)"', cargo, re.M)
    checks.equal("appVersion is the workspace's version (Cargo.toml)", str(CHART_META["appVersion"]),
                 workspace.group(1) if workspace else None)
    readme = README.read_text()
    packages = re.findall(r"agentsmith-(\d[0-9A-Za-z.+-]*?)\.tgz", readme)
    versions = re.findall(r"--version (\S+)", readme)
    checks.ok("README.md shows `helm package`, `helm push` and `--version`", packages and versions,
              "the 'Packaging and publishing' section is missing")
    for named in packages + versions:
        checks.equal(f"README.md names version {named}", named, version)


def check_readme() -> None:
    checks.start("values.yaml documented, README values table current")
    rows, undocumented = values_docs()
    checks.ok("every value in values.yaml has a comment (leaves a `# --` one)", not undocumented,
              f"no comment on: {', '.join(undocumented)}")
    checks.ok("values.yaml documents values", len(rows) > 40, f"only {len(rows)} rows")
    readme = README.read_text()
    checks.ok("README.md has the values table markers", TABLE_START in readme and TABLE_END in readme)
    if TABLE_START in readme and TABLE_END in readme:
        checks.ok("README.md values table matches values.yaml", readme_with_table(readme) == readme,
                  "regenerate it: scripts/chart_check.py --write-readme")


def check_lint(helm) -> None:
    checks.start("helm lint (strict)")
    for label, values in [("default values", {}), ("test values", WITH_TOKEN), ("opened egress", OPENED),
                          ("values.local.yaml.example", SCENARIOS["values.local.yaml.example"][0]),
                          ("values.prod.yaml.example", SCENARIOS["values.prod.yaml.example"][0]),
                          ("Redis Sentinel and WAIT", SENTINEL), ("Redis Cluster and WAIT", CLUSTER),
                          ("two more spawner targets", TARGETS_VALUES)]:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
        checks.ok(f"lint with {label}: no warnings or errors", not problems, problems)
        infos = sorted({f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] < 2})
        if infos and label == "default values":
            print(f"     lint info (not warnings): {'; '.join(infos)}")


def check_schema(helm, chart) -> None:
    checks.start("values.schema.json")
    defaults = chart_yaml("values.yaml")
    try:
        chart.validate_schema(defaults)
        checks.ok("values.yaml itself is valid", True)
    except helm.HelmValuesError as e:
        checks.ok("values.yaml itself is valid", False, e)
    refused = [
        ("replicas \"two\"", {"replicas": "two"}, "/replicas"),
        ("image.pullPolicy Sometimes", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ("an unknown top-level key (replicaCount)", {"replicaCount": 2}, "replicaCount"),
        ("an API token under 16 characters", {"secrets": {"apiTokens": ["short"]}}, "/secrets/apiTokens/0"),
        ("an API token with a comma", {"secrets": {"apiTokens": ["0123456789abcdef,0123456789"]}}, "/secrets/apiTokens/0"),
        ("redis.appendfsync sometimes", {"redis": {"appendfsync": "sometimes"}}, "/redis/appendfsync"),
        ("an unknown key under redis", {"redis": {"password": "x"}}, "password"),
        ("agents.ttlSecondsAfterFinished 0", {"agents": {"ttlSecondsAfterFinished": 0}}, "/agents/ttlSecondsAfterFinished"),
        ("service.type Headless", {"service": {"type": "Headless"}}, "/service/type"),
        ("networkPolicy.enabled \"yes\"", {"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
        ("a cluster CIDR without a prefix length", {"networkPolicy": {"clusterCidrs": ["10.96.0.1"]}}, "/networkPolicy/clusterCidrs/0"),
        ("a cluster CIDR of the whole IPv4 space (no exception can be that)", {"networkPolicy": {"clusterCidrs": ["0.0.0.0/0"]}},
         "/networkPolicy/clusterCidrs/0"),
        ("a cluster CIDR that is no address", {"networkPolicy": {"clusterCidrs": ["300.1.2.3/8"]}}, "/networkPolicy/clusterCidrs/0"),
        ("a blocked CIDR of the whole IPv6 space", {"networkPolicy": {"blockedCidrs": ["::/0"]}}, "/networkPolicy/blockedCidrs/0"),
        ("an unknown key under networkPolicy", {"networkPolicy": {"allowMetadata": True}}, "allowMetadata"),
        ("a public port above 65535", {"agents": {"egress": {"publicPorts": [{"port": 70000}]}}}, "/agents/egress/publicPorts/0/port"),
        ("a public port of protocol HTTP", {"agents": {"egress": {"publicPorts": [{"port": 443, "protocol": "HTTP"}]}}},
         "/agents/egress/publicPorts/0/protocol"),
        ("an extra egress rule shaped as an ingress rule (from)", {"agents": {"egress": {"extra": [{"from": [{"podSelector": {}}]}]}}},
         "from"),
        ("an unknown key under agents.egress", {"agents": {"egress": {"allowAll": True}}}, "allowAll"),
        ("an unknown key under redis.auth (a password as a value)", {"redis": {"auth": {"password": "x"}}}, "password"),
        ("an empty redis.auth.existingSecretKey", {"redis": {"auth": {"existingSecretKey": ""}}}, "/redis/auth/existingSecretKey"),
        ("externalRedis.port \"6379\"", {"externalRedis": {"port": "6379"}}, "/externalRedis/port"),
        ("externalRedis.host with a scheme", {"externalRedis": {"host": "redis://r.example.com"}}, "/externalRedis/host"),
        ("externalRedis.tls.enabled \"true\"", {"externalRedis": {"tls": {"enabled": "true"}}}, "/externalRedis/tls/enabled"),
        ("agents.disk as a list", {"agents": {"disk": ["10Gi"]}}, "/agents/disk"),
        ("a sentinel over TLS (rediss://: not supported)", {"externalRedis": {"sentinel": {"nodes": ["rediss://s.example.com:26379"]}}},
         "/externalRedis/sentinel/nodes/0"),
        ("a sentinel with its password in the value", {"externalRedis": {"sentinel": {"nodes": ["redis://:pw@s.example.com:26379"]}}},
         "/externalRedis/sentinel/nodes/0"),
        ("sentinel nodes as one comma-separated string", {"externalRedis": {"sentinel": {"nodes": "a:26379,b:26379"}}},
         "/externalRedis/sentinel/nodes"),
        ("a sentinel master name as a number", {"externalRedis": {"sentinel": {"masterName": 12}}}, "/externalRedis/sentinel/masterName"),
        ("a password as a value under externalRedis.sentinel", {"externalRedis": {"sentinel": {"password": "x"}}}, "password"),
        ("a sentinel password key with a '/'", {"externalRedis": {"sentinel": {"existingSecretSentinelPasswordKey": "a/b"}}},
         "/externalRedis/sentinel/existingSecretSentinelPasswordKey"),
        ("externalRedis.minReplicasAcked -1", {"externalRedis": {"minReplicasAcked": -1}}, "/externalRedis/minReplicasAcked"),
        ("externalRedis.minReplicasAcked \"1\"", {"externalRedis": {"minReplicasAcked": "1"}}, "/externalRedis/minReplicasAcked"),
        ("externalRedis.cluster \"true\"", {"externalRedis": {"cluster": "true"}}, "/externalRedis/cluster"),
        ("a target name with capitals", {"targets": {"GPU-eu": {}}}, "'GPU-eu' does not match pattern"),
        ("a target name ending in '-'", {"targets": {"gpu-": {}}}, "'gpu-' does not match pattern"),
        ("a target name of 41 characters", {"targets": {"g" * 41: {}}}, f"'{'g' * 41}' does not match pattern"),
        ("a target named default (that is the spawner section)", {"targets": {"default": {}}}, "invalid propertyName 'default'"),
        ("a target key in camelCase (the dispatcher's are snake_case)", {"targets": {"gpu": {"maxConcurrentJobs": 2}}},
         "'maxConcurrentJobs' does not match pattern"),
        ("a target of type lambda", {"targets": {"gpu": {"type": "lambda"}}}, "/targets/gpu/type"),
        ("a target's max_concurrent_jobs -1", {"targets": {"gpu": {"max_concurrent_jobs": -1}}}, "/targets/gpu/max_concurrent_jobs"),
        ("a target's kubeconfigSecret without a name", {"targets": {"gpu": {"kubeconfigSecret": {"key": "kubeconfig"}}}},
         "/targets/gpu/kubeconfigSecret"),
        ("an unknown key under a target's kubeconfigSecret", {"targets": {"gpu": {"kubeconfigSecret": {"name": "k", "path": "/x"}}}},
         "path"),
    ]
    for label, bad, where in refused:
        values = merge(WITH_TOKEN, bad)
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
            checks.ok(f"refuses {label}", False, "it rendered")
        except helm.HelmValuesError as e:
            checks.ok(f"refuses {label}, naming {where}", where in str(e), str(e))
    accepted = [
        ("no value at all (the API token and the Redis password are generated)", {}),
        ("cluster and blocked CIDRs, IPv4 and IPv6", {"networkPolicy": {"clusterCidrs": CLUSTER_CIDRS, "blockedCidrs": ["203.0.113.0/24"]}}),
        ("public ports with a port range and every UDP port",
         {"agents": {"egress": {"publicPorts": [{"port": 8000, "endPort": 8100, "protocol": "TCP"}, {"protocol": "UDP"}]}}}),
        ("no public port at all", {"agents": {"egress": {"publicPorts": []}}}),
        ("an extra egress rule", OPENED),
        ("a Redis password Secret of one's own", {"redis": {"auth": {"existingSecret": "redis-auth", "existingSecretKey": "pw"}}}),
        ("an external Redis by host, port, password Secret and TLS",
         {"redis": {"enabled": False}, "externalRedis": {"host": "redis.example.com", "port": 6380, "existingSecret": "r",
                                                         "existingSecretPasswordKey": "pw", "tls": {"enabled": True}}}),
        ("agents.disk 20Gi", {"agents": {"disk": "20Gi"}}),
        ("an external Redis through Sentinel, with WAIT", SENTINEL),
        ("an external Redis Cluster by host, with WAIT", CLUSTER),
        ("an external Redis Cluster by URL", {"redis": {"enabled": False}, "externalRedis": {
            "cluster": True, "url": "rediss://:pw@clustercfg.example.com:6379"}}),
        ("sentinels by name, address and IPv6, with and without a port and redis://",
         {"redis": {"enabled": False}, "externalRedis": {"sentinel": {
             "masterName": "m", "nodes": ["s1", "s2.example.com:26380", "redis://10.0.0.3", "redis://[fd00::3]:26379/"]}}}),
        ("agents in their own namespace", {"agents": {"namespace": "agentsmith-agents"}}),
        ("two more spawner targets, one with a kubeconfig Secret", {"targets": TARGETS}),
        ("target names of 1 and 40 characters, and a kubeconfig under a key of one's own",
         {"targets": {"a": {}, "g" * 40: {"kubeconfigSecret": {"name": "k", "key": "config.yaml"}}}}),
    ]
    for label, good in accepted:
        try:
            chart.render(good, name=RELEASE, namespace=NAMESPACE)
            checks.ok(f"accepts {label}", True)
        except helm.HelmError as e:
            checks.ok(f"accepts {label}", False, e)


def check_template_failures(helm, chart) -> None:
    checks.start("template failures with a clear message")
    cases = [
        ("redis.enabled false and no external Redis", merge(WITH_TOKEN, {"redis": {"enabled": False}}), "set externalRedis.url"),
        ("externalRedis.url and externalRedis.host together",
         merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {"url": "redis://r:6379", "host": "r"}}),
         "externalRedis.url and externalRedis.host are both set"),
        ("externalRedis.url with secrets.existingSecret",
         {"secrets": {"existingSecret": "s"}, "redis": {"enabled": False}, "externalRedis": {"url": "redis://r:6379"}},
         "put the URL in a Secret"),
        ("serviceAccount.create false without a name",
         merge(WITH_TOKEN, {"serviceAccount": {"create": False}}), "name the dispatcher's existing ServiceAccount"),
        ("config.content with api.tokens", merge(WITH_TOKEN, {"config": {"content": "api:\n  tokens: [abc]\n"}}), "config.content sets api.tokens"),
        ("config.content with redis.url", merge(WITH_TOKEN, {"config": {"content": "redis:\n  url: redis://x\n"}}), "config.content sets redis.url"),
        ("config.content with server.runner_secret",
         merge(WITH_TOKEN, {"config": {"content": "server:\n  runner_secret: x\n"}}), "config.content sets server.runner_secret"),
        ("config.content with a webhook secret",
         merge(WITH_TOKEN, {"config": {"content": "sources:\n  slack:\n    signing_secret: x\n"}}),
         "config.content sets sources.slack.signing_secret"),
        ("config.content that is not a mapping", merge(WITH_TOKEN, {"config": {"content": "- a\n- b\n"}}), "config.content is not a YAML mapping"),
        ("config.content with redis.sentinel",
         merge(WITH_TOKEN, {"config": {"content": "redis:\n  sentinel:\n    password: x\n"}}), "config.content sets redis.sentinel"),
        ("sentinel nodes without a master name",
         merge(SENTINEL, {"externalRedis": {"sentinel": {"masterName": ""}}}),
         "externalRedis.sentinel.masterName is needed with externalRedis.sentinel.nodes"),
        ("a sentinel master name without nodes",
         merge(SENTINEL, {"externalRedis": {"sentinel": {"nodes": []}}}),
         "externalRedis.sentinel.nodes is needed with externalRedis.sentinel.masterName"),
        ("Sentinel with the bundled Redis", merge(SENTINEL, {"redis": {"enabled": True}, "externalRedis": {"minReplicasAcked": 0}}),
         "externalRedis.sentinel is set but redis.enabled is true"),
        ("Sentinel and externalRedis.host together", merge(SENTINEL, {"externalRedis": {"host": "r.example.com"}}),
         "externalRedis.sentinel is set together with externalRedis.url, externalRedis.host or externalRedis.existingSecret"),
        ("Sentinel with TLS", merge(SENTINEL, {"externalRedis": {"tls": {"enabled": True}}}),
         "externalRedis.tls.enabled is not supported with externalRedis.sentinel"),
        ("a sentinel password key without its Secret",
         merge(SENTINEL, {"externalRedis": {"sentinel": {"existingSecret": ""}}}),
         "externalRedis.sentinel.existingSecretSentinelPasswordKey is set without externalRedis.sentinel.existingSecret"),
        ("WAIT on replicas of the bundled Redis (it has none)", merge(WITH_TOKEN, {"externalRedis": {"minReplicasAcked": 1}}),
         "externalRedis.minReplicasAcked is 1, but the bundled Redis (redis.enabled) has no replicas"),
        ("Redis Cluster with the bundled Redis", merge(WITH_TOKEN, {"externalRedis": {"cluster": True}}),
         "externalRedis.cluster is true but redis.enabled is true"),
        ("Redis Cluster with Sentinel", merge(SENTINEL, {"externalRedis": {"cluster": True}}),
         "externalRedis.cluster and externalRedis.sentinel are both set"),
        ("Redis Cluster with a master name alone", merge(CLUSTER, {"externalRedis": {"sentinel": {"masterName": "mymaster"}}}),
         "externalRedis.cluster and externalRedis.sentinel are both set"),
        ("Redis Cluster by a unix:// URL", merge(WITH_TOKEN, {"redis": {"enabled": False},
                                                            "externalRedis": {"cluster": True, "url": "unix:///run/redis.sock"}}),
         "externalRedis.url is a unix:// socket, but externalRedis.cluster needs a node of the cluster"),
        *((f"Redis Cluster with config.content's redis.prefix {prefix!r} (no hash tag)",
           merge(CLUSTER, {"config": {"content": f"redis:\n  prefix: {json.dumps(prefix)}\n"}}),
           f"config.content sets redis.prefix {json.dumps(prefix)}, which has no hash tag")
          for prefix in ("agentsmith:", "{}agentsmith:", "{agentsmith:", "")),
        ("config.content with redis.cluster (not externalRedis.cluster)",
         merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {"url": "redis://r:6379"},
                            "config": {"content": "redis:\n  cluster: true\n  prefix: \"{a}:\"\n"}}),
         "config.content sets redis.cluster: set externalRedis.cluster=true instead"),
        ("a kubeconfigSecret on a docker target",
         merge(WITH_TOKEN, {"targets": {"build": {"type": "docker", "kubeconfigSecret": {"name": "k"}}}}),
         "targets.build.kubeconfigSecret is set but targets.build.type is docker: a kubeconfig is for a kubernetes target"),
    ]
    for label, values, message in cases:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
            checks.ok(f"refuses {label}", False, "it rendered")
        except helm.HelmError as e:
            checks.ok(f"refuses {label} ({message!r})", message in str(e), str(e))


def labels_ok(obj: dict) -> bool:
    labels = obj["metadata"].get("labels", {})
    return (labels.get("app.kubernetes.io/name") == "agentsmith"
            and labels.get("app.kubernetes.io/instance") == RELEASE
            and labels.get("app.kubernetes.io/managed-by") == "Helm"
            and labels.get("helm.sh/chart") == f"agentsmith-{CHART_META['version']}")


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict, name: str) -> dict:
    return next(c for c in pod_spec(deployment)["containers"] if c["name"] == name)


def config_of(objects: list[dict], name: str = FULLNAME) -> dict:
    return yaml.safe_load(one(objects, "ConfigMap", name)["data"]["agentsmith.yml"])


def deployment_env(deployment: dict, container_name: str, secrets: dict[str, dict[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The AGENTSMITH__ variables the container gets, resolved as the kubelet would: envFrom's
    Secrets first (their keys with the prefix), then env in order, values from Secrets, and
    $(NAME) in a value replaced by a variable defined before it (the Redis URL's password)."""
    resolved, missing = {}, []
    for source in container(deployment, container_name).get("envFrom", []):
        ref = source.get("secretRef")
        if ref is None:
            continue
        if ref["name"] not in secrets:
            if not ref.get("optional"):
                missing.append(f"envFrom <- {ref['name']}")
            continue
        resolved.update({source.get("prefix", "") + key: value for key, value in secrets[ref["name"]].items()})
    for var in container(deployment, container_name).get("env", []):
        if "value" in var:
            resolved[var["name"]] = expand(var["value"], resolved)
            continue
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            continue  # fieldRef, configMapKeyRef: nothing the checks need
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            if not ref.get("optional"):
                missing.append(f"{var['name']} <- {ref['name']}/{ref['key']}")
            continue
        resolved[var["name"]] = value
    return {k: v for k, v in resolved.items() if k.startswith("AGENTSMITH__")}, missing


def expand(value: str, earlier: dict[str, str]) -> str:
    """Kubernetes' $(NAME) expansion in an env value or argument: $$ escapes, unknown names stay."""
    return re.sub(r"\$\$|\$\(([^)]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else earlier.get(m.group(1), m.group(0)), value)


def without_generated(obj: dict) -> dict:
    """The object with the values the chart generates (a token, a password) blanked."""
    if obj["kind"] != "Secret":
        return obj
    data = {key: "<generated>" if GENERATED_TOKEN.fullmatch(plain) or GENERATED_PASSWORD.fullmatch(plain) else value
            for key, value in (obj.get("data") or {}).items() for plain in [base64.b64decode(value).decode()]}
    return {**obj, "data": data}


def secrets_in(objects: list[dict]) -> dict[str, dict[str, str]]:
    return {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
            for s in find(objects, "Secret")}


def dispatcher_verdict(binary: str, config: dict, env: dict[str, str], tmp: Path) -> tuple[bool, str]:
    """Whether `agentsmith config check` accepts agentsmith.yml with that environment, and what it said."""
    path = tmp / "agentsmith.yml"
    path.write_text(yaml.safe_dump(config))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSMITH")}
    result = subprocess.run([binary, "config", "check", "--config", str(path)], env={**clean, **env},
                            capture_output=True, text=True, timeout=60)
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def config_check(binary: str, config: dict, env: dict[str, str], tmp: Path, label: str) -> None:
    checks.ok(f"{label}: agentsmith.yml passes `agentsmith config check` (with the Deployment's env)",
              *dispatcher_verdict(binary, config, env, tmp))


def check_renders(helm, chart, binary: str, tmp: Path) -> dict[str, list[tuple[dict, set[str]]]]:
    """Renders every scenario for 1.20 and 1.37, checks each, and returns the objects to validate."""
    checks.start(f"renders ({len(SCENARIOS)} value sets x Kubernetes 1.20 and 1.37)")
    to_validate: dict[str, list[tuple[dict, set[str]]]] = {}
    for label, (values, external) in SCENARIOS.items():
        per_version = {}
        for version, caps in VERSIONS.items():
            try:
                per_version[version] = render(chart, values, caps)
            except helm.HelmError as e:
                checks.ok(f"{label} renders for {version}", False, e)
        if len(per_version) != 2:
            continue
        objects = objects_of(per_version["1.37"])
        objects_120 = objects_of(per_version["1.20"])
        # Everything but the PodDisruptionBudget (and the generated secrets, random in each
        # render) is the same for both versions.
        strip = lambda objs: [without_generated(o) for o in objs if o["kind"] != "PodDisruptionBudget"]  # noqa: E731
        checks.ok(f"{label}: 1.20 and 1.37 renders differ only in the PodDisruptionBudget", strip(objects) == strip(objects_120))
        for pdb in find(objects_120, "PodDisruptionBudget"):
            checks.equal(f"{label}: PodDisruptionBudget on 1.20", pdb["apiVersion"], "policy/v1beta1")
        for pdb in find(objects, "PodDisruptionBudget"):
            checks.equal(f"{label}: PodDisruptionBudget on 1.37", pdb["apiVersion"], "policy/v1")
        entries = {}
        for version, objs in (("1.20", objects_120), ("1.37", objects)):
            for obj in objs:
                key = json.dumps(obj, sort_keys=True)
                entries.setdefault(key, (obj, set()))[1].add(version)
        to_validate[label] = list(entries.values())
        try:
            check_objects(label, values, objects, per_version["1.37"], external, binary, tmp)
        except (AssertionError, KeyError, IndexError, StopIteration, TypeError) as e:
            checks.ok(f"{label}: the rendered objects have the expected shape", False, f"{type(e).__name__}: {e}")
    return to_validate


def check_objects(label: str, values: dict, objects: list[dict], rendered: dict[str, str],
                  external: dict, binary: str, tmp: Path) -> None:
    v = merge(chart_yaml("values.yaml"), values)
    ok, equal = checks.ok, checks.equal
    agents_ns = v["agents"]["namespace"] or NAMESPACE
    ok(f"{label}: every object has the standard labels", all(labels_ok(o) for o in objects),
       [o["metadata"]["name"] for o in objects if not labels_ok(o)])
    ok(f"{label}: every name fits a DNS label", all(len(o["metadata"]["name"]) <= 63 for o in objects))
    ok(f"{label}: every object is in the release or agents namespace",
       all(o["metadata"].get("namespace") in (NAMESPACE, agents_ns) for o in objects))

    hooks = [o for o in objects if "helm.sh/hook" in o["metadata"].get("annotations", {})]
    equal(f"{label}: the only hook is the helm test pod", [(h["kind"], h["metadata"]["annotations"]["helm.sh/hook"]) for h in hooks],
          [("Pod", "test")])
    test_pod = hooks[0] if hooks else {"metadata": {"annotations": {}}, "spec": {"containers": [{}]}}
    policy = set(test_pod["metadata"]["annotations"].get("helm.sh/hook-delete-policy", "").split(","))
    ok(f"{label}: the test pod is deleted whatever its outcome", {"hook-succeeded", "hook-failed", "before-hook-creation"} <= policy, policy)
    test_container = test_pod["spec"]["containers"][0]
    ok(f"{label}: the test pod GETs /ready on the Service",
       test_container.get("command", [None])[0] == "curl"
       and test_container["command"][-1] == f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:{v['service']['port']}/ready")
    equal(f"{label}: test pod container security context", test_container.get("securityContext"), RESTRICTED_CONTAINER)

    account = v["serviceAccount"]["name"] or FULLNAME
    if v["rbac"]["create"]:
        role = one(objects, "Role")
        equal(f"{label}: the Role's rules", role["rules"], EXPECTED_RULES)
        check_secret_rights(f"{label}: ", objects)
        equal(f"{label}: the Role is in the agents' namespace", role["metadata"]["namespace"], agents_ns)
        binding = one(objects, "RoleBinding")
        equal(f"{label}: the RoleBinding binds the dispatcher's ServiceAccount to the Role",
              (binding["roleRef"], binding["subjects"]),
              ({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME},
               [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]))
    else:
        equal(f"{label}: rbac.create false: no Role or RoleBinding",
              (find(objects, "Role"), find(objects, "RoleBinding")), ([], []))
    ok(f"{label}: no ClusterRole or ClusterRoleBinding", not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding"))
    dispatcher_accounts = [a["metadata"]["name"] for a in find(objects, "ServiceAccount")
                           if a["metadata"]["labels"].get("app.kubernetes.io/component") == "dispatcher"]
    equal(f"{label}: the dispatcher's ServiceAccount made exactly when serviceAccount.create",
          dispatcher_accounts, [account] if v["serviceAccount"]["create"] else [])
    agent_sa = one(objects, "ServiceAccount", f"{FULLNAME}-agent")
    equal(f"{label}: the agents' ServiceAccount mounts no token", agent_sa.get("automountServiceAccountToken"), False)
    equal(f"{label}: the agents' ServiceAccount is in the agents' namespace", agent_sa["metadata"]["namespace"], agents_ns)

    dispatcher = one(objects, "Deployment", FULLNAME)
    spec = pod_spec(dispatcher)
    equal(f"{label}: the dispatcher runs as its ServiceAccount", spec.get("serviceAccountName"), account)
    equal(f"{label}: dispatcher replicas", dispatcher["spec"]["replicas"], v["replicas"])
    equal(f"{label}: dispatcher rolling update", dispatcher["spec"]["strategy"],
          {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    equal(f"{label}: dispatcher pod security context", spec["securityContext"],
          {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
           "seccompProfile": {"type": "RuntimeDefault"}})
    for c in spec["containers"] + spec.get("initContainers", []):
        equal(f"{label}: dispatcher pod container {c['name']} security context", c["securityContext"], RESTRICTED_CONTAINER)
    main = container(dispatcher, "dispatcher")
    equal(f"{label}: liveness probe", main["livenessProbe"]["httpGet"], {"path": "/health", "port": "http"})
    equal(f"{label}: readiness probe", main["readinessProbe"]["httpGet"], {"path": "/ready", "port": "http"})
    config = config_of(objects)
    drain = (config.get("server") or {}).get("shutdown_grace_secs", 20)
    pre_stop = v["dispatcher"]["preStopSleepSeconds"]
    ok(f"{label}: terminationGracePeriodSeconds is above preStop + drain ({pre_stop} + {drain})",
       spec["terminationGracePeriodSeconds"] > pre_stop + drain, spec["terminationGracePeriodSeconds"])
    annotations = dispatcher["spec"]["template"]["metadata"]["annotations"]
    ok(f"{label}: checksum annotations of the ConfigMap and Secret",
       re.fullmatch(r"[0-9a-f]{64}", annotations.get("checksum/config", "")) is not None
       and re.fullmatch(r"[0-9a-f]{64}", annotations.get("checksum/secret", "")) is not None, annotations)
    env_names = [e["name"] for e in main["env"] if e["name"].startswith("AGENTSMITH__")]
    equal(f"{label}: the dispatcher's AGENTSMITH__ variables", env_names,
          [*redis_env_names(v), "AGENTSMITH__API__TOKENS", "AGENTSMITH__SERVER__RUNNER_SECRET", *sorted(SOURCE_SECRETS)])
    ok(f"{label}: no proxy variables when no proxy is set",
       not any(e["name"].upper() in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY") for e in main["env"]))

    # agentsmith.yml: what the chart controls, and that the dispatcher accepts it.
    server, k8s = config["server"], config["spawner"]["kubernetes"]
    equal(f"{label}: server.bind", server["bind"], "0.0.0.0:8080")
    equal(f"{label}: server.public_url is the Service's cluster DNS name", server["public_url"],
          f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:{v['service']['port']}")
    equal(f"{label}: server.installation", server["installation"], v["config"]["installation"] or FULLNAME)
    equal(f"{label}: spawner.type", config["spawner"]["type"], "kubernetes")
    equal(f"{label}: spawner.kubernetes namespace and service account",
          (k8s["namespace"], k8s["service_account"]), (agents_ns, f"{FULLNAME}-agent"))
    ok(f"{label}: in-cluster access (no kubeconfig or context)", "kubeconfig" not in k8s and "context" not in k8s, k8s)
    ok(f"{label}: no spawner.kubernetes.env without a proxy (dispatchers before it refuse the key)", "env" not in k8s)
    ok(f"{label}: no secret in agentsmith.yml",
       "tokens" not in (config.get("api") or {}) and "runner_secret" not in server and "url" not in (config.get("redis") or {})
       and not {"password", "nodes"} & set((config.get("redis") or {}).get("sentinel") or {}))
    ok(f"{label}: every agent profile has an image", all(p.get("image") for p in config["agents"].values()), config["agents"])
    secrets = {**secrets_in(objects), **external}
    env, missing = deployment_env(dispatcher, "dispatcher", secrets)
    ok(f"{label}: every Secret key the Deployment needs is there", not missing, missing)
    config_check(binary, config, env, tmp, label)

    # Redis, bundled or not, and the password the dispatcher's URL carries.
    redis_name = f"{FULLNAME}-redis"
    url_var = next((e for e in main["env"] if e["name"] == "AGENTSMITH__REDIS__URL"), {})
    url = env.get("AGENTSMITH__REDIS__URL")
    password = None
    passwords: list[tuple[str, str]] = []  # (which, value): others than the URL's, Sentinel's
    equal(f"{label}: agentsmith.yml's redis section: what externalRedis.sentinel, cluster and minReplicasAcked set, nothing else",
          config.get("redis"), redis_config(v))
    if v["redis"]["enabled"]:
        redis = one(objects, "Deployment", redis_name)
        rspec = pod_spec(redis)
        rc = container(redis, "redis")
        equal(f"{label}: Redis pod security context", rspec["securityContext"],
              {"runAsNonRoot": True, "runAsUser": 999, "runAsGroup": 999, "fsGroup": 999,
               "seccompProfile": {"type": "RuntimeDefault"}})
        equal(f"{label}: Redis container security context", rc["securityContext"], RESTRICTED_CONTAINER)
        equal(f"{label}: Redis strategy", redis["spec"]["strategy"], {"type": "Recreate"})
        args = rc["args"]
        opts = dict(zip(args[::2], args[1::2]))
        equal(f"{label}: Redis maxmemory-policy", opts.get("--maxmemory-policy"), "noeviction")
        equal(f"{label}: Redis stream-node-max-bytes (a job's events in ~1.3 KB, not ~3.9)",
              opts.get("--stream-node-max-bytes"), "1024")
        persistent = v["redis"]["persistence"]["enabled"]
        equal(f"{label}: Redis AOF", (opts.get("--appendonly"), opts.get("--appendfsync")),
              ("yes", v["redis"]["appendfsync"]) if persistent else ("no", None))
        volume = next(vol for vol in rspec["volumes"] if vol["name"] == "data")
        claims = find(objects, "PersistentVolumeClaim")
        if persistent and not v["redis"]["persistence"]["existingClaim"]:
            ok(f"{label}: Redis data on the chart's claim",
               volume.get("persistentVolumeClaim", {}).get("claimName") == redis_name and len(claims) == 1)
        elif persistent:
            ok(f"{label}: Redis data on the existing claim", volume.get("persistentVolumeClaim") and not claims)
        else:
            ok(f"{label}: Redis data in an emptyDir, no claim", "emptyDir" in volume and not claims)
        # The password: where it comes from, that Redis requires it, that the probes send it.
        auth = v["redis"]["auth"]
        source = ({"name": auth["existingSecret"], "key": auth["existingSecretKey"]} if auth["existingSecret"]
                  else {"name": redis_name, "key": "redis-password"})
        redis_env = {e["name"]: e for e in rc.get("env", [])}
        equal(f"{label}: Redis reads its password from Secret {source['name']} (REDISCLI_AUTH, not optional)",
              (redis_env.get("REDISCLI_AUTH", {}).get("valueFrom") or {}).get("secretKeyRef"), source)
        equal(f"{label}: Redis requires it: --requirepass $(REDISCLI_AUTH), expanded by Kubernetes", opts.get("--requirepass"),
              "$(REDISCLI_AUTH)")
        equal(f"{label}: Redis protected mode on", opts.get("--protected-mode"), "yes")
        for probe_name in ("livenessProbe", "readinessProbe"):
            command = ((rc.get(probe_name) or {}).get("exec") or {}).get("command") or []
            ok(f"{label}: Redis {probe_name} PINGs with redis-cli, authenticated by REDISCLI_AUTH (no password in its command)",
               "redis-cli" in " ".join(command) and " ping" in " ".join(command)
               and not re.search(r"\s(-a|--pass|--user|-u)\s", " ".join(command)) and "REDISCLI_AUTH" in redis_env,
               rc.get(probe_name))
        password = secrets.get(source["name"], {}).get(source["key"])
        if not auth["existingSecret"]:
            password_secret = one(objects, "Secret", redis_name)
            equal(f"{label}: Secret {redis_name} holds redis-password, nothing else", sorted(password_secret.get("data") or {}),
                  ["redis-password"])
            ok(f"{label}: the generated Redis password is 32 random letters and digits",
               password and GENERATED_PASSWORD.fullmatch(password), password)
        else:
            ok(f"{label}: no chart-made Redis password Secret with redis.auth.existingSecret", not find(objects, "Secret", redis_name))
        equal(f"{label}: the dispatcher's Redis URL, in its manifest: the password by reference",
              url_var.get("value"), f"redis://:$(REDIS_SECRET_{source['key']})@{redis_name}:6379")
        equal(f"{label}: ... to the same Secret, by envFrom (defined before any env entry, whatever an upgrade does to their order)",
              main.get("envFrom"), [{"prefix": "REDIS_SECRET_", "secretRef": {"name": source["name"]}}])
        equal(f"{label}: the dispatcher's Redis URL, as the kubelet makes it", url, f"redis://:{password}@{redis_name}:6379")
    else:
        ok(f"{label}: no bundled Redis", not find(objects, "Deployment", redis_name) and not find(objects, "Service", redis_name)
           and not find(objects, "Secret", redis_name))
        external = v["externalRedis"]
        if external["sentinel"]["nodes"]:
            passwords = check_sentinel_env(label, external["sentinel"], main, env, secrets)
        elif external["host"]:
            scheme = "rediss" if external["tls"]["enabled"] else "redis"
            if external["existingSecret"]:
                password = secrets.get(external["existingSecret"], {}).get(external["existingSecretPasswordKey"])
                equal(f"{label}: the external Redis URL, built from host, port, TLS and the password Secret", url,
                      f"{scheme}://:{password}@{external['host']}:{external['port']}")
                ok(f"{label}: the password by reference in the manifest, its Secret by envFrom",
                   f"$(REDIS_SECRET_{external['existingSecretPasswordKey']})" in url_var.get("value", "")
                   and main.get("envFrom") == [{"prefix": "REDIS_SECRET_", "secretRef": {"name": external["existingSecret"]}}])
            else:
                equal(f"{label}: the external Redis URL, built from host, port and TLS", url,
                      f"{scheme}://{external['host']}:{external['port']}")
        else:
            ok(f"{label}: the Redis URL comes from a Secret", "valueFrom" in url_var)
    for which, secret_value in [("the Redis password", password), *passwords]:
        if not secret_value:
            continue
        leaks = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["kind"] != "Secret" and secret_value in json.dumps(o)]
        ok(f"{label}: {which} is in no object but a Secret", not leaks, leaks)

    # The chart's own Secret: created unless existingSecret; what it holds.
    chart_secret = find(objects, "Secret", FULLNAME)
    notes = next((t for p, t in rendered.items() if p.endswith("NOTES.txt")), "")
    if v["secrets"]["existingSecret"]:
        ok(f"{label}: no chart Secret with secrets.existingSecret", not chart_secret)
    else:
        data = secrets_in(objects)[FULLNAME]
        expected_keys = {"api-tokens"}
        expected_keys |= {"runner-secret"} if v["secrets"]["runnerSecret"] else set()
        expected_keys |= {"redis-url"} if not v["redis"]["enabled"] and v["externalRedis"]["url"] and not v["externalRedis"]["existingSecret"] else set()
        expected_keys |= {key for key, value in source_values(v).items() if value}
        equal(f"{label}: the keys of the chart's Secret", sorted(data), sorted(expected_keys))
        if v["secrets"]["apiTokens"]:
            equal(f"{label}: api-tokens in the Secret", data.get("api-tokens"), ",".join(v["secrets"]["apiTokens"]))
        else:
            token = data.get("api-tokens", "")
            ok(f"{label}: no token given: one is generated, 40 random letters and digits", GENERATED_TOKEN.fullmatch(token), token)
            leaks = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["kind"] != "Secret" and token in json.dumps(o)]
            ok(f"{label}: the generated token is in no object but its Secret", not leaks, leaks)
        ok(f"{label}: NOTES.txt gives the one command that reads the token",
           f"kubectl --namespace {NAMESPACE} get secret {FULLNAME} -o jsonpath='{{.data.api-tokens}}' | base64 -d" in notes, notes)
        if v["secrets"]["slack"]["signingSecret"]:
            ok(f"{label}: webhook secrets kept in the Secret", set(SOURCE_SECRETS.values()) <= set(data), sorted(data))
            enabled = {name: s.get("enabled") for name, s in (config.get("sources") or {}).items()}
            equal(f"{label}: every source with a secret is on", enabled,
                  {"slack": True, "github": True, "gitlab": True, "jira": True})

    # Optional objects.
    replicas = v["replicas"]
    pdbs = find(objects, "PodDisruptionBudget")
    equal(f"{label}: a PodDisruptionBudget exactly when replicas > 1", len(pdbs), 1 if replicas > 1 and v["podDisruptionBudget"]["enabled"] else 0)
    equal(f"{label}: a ServiceMonitor exactly when enabled", len(find(objects, "ServiceMonitor")), 1 if v["serviceMonitor"]["enabled"] else 0)
    ingresses = find(objects, "Ingress")
    equal(f"{label}: an Ingress exactly when enabled", len(ingresses), 1 if v["ingress"]["enabled"] else 0)
    for ingress in ingresses:
        paths = [(p["path"], p["pathType"], p["backend"]["service"]["name"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        equal(f"{label}: Ingress routes /webhooks and /v1 to the dispatcher", sorted(paths),
              sorted(("/" + p.strip("/"), "Prefix", FULLNAME) for p in v["ingress"]["paths"]) * len(v["ingress"]["hosts"] or [""]))
        equal(f"{label}: Ingress TLS", ingress["spec"].get("tls"), v["ingress"]["tls"] or None)
    check_chart_policies(label, v, objects, notes, server["installation"], agents_ns)
    if v["agents"]["secret"]["data"]:
        agent_secret = one(objects, "Secret", f"{FULLNAME}-agent")
        equal(f"{label}: agents' Secret named in spawner.kubernetes.secret_name", k8s.get("secret_name"), agent_secret["metadata"]["name"])
    equal(f"{label}: agents.profileShapes as spawner.kubernetes.profiles",
          k8s.get("profiles"), v["agents"]["profileShapes"] or None)
    check_targets(label, v, config, spec, main, secrets, notes)
    ca = v["extraCaBundle"]
    ca_map = ca["existingConfigMap"] or (f"{FULLNAME}-ca" if ca["content"] else "")
    equal(f"{label}: agent pods mount the extra CA (spawner.kubernetes.ca_bundle) exactly when one is given",
          k8s.get("ca_bundle"), {"config_map": ca_map, "key": ca["key"]} if ca_map else None)
    made = sorted(o["metadata"]["namespace"] for o in find(objects, "ConfigMap", f"{FULLNAME}-ca"))
    equal(f"{label}: the chart's CA ConfigMap in the release and the agents' namespaces",
          made, sorted({NAMESPACE, agents_ns}) if ca["content"] and not ca["existingConfigMap"] else [])
    if v["extraCaBundle"]["content"]:
        ok(f"{label}: SSL_CERT_FILE points at the joined bundle",
           {"name": "SSL_CERT_FILE", "value": "/etc/agentsmith/ca/ca-certificates.crt"} in main["env"])
    d = v["dispatcher"]
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
        equal(f"{label}: the dispatcher pods' {key}", spec.get(key), d[key] or None)
    equal(f"{label}: RUST_LOG from logLevel, exactly when set",
          [e.get("value") for e in main["env"] if e["name"] == "RUST_LOG"], [d["logLevel"]] if d["logLevel"] else [])
    for extra in d["extraEnv"]:
        ok(f"{label}: extraEnv {extra['name']} on the dispatcher", extra in main["env"])
    if v["imagePullSecrets"]:
        equal(f"{label}: pull secrets on the pods and for agents", (spec.get("imagePullSecrets"), k8s.get("image_pull_secrets")),
              ([{"name": n} for n in v["imagePullSecrets"]], v["imagePullSecrets"]))
    ok(f"{label}: NOTES.txt names /v1, /webhooks, helm test and /ready",
       all(s in notes for s in ("/v1", "/webhooks", "helm test", "port-forward", "/ready")))


def target_spawners(v: dict) -> dict | None:
    """agentsmith.yml's spawners section as the chart should make it: each of `targets` without
    kubeconfigSecret, type kubernetes unless it names one, config.content's spawners over them,
    and the kubeconfig of each with a kubeconfigSecret the file the chart mounts."""
    made = {name: merge({"type": "kubernetes"}, {k: val for k, val in (target or {}).items() if k != "kubeconfigSecret"})
            for name, target in v["targets"].items()}
    user = (yaml.safe_load(v["config"]["content"] or "{}") or {}).get("spawners") or {}
    spawners = merge(made, user)
    for name, target in v["targets"].items():
        if (target or {}).get("kubeconfigSecret"):
            spawners = merge(spawners, {name: {"kubernetes": {"kubeconfig": f"/etc/agentsmith/targets/{name}/kubeconfig"}}})
    return spawners or None


def check_targets(label: str, v: dict, config: dict, spec: dict, main: dict, secrets: dict[str, dict[str, str]],
                  notes: str) -> None:
    """More spawner targets (targets): agentsmith.yml's spawners, each kubeconfig Secret mounted
    read-only where its target's kubeconfig says, profiles' and projects' targets as given."""
    ok, equal = checks.ok, checks.equal
    spawners = config.get("spawners") or {}
    equal(f"{label}: targets as agentsmith.yml's spawners (config.content's over them, kubeconfigs where the chart mounts them)",
          config.get("spawners"), target_spawners(v))
    for name, target in v["targets"].items():
        made = spawners.get(name) or {}
        kubeconfig = (made.get("kubernetes") or {}).get("kubeconfig")
        secret = (target or {}).get("kubeconfigSecret")
        volume = next((vol for vol in spec["volumes"] if vol["name"] == f"target-{name}"), None)
        mount = next((m for m in main["volumeMounts"] if m["name"] == f"target-{name}"), None)
        ok(f"{label}: spawners.{name} has no kubeconfigSecret (the chart's key; the dispatcher refuses unknown ones)",
           "kubeconfigSecret" not in made, made)
        if secret:
            directory = f"/etc/agentsmith/targets/{name}"
            equal(f"{label}: spawners.{name}.kubernetes.kubeconfig is the mounted file", kubeconfig, f"{directory}/kubeconfig")
            equal(f"{label}: target {name}'s Secret as a volume: its one key as the file kubeconfig, 0440 (the dispatcher reads it through fsGroup)",
                  volume, {"name": f"target-{name}", "secret": {
                      "secretName": secret["name"], "defaultMode": 0o440,
                      "items": [{"key": secret.get("key", "kubeconfig"), "path": "kubeconfig"}]}})
            equal(f"{label}: ... mounted read-only in the dispatcher at {directory}", mount,
                  {"name": f"target-{name}", "mountPath": directory, "readOnly": True})
        else:
            ok(f"{label}: target {name} is this cluster: no kubeconfig, no volume", kubeconfig is None and volume is None and mount is None,
               (kubeconfig, volume, mount))
    mounted = [vol for vol in spec["volumes"] if vol["name"].startswith("target-")]
    equal(f"{label}: a kubeconfig volume exactly for each target with a kubeconfigSecret", sorted(vol["name"] for vol in mounted),
          sorted(f"target-{name}" for name, target in v["targets"].items() if (target or {}).get("kubeconfigSecret")))
    missing = [f"{vol['secret']['secretName']}/{item['key']}" for vol in spec["volumes"] if "secret" in vol
               for item in vol["secret"].get("items", []) if item["key"] not in secrets.get(vol["secret"]["secretName"], {})]
    ok(f"{label}: every Secret key the dispatcher pod mounts is there", not missing, missing)
    user = yaml.safe_load(v["config"]["content"] or "{}") or {}
    for section in ("agents", "projects"):
        given = {name: {k: entry[k] for k in ("targets", "overflow") if k in entry} for name, entry in (user.get(section) or {}).items()}
        made = {name: {k: entry[k] for k in ("targets", "overflow") if k in entry} for name, entry in (config.get(section) or {}).items()
                if name in given}
        equal(f"{label}: the {section}' targets and overflow as config.content gives them", made, given)
    for name in spawners:
        ok(f"{label}: NOTES.txt names target {name}", f'target "{name}" (spawners.{name})' in notes, notes)


def sentinel_on(v: dict) -> bool:
    return not v["redis"]["enabled"] and bool(v["externalRedis"]["sentinel"]["nodes"])


def cluster_on(v: dict) -> bool:
    return not v["redis"]["enabled"] and bool(v["externalRedis"]["cluster"])


def sentinel_password_ref(sentinel: dict) -> dict | None:
    """The Secret and key of the primary's (and its replicas') password, if there is one."""
    if sentinel["existingSecret"] and sentinel["existingSecretPasswordKey"]:
        return {"name": sentinel["existingSecret"], "key": sentinel["existingSecretPasswordKey"]}
    return None


def redis_env_names(v: dict) -> list[str]:
    """The dispatcher's Redis variables: the URL, or with Sentinel the sentinels and the password."""
    if sentinel_on(v):
        password = ["AGENTSMITH__REDIS__SENTINEL__PASSWORD"] if sentinel_password_ref(v["externalRedis"]["sentinel"]) else []
        return ["AGENTSMITH__REDIS__SENTINEL__NODES", *password]
    return ["AGENTSMITH__REDIS__URL"]


def redis_config(v: dict) -> dict | None:
    """agentsmith.yml's `redis` section as the chart writes it (None: none, as before Sentinel),
    for value sets whose config.content has no redis section."""
    redis: dict[str, Any] = {}
    if cluster_on(v):
        redis.update({"cluster": True, "prefix": "{agentsmith}:"})
    if sentinel_on(v):
        sentinel = v["externalRedis"]["sentinel"]
        redis["sentinel"] = {"master_name": sentinel["masterName"], **({"username": sentinel["username"]} if sentinel["username"] else {})}
    if v["externalRedis"]["minReplicasAcked"]:
        redis["min_replicas_acked"] = v["externalRedis"]["minReplicasAcked"]
    return redis or None


def sentinel_nodes(nodes: list[str], auth: str) -> str:
    """AGENTSMITH__REDIS__SENTINEL__NODES for externalRedis.sentinel.nodes: redis://, the port 26379 when none."""
    urls = []
    for node in nodes:
        address = node.removeprefix("redis://").rstrip("/")
        urls.append(f"redis://{auth}{address}{'' if re.search(r':[0-9]+$', address) else ':26379'}")
    return ",".join(urls)


def check_sentinel_env(label: str, sentinel: dict, main: dict, env: dict[str, str],
                       secrets: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """The dispatcher's Sentinel variables: in the manifest, passwords by reference only; as the
    kubelet resolves them, the sentinels' URLs with their password and the primary's password.
    Returns the passwords, (which, value), for the leak check."""
    ok, equal = checks.ok, checks.equal
    variables = {e["name"]: e for e in main["env"]}
    secret_name, sentinel_key = sentinel["existingSecret"], sentinel["existingSecretSentinelPasswordKey"]
    auth_ref = f":$(REDIS_SECRET_{sentinel_key})@" if secret_name and sentinel_key else ""
    ok(f"{label}: no AGENTSMITH__REDIS__URL with Sentinel (redis.url is not used)", "AGENTSMITH__REDIS__URL" not in variables)
    equal(f"{label}: AGENTSMITH__REDIS__SENTINEL__NODES in the manifest: redis:// URLs, the sentinels' password by reference",
          variables.get("AGENTSMITH__REDIS__SENTINEL__NODES"),
          {"name": "AGENTSMITH__REDIS__SENTINEL__NODES", "value": sentinel_nodes(sentinel["nodes"], auth_ref)})
    equal(f"{label}: ... its Secret by envFrom", main.get("envFrom"),
          [{"prefix": "REDIS_SECRET_", "secretRef": {"name": secret_name}}] if auth_ref else None)
    sentinel_password = secrets.get(secret_name, {}).get(sentinel_key) if auth_ref else None
    equal(f"{label}: the sentinels' URLs as the kubelet makes them", env.get("AGENTSMITH__REDIS__SENTINEL__NODES"),
          sentinel_nodes(sentinel["nodes"], f":{sentinel_password}@" if sentinel_password else ""))
    ref = sentinel_password_ref(sentinel)
    password_var = variables.get("AGENTSMITH__REDIS__SENTINEL__PASSWORD")
    if ref:
        equal(f"{label}: AGENTSMITH__REDIS__SENTINEL__PASSWORD only by secretKeyRef, to {ref['name']}/{ref['key']}", password_var,
              {"name": "AGENTSMITH__REDIS__SENTINEL__PASSWORD", "valueFrom": {"secretKeyRef": ref}})
    else:
        ok(f"{label}: no AGENTSMITH__REDIS__SENTINEL__PASSWORD without a password Secret", password_var is None, password_var)
    data_password = secrets.get(ref["name"], {}).get(ref["key"]) if ref else None
    equal(f"{label}: the primary's password as the dispatcher gets it", env.get("AGENTSMITH__REDIS__SENTINEL__PASSWORD"), data_password)
    return [(which, value) for which, value in (("the sentinels' password", sentinel_password),
                                                ("the Sentinel primary's password", data_password)) if value]


def source_values(v: dict) -> dict[str, str]:
    """The webhook sources' secrets given as values, by their key in the Secret."""
    sources = v["secrets"]
    return {"slack-signing-secret": sources["slack"]["signingSecret"], "slack-bot-token": sources["slack"]["botToken"],
            "github-webhook-secret": sources["github"]["webhookSecret"], "github-token": sources["github"]["token"],
            "gitlab-webhook-token": sources["gitlab"]["webhookToken"], "gitlab-token": sources["gitlab"]["token"],
            "jira-webhook-secret": sources["jira"]["webhookSecret"], "jira-api-token": sources["jira"]["apiToken"]}


def check_secret_rights(prefix: str, objects: list[dict]) -> None:
    """The dispatcher writes Secrets (each attempt's one-time credential) and cannot read one."""
    rules = [rule for role in find(objects, "Role") + find(objects, "ClusterRole") for rule in role.get("rules") or []]
    on_secrets = [rule for rule in rules if set(rule.get("apiGroups") or []) & {"", "*"}
                  and set(rule.get("resources") or []) & {"secrets", "*"}]
    writes = sorted({verb for rule in on_secrets for verb in rule["verbs"]} - READ_VERBS)
    checks.equal(f"{prefix}the dispatcher may create, patch and delete Secrets", writes, ["create", "delete", "patch"])
    readers = [rule for rule in on_secrets if set(rule["verbs"]) & READ_VERBS]
    checks.ok(f"{prefix}no rule lets it read Secrets (get, list, watch or *)", not readers, readers)


# Addresses agent pods must never reach (none is public), with what each stands for.
NON_PUBLIC = [
    ("169.254.169.254", "cloud metadata: AWS, GCP, Azure, OpenStack"),
    ("169.254.170.2", "ECS task metadata"),
    ("169.254.170.23", "ECS task metadata v4"),
    ("100.100.100.200", "Alibaba Cloud metadata"),
    ("fd00:ec2::254", "AWS metadata over IPv6"),
    ("169.254.20.10", "NodeLocal DNS"),
    ("10.96.0.1", "the test cluster's API Service"),
    ("172.17.0.1", "the test cluster's node, API server and DNS (Docker bridge)"),
    ("10.0.0.1", "10/8"), ("10.255.255.254", "10/8"),
    ("172.16.0.1", "172.16/12"), ("172.31.255.254", "172.16/12"),
    ("192.168.0.1", "192.168/16"), ("192.168.255.254", "192.168/16"),
    ("100.64.0.1", "100.64/10, shared address space"), ("100.127.255.254", "100.64/10"),
    ("127.0.0.1", "loopback"), ("0.0.0.0", "this host"), ("0.1.2.3", "0/8"),
    ("224.0.0.251", "multicast"), ("239.255.255.250", "multicast"), ("240.0.0.1", "reserved"), ("255.255.255.255", "broadcast"),
    ("192.0.0.170", "IETF protocol assignments"), ("198.18.0.1", "benchmarking"),
    ("::1", "IPv6 loopback"), ("::", "IPv6 unspecified"), ("fe80::1", "IPv6 link-local"), ("fc00::1", "IPv6 unique local"),
    ("fd12:3456:789a::1", "IPv6 unique local"), ("ff02::1", "IPv6 multicast"),
    ("::ffff:169.254.169.254", "the metadata address, IPv4-mapped"), ("::ffff:10.0.0.1", "10.0.0.1, IPv4-mapped"),
    ("64:ff9b::a9fe:a9fe", "the metadata address through NAT64"), ("64:ff9b:1::a00:1", "10.0.0.1 through local NAT64"),
    ("2002:a9fe:a9fe::1", "the metadata address through 6to4"), ("2002:a00:1::1", "10.0.0.1 through 6to4"),
]
PUBLIC = [("1.1.1.1", "a public resolver's address"), ("140.82.112.3", "github.com"), ("151.101.0.223", "pypi.org"),
          ("2606:4700:4700::1111", "a public IPv6 address"), ("2a00:1450:4001:80b::200e", "a public IPv6 address")]
# Ports each address is tried on: the defaults' 443 and 80, and what they must not open.
PROBE_PORTS = [(443, "TCP"), (80, "TCP"), (22, "TCP"), (25, "TCP"), (5432, "TCP"), (6379, "TCP"), (26379, "TCP"), (53, "UDP"),
               (53, "TCP"), (443, "UDP")]


def port_listed(ports: list[dict], port: int, protocol: str) -> bool:
    return any(p.get("protocol", "TCP") == protocol and ("port" not in p or p["port"] <= port <= p.get("endPort", p["port"]))
               for p in ports)


def check_policies(prefix: str, policies: list[dict], *, release_ns: str, agents_ns: str, installation: str,
                   dispatcher_labels: dict, redis_labels: dict | None, dispatcher_port: int, public_ports: list[dict],
                   excluded: list[str], extra: list[dict]) -> None:
    """Every NetworkPolicy of a render or an overlay, evaluated for the connections that matter:
    agent pods (no inbound; outbound DNS, the dispatcher, public addresses on public_ports, the
    extra rules; never the ranges of NON_PUBLIC or `excluded`), Redis (the dispatcher only, no
    outbound), the dispatcher (no policy of its own: Redis, the API server, the providers)."""
    ok = checks.ok
    agent = Endpoint("10.244.0.20", {"app.kubernetes.io/managed-by": "agentsmith", "agentsmith.io/installation": installation,
                                     "agentsmith.io/job-id": "j0b1d0000001", "agentsmith.io/attempt": "1"}, agents_ns)
    dispatcher = Endpoint("10.244.0.10", dispatcher_labels, release_ns)
    redis = Endpoint("10.244.0.11", redis_labels, release_ns) if redis_labels else None
    dns = Endpoint("10.244.0.2", {"k8s-app": "kube-dns"}, "kube-system")
    agent_policies = [p for p in policies if p["metadata"]["namespace"] == agents_ns
                      and selects(p["spec"].get("podSelector"), agent.labels)]
    ok(f"{prefix}a NetworkPolicy in {agents_ns} selects agent pods, for both directions",
       agent_policies and {"Ingress", "Egress"} <= {t for p in agent_policies for t in policy_types(p)},
       [p["metadata"]["name"] for p in agent_policies])
    for other in [dispatcher] + ([redis] if redis else []):
        chosen = [p["metadata"]["name"] for p in agent_policies if selects(p["spec"].get("podSelector"), other.labels)]
        ok(f"{prefix}the agents' policy does not select the {other.labels['app.kubernetes.io/component']} pods", not chosen, chosen)

    def reach(target: Endpoint, port: int, protocol: str = "TCP", source: Endpoint = agent) -> bool:
        return allowed(policies, source, target, port, protocol)

    def outside(ip: str) -> Endpoint:
        return Endpoint(ip)

    # Public addresses: exactly the listed ports (or an extra rule's).
    for ip, what in PUBLIC:
        expected = {f"{port}/{proto}": port_listed(public_ports, port, proto) or allowed([{"metadata": {"namespace": agents_ns},
                    "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": extra}}], agent, outside(ip), port, proto)
                    for port, proto in PROBE_PORTS}
        actual = {f"{port}/{proto}": reach(outside(ip), port, proto) for port, proto in PROBE_PORTS}
        checks.equal(f"{prefix}agents reach {ip} ({what}) on exactly the public ports", actual, expected)
    # Never a non-public address, whatever the port.
    for ip, what in NON_PUBLIC + [(address, "networkPolicy.clusterCidrs or blockedCidrs") for address in excluded]:
        opened = [f"{port}/{proto}" for port, proto in PROBE_PORTS if reach(outside(ip), port, proto)]
        ok(f"{prefix}agents cannot reach {ip} ({what}) on any port", not opened, f"open on {opened}")
    # Pods.
    ok(f"{prefix}agents reach the dispatcher pods on {dispatcher_port} (runner callbacks)", reach(dispatcher, dispatcher_port))
    ok(f"{prefix}agents reach no other port of the dispatcher pods",
       not any(reach(dispatcher, port) for port in (9090, 6379, 22, dispatcher_port + 1)))
    ok(f"{prefix}agents reach DNS pods on 53 (UDP and TCP)", reach(dns, 53, "UDP") and reach(dns, 53, "TCP"))
    ok(f"{prefix}agents reach DNS pods on nothing else", not reach(dns, 443) and not reach(dns, 8080))
    if redis:
        ok(f"{prefix}agents cannot reach the Redis pod", not any(reach(redis, port) for port in (6379, 443, 80)))
    if agents_ns != release_ns:
        impostor = Endpoint("10.244.0.30", dispatcher_labels, agents_ns)
        ok(f"{prefix}agents cannot reach a pod with the dispatcher's labels in {agents_ns} (only the release namespace's)",
           not reach(impostor, dispatcher_port))
    other_agent = Endpoint("10.244.0.21", agent.labels, agents_ns)
    ok(f"{prefix}agents cannot reach other agent pods (but for DNS's port)", not reach(other_agent, 8080) and not reach(other_agent, 443))
    # Inbound: nothing.
    for source, what in ((dispatcher, "the dispatcher"), (other_agent, "another agent pod"), (outside("1.1.1.1"), "a public address"),
                         (outside("172.17.0.1"), "the node")):
        opened = [port for port in (8080, 22, 443, 80) if allowed(policies, agent, source, port, direction="Ingress")]
        ok(f"{prefix}agent pods take no connection from {what}", not opened, f"open on {opened}")
    if redis:
        inbound = lambda source, port: allowed(policies, redis, source, port, direction="Ingress")  # noqa: E731
        ok(f"{prefix}Redis takes the dispatcher pods on 6379", inbound(dispatcher, 6379))
        ok(f"{prefix}Redis takes nothing else from them", not inbound(dispatcher, 6380) and not inbound(dispatcher, 22))
        for source, what in ((agent, "an agent pod"), (Endpoint("10.244.0.40", dispatcher_labels, "elsewhere"),
                              "a pod with the dispatcher's labels in another namespace"),
                             (Endpoint("10.244.0.41", {"app": "other"}, release_ns), "another pod of the namespace"),
                             (outside("1.1.1.1"), "a public address")):
            ok(f"{prefix}Redis refuses {what}", not inbound(source, 6379))
        ok(f"{prefix}Redis connects nowhere", not any(allowed(policies, redis, target, port, proto) for target, port, proto in
                                                      ((outside("1.1.1.1"), 443, "TCP"), (dispatcher, dispatcher_port, "TCP"),
                                                       (dns, 53, "UDP"), (outside("169.254.169.254"), 80, "TCP"))))
    # The dispatcher has no policy: it reaches Redis, the API server and the providers, and takes
    # the Ingress controller's, the runners' and the probes' connections.
    for target, port, what in (((redis or Endpoint("10.0.5.5")), 6379, "Redis"), (outside("10.0.5.6"), 26379, "Redis Sentinel"),
                               (outside("fd00::5"), 26379, "Redis Sentinel over IPv6"), (outside("10.96.0.1"), 443, "the API Service"),
                               (outside("172.17.0.1"), 6443, "the API server"), (outside("140.82.112.3"), 443, "the providers (github.com)")):
        ok(f"{prefix}the dispatcher reaches {what}", allowed(policies, dispatcher, target, port))
    ok(f"{prefix}the dispatcher takes connections on {dispatcher_port} from anywhere (Ingress controller, runners)",
       allowed(policies, dispatcher, outside("10.1.1.1"), dispatcher_port, direction="Ingress")
       and allowed(policies, dispatcher, agent, dispatcher_port, direction="Ingress"))


def excluded_addresses(v: dict) -> list[str]:
    """An address at each end of every networkPolicy.clusterCidrs and blockedCidrs range."""
    out = []
    for cidr in v["networkPolicy"]["clusterCidrs"] + v["networkPolicy"]["blockedCidrs"]:
        network = ipaddress.ip_network(cidr)
        out += [str(network.network_address + 1 if network.num_addresses > 1 else network.network_address),
                str(network.broadcast_address)]
    return out


def check_chart_policies(label: str, v: dict, objects: list[dict], notes: str, installation: str, agents_ns: str) -> None:
    policies = find(objects, "NetworkPolicy")
    if not v["networkPolicy"]["enabled"]:
        checks.ok(f"{label}: no NetworkPolicy when networkPolicy.enabled is false", not policies)
        checks.ok(f"{label}: NOTES.txt says the policies are off", "NetworkPolicies: OFF" in notes, notes)
        return
    names = sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies)
    checks.equal(f"{label}: the NetworkPolicies", names, sorted(
        [(agents_ns, f"{FULLNAME}-agents")] + ([(NAMESPACE, f"{FULLNAME}-redis")] if v["redis"]["enabled"] else [])))
    checks.ok(f"{label}: NOTES.txt says what the policies allow", "NetworkPolicies (enforced only if" in notes, notes)
    dispatcher = one(objects, "Deployment", FULLNAME)
    redis = find(objects, "Deployment", f"{FULLNAME}-redis")
    check_policies(f"{label}: ", policies, release_ns=NAMESPACE, agents_ns=agents_ns, installation=installation,
                   dispatcher_labels=dispatcher["spec"]["template"]["metadata"]["labels"],
                   redis_labels=redis[0]["spec"]["template"]["metadata"]["labels"] if redis else None,
                   dispatcher_port=container(dispatcher, "dispatcher")["ports"][0]["containerPort"],
                   public_ports=v["agents"]["egress"]["publicPorts"], excluded=excluded_addresses(v),
                   extra=v["agents"]["egress"]["extra"])
    if not v["networkPolicy"]["clusterCidrs"] and port_listed(v["agents"]["egress"]["publicPorts"], 443, "TCP"):
        checks.ok(f"{label}: without clusterCidrs a public API server address (35.1.2.3) is open on 443: what clusterCidrs is for",
                  allowed(policies, Endpoint("10.244.0.20", {"app.kubernetes.io/managed-by": "agentsmith",
                                                              "agentsmith.io/installation": installation}, agents_ns),
                          Endpoint("35.1.2.3"), 443))
    for rule in v["agents"]["egress"]["extra"]:
        checks.ok(f"{label}: the extra rule is in the agents' policy as given",
                  rule in one(objects, "NetworkPolicy", f"{FULLNAME}-agents")["spec"]["egress"])


SOURCE_SECRETS = {
    "AGENTSMITH__SOURCES__SLACK__SIGNING_SECRET": "slack-signing-secret",
    "AGENTSMITH__SOURCES__SLACK__BOT_TOKEN": "slack-bot-token",
    "AGENTSMITH__SOURCES__GITHUB__WEBHOOK_SECRET": "github-webhook-secret",
    "AGENTSMITH__SOURCES__GITHUB__TOKEN": "github-token",
    "AGENTSMITH__SOURCES__GITLAB__WEBHOOK_TOKEN": "gitlab-webhook-token",
    "AGENTSMITH__SOURCES__GITLAB__TOKEN": "gitlab-token",
    "AGENTSMITH__SOURCES__JIRA__WEBHOOK_SECRET": "jira-webhook-secret",
    "AGENTSMITH__SOURCES__JIRA__API_TOKEN": "jira-api-token",
}


def check_webhook_sources(chart) -> None:
    checks.start("webhook sources: secrets wired, a source on only with its secret")
    for label, values in [("default", WITH_TOKEN), ("slack and github secrets", merge(WITH_TOKEN, {
            "secrets": {"slack": {"signingSecret": "s"}, "github": {"webhookSecret": "g", "token": "t"}}}))]:
        objects = objects_of(render(chart, values))
        env = {v["name"]: v for v in container(one(objects, "Deployment", FULLNAME), "dispatcher")["env"]}
        refs = {name: (env.get(name, {}).get("valueFrom") or {}).get("secretKeyRef") for name in SOURCE_SECRETS}
        checks.ok(f"{label}: every source secret comes from the Secret, optional",
                  all(ref and ref["key"] == SOURCE_SECRETS[name] and ref.get("optional") is True
                      and ref["name"] == FULLNAME for name, ref in refs.items()), refs)
        enabled = {name: source.get("enabled") for name, source in (config_of(objects).get("sources") or {}).items()}
        expected = {} if label == "default" else {"slack": True, "github": True}
        checks.equal(f"{label}: the sources turned on in agentsmith.yml", enabled, expected)
        secret = secrets_in(objects).get(FULLNAME, {})
        keys = sorted(k for k in secret if k in SOURCE_SECRETS.values())
        checks.equal(f"{label}: the Secret's source keys", keys,
                     [] if label == "default" else ["github-token", "github-webhook-secret", "slack-signing-secret"])


def check_checksums(chart) -> None:
    checks.start("checksum annotations roll the pods")

    def annotations(values: dict) -> dict:
        deployment = one(objects_of(render(chart, values)), "Deployment", FULLNAME)
        return deployment["spec"]["template"]["metadata"]["annotations"]

    base = annotations(WITH_TOKEN)
    again = annotations(WITH_TOKEN)
    checks.equal("the same values give the same checksums", again, base)
    # A generated token or password differs in every offline render (no lookup there), but is
    # kept in the cluster: the checksum must not follow it, or a no-op upgrade would roll the pods.
    first, second = (objects_of(render(chart, {})) for _ in range(2))
    tokens = [secrets_in(o)[FULLNAME]["api-tokens"] for o in (first, second)]
    passwords = [secrets_in(o)[f"{FULLNAME}-redis"]["redis-password"] for o in (first, second)]
    checks.ok("two renders with nothing given generate different tokens and passwords (random)",
              tokens[0] != tokens[1] and passwords[0] != passwords[1])
    checks.equal("... and the same checksum/secret (it hashes the values, not the generated secrets)",
                 *(one(o, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
                   for o in (first, second)))
    checks.equal("the Redis pod template is the same in both (a Redis roll is a restart: no persistence, no data)",
                 *(one(o, "Deployment", f"{FULLNAME}-redis")["spec"]["template"] for o in (first, second)))
    moved = annotations(merge(WITH_TOKEN, {"redis": {"auth": {"existingSecret": "redis-auth"}}}))
    checks.ok("checksum/secret changes when the Redis password's Secret changes", moved["checksum/secret"] != base["checksum/secret"])
    changed = annotations(merge(WITH_TOKEN, {"config": {"content": "queue:\n  max_concurrent_jobs: 3\n"}}))
    checks.ok("checksum/config changes when config.content changes", changed["checksum/config"] != base["checksum/config"])
    checks.equal("checksum/secret stays when only config.content changes", changed["checksum/secret"], base["checksum/secret"])
    rotated = annotations({"secrets": {"apiTokens": [TOKEN + "-rotated"]}})
    checks.ok("checksum/secret changes when a token changes", rotated["checksum/secret"] != base["checksum/secret"])
    checks.equal("checksum/config stays when only a token changes", rotated["checksum/config"], base["checksum/config"])


def check_pdb_default(chart) -> None:
    checks.start("PodDisruptionBudget API version without capabilities")
    objects = objects_of(render(chart, merge(WITH_TOKEN, {"replicas": 2})))
    checks.equal("an offline render (the SDK's default Kubernetes version) picks policy/v1",
                 one(objects, "PodDisruptionBudget")["apiVersion"], "policy/v1")
    objects = objects_of(render(chart, merge(WITH_TOKEN, {"replicas": 2}), {"kube_version": "v1.20.2"}))
    checks.equal("an offline render for 1.20 with no API versions picks policy/v1beta1",
                 one(objects, "PodDisruptionBudget")["apiVersion"], "policy/v1beta1")


def check_proxy(chart, binary: str, tmp: Path) -> None:
    # Kept out of the other value sets: the chart writes spawner.kubernetes.env only when a
    # proxy is set, so every other agentsmith.yml also passes dispatchers built before the key.
    checks.start("proxy settings")
    values = merge(WITH_TOKEN, {"proxy": {"httpProxy": "http://proxy.example.com:3128", "httpsProxy": "http://proxy.example.com:3128"}})
    objects = objects_of(render(chart, values))
    dispatcher = one(objects, "Deployment", FULLNAME)
    env = {e["name"]: e.get("value") for e in container(dispatcher, "dispatcher")["env"]}
    checks.equal("the dispatcher gets HTTPS_PROXY", env.get("HTTPS_PROXY"), "http://proxy.example.com:3128")
    checks.equal("the dispatcher gets NO_PROXY", env.get("NO_PROXY"), "localhost,127.0.0.1,.svc,.cluster.local")
    config = config_of(objects)
    agent_env = config["spawner"]["kubernetes"].get("env", {})
    checks.equal("agents get the proxy through spawner.kubernetes.env", agent_env.get("HTTP_PROXY"), "http://proxy.example.com:3128")
    resolved, _ = deployment_env(dispatcher, "dispatcher", secrets_in(objects))
    config_check(binary, config, resolved, tmp, "with a proxy")


def check_disk(chart, binary: str, tmp: Path) -> None:
    # Kept out of the other value sets, as the proxy is: the chart writes a profile's disk only
    # when agents.disk is given, so the other agentsmith.yml files also pass dispatchers that
    # predate the key.
    checks.start("the agents' disk (agents.disk)")
    config = config_of(objects_of(render(chart, WITH_TOKEN)))
    checks.ok("by default no profile gets a disk (the dispatcher's default, 10Gi, applies)",
              all("disk" not in profile for profile in config["agents"].values()), config["agents"])
    values = merge(WITH_TOKEN, {"agents": {"disk": "20Gi", "secret": {"existingSecret": "agent-credentials"}},
                                "config": {"content": USER_CONFIG.replace(
        "    timeout_secs: 3600\n", "    timeout_secs: 3600\n    disk: 50Gi\n")}})
    objects = objects_of(render(chart, values))
    config = config_of(objects)
    disks = {name: profile.get("disk") for name, profile in config["agents"].items()}
    checks.equal("agents.disk goes to the profiles without one; a profile's own disk wins", disks,
                 {"claude": "50Gi", "custom": "20Gi"})
    resolved, _ = deployment_env(one(objects, "Deployment", FULLNAME), "dispatcher", secrets_in(objects))
    config_check(binary, config, resolved, tmp, "with agents.disk")


def check_sentinel(chart, binary: str, tmp: Path) -> None:
    """externalRedis.sentinel and minReplicasAcked beyond the rendered scenario: the defaults left
    as they were, exact variables, the variants without passwords, and WAIT without Sentinel."""
    checks.start("Redis Sentinel and WAIT (externalRedis.sentinel, externalRedis.minReplicasAcked)")
    ok, equal = checks.ok, checks.equal

    def rendered(values: dict) -> tuple[list[dict], dict, str]:
        out = render(chart, values)
        objects = objects_of(out)
        notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
        return objects, container(one(objects, "Deployment", FULLNAME), "dispatcher"), notes

    # The defaults: what chart 0.3.0 rendered, no more.
    for label, values in (("default values", {}), ("an API token given", WITH_TOKEN)):
        objects, main, notes = rendered(values)
        redis_vars = [e for e in main["env"] if e["name"].startswith("AGENTSMITH__REDIS__")]
        equal(f"{label}: the dispatcher's only Redis variable is the bundled Redis's URL, as before", redis_vars,
              [{"name": "AGENTSMITH__REDIS__URL", "value": f"redis://:$(REDIS_SECRET_redis-password)@{FULLNAME}-redis:6379"}])
        equal(f"{label}: envFrom only the bundled Redis's password Secret, as before", main.get("envFrom"),
              [{"prefix": "REDIS_SECRET_", "secretRef": {"name": f"{FULLNAME}-redis"}}])
        ok(f"{label}: agentsmith.yml has no redis section (no sentinel, no min_replicas_acked)", "redis" not in config_of(objects),
           config_of(objects).get("redis"))
        ok(f"{label}: NOTES.txt says nothing of Sentinel or WAIT", "Sentinel" not in notes and "WAIT" not in notes)

    # `helm upgrade --reuse-values` from chart 0.3.0 keeps that chart's values, which have neither
    # key (null removes a default, as if it had never been there).
    for label, values in (("the bundled Redis", WITH_TOKEN), ("an external Redis URL", merge(WITH_TOKEN, {
            "redis": {"enabled": False}, "externalRedis": {"url": "redis://:pw@redis.example.com:6379/0"}}))):
        what = f"{label}, values without externalRedis.sentinel, cluster and minReplicasAcked (kept from 0.3.0)"
        try:
            kept = objects_of(render(chart, merge(values, {"externalRedis": {"sentinel": None, "cluster": None,
                                                                             "minReplicasAcked": None}})))
            equal(f"{what}: render as with the defaults", [without_generated(o) for o in kept],
                  [without_generated(o) for o in objects_of(render(chart, values))])
        except Exception as e:  # noqa: BLE001 (the render's own error is the detail)
            ok(f"{what}: render", False, e)

    # Sentinel with both passwords and WAIT (also a rendered scenario): the manifest, exactly.
    objects, main, notes = rendered(SENTINEL)
    auth = ":$(REDIS_SECRET_sentinel-password)@"
    equal("Sentinel: the Redis variables, exactly",
          [e for e in main["env"] if e["name"].startswith("AGENTSMITH__REDIS__")],
          [{"name": "AGENTSMITH__REDIS__SENTINEL__NODES",
            "value": f"redis://{auth}10.0.0.1:26379,redis://{auth}sentinel-1.example.com:26380,redis://{auth}[fd00::5]:26379"},
           {"name": "AGENTSMITH__REDIS__SENTINEL__PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis-sentinel", "key": "redis-password"}}}])
    config = config_of(objects)
    equal("Sentinel: agentsmith.yml's redis section (names and WAIT; the URLs and passwords are in the environment)",
          config.get("redis"), {"sentinel": {"master_name": "mymaster", "username": "agentsmith"}, "min_replicas_acked": 1})
    secret_values = [value for value in main["env"] if "value" in value]
    ok("Sentinel: no plain env value holds a password (secretKeyRef, or $(REDIS_SECRET_...) from envFrom)",
       not any(p in e["value"] for e in secret_values for p in (SENTINEL_PASSWORD, SENTINEL_DATA_PASSWORD)))
    resolved, missing = deployment_env(one(objects, "Deployment", FULLNAME), "dispatcher", {**secrets_in(objects), **SENTINEL_SECRETS})
    ok("Sentinel: every Secret key the Deployment needs is there", not missing, missing)
    equal("Sentinel: the sentinels' URLs as the kubelet makes them", resolved.get("AGENTSMITH__REDIS__SENTINEL__NODES"),
          f"redis://:{SENTINEL_PASSWORD}@10.0.0.1:26379,redis://:{SENTINEL_PASSWORD}@sentinel-1.example.com:26380,"
          f"redis://:{SENTINEL_PASSWORD}@[fd00::5]:26379")
    ok("Sentinel: NOTES.txt names the primary, the sentinels, the password's Secret and WAIT",
       all(s in notes for s in ('through Sentinel: the primary "mymaster"', "10.0.0.1:26379, sentinel-1.example.com:26380, [fd00::5]:26379",
                                "Secret/redis-sentinel key redis-password", "key sentinel-password", "on 1 Redis replica (WAIT")), notes)
    policies = find(objects, "NetworkPolicy")
    dispatcher = Endpoint("10.244.0.10", one(objects, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"], NAMESPACE)
    agent = Endpoint("10.244.0.20", {"app.kubernetes.io/managed-by": "agentsmith", "agentsmith.io/installation": FULLNAME}, NAMESPACE)
    ok("Sentinel: the dispatcher reaches the sentinels (26379, 26380) and the primary they name (6379)",
       all(allowed(policies, dispatcher, Endpoint(ip), port) for ip, port in (("10.0.0.1", 26379), ("10.0.0.2", 26380),
                                                                               ("fd00::5", 26379), ("10.0.0.9", 6379))))
    ok("Sentinel: agent pods reach neither the sentinels nor the primary",
       not any(allowed(policies, agent, Endpoint(ip), port) for ip, port in (("10.0.0.1", 26379), ("fd00::5", 26379), ("10.0.0.9", 6379))))

    # No password at all, a master name that looks like a number: it stays a string (in the
    # environment the dispatcher would read it as a number, which is why it is in the file).
    values = merge(WITH_TOKEN, {"redis": {"enabled": False},
                                "externalRedis": {"sentinel": {"masterName": "12345", "nodes": ["sentinel.example.com"]}}})
    objects, main, notes = rendered(values)
    equal("Sentinel without passwords: the Redis variables",
          [e for e in main["env"] if e["name"].startswith("AGENTSMITH__REDIS__")],
          [{"name": "AGENTSMITH__REDIS__SENTINEL__NODES", "value": "redis://sentinel.example.com:26379"}])
    ok("Sentinel without passwords: no envFrom", "envFrom" not in main, main.get("envFrom"))
    text = one(objects, "ConfigMap", FULLNAME)["data"]["agentsmith.yml"]
    equal("Sentinel: a numeric-looking master name stays a string in agentsmith.yml", yaml.safe_load(text).get("redis"),
          {"sentinel": {"master_name": "12345"}})
    ok("Sentinel without passwords: NOTES.txt says so", "NO password on the primary and its replicas" in notes, notes)
    resolved, _ = deployment_env(one(objects, "Deployment", FULLNAME), "dispatcher", secrets_in(objects))
    config_check(binary, yaml.safe_load(text), resolved, tmp, "Sentinel without passwords, a numeric master name")

    # The primary's password only (the sentinels want none): no envFrom, the password by secretKeyRef.
    values = merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {"sentinel": {
        "masterName": "mymaster", "nodes": ["10.0.0.1:26379"], "existingSecret": "redis-sentinel"}}})
    objects, main, _ = rendered(values)
    equal("Sentinel, the primary's password only: the Redis variables",
          [e for e in main["env"] if e["name"].startswith("AGENTSMITH__REDIS__")],
          [{"name": "AGENTSMITH__REDIS__SENTINEL__NODES", "value": "redis://10.0.0.1:26379"},
           {"name": "AGENTSMITH__REDIS__SENTINEL__PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis-sentinel", "key": "redis-password"}}}])
    ok("Sentinel, the primary's password only: no envFrom", "envFrom" not in main, main.get("envFrom"))

    # WAIT with an external Redis by URL, no Sentinel.
    values = merge(WITH_TOKEN, {"redis": {"enabled": False},
                                "externalRedis": {"url": "redis://:pw@redis.example.com:6379/0", "minReplicasAcked": 2}})
    objects, main, notes = rendered(values)
    equal("WAIT without Sentinel: redis.min_replicas_acked in agentsmith.yml", config_of(objects).get("redis"), {"min_replicas_acked": 2})
    ok("WAIT without Sentinel: the URL still from the chart's Secret, no Sentinel variable",
       [e["name"] for e in main["env"] if e["name"].startswith("AGENTSMITH__REDIS__")] == ["AGENTSMITH__REDIS__URL"])
    ok("WAIT without Sentinel: NOTES.txt says 2 replicas", "on 2 Redis replicas (WAIT" in notes, notes)
    resolved, _ = deployment_env(one(objects, "Deployment", FULLNAME), "dispatcher", secrets_in(objects))
    config_check(binary, config_of(objects), resolved, tmp, "WAIT on 2 replicas of an external Redis")

    # Sentinel's values hold no secret: checksum/secret leaves them out (the same values keep the
    # checksum of chart 0.3.0); a change of them rolls the pods through the pod template itself.
    def template(values: dict) -> dict:
        return one(objects_of(render(chart, values)), "Deployment", FULLNAME)["spec"]["template"]

    base = template(merge(SENTINEL, {"externalRedis": {"minReplicasAcked": 0}}))
    equal("checksum/secret leaves externalRedis.sentinel and minReplicasAcked out",
          base["metadata"]["annotations"]["checksum/secret"],
          template(merge(SENTINEL, {"externalRedis": {"minReplicasAcked": 0, "sentinel": {
              "nodes": ["10.0.0.9:26379"], "masterName": "other", "username": "someone"}}}))["metadata"]["annotations"]["checksum/secret"])
    moved = template(merge(SENTINEL, {"externalRedis": {"sentinel": {"existingSecret": "redis-sentinel-2"}}}))
    ok("another Sentinel password Secret changes the pod template (it rolls the pods)", moved["spec"] != base["spec"])
    changed = template(merge(SENTINEL, {"externalRedis": {"minReplicasAcked": 2}}))
    ok("another minReplicasAcked changes checksum/config (it rolls the pods)",
       changed["metadata"]["annotations"]["checksum/config"] != template(SENTINEL)["metadata"]["annotations"]["checksum/config"])


# Key prefixes and whether they carry a hash tag as Redis reads one (the text between the first
# "{" and the first "}" after it, not empty): the chart and the dispatcher must agree on each.
CLUSTER_PREFIXES = [
    ("{agentsmith}:", True), ("team-{a}:", True), ("}{a}:", True), ("{{a}:", True), ("a{b}c{d}:", True), ("{agentsmith}", True),
    ("agentsmith:", False), ("{}agentsmith:", False), ("{}{a}:", False), ("{agentsmith:", False), ("}agentsmith{:", False),
    ("", False),
]


def check_cluster(helm, chart, binary: str, tmp: Path) -> None:
    """externalRedis.cluster beyond the rendered scenario: the exact variables and agentsmith.yml,
    a node by URL or by a Secret's URL, a prefix of one's own, the chart refusing exactly the
    prefixes the dispatcher refuses, checksums, and the dispatcher's reach."""
    checks.start("Redis Cluster (externalRedis.cluster)")
    ok, equal = checks.ok, checks.equal

    def rendered(label: str, values: dict, external: dict | None = None) -> tuple[list[dict], dict, str, dict[str, str]]:
        out = render(chart, values)
        objects = objects_of(out)
        notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
        resolved, missing = deployment_env(one(objects, "Deployment", FULLNAME), "dispatcher",
                                           {**secrets_in(objects), **(external or {})})
        ok(f"{label}: every Secret key the Deployment needs is there", not missing, missing)
        return objects, container(one(objects, "Deployment", FULLNAME), "dispatcher"), notes, resolved

    def redis_vars(main: dict) -> list[dict]:
        return [e for e in main["env"] if e["name"].startswith("AGENTSMITH__REDIS__")]

    for label, values in (("default values", {}), ("an external Redis URL, cluster false", merge(WITH_TOKEN, {
            "redis": {"enabled": False}, "externalRedis": {"url": "redis://:pw@redis.example.com:6379/0"}}))):
        out = render(chart, values)
        notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
        ok(f"{label}: agentsmith.yml has no redis.cluster or redis.prefix",
           not {"cluster", "prefix"} & set(config_of(objects_of(out)).get("redis") or {}))
        ok(f"{label}: NOTES.txt says nothing of Redis Cluster", "Cluster" not in notes, notes)

    # The rendered scenario (a configuration endpoint by host, its password, TLS, WAIT): exactly.
    label = "Cluster by host"
    objects, main, notes, resolved = rendered(label, CLUSTER, CLUSTER_SECRETS)
    host = CLUSTER["externalRedis"]["host"]
    equal(f"{label}: the Redis variables, exactly (a node's URL, the password by reference)", redis_vars(main),
          [{"name": "AGENTSMITH__REDIS__URL", "value": f"rediss://:$(REDIS_SECRET_redis-password)@{host}:6379"}])
    equal(f"{label}: ... its Secret by envFrom", main.get("envFrom"), [{"prefix": "REDIS_SECRET_", "secretRef": {"name": "redis-cluster"}}])
    equal(f"{label}: the URL as the kubelet makes it", resolved.get("AGENTSMITH__REDIS__URL"), f"rediss://:{CLUSTER_PASSWORD}@{host}:6379")
    equal(f"{label}: agentsmith.yml's redis section: cluster, the chart's hash-tagged prefix, WAIT", config_of(objects).get("redis"),
          {"cluster": True, "prefix": "{agentsmith}:", "min_replicas_acked": 1})
    ok(f"{label}: no plain env value holds the password", not any(CLUSTER_PASSWORD in e.get("value", "") for e in main["env"]))
    ok(f"{label}: NOTES.txt names Redis Cluster, the prefix and WAIT",
       all(s in notes for s in (f"rediss://{host}:6379 (password from Secret/redis-cluster key redis-password)",
                                'Redis Cluster (externalRedis.cluster)', 'its key prefix "{agentsmith}:"',
                                "on 1 Redis replica (WAIT")), notes)

    # A node by URL (in the chart's Secret), and by a Secret's URL; each through `config check`.
    for label, values, external in (
            ("Cluster by URL", merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {
                "cluster": True, "url": "redis://:pw@10.0.0.5:7000"}}), {}),
            ("Cluster by a Secret's URL", merge(WITH_TOKEN, {"redis": {"enabled": False}, "externalRedis": {
                "cluster": True, "existingSecret": "redis-cluster-url", "existingSecretKey": "url", "minReplicasAcked": 2}}),
             {"redis-cluster-url": {"url": "rediss://agentsmith:pw@clustercfg.example.com:6379"}})):
        objects, main, _, resolved = rendered(label, values, external)
        url = values["externalRedis"].get("url") or external["redis-cluster-url"]["url"]
        equal(f"{label}: the dispatcher's Redis URL", resolved.get("AGENTSMITH__REDIS__URL"), url)
        equal(f"{label}: agentsmith.yml's redis section", config_of(objects).get("redis"),
              redis_config(merge(chart_yaml("values.yaml"), values)))
        ok(f"{label}: no Redis Cluster variable (it is in agentsmith.yml)",
           not {"AGENTSMITH__REDIS__CLUSTER", "AGENTSMITH__REDIS__PREFIX"} & {e["name"] for e in main["env"]})
        config_check(binary, config_of(objects), resolved, tmp, label)

    # A prefix of one's own with a tag wins over the chart's; the rest of the user's redis section
    # stays; redis.cluster there too is allowed alongside the value.
    label = "Cluster, config.content's own prefix"
    values = merge(CLUSTER, {"config": {"content": 'redis:\n  prefix: "team-{a}:"\n  timeout_secs: 3\n  cluster: true\n'}})
    objects, main, notes, resolved = rendered(label, values, CLUSTER_SECRETS)
    equal(f"{label}: agentsmith.yml's redis section", config_of(objects).get("redis"),
          {"cluster": True, "prefix": "team-{a}:", "timeout_secs": 3, "min_replicas_acked": 1})
    ok(f"{label}: NOTES.txt names that prefix", 'its key prefix "team-{a}:"' in notes, notes)
    config_check(binary, config_of(objects), resolved, tmp, label)

    # The chart refuses a prefix exactly when the dispatcher would: each prefix in config.content,
    # rendered (or refused), and set into the scenario's agentsmith.yml for `config check`.
    objects, _, _, resolved = rendered("Cluster by host, again", CLUSTER, CLUSTER_SECRETS)
    base_config = config_of(objects)
    for prefix, tagged in CLUSTER_PREFIXES:
        label = f"Cluster, prefix {prefix!r}"
        try:
            render(chart, merge(CLUSTER, {"config": {"content": f"redis:\n  prefix: {json.dumps(prefix)}\n"}}))
            chart_says, message = True, ""
        except helm.HelmError as e:
            chart_says, message = False, str(e)
        accepts, output = dispatcher_verdict(binary, merge(base_config, {"redis": {"prefix": prefix}}), resolved, tmp)
        equal(f"{label}: the chart {'renders' if tagged else 'refuses'} it, as the dispatcher {'accepts' if tagged else 'refuses'} it",
              (chart_says, accepts), (tagged, tagged))
        if not tagged:
            ok(f"{label}: the chart's message names config.content's redis.prefix",
               f"config.content sets redis.prefix {json.dumps(prefix)}, which has no hash tag" in message, message)
            ok(f"{label}: the dispatcher's names redis.prefix", "redis.prefix" in output and "hash tag" in output, output)

    # Cluster holds no secret: checksum/secret leaves it out; turning it on rolls the pods
    # through checksum/config.
    def annotations(values: dict) -> dict:
        return one(objects_of(render(chart, values)), "Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"]

    off = annotations(merge(CLUSTER, {"externalRedis": {"cluster": False}}))
    on = annotations(CLUSTER)
    equal("checksum/secret leaves externalRedis.cluster out", on["checksum/secret"], off["checksum/secret"])
    ok("turning externalRedis.cluster on changes checksum/config (it rolls the pods)", on["checksum/config"] != off["checksum/config"])

    # The dispatcher has no NetworkPolicy: it reaches the cluster's nodes on their ports; agents do not.
    objects = objects_of(render(chart, CLUSTER))
    policies = find(objects, "NetworkPolicy")
    dispatcher = Endpoint("10.244.0.10", one(objects, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"], NAMESPACE)
    agent = Endpoint("10.244.0.20", {"app.kubernetes.io/managed-by": "agentsmith", "agentsmith.io/installation": FULLNAME}, NAMESPACE)
    nodes = (("10.0.0.5", 6379), ("10.0.0.6", 7000), ("fd00::6", 7001))
    ok("Cluster: the dispatcher reaches the cluster's nodes (6379, 7000, 7001)",
       all(allowed(policies, dispatcher, Endpoint(ip), port) for ip, port in nodes))
    ok("Cluster: agent pods reach none of them", not any(allowed(policies, agent, Endpoint(ip), port) for ip, port in nodes))


def check_policy_variants(chart) -> None:
    """The public ports closed, and opened to every TCP port: the same evaluation."""
    checks.start("NetworkPolicy variants: no public port; every public TCP port")
    for label, ports in (("no public port", []), ("every public TCP port", [{"protocol": "TCP"}])):
        values = merge(WITH_TOKEN, {"agents": {"egress": {"publicPorts": ports}}})
        objects = objects_of(render(chart, values))
        v = merge(chart_yaml("values.yaml"), values)
        check_chart_policies(label, v, objects, next(t for p, t in render(chart, values).items() if p.endswith("NOTES.txt")),
                             FULLNAME, NAMESPACE)
        if not ports:
            checks.ok(f"{label}: the agents' policy has no public rule at all",
                      not any("ipBlock" in peer for rule in one(objects, "NetworkPolicy", f"{FULLNAME}-agents")["spec"]["egress"]
                              for peer in rule.get("to", [])))


def check_kustomize(kubectl: str, binary: str, tmp: Path) -> dict[str, list[tuple[dict, set[str]]]]:
    checks.start("Kustomize overlays (kubectl kustomize)")
    copy_dir = copy_k8s(tmp)
    to_validate = {}
    for overlay in ("dev", "prod"):
        directory = copy_dir / "overlays" / overlay
        checks.ok(f"{overlay}: secrets.env.example is there", (directory / "secrets.env.example").is_file())
        result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        if not checks.ok(f"{overlay}: renders", result.returncode == 0, result.stderr.strip()):
            continue
        objects = [o for o in yaml.safe_load_all(result.stdout) if o]
        expected_ns = {"dev": "agentsmith-dev", "prod": "agentsmith"}[overlay]
        checks.ok(f"{overlay}: every object in namespace {expected_ns}", all(o["metadata"].get("namespace") == expected_ns for o in objects))
        checks.equal(f"{overlay}: the Role's rules", one(objects, "Role")["rules"], EXPECTED_RULES)
        check_secret_rights(f"{overlay}: ", objects)
        checks.equal(f"{overlay}: the RoleBinding's subject", one(objects, "RoleBinding")["subjects"],
                     [{"kind": "ServiceAccount", "name": "agentsmith", "namespace": expected_ns}])
        checks.equal(f"{overlay}: the agents' ServiceAccount mounts no token",
                     one(objects, "ServiceAccount", "agentsmith-agent").get("automountServiceAccountToken"), False)
        dispatcher = one(objects, "Deployment", "agentsmith")
        checks.equal(f"{overlay}: dispatcher rolling update", dispatcher["spec"]["strategy"]["rollingUpdate"], {"maxUnavailable": 0, "maxSurge": 1})
        checks.equal(f"{overlay}: dispatcher container security context", container(dispatcher, "dispatcher")["securityContext"], RESTRICTED_CONTAINER)
        redis = one(objects, "Deployment", "agentsmith-redis")
        checks.equal(f"{overlay}: Redis container security context", container(redis, "redis")["securityContext"], RESTRICTED_CONTAINER)
        rc = container(redis, "redis")
        args = rc["args"]
        opts = dict(zip(args[::2], args[1::2]))
        checks.ok(f"{overlay}: Redis noeviction", "noeviction" in args)
        checks.equal(f"{overlay}: Redis stream-node-max-bytes", opts.get("--stream-node-max-bytes"), "1024")
        secret_name = next(o["metadata"]["name"] for o in objects if o["kind"] == "Secret")
        checks.equal(f"{overlay}: Redis requires the password of the generated Secret, protected mode on",
                     (opts.get("--requirepass"), opts.get("--protected-mode"),
                      next((e["valueFrom"]["secretKeyRef"] for e in rc.get("env", []) if e["name"] == "REDISCLI_AUTH"), None)),
                     ("$(REDISCLI_AUTH)", "yes", {"name": secret_name, "key": "redis-password"}))
        checks.ok(f"{overlay}: Redis's probes PING with redis-cli (authenticated by REDISCLI_AUTH)",
                  all("redis-cli -p 6379 ping" in " ".join(rc[probe]["exec"]["command"]) for probe in ("livenessProbe", "readinessProbe")))
        configmap = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("agentsmith-config-"))
        mounted = next(vol for vol in pod_spec(dispatcher)["volumes"] if vol["name"] == "config")["configMap"]["name"]
        checks.equal(f"{overlay}: the Deployment mounts the generated ConfigMap", mounted, configmap["metadata"]["name"])
        env, missing = deployment_env(dispatcher, "dispatcher", secrets_in(objects))
        checks.ok(f"{overlay}: the generated Secret holds what the Deployment reads", not missing, missing)
        password = secrets_in(objects)[secret_name].get("redis-password")
        checks.equal(f"{overlay}: the dispatcher's Redis URL carries the password (from the Secret, by envFrom and $(REDIS_SECRET_redis-password))",
                     env.get("AGENTSMITH__REDIS__URL"), f"redis://:{password}@agentsmith-redis:6379")
        check_policies(f"{overlay}: ", find(objects, "NetworkPolicy"), release_ns=expected_ns, agents_ns=expected_ns,
                       installation="agentsmith", dispatcher_labels=dispatcher["spec"]["template"]["metadata"]["labels"],
                       redis_labels=redis["spec"]["template"]["metadata"]["labels"], dispatcher_port=8080,
                       public_ports=[{"port": 443, "protocol": "TCP"}, {"port": 80, "protocol": "TCP"}], excluded=[], extra=[])
        config_check(binary, yaml.safe_load(configmap["data"]["agentsmith.yml"]), env, tmp, f"k8s/overlays/{overlay}")
        if overlay == "prod":
            checks.equal("prod: two dispatchers", dispatcher["spec"]["replicas"], 2)
            checks.ok("prod: a PodDisruptionBudget", len(find(objects, "PodDisruptionBudget")) == 1)
            checks.ok("prod: Redis AOF always on a claim", "always" in args and
                      next(vol for vol in pod_spec(redis)["volumes"] if vol["name"] == "data") == {"name": "data", "persistentVolumeClaim": {"claimName": "agentsmith-redis"}})
            checks.ok("prod: an Ingress with TLS", len(find(objects, "Ingress")) == 1 and find(objects, "Ingress")[0]["spec"].get("tls"))
        entries = []
        for obj in objects:
            versions = {"1.20", "1.37"}
            if obj["kind"] == "PodDisruptionBudget":
                versions = {"1.37"} if obj["apiVersion"] == "policy/v1" else {"1.20"}
            entries.append((obj, versions))
        to_validate[f"k8s/overlays/{overlay}"] = entries
    return to_validate


def check_validation(groups: dict[str, list[tuple[dict, set[str]]]], tmp: Path) -> None:
    """Every object through scripts/kube-validate, strictly, for the versions it was made for.

    Each object is validated against the versions it was rendered for; passing is also read
    from the tool's per-object "passed ... against version" lines, so nothing goes unchecked.
    """
    checks.start("objects valid for Kubernetes 1.20 and 1.37 (scripts/kube-validate, strict)")
    directory = tmp / "objects"
    directory.mkdir()
    # Each distinct object once (most are the same in many value sets), remembering where it
    # came from; files hold many objects, but no kind/name twice, so each result line is one.
    unique: dict[str, tuple[dict, set[str], list[str]]] = {}
    skipped = set()
    for group, entries in groups.items():
        for obj, versions in entries:
            if obj["kind"] in CRD_KINDS:
                skipped.add(f"{obj['apiVersion']} {obj['kind']} ({group})")
                continue
            entry = unique.setdefault(json.dumps(obj, sort_keys=True), (obj, set(), []))
            entry[1].update(versions)
            entry[2].append(group)
    for item in sorted(skipped):
        print(f"     skipped (a custom resource the schemas do not know): {item}")
    files: list[dict[str, tuple[dict, set[str], list[str]]]] = []
    for obj, versions, sources in unique.values():
        ident = f"{obj['kind'].lower()}/{obj['metadata']['name']}"
        target = next((f for f in files if ident not in f), None)
        if target is None:
            target = {}
            files.append(target)
        target[ident] = (obj, versions, sources)
    # One set of files per Kubernetes version, holding the objects made for it (a 1.20
    # render's policy/v1beta1 PodDisruptionBudget has no schema in 1.37, and the other way
    # round; scripts/kube-validate fails on a kind it has no schema for).
    passed: dict[tuple[int, str], set[str]] = {}  # (file index, kind/name) -> versions
    errors: list[str] = []
    returncode = 0
    for version in ("1.20", "1.37"):
        version_paths = []
        for index, content in enumerate(files):
            objects = [obj for obj, versions, _ in content.values() if version in versions]
            if objects:
                path = directory / f"objects-{index:02d}-{version}.yaml"
                path.write_text(yaml.safe_dump_all(objects))
                version_paths.append(path)
        if not version_paths:
            continue
        result = subprocess.run([str(ROOT / "scripts" / "kube-validate"), "--only", f"{version}.0",
                                 *map(str, version_paths)], capture_output=True, text=True, timeout=300)
        returncode |= result.returncode
        output = result.stdout + result.stderr
        for line in output.splitlines():
            match = re.match(r"^INFO \S*/objects-(\d+)-\S+ passed for resource (\S+) against version (\S+)$", line)
            if match:
                passed.setdefault((int(match.group(1)), match.group(2)), set()).add(match.group(3))
        errors += [line for line in output.splitlines() if not line.startswith("INFO ")]
    checks.ok("kube-validate reports no invalid object", returncode == 0 and not errors, "\n".join(errors[:20]))
    for index, content in enumerate(files):
        for ident, (obj, versions, sources) in content.items():
            missing = versions - passed.get((index, ident), set())
            where = sources[0] + (f" and {len(sources) - 1} more" if len(sources) > 1 else "")
            checks.ok(f"{obj['kind']}/{obj['metadata']['name']} ({where}) validated for {', '.join(sorted(versions))}",
                      not missing, f"not validated for {sorted(missing)}")
    print(f"     {len(unique)} distinct objects from {len(groups)} value sets and overlays, in {len(files)} files")


def check_hadolint(hadolint: str) -> None:
    checks.start("hadolint")
    kits = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("kits/*/Dockerfile"))
    checks.ok("the agent kits' Dockerfiles are found (kits/*/Dockerfile)", bool(kits), "none found")
    for dockerfile in ("Dockerfile.agent", "Dockerfile.dispatcher", "Dockerfile.redis", *kits):
        result = subprocess.run([hadolint, str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60)
        checks.ok(f"{dockerfile} passes hadolint", result.returncode == 0, (result.stdout + result.stderr).strip())


def main() -> int:
    if sys.argv[1:] == ["--write-readme"]:
        README.write_text(readme_with_table(README.read_text()))
        print(f"wrote the values table of {README.relative_to(ROOT)}")
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.monotonic()
    kubectl = os.environ["AGENTSMITH_KUBECTL"]
    binary = os.environ["AGENTSMITH_BIN"]
    hadolint = os.environ["HADOLINT"]
    helm, chart = load_chart()
    with tempfile.TemporaryDirectory(prefix="agentsmith-chart-check.") as name:
        tmp = Path(name)
        check_readme()
        check_chart_version()
        check_lint(helm)
        check_schema(helm, chart)
        check_template_failures(helm, chart)
        groups = check_renders(helm, chart, binary, tmp)
        check_checksums(chart)
        check_webhook_sources(chart)
        check_pdb_default(chart)
        check_proxy(chart, binary, tmp)
        check_disk(chart, binary, tmp)
        check_sentinel(chart, binary, tmp)
        check_cluster(helm, chart, binary, tmp)
        check_policy_variants(chart)
        groups.update(check_kustomize(kubectl, binary, tmp))
        check_validation(groups, tmp)
        check_hadolint(hadolint)
    return checks.verdict("chart-check", started)


if __name__ == "__main__":
    sys.exit(main())
