#!/usr/bin/env python3
"""The live test of the Helm chart (helm/agentsmith) on a running Kubernetes cluster.

Run it through scripts/chart-live-test, which finds the cluster and the tools first and passes
them in the environment:

    KUBECONFIG           the cluster (admin rights: it creates and deletes a namespace)
    AGENTSMITH_KUBECTL   a kubectl, for `kubectl apply -k` of the Kustomize dev overlay
    AGENTSMITH_BIN       the agentsmith binary, for `agentsmith jobs logs` against the release
    PYTHONPATH           with helm-python-sdk (module helm_python) on it

What it does, in a namespace of its own (agentsmith-live-<random>) with the release `agentsmith`:

 0. builds the three images from the real Dockerfiles (scripts/build-images --profile debug)
    into the local Docker, which the test cluster's kubelet runs pods from;
 1. installs the chart with values.local.yaml.example plus test secrets given as values: Redis
    and the dispatcher Ready, `helm test` passes, the release is `deployed`, NOTES name the
    webhooks' address;
 2. submits a job through the dispatcher's Service (its ClusterIP, which kube-proxy makes
    reachable from this machine): it runs as a Kubernetes Job in the namespace, its runner
    calls back through the Service, it ends `succeeded` with its log lines; then a signed
    Slack slash command (`fix LIVE-1`; the signing secret given as a chart value turns Slack
    on) is answered "Queued as <id>" and its job runs the same way (a wrong signature: 401);
 3. upgrades to a new dispatcher image tag while GET /ready and POST /v1/jobs go to the Service
    every 150 ms each: no request may fail, and every acknowledged job must succeed on its
    first attempt with exactly one Kubernetes Job;
 4. upgrades with a new agent profile in config.content (same traffic): the checksum rolls the
    pods to a new ReplicaSet and a job of the new profile succeeds;
 5. uninstalls: nothing labelled with the release is left in the namespace, the agent Jobs go
    when their TTL (10 s here) has passed; the namespace is deleted;
 6. applies the Kustomize dev overlay (k8s/overlays/dev) into its namespace agentsmith-dev, runs
    a job there and deletes the namespace (skipped, saying so, with --no-kustomize or when that
    namespace exists already);

then prints the measured figures and `chart-live-test: N checks passed`. Whatever happens, the
release and the namespaces it made are removed before it exits. All traffic stays on this
machine and the cluster.
"""

from __future__ import annotations

import base64
import calendar
import copy
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "agentsmith"
RELEASE = "agentsmith"
FULLNAME = "agentsmith"  # the release name already holds the chart name
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
DISPATCHER_PODS = f"{INSTANCE},app.kubernetes.io/component=dispatcher"
REDIS_PODS = f"{INSTANCE},app.kubernetes.io/component=redis"
AGENT_JOBS = "app.kubernetes.io/managed-by=agentsmith"
AGENT_TTL = 10
KUSTOMIZE_NAMESPACE = "agentsmith-dev"
TRAFFIC_INTERVAL = 0.15
PRESTOP_SLEEP = 5  # dispatcher.preStopSleepSeconds, the chart's default
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
# A profile only the new configuration has (step 4); `echo` is kept, as the chart's default.
NEW_PROFILE = "live-check"
NEW_PROFILE_MARKER = "profile live-check from the new configuration"
ECHO_COMMAND = ["sh", "-c", "echo \"agent starting: $AGENTSMITH_TASK\"; for step in 1 2 3; do echo \"step $step of 3\"; "
                "sleep 1; done; printf '{\"summary\":\"did: %s\",\"links\":[]}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"; "
                "echo \"agent done\""]
# The project a Slack command's ticket (LIVE-1) maps to, in every config of the release.
LIVE_PROJECTS = {"live": {"agent": "echo", "jira_projects": ["LIVE"]}}
FIRST_CONFIG = yaml.safe_dump({"projects": LIVE_PROJECTS}, sort_keys=False)
NEW_CONFIG = yaml.safe_dump({
    "projects": LIVE_PROJECTS,
    "agents": {
        "echo": {"command": ECHO_COMMAND, "timeout_secs": 600},
        NEW_PROFILE: {
            "command": ["sh", "-c", f"echo \"{NEW_PROFILE_MARKER}: $AGENTSMITH_TASK\"; "
                        "printf '{\"summary\":\"checked\",\"links\":[]}' > \"$AGENTSMITH_RESULT_FILE\""],
            "timeout_secs": 120,
        },
    },
}, sort_keys=False)


class Failure(Exception):
    """A step cannot go on."""


def now() -> float:
    return time.monotonic()


def log(message: str) -> None:
    print(message, flush=True)


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def wait_until(timeout: float, what: str, condition: Callable[[], Any], interval: float = 0.5) -> Any:
    """Calls `condition` until it returns something true, and returns that; Failure at `timeout`."""
    deadline = now() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, http.client.HTTPException, KubeError) as e:
            last_error = e
        if now() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


class Checks:
    """Counts checks, remembers failures, keeps the measured figures."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []
        self.figures: list[tuple[str, str]] = []
        self.step = ""

    def start(self, step: str) -> None:
        self.step = step
        log(f"==> {step}")

    def ok(self, name: str, condition: Any, detail: Any = "") -> bool:
        if condition:
            self.passed += 1
            log(f"    ok   {name}")
        else:
            message = f"{self.step}: {name}" + (f": {detail}" if detail != "" else "")
            self.failures.append(message)
            log(f"    FAIL {name}" + (f": {detail}" if detail != "" else ""))
        return bool(condition)

    def require(self, name: str, condition: Any, detail: Any = "") -> None:
        """A check the following ones depend on: its failure ends the run."""
        if not self.ok(name, condition, detail):
            raise Failure(f"{name} failed")

    def equal(self, name: str, actual: Any, expected: Any) -> bool:
        return self.ok(name, actual == expected, f"expected {expected!r}, got {actual!r}")

    def figure(self, name: str, value: str) -> None:
        self.figures.append((name, value))
        log(f"    {name}: {value}")


checks = Checks()


# --- the Kubernetes API --------------------------------------------------------------------


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Kube:
    """A small client of the Kubernetes API from a kubeconfig (token or client certificate)."""

    def __init__(self, path: str) -> None:
        config = yaml.safe_load(Path(path).read_text())
        context_name = config.get("current-context")
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        if context_name not in contexts:
            raise Failure(f"{path}: no current-context")
        context = contexts[context_name]
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next((u["user"] for u in config.get("users") or [] if u["name"] == context.get("user")), {}) or {}
        url = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        self.https = url.scheme == "https"
        self.prefix = url.path.rstrip("/")
        self._files = tempfile.TemporaryDirectory(prefix="agentsmith-live-kube.")
        self.ssl = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        elif cluster.get("certificate-authority-data"):
            self.ssl = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif cluster.get("certificate-authority"):
            self.ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.headers = {"Accept": "application/json"}
        if user.get("token"):
            self.headers["Authorization"] = f"Bearer {user['token']}"
        elif user.get("tokenFile"):
            self.headers["Authorization"] = f"Bearer {Path(user['tokenFile']).read_text().strip()}"
        cert, key = user.get("client-certificate"), user.get("client-key")
        if user.get("client-certificate-data"):
            cert = self._write("client.crt", user["client-certificate-data"])
            key = self._write("client.key", user["client-key-data"])
        if cert:
            self.ssl.load_cert_chain(cert, key)
        if "Authorization" not in self.headers and not cert:
            raise Failure(f"{path}: the user of context {context_name} has neither a token nor a client "
                          "certificate (exec and auth-provider plugins are not supported here)")

    def _write(self, name: str, data: str) -> str:
        path = Path(self._files.name) / name
        path.write_bytes(base64.b64decode(data))
        path.chmod(0o600)
        return str(path)

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def open(self, method: str, path: str, query: dict | None = None, body: Any = None,
             timeout: float = 20) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = self.prefix + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self.connection(timeout)
        conn.request(method, url, body=data, headers=headers)
        return conn, conn.getresponse()

    def call(self, method: str, path: str, query: dict | None = None, body: Any = None, timeout: float = 20) -> Any:
        conn, response = self.open(method, path, query, body, timeout)
        try:
            raw = response.read()
        finally:
            conn.close()
        if response.status >= 300:
            try:
                message = json.loads(raw).get("message", raw.decode(errors="replace"))
            except ValueError:
                message = raw.decode(errors="replace")
            raise KubeError(response.status, message)
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(raw)
        return raw.decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query or None)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise

    def items(self, path: str, selector: str | None = None) -> list[dict]:
        return self.get(path, **({"labelSelector": selector} if selector else {}))["items"]

    def close(self) -> None:
        self._files.cleanup()

    def listable_resources(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(API path prefix, resource) of every kind that can be listed, in the preferred version of
        its group: the namespaced ones, and the cluster-wide ones."""
        found = []
        groups = [("/api/v1", self.get("/api/v1"))]
        for group in self.get("/apis")["groups"]:
            version = group["preferredVersion"]["groupVersion"]
            groups.append((f"/apis/{version}", self.get(f"/apis/{version}")))
        for prefix, listing in groups:
            for resource in listing["resources"]:
                if "/" in resource["name"] or "list" not in resource.get("verbs", []):
                    continue
                found.append((prefix, resource["name"], resource["namespaced"]))
        return [(p, r) for p, r, namespaced in found if namespaced], [(p, r) for p, r, namespaced in found if not namespaced]


def epoch(stamp: str) -> float:
    """An RFC 3339 UTC time of the API or the kubelet ("2026-11-24T01:37:31.743009683Z") in seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))


def pod_ready(pod: dict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


class JobWatch(threading.Thread):
    """Records every agent Job (batch/v1) the namespace ever holds, from a watch, so Jobs that
    their TTL removes again are still counted."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        super().__init__(daemon=True, name="job-watch")
        self.kube, self.namespace = kube, namespace
        self.jobs: dict[str, dict] = {}  # uid -> what we know
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.path = f"/apis/batch/v1/namespaces/{namespace}/jobs"

    def record(self, job: dict, deleted: bool = False) -> None:
        meta, status = job["metadata"], job.get("status") or {}
        labels = meta.get("labels") or {}
        with self.lock:
            entry = self.jobs.setdefault(meta["uid"], {"name": meta["name"], "job_id": labels.get("agentsmith.io/job-id"),
                                                       "attempt": labels.get("agentsmith.io/attempt"),
                                                       "namespace": meta.get("namespace")})
            entry["succeeded"] = max(entry.get("succeeded", 0), status.get("succeeded") or 0)
            entry["failed"] = max(entry.get("failed", 0), status.get("failed") or 0)
            if status.get("completionTime"):
                entry["completed"] = status["completionTime"]
            entry["deleted"] = entry.get("deleted", False) or deleted

    def relist(self) -> str:
        listing = self.kube.get(self.path, labelSelector=AGENT_JOBS)
        for job in listing["items"]:
            self.record(job)
        return listing["metadata"]["resourceVersion"]

    def run(self) -> None:
        version = ""
        failures_in_a_row = 0
        while not self.stopping.is_set():
            try:
                if not version:
                    version = self.relist()
                conn, response = self.kube.open("GET", self.path, {
                    "watch": "1", "labelSelector": AGENT_JOBS, "resourceVersion": version,
                    "allowWatchBookmarks": "true", "timeoutSeconds": "5"}, timeout=20)
                try:
                    if response.status != 200:
                        raise KubeError(response.status, response.read().decode(errors="replace"))
                    while True:
                        line = response.readline()
                        if not line:
                            break
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            version = ""  # 410 Gone: list again
                            break
                        version = obj["metadata"].get("resourceVersion") or version
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self.record(obj, deleted=event["type"] == "DELETED")
                finally:
                    conn.close()
                failures_in_a_row = 0
            except (OSError, http.client.HTTPException, KubeError, ValueError) as e:
                failures_in_a_row += 1
                self.errors.append(str(e))
                version = ""
                if failures_in_a_row > 20:
                    return
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def by_job_id(self) -> dict[str, list[dict]]:
        with self.lock:
            out: dict[str, list[dict]] = {}
            for uid, entry in self.jobs.items():
                out.setdefault(entry["job_id"], []).append({"uid": uid, **entry})
            return out


class LogFollower(threading.Thread):
    """Keeps a pod's log (followed) until the pod is gone, for the drain of a replaced pod."""

    def __init__(self, kube: Kube, namespace: str, pod: str, container: str = "dispatcher") -> None:
        super().__init__(daemon=True, name=f"log-{pod}")
        self.kube, self.namespace, self.pod, self.container = kube, namespace, pod, container
        self.lines: list[str] = []
        self.stopping = threading.Event()

    def seconds_between(self, first: str, last: str) -> float | None:
        """Seconds from the first line holding `first` to the first after it holding `last`."""
        start = next((i for i, line in enumerate(self.lines) if first in line), None)
        if start is None:
            return None
        end = next((i for i, line in enumerate(self.lines[start:], start) if last in line), None)
        if end is None:
            return None

        return epoch(self.lines[end].split(" ", 1)[0]) - epoch(self.lines[start].split(" ", 1)[0])

    def time_of(self, text: str) -> float | None:
        """When the first line holding `text` was logged (seconds since the epoch)."""
        line = next((line for line in self.lines if text in line), None)
        return epoch(line.split(" ", 1)[0]) if line else None

    def run(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/log"
        since = None
        for _ in range(50):
            if self.stopping.is_set():
                return
            try:
                query = {"follow": "true", "timestamps": "true", "container": self.container}
                if since:
                    query["sinceTime"] = since
                conn, response = self.kube.open("GET", path, query, timeout=60)
                try:
                    if response.status != 200:
                        return
                    while True:
                        raw = response.readline()
                        if not raw:
                            break
                        line = raw.decode(errors="replace").rstrip("\n")
                        stamp, _, text = line.partition(" ")
                        if not (stamp[:1].isdigit() and stamp.endswith("Z")):
                            continue  # the kubelet's word that the container is gone, not a log line
                        if since and stamp <= since and line in self.lines:
                            continue
                        self.lines.append(line)
                        since = stamp
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)


# --- the dispatcher's API ------------------------------------------------------------------


class Api:
    """The dispatcher's HTTP API at host:port, a new connection for every request."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Connection": "close"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def submit(self, agent: str, task: str) -> tuple[int, Any]:
        return self.call("POST", "/v1/jobs", {"agent": agent, "task": task})

    def job(self, job_id: str) -> dict:
        status, body = self.call("GET", f"/v1/jobs/{job_id}")
        if status != 200:
            raise Failure(f"GET /v1/jobs/{job_id}: {status} {body}")
        return body

    def events(self, job_id: str, timeout: float = 30) -> list[tuple[str, dict]]:
        """The job's event stream (SSE): its history, up to its end."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {self.token}",
                                                                        "Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:
                raise Failure(f"GET /v1/jobs/{job_id}/events: {response.status} {response.read()!r}")
            text = response.read().decode()
        finally:
            conn.close()
        events = []
        for block in text.split("\n\n"):
            name, data = "", []
            for line in block.splitlines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
            if name and data:
                events.append((name, json.loads("\n".join(data))))
        return events

    def wait_ended(self, job_id: str, timeout: float) -> dict:
        return wait_until(timeout, f"job {job_id} to end",
                          lambda: (lambda j: j if j["state"] in TERMINAL else None)(self.job(job_id)), 0.1)


class Traffic:
    """GET /ready and POST /v1/jobs to the Service, each every TRAFFIC_INTERVAL, from two threads,
    until stopped (or `limit` seconds, whichever is first). Every answer is kept."""

    def __init__(self, api: Api, label: str, limit: float = 240) -> None:
        self.api, self.label, self.limit = api, label, limit
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.results: list[dict] = []  # {kind, t, status, error, job_id}
        self.threads = [threading.Thread(target=self.loop, args=(kind,), daemon=True, name=f"traffic-{kind}")
                        for kind in ("ready", "submit")]

    def loop(self, kind: str) -> None:
        started = now()
        n = 0
        while not self.stopping.is_set() and now() - started < self.limit:
            n += 1
            t = now()
            entry: dict[str, Any] = {"kind": kind, "at": time.strftime("%H:%M:%S"), "t": t}
            try:
                if kind == "ready":
                    status, body = self.api.call("GET", "/ready")
                else:
                    status, body = self.api.submit("echo", f"{self.label} #{n}")
                    if status == 202 and isinstance(body, dict):
                        entry["job_id"] = body.get("id")
                entry["status"] = status
                if not 200 <= status < 300:
                    entry["error"] = f"HTTP {status}: {body}"
            except (OSError, http.client.HTTPException) as e:
                entry["error"] = f"{type(e).__name__}: {e}"
            entry["took"] = now() - t
            with self.lock:
                self.results.append(entry)
            self.stopping.wait(max(0.0, TRAFFIC_INTERVAL - (now() - t)))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def failed(self) -> list[dict]:
        return [r for r in self.results if "error" in r]

    def acknowledged(self) -> list[str]:
        return [r["job_id"] for r in self.results if r["kind"] == "submit" and r.get("status") == 202 and r.get("job_id")]


# --- the test ------------------------------------------------------------------------------


class LiveTest:
    """The steps, in order, and what they leave behind for the cleanup."""

    def __init__(self, kubeconfig: str, kubectl: str, binary: str, kustomize: bool) -> None:
        import helm_python as helm

        self.helm = helm
        self.kubeconfig, self.kubectl, self.binary, self.kustomize = kubeconfig, kubectl, binary, kustomize
        self.kube = Kube(kubeconfig)
        self.namespace = f"agentsmith-live-{secrets.token_hex(3)}"
        self.token = "live-" + secrets.token_urlsafe(24)
        self.runner_secret = "live-runner-" + secrets.token_urlsafe(24)
        self.slack_secret = "live-slack-" + secrets.token_urlsafe(24)
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        self.app_version = chart["appVersion"]
        self.new_tag = f"{self.app_version}-live2"
        self.dispatcher_image = f"agentsmith-dispatcher:{self.app_version}"
        self.cfg = None
        self.installed = False
        self.namespaces_made: list[str] = []
        self.tagged = False
        self.watch: JobWatch | None = None
        self.api: Api | None = None
        self.all_job_ids: list[str] = []
        self.values = merge(yaml.safe_load((CHART / "values.local.yaml.example").read_text()) or {}, {
            "secrets": {"apiTokens": [self.token], "runnerSecret": self.runner_secret,
                        # Given as a value, so the chart turns the Slack routes on.
                        "slack": {"signingSecret": self.slack_secret}},
            "config": {"content": FIRST_CONFIG},
            # Short-lived agent Jobs, so step 5 can see the TTL at work; small agent pods, so the
            # jobs of the upgrade traffic fit on one test node at once.
            "agents": {"ttlSecondsAfterFinished": AGENT_TTL, "memory": "256Mi"},
        })

    # --- helpers

    def ns(self, path: str = "") -> str:
        return f"/api/v1/namespaces/{self.namespace}{path}"

    def pods(self, selector: str) -> list[dict]:
        return self.kube.items(self.ns("/pods"), selector)

    def ready_pods(self, selector: str, count: int) -> list[dict] | None:
        pods = [p for p in self.pods(selector) if not p["metadata"].get("deletionTimestamp")]
        return pods if len(pods) == count and all(pod_ready(p) for p in pods) else None

    def endpoints_ready(self, namespace: str, service: str) -> bool:
        endpoints = self.kube.get(f"/api/v1/namespaces/{namespace}/endpoints/{service}")
        return any(subset.get("addresses") for subset in endpoints.get("subsets") or [])

    def service_api(self, namespace: str, service: str) -> Api:
        svc = self.kube.get(f"/api/v1/namespaces/{namespace}/services/{service}")
        # A connection to a Service without endpoints hangs on this cluster (TESTENV.md); and
        # kube-proxy programs a new Service a moment after its endpoints appear in the API
        # (until then a connection is refused): wait for both.
        wait_until(60, f"endpoints of Service {namespace}/{service}", lambda: self.endpoints_ready(namespace, service))
        api = Api(svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"], self.token)
        wait_until(30, f"the Service {namespace}/{service} to answer at {api.url}",
                   lambda: api.call("GET", "/health", timeout=2)[0] == 200, 0.2)
        return api

    def deployment(self) -> dict:
        return self.kube.get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{FULLNAME}")

    def replica_sets(self) -> list[dict]:
        return self.kube.items(f"/apis/apps/v1/namespaces/{self.namespace}/replicasets", DISPATCHER_PODS)

    def release_status(self) -> dict:
        return self.cfg.status(RELEASE)

    def run_job(self, api: Api, agent: str, task: str, timeout: float = 180) -> tuple[dict, float, list]:
        """Submits a job, waits for its end; returns the job, submit->end seconds, its events."""
        t = now()
        status, body = api.submit(agent, task)
        checks.require(f"POST /v1/jobs ({agent}) answers 202", status == 202, f"{status} {body}")
        job = api.wait_ended(body["id"], timeout)
        took = now() - t
        self.all_job_ids.append(job["id"])
        return job, took, api.events(job["id"])

    # --- the steps

    def build_images(self) -> None:
        checks.start("0. images from the real Dockerfiles (scripts/build-images --profile debug)")
        t = now()
        result = subprocess.run([str(ROOT / "scripts" / "build-images"), "--profile", "debug"], cwd=ROOT,
                                capture_output=True, text=True, timeout=1800)
        for line in (result.stdout + result.stderr).splitlines():
            log(f"    | {line}")
        checks.require("scripts/build-images --profile debug succeeds", result.returncode == 0, f"exit {result.returncode}")
        checks.figure("image build s", f"{now() - t:.1f}")
        for image in (self.dispatcher_image, f"agentsmith-agent:{self.app_version}", "agentsmith-redis:7.0"):
            found = subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
            checks.require(f"{image} (the chart's default name) is in the local Docker", found)

    def install(self) -> None:
        checks.start(f"1. helm install {RELEASE} into {self.namespace} (values.local.yaml.example + test secrets)")
        self.kube.call("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": self.namespace, "labels": {"agentsmith.io/live-test": "true"}}})
        self.namespaces_made.append(self.namespace)
        self.cfg = self.helm.Config(kubeconfig_path=self.kubeconfig, namespace=self.namespace)
        self.watch = JobWatch(self.kube, self.namespace)
        self.watch.start()
        t = now()
        self.installed = True
        try:
            release = self.cfg.install(CHART, RELEASE, self.values, wait="watcher", timeout=240)
        except self.helm.HelmError as e:
            checks.require("helm install (wait: watcher) succeeds", False, e)
        install_call = now() - t
        redis = wait_until(120, "the Redis pod to be Ready", lambda: self.ready_pods(REDIS_PODS, 1))
        dispatchers = wait_until(120, "the dispatcher pod to be Ready", lambda: self.ready_pods(DISPATCHER_PODS, 1))
        ready = now() - t
        checks.ok("helm install (wait: watcher) succeeds", True)
        checks.figure("install -> Ready s", f"{ready:.1f} (helm install returned after {install_call:.1f})")
        checks.ok("the Redis pod is Ready", redis)
        checks.ok("the dispatcher pod is Ready", dispatchers)
        container = dispatchers[0]["spec"]["containers"][0]
        checks.equal("the dispatcher runs the chart's default image, never pulled",
                     (container["image"], container["imagePullPolicy"]), (self.dispatcher_image, "Never"))
        status = self.release_status()
        checks.equal("helm status: deployed", status["status"], "deployed")
        checks.equal("helm status: revision 1", status["revision"], 1)
        webhooks = f"http://{FULLNAME}.{self.namespace}.svc.cluster.local:8080/webhooks/"
        checks.ok(f"NOTES say where the webhooks point ({webhooks}...)", webhooks in (release.get("notes") or ""),
                  release.get("notes"))
        t = now()
        try:
            result = self.cfg.test(RELEASE, timeout=120, logs=True)
            passed, detail = True, result.get("logs", "")
        except self.helm.HelmError as e:
            passed, detail = False, e
        checks.figure("helm test s", f"{now() - t:.1f}")
        checks.ok("helm test passes (GET /ready through the Service from a pod)", passed, detail)
        if passed:
            log(f"    helm test logs: {' '.join(str(detail).split())[:300]}")
        gone = wait_until(60, "the helm test pod to be deleted",
                          lambda: not self.pods(f"{INSTANCE},app.kubernetes.io/component=test") or None)
        checks.ok("the helm test pod is deleted afterwards", gone)

    def first_job(self) -> None:
        checks.start("2. a job through the dispatcher's Service runs as a Kubernetes Job")
        self.api = api = self.service_api(self.namespace, FULLNAME)
        log(f"    the Service's address: {api.url} (its ClusterIP, through kube-proxy)")
        status, body = api.call("GET", "/ready")
        checks.require("GET /ready through the Service answers 200", status == 200, f"{status} {body}")
        status, body = api.call("GET", "/v1/jobs")
        checks.equal("GET /v1/jobs with the token answers 200", status, 200)
        unauthorised = Api(api.host, api.port, "wrong-token-0123456789").call("GET", "/v1/jobs")[0]
        checks.equal("GET /v1/jobs with a wrong token answers 401", unauthorised, 401)
        task = "chart-live-test: hello from the Service"
        job, took, events = self.run_job(api, "echo", task)
        checks.figure("job submit -> succeeded s", f"{took:.1f}")
        checks.equal("the job ends succeeded", job["state"], "succeeded")
        checks.equal("on its first attempt", job["attempt"], 1)
        checks.equal("with the agent's result", (job.get("result") or {}).get("summary"), f"did: {task}")
        lines = [e["line"] for name, e in events if name == "log"]
        expected = [f"agent starting: {task}", "step 1 of 3", "step 2 of 3", "step 3 of 3", "agent done"]
        checks.ok("its log lines came back through the Service (GET /v1/jobs/{id}/events)",
                  all(line in lines for line in expected), lines)
        states = [e["state"] for name, e in events if name == "state"]
        checks.equal("its states", states, ["queued", "starting", "running", "succeeded"])
        spawned = [e for name, e in events if name == "spawned"]
        checks.ok("it was spawned by the kubernetes backend",
                  spawned and spawned[0]["backend"] == "kubernetes", spawned)
        # The runner reports before the Job's status says Complete: wait for that too.
        k8s_jobs = wait_until(30, "the watch to have seen the job's Kubernetes Job Complete",
                              lambda: (lambda found: found if found and all(j["succeeded"] for j in found) else None)(
                                  self.watch.by_job_id().get(job["id"])))
        checks.ok(f"exactly one Kubernetes Job labelled agentsmith.io/job-id={job['id']}, in {self.namespace}, Complete",
                  len(k8s_jobs) == 1 and k8s_jobs[0]["namespace"] == self.namespace and k8s_jobs[0]["succeeded"] == 1,
                  k8s_jobs)
        cli = subprocess.run([self.binary, "jobs", "logs", job["id"]], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "AGENTSMITH_URL": api.url, "AGENTSMITH_API_TOKEN": self.token})
        checks.ok("`agentsmith jobs logs <id>` against the Service exits 0 and shows the output",
                  cli.returncode == 0 and "agent done" in cli.stdout, f"exit {cli.returncode}: {cli.stdout}{cli.stderr}")
        self.slack_command(api)

    def slack_command(self, api: Api) -> None:
        """A signed slash command through the Service: answered "Queued as", run as a Job."""
        form = urllib.parse.urlencode({
            "command": "/agent", "text": "fix LIVE-1", "user_id": "ULIVE", "user_name": "live-test",
            "channel_id": "CLIVE", "trigger_id": f"live.{secrets.token_hex(6)}"}).encode()
        t = now()

        def post(signature_secret: str) -> tuple[int, Any]:
            stamp = str(int(time.time()))
            digest = hmac.new(signature_secret.encode(), b"v0:" + stamp.encode() + b":" + form, hashlib.sha256)
            conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
            try:
                conn.request("POST", "/webhooks/slack/commands", body=form, headers={
                    "Content-Type": "application/x-www-form-urlencoded", "Connection": "close",
                    "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()})
                response = conn.getresponse()
                raw = response.read()
            finally:
                conn.close()
            try:
                return response.status, json.loads(raw)
            except ValueError:
                return response.status, raw.decode(errors="replace")

        status, _ = post("not-the-signing-secret")
        checks.equal("a Slack command with a wrong signature is refused (401)", status, 401)
        status, body = post(self.slack_secret)
        checks.require("a signed Slack slash command answers 200", status == 200, f"{status} {body}")
        text = json.dumps(body)
        found = re.search(r"Queued as ([a-z0-9]{12})", text)
        job_id = found.group(1) if found else None
        checks.require("its ephemeral answer says \"Queued as <id>\"",
                       "Queued as" in text and body.get("response_type") == "ephemeral" and job_id, text)
        job = api.wait_ended(job_id, 180)
        self.all_job_ids.append(job_id)
        checks.figure("Slack command -> succeeded s", f"{now() - t:.1f}")
        checks.equal("the Slack job ends succeeded, in project live, about LIVE-1",
                     (job["state"], job.get("project"), job.get("ticket"), job.get("task")),
                     ("succeeded", "live", "LIVE-1", "fix LIVE-1"))
        checks.equal("its origin is the Slack channel and user",
                     job.get("origin"), {"source": "slack", "channel": "CLIVE", "user": "ULIVE"})
        k8s_jobs = wait_until(30, "the Slack job's Kubernetes Job", lambda: self.watch.by_job_id().get(job_id))
        checks.ok("it ran as one Kubernetes Job in the release namespace",
                  len(k8s_jobs) == 1 and k8s_jobs[0]["namespace"] == self.namespace, k8s_jobs)

    def roll(self, label: str, values: dict) -> tuple[float, float, Traffic, list[LogFollower], set[str]]:
        """Upgrades to `values` under traffic; returns (helm upgrade s, whole roll s, traffic, the old
        pods' logs, the ReplicaSets before)."""
        old_pods = [p["metadata"]["name"] for p in self.pods(DISPATCHER_PODS)]
        followers = [LogFollower(self.kube, self.namespace, name) for name in old_pods]
        for follower in followers:
            follower.start()
        sets_before = {rs["metadata"]["name"] for rs in self.replica_sets()}
        traffic = Traffic(self.api, label)
        traffic.start()
        time.sleep(2)  # traffic before the roll, too
        t, started = now(), time.time()
        error = None
        try:
            self.cfg.upgrade(CHART, RELEASE, values, wait="watcher", timeout=240)
        except self.helm.HelmError as e:
            error = e
        helm_s = roll_s = now() - t
        timeline = {"helm returned": time.time()}
        try:
            if error is None:
                for pod in self.pods(DISPATCHER_PODS):
                    meta = pod["metadata"]
                    if meta["name"] in old_pods and meta.get("deletionTimestamp"):
                        timeline[f"old pod {meta['name']} deleted"] = (
                            epoch(meta["deletionTimestamp"]) - (meta.get("deletionGracePeriodSeconds") or 0))
                    elif meta["name"] not in old_pods:
                        timeline[f"new pod {meta['name']} created"] = epoch(meta["creationTimestamp"])
                        ready = [c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready" and c["status"] == "True"]
                        if ready:
                            timeline[f"new pod {meta['name']} Ready"] = epoch(ready[0]["lastTransitionTime"])
                # The roll is over when the replaced pods are gone (they drain after helm returns).
                wait_until(120, "the replaced dispatcher pods to be gone",
                           lambda: not any(self.kube.exists(self.ns(f"/pods/{name}")) for name in old_pods), 0.2)
                roll_s = now() - t
                timeline["old pods gone"] = time.time()
                time.sleep(2)  # and traffic after it
        finally:
            traffic.stop()
            for follower in followers:
                follower.stopping.set()
                follower.join(timeout=10)
                for what, text in (("SIGTERM (drain starts)", "shutting down"), ("exited", '"message":"stopped"')):
                    when = follower.time_of(text)
                    if when:
                        timeline[f"old pod {follower.pod} {what}"] = when
        log("    timeline (API times are whole seconds): " + ", ".join(
            f"{name} {when - started:+.1f} s" for name, when in sorted(timeline.items(), key=lambda item: item[1])))
        checks.require("helm upgrade (wait: watcher) succeeds", error is None, error)
        return helm_s, roll_s, traffic, followers, sets_before

    def judge_traffic(self, traffic: Traffic, followers: list[LogFollower]) -> None:
        ready = [r for r in traffic.results if r["kind"] == "ready"]
        submits = [r for r in traffic.results if r["kind"] == "submit"]
        failed = traffic.failed()
        checks.figure("requests sent / failed", f"{len(traffic.results)} / {len(failed)} "
                      f"(GET /ready {len(ready)}, POST /v1/jobs {len(submits)}; slowest "
                      f"{max((r['took'] for r in traffic.results), default=0):.2f} s)")
        checks.ok("no request failed (any non-2xx or connection error counts)", not failed,
                  "\n" + "\n".join(f"      {r['at']} {r['kind']}: {r['error']}" for r in failed))
        for follower in followers:
            text = "\n".join(follower.lines)
            drain = follower.seconds_between("shutting down", '"message":"stopped"')
            if drain is not None:
                checks.figure(f"drain of {follower.pod} s", f"{drain:.1f} (SIGTERM to exit, after the {PRESTOP_SLEEP} s preStop sleep)")
            checks.ok(f"the replaced pod {follower.pod} drained and stopped cleanly",
                      "shutting down" in text and '"stopped"' in text and "did not finish" not in text,
                      "its last log lines:\n" + "\n".join(f"      {line}" for line in follower.lines[-15:]))
        if failed:
            self.dump_old_logs(followers)

    def judge_jobs(self, job_ids: list[str]) -> None:
        """Every acknowledged job exists, succeeds on attempt 1, with exactly one Kubernetes Job."""
        api = self.api
        self.all_job_ids += job_ids
        missing, states = [], {}
        # max_concurrent_jobs (10) at a time, each a pod of ~4 s: about 0.5 s a job here.
        limit = 120 + 1.5 * len(job_ids)
        t = now()
        deadline = t + limit
        pending = list(job_ids)
        while pending and now() < deadline:
            still = []
            for job_id in pending:
                status, body = api.call("GET", f"/v1/jobs/{job_id}")
                if status == 404:
                    missing.append(job_id)
                elif status != 200:
                    still.append(job_id)
                elif body["state"] in TERMINAL:
                    states[job_id] = body
                else:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(1)
        checks.ok(f"no acknowledged job lost ({len(job_ids)} acknowledged with 202, all found)", not missing, missing)
        checks.ok(f"every one ended within {limit:.0f} s", not pending, pending)
        checks.figure("the traffic's jobs all ended after s", f"{now() - t:.1f} (from the end of the traffic)")
        not_succeeded = {j: (b["state"], b.get("reason")) for j, b in states.items() if b["state"] != "succeeded"}
        checks.ok("every one succeeded", not not_succeeded, not_succeeded)
        retried = {j: b["attempt"] for j, b in states.items() if b["attempt"] != 1}
        checks.ok("every one ran on attempt 1", not retried, retried)
        seen = wait_until(20, "the watch to have seen every job's Kubernetes Job",
                          lambda: (lambda by: by if all(j in by for j in states) else None)(self.watch.by_job_id()), 0.5)
        extra = {j: [k["name"] for k in seen[j]] for j in states if len(seen.get(j, [])) != 1}
        checks.ok("exactly one Kubernetes Job per job id (label agentsmith.io/job-id)", not extra, extra)
        wrong = {j: seen[j][0]["attempt"] for j in states if j in seen and seen[j][0]["attempt"] != "1"}
        checks.ok("each labelled agentsmith.io/attempt=1", not wrong, wrong)

    def upgrade_image(self) -> None:
        checks.start(f"3. helm upgrade to dispatcher image tag {self.new_tag} under traffic")
        subprocess.run(["docker", "tag", self.dispatcher_image, f"agentsmith-dispatcher:{self.new_tag}"], check=True)
        self.tagged = True
        self.values = merge(self.values, {"image": {"tag": self.new_tag}})
        helm_s, roll_s, traffic, followers, sets_before = self.roll("upgrade traffic", self.values)
        checks.figure("upgrade duration s", f"{roll_s:.1f} (until the old pod was gone; helm upgrade returned after {helm_s:.1f})")
        status = self.release_status()
        checks.equal("helm status: deployed, revision 2", (status["status"], status["revision"]), ("deployed", 2))
        pods = wait_until(30, "one Ready dispatcher pod", lambda: self.ready_pods(DISPATCHER_PODS, 1))
        checks.equal("the dispatcher pod runs the new tag", pods[0]["spec"]["containers"][0]["image"],
                     f"agentsmith-dispatcher:{self.new_tag}")
        self.judge_traffic(traffic, followers)
        self.judge_jobs(traffic.acknowledged())

    def upgrade_config(self) -> None:
        checks.start(f"4. helm upgrade with a new agent profile ({NEW_PROFILE}) in config.content under traffic")
        before = self.deployment()["spec"]["template"]["metadata"]["annotations"]
        self.values = merge(self.values, {"config": {"content": NEW_CONFIG}})
        helm_s, roll_s, traffic, followers, sets_before = self.roll("config traffic", self.values)
        checks.figure("config roll s", f"{roll_s:.1f} (until the old pod was gone; helm upgrade returned after {helm_s:.1f})")
        deployment = self.deployment()
        after = deployment["spec"]["template"]["metadata"]["annotations"]
        checks.ok("checksum/config changed", after.get("checksum/config") != before.get("checksum/config"),
                  f"{before.get('checksum/config')} -> {after.get('checksum/config')}")
        checks.equal("checksum/secret did not", after.get("checksum/secret"), before.get("checksum/secret"))
        revision = deployment["metadata"]["annotations"].get("deployment.kubernetes.io/revision")
        current = [rs for rs in self.replica_sets()
                   if rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision") == revision]
        checks.ok("the pods rolled to a new ReplicaSet, Ready",
                  len(current) == 1 and current[0]["metadata"]["name"] not in sets_before
                  and current[0]["status"].get("readyReplicas") == 1,
                  f"current {[rs['metadata']['name'] for rs in current]}, before {sorted(sets_before)}")
        others = {rs["metadata"]["name"]: rs["status"].get("replicas") for rs in self.replica_sets()
                  if rs not in current and rs["status"].get("replicas")}
        checks.ok("the older ReplicaSets are scaled to 0", not others, others)
        config = yaml.safe_load(self.kube.get(self.ns(f"/configmaps/{FULLNAME}"))["data"]["agentsmith.yml"])
        checks.ok(f"the ConfigMap holds the profile {NEW_PROFILE}", NEW_PROFILE in config.get("agents", {}), config.get("agents"))
        self.judge_traffic(traffic, followers)
        self.judge_jobs(traffic.acknowledged())
        # After the traffic's jobs, so it does not queue behind them.
        job, took, events = self.run_job(self.api, NEW_PROFILE, "new config")
        checks.figure(f"{NEW_PROFILE} job submit -> succeeded s", f"{took:.1f}")
        checks.equal(f"a job of {NEW_PROFILE} succeeds on the new pods", (job["state"], job["attempt"]), ("succeeded", 1))
        lines = [e["line"] for name, e in events if name == "log"]
        checks.ok("its output is the new profile's", f"{NEW_PROFILE_MARKER}: new config" in lines, lines)

    def uninstall(self) -> None:
        checks.start(f"5. helm uninstall {RELEASE}")
        namespaced, cluster_wide = self.kube.listable_resources()
        followers = [LogFollower(self.kube, self.namespace, p["metadata"]["name"], "dispatcher")
                     for p in self.pods(DISPATCHER_PODS)]
        followers += [LogFollower(self.kube, self.namespace, p["metadata"]["name"], "redis") for p in self.pods(REDIS_PODS)]
        for follower in followers:
            follower.start()
        t = now()
        try:
            self.cfg.uninstall(RELEASE, wait="watcher", timeout=180)
            error = None
        except self.helm.HelmError as e:
            error = e
        self.installed = error is not None
        uninstall_s = now() - t
        checks.require("helm uninstall (wait: watcher) succeeds", error is None, error)

        def leftovers() -> list[str]:
            found = []
            for prefix, resource in namespaced:
                path = f"{prefix}/namespaces/{self.namespace}/{resource}"
                try:
                    found += [f"{resource}/{o['metadata']['name']}" for o in self.kube.items(path, INSTANCE)]
                except KubeError as e:
                    if e.status not in (404, 405):
                        raise
            for prefix, resource in cluster_wide:
                try:
                    found += [f"{resource}/{o['metadata']['name']} (cluster-wide)" for o in self.kube.items(f"{prefix}/{resource}", INSTANCE)]
                except KubeError as e:
                    if e.status not in (404, 405):
                        raise
            return found

        # What is still there after helm returned, and when each goes.
        last_seen: dict[str, float] = {}

        def all_gone() -> bool:
            found = leftovers()
            for name in found:
                last_seen[name] = now() - t
            return not found

        remaining: list[str] = []
        try:
            wait_until(120, "the release's objects to be gone", all_gone, 1)
            checks.figure("uninstall s", f"{uninstall_s:.1f} (the last object gone after {now() - t:.1f})")
            gone = True
        except Failure:
            remaining = leftovers()
            gone = False
        for name, seen in sorted(last_seen.items(), key=lambda item: item[1]):
            log(f"    after helm returned: {name} still there at {seen:.1f} s")
        for follower in followers:
            follower.stopping.set()
            log(f"    the last log lines of {follower.pod} ({follower.container}):")
            for line in follower.lines[-6:]:
                log(f"      {line}")
        checks.ok(f"nothing labelled {INSTANCE} is left ({len(namespaced)} namespaced and {len(cluster_wide)} "
                  "cluster-wide kinds listed)", gone, remaining)
        checks.ok("the release is gone from helm's storage", not self.cfg.list(all_states=True))
        # Agent Jobs belong to no release: their TTL removes them (and their pods).
        t = now()
        try:
            wait_until(AGENT_TTL + 90, "the agent Jobs and their pods to be removed by their TTL", lambda: not (
                self.kube.items(f"/apis/batch/v1/namespaces/{self.namespace}/jobs", AGENT_JOBS)
                or self.kube.items(self.ns("/pods"), AGENT_JOBS)) or None, 1)
            checks.ok(f"no agent Job or pod left once their TTL ({AGENT_TTL} s) passed", True)
            checks.figure("agent Jobs gone after uninstall s", f"{now() - t:.1f}")
        except Failure as e:
            left = [j["metadata"]["name"] for j in self.kube.items(f"/apis/batch/v1/namespaces/{self.namespace}/jobs", AGENT_JOBS)]
            checks.ok(f"no agent Job or pod left once their TTL ({AGENT_TTL} s) passed", False, f"{e}: {left}")
        seen = sum(len(v) for v in self.watch.by_job_id().values())
        checks.ok(f"the watch saw {seen} agent Jobs, one per job ({len(set(self.all_job_ids))})",
                  seen == len(set(self.all_job_ids)))
        self.watch.stop()
        checks.ok("the Job watch had no errors", not self.watch.errors, self.watch.errors[:5])
        t = now()
        self.delete_namespace(self.namespace)
        checks.figure("namespace delete s", f"{now() - t:.1f}")
        checks.ok(f"namespace {self.namespace} deleted", True)

    def kustomize_dev(self) -> None:
        checks.start(f"6. kubectl apply -k k8s/overlays/dev (namespace {KUSTOMIZE_NAMESPACE})")
        if not self.kustomize:
            log("    SKIPPED: --no-kustomize")
            return
        if self.kube.exists(f"/api/v1/namespaces/{KUSTOMIZE_NAMESPACE}"):
            log(f"    SKIPPED: namespace {KUSTOMIZE_NAMESPACE} exists already and is not this test's")
            return
        with tempfile.TemporaryDirectory(prefix="agentsmith-live-k8s.") as tmp:
            copy_dir = Path(tmp) / "k8s"
            shutil.copytree(ROOT / "k8s", copy_dir)
            overlay = copy_dir / "overlays" / "dev"
            (overlay / "secrets.env").write_text(f"api-tokens={self.token}\nrunner-secret={self.runner_secret}\n")
            self.kube.call("POST", "/api/v1/namespaces", body={
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": KUSTOMIZE_NAMESPACE, "labels": {"agentsmith.io/live-test": "true"}}})
            self.namespaces_made.append(KUSTOMIZE_NAMESPACE)
            t = now()
            result = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, "apply", "-k", str(overlay)],
                                    capture_output=True, text=True, timeout=120)
            checks.require("kubectl apply -k succeeds", result.returncode == 0, result.stdout + result.stderr)
        base = f"/api/v1/namespaces/{KUSTOMIZE_NAMESPACE}/pods"

        def ready(selector: str) -> bool:
            pods = [p for p in self.kube.items(base, selector) if not p["metadata"].get("deletionTimestamp")]
            return len(pods) == 1 and pod_ready(pods[0])

        wait_until(120, "the dev overlay's Redis and dispatcher to be Ready",
                   lambda: ready("app.kubernetes.io/component=redis") and ready("app.kubernetes.io/component=dispatcher"))
        checks.figure("kustomize apply -> Ready s", f"{now() - t:.1f}")
        api = self.service_api(KUSTOMIZE_NAMESPACE, "agentsmith")
        status, body = api.call("GET", "/ready")
        checks.equal("GET /ready through its Service", status, 200)
        job, took, events = self.run_job(api, "echo", "kustomize dev overlay")
        checks.equal("a job succeeds there", (job["state"], job["attempt"]), ("succeeded", 1))
        checks.ok("with its log lines", any(name == "log" and e["line"] == "agent done" for name, e in events))
        self.delete_namespace(KUSTOMIZE_NAMESPACE)
        checks.ok(f"namespace {KUSTOMIZE_NAMESPACE} deleted", True)

    # --- cleanup and diagnostics

    def delete_namespace(self, namespace: str, timeout: float = 180) -> None:
        try:
            self.kube.call("DELETE", f"/api/v1/namespaces/{namespace}")
        except KubeError as e:
            if e.status != 404:
                raise
        wait_until(timeout, f"namespace {namespace} to be gone",
                   lambda: not self.kube.exists(f"/api/v1/namespaces/{namespace}"), 1)
        if namespace in self.namespaces_made:
            self.namespaces_made.remove(namespace)

    def dump_old_logs(self, followers: list[LogFollower]) -> None:
        for follower in followers:
            log(f"---- log of the replaced pod {follower.pod} (last 20 lines) ----")
            for line in follower.lines[-20:]:
                log(f"    {line}")

    def diagnostics(self) -> None:
        """What the namespace looks like, for a failed run."""
        for namespace in list(self.namespaces_made):
            log(f"---- diagnostics of namespace {namespace} ----")
            try:
                for pod in self.kube.items(f"/api/v1/namespaces/{namespace}/pods"):
                    statuses = pod.get("status", {}).get("containerStatuses") or []
                    log(f"    pod {pod['metadata']['name']}: {pod.get('status', {}).get('phase')}, ready={pod_ready(pod)}, "
                        f"restarts={[s.get('restartCount') for s in statuses]}, state={[s.get('state') for s in statuses]}")
                events = self.kube.items(f"/api/v1/namespaces/{namespace}/events")
                events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
                for event in events[-25:]:
                    log(f"    event {event.get('lastTimestamp')} {event['involvedObject'].get('kind')}/"
                        f"{event['involvedObject'].get('name')}: {event.get('reason')}: {event.get('message')}")
                for pod in self.kube.items(f"/api/v1/namespaces/{namespace}/pods", "app.kubernetes.io/component=dispatcher"):
                    name = pod["metadata"]["name"]
                    text = self.kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}/log", container="dispatcher", tailLines="40")
                    log(f"    ---- log of {name} (last 40 lines) ----")
                    for line in str(text).splitlines():
                        log(f"    {line}")
            except (OSError, http.client.HTTPException, KubeError) as e:
                log(f"    (could not read it: {e})")

    def cleanup(self) -> None:
        if self.watch and self.watch.is_alive():
            self.watch.stop()
        try:
            self.kube.get("/version")
        except (OSError, http.client.HTTPException, KubeError) as e:
            if self.installed or self.namespaces_made:
                log(f"==> cleanup: the API server does not answer ({e}): release {RELEASE} and namespaces "
                    f"{', '.join(self.namespaces_made)} are left to the cluster's next start")
            self.installed, self.namespaces_made = False, []
        if self.installed and self.cfg is not None:
            log(f"==> cleanup: helm uninstall {RELEASE}")
            try:
                self.cfg.uninstall(RELEASE, wait="watcher", timeout=120, ignore_not_found=True)
            except self.helm.HelmError as e:
                log(f"    helm uninstall failed: {e}")
        for namespace in list(self.namespaces_made):
            log(f"==> cleanup: deleting namespace {namespace}")
            try:
                self.delete_namespace(namespace)
            except (Failure, OSError, http.client.HTTPException, KubeError) as e:
                log(f"    {e}")
        if self.tagged:
            subprocess.run(["docker", "image", "rm", f"agentsmith-dispatcher:{self.new_tag}"], capture_output=True)
        self.kube.close()

    def run(self) -> None:
        # The cluster first: fail at once, clearly, when none answers.
        try:
            version = self.kube.get("/version")
        except (OSError, http.client.HTTPException, KubeError) as e:
            raise Failure(f"no Kubernetes API answers at {self.kube.host}:{self.kube.port} ({e}): start the test "
                          "cluster with scripts/k8s-testenv/start.sh, or point KUBECONFIG at a running one")
        log(f"==> cluster: Kubernetes {version.get('gitVersion')} at {self.kube.host}:{self.kube.port}; namespace {self.namespace}")
        self.build_images()
        self.install()
        self.first_job()
        self.upgrade_image()
        self.upgrade_config()
        self.uninstall()
        self.kustomize_dev()


def main() -> int:
    args = sys.argv[1:]
    if args not in ([], ["--no-kustomize"]):
        print(__doc__, file=sys.stderr)
        return 2
    # SIGTERM (a CI timeout) cleans up like a failure does.
    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    started = now()
    test = LiveTest(os.environ["KUBECONFIG"], os.environ.get("AGENTSMITH_KUBECTL", "kubectl"),
                    os.environ["AGENTSMITH_BIN"], kustomize=not args)
    stopped = None
    try:
        test.run()
    except Failure as e:
        stopped = str(e)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except Exception as e:  # an unexpected error still cleans up, and says what it was
        import traceback

        traceback.print_exc()
        stopped = f"{type(e).__name__}: {e}"
    if stopped or checks.failures:
        test.diagnostics()
    test.cleanup()
    took = now() - started
    log("==> measured")
    for name, value in checks.figures:
        log(f"    {name:<36} {value}")
    if stopped:
        checks.failures.append(f"stopped: {stopped}")
    if checks.failures:
        print(f"chart-live-test: {len(checks.failures)} FAILED, {checks.passed} checks passed ({took:.0f} s):", file=sys.stderr)
        for failure in checks.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    log(f"chart-live-test: {checks.passed} checks passed ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
