"""The Kubernetes API as the chart's live test reads it, over plain HTTPS with the
kubeconfig's credentials: a small REST client (`Kube`), a watch that remembers every agent
Job it has seen (`JobWatch`, since Jobs are deleted by their TTL before the verdict), and a
follower of a pod's log (`LogFollower`). `request` and `body_of` also serve the live test's
calls to the dispatcher.
"""

from __future__ import annotations

import base64
import calendar
import json
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from chartkit import TRANSIENT, Failure, RequestError

# The label selector of every agent workload.
AGENT_JOBS = "app.kubernetes.io/managed-by=agentsmith"

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
            timeout: float = 20, opener: urllib.request.OpenerDirector = DIRECT) -> Any:
    """One request on a new connection, never through a proxy of the environment: the response,
    whatever its status, to read (or follow line by line) and close."""
    try:
        return opener.open(urllib.request.Request(url, data, headers or {}, method=method), timeout=timeout)
    except urllib.error.HTTPError as e:
        return e


def body_of(response: Any) -> Any:
    """A response's body, read and closed: parsed when it is JSON, else text."""
    with response:
        raw = response.read()
    if raw and response.headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(raw)
    return raw.decode(errors="replace")


class Kube:
    """A small client of the Kubernetes API, from a kubeconfig's current context (a token or a
    client certificate)."""

    def __init__(self, path: str) -> None:
        config = yaml.safe_load(Path(path).read_text())
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        context = contexts.get(config.get("current-context"))
        if context is None:
            raise Failure(f"{path}: no current-context")
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next((u["user"] for u in config.get("users") or [] if u["name"] == context.get("user")), {}) or {}
        self.server = cluster["server"].rstrip("/")
        ca_data = cluster.get("certificate-authority-data")
        tls = ssl.create_default_context(cafile=cluster.get("certificate-authority"),
                                         cadata=base64.b64decode(ca_data).decode() if ca_data else None)
        if cluster.get("insecure-skip-tls-verify"):
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        self.headers = {"Accept": "application/json"}
        token = user.get("token") or (Path(user["tokenFile"]).read_text().strip() if user.get("tokenFile") else None)
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._files = tempfile.TemporaryDirectory(prefix="agentsmith-live-kube.")
        cert, key = user.get("client-certificate"), user.get("client-key")
        if user.get("client-certificate-data"):
            cert = self._write("client.crt", user["client-certificate-data"])
            key = self._write("client.key", user["client-key-data"])
        if cert:
            tls.load_cert_chain(cert, key)
        if not token and not cert:
            raise Failure(f"{path}: the user of context {config.get('current-context')} has neither a token nor a "
                          "client certificate (exec and auth-provider plugins are not supported here)")
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls))

    def _write(self, name: str, data: str) -> str:
        path = Path(self._files.name) / name
        path.write_bytes(base64.b64decode(data))
        path.chmod(0o600)
        return str(path)

    def open(self, method: str, path: str, query: dict | None = None, body: Any = None, timeout: float = 20) -> Any:
        """The response to a request, whatever its status (for watches and followed logs)."""
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = dict(self.headers, **({"Content-Type": "application/json"} if body is not None else {}))
        data = json.dumps(body).encode() if body is not None else None
        return request(url, method, data, headers, timeout, self.opener)

    def call(self, method: str, path: str, query: dict | None = None, body: Any = None) -> Any:
        """The answer to a request (JSON parsed); RequestError for an error status."""
        response = self.open(method, path, query, body)
        answer = body_of(response)
        if response.status >= 300:
            raise RequestError(response.status, answer.get("message", answer) if isinstance(answer, dict) else answer)
        return answer

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query or None)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except RequestError as e:
            if e.status == 404:
                return False
            raise

    def items(self, path: str, selector: str | None = None) -> list[dict]:
        return self.get(path, **({"labelSelector": selector} if selector else {}))["items"]

    def close(self) -> None:
        self._files.cleanup()

    def listable_resources(self) -> tuple[list[str], list[str]]:
        """The list paths of every kind that can be listed, in the preferred version of its group:
        the namespaced ones (with a `{namespace}` to fill in), and the cluster-wide ones."""
        groups = [("/api/v1", self.get("/api/v1"))]
        for group in self.get("/apis")["groups"]:
            version = group["preferredVersion"]["groupVersion"]
            groups.append((f"/apis/{version}", self.get(f"/apis/{version}")))
        namespaced, cluster_wide = [], []
        for prefix, listing in groups:
            for resource in listing["resources"]:
                if "/" not in resource["name"] and "list" in resource.get("verbs", []):
                    if resource["namespaced"]:
                        namespaced.append(f"{prefix}/namespaces/{{namespace}}/{resource['name']}")
                    else:
                        cluster_wide.append(f"{prefix}/{resource['name']}")
        return namespaced, cluster_wide


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
                with self.kube.open("GET", self.path, {
                        "watch": "1", "labelSelector": AGENT_JOBS, "resourceVersion": version,
                        "allowWatchBookmarks": "true", "timeoutSeconds": "5"}) as response:
                    if response.status != 200:
                        raise RequestError(response.status, response.read().decode(errors="replace"))
                    for line in response:
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            version = ""  # 410 Gone: list again
                            break
                        version = obj["metadata"].get("resourceVersion") or version
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self.record(obj, deleted=event["type"] == "DELETED")
                failures_in_a_row = 0
            except (*TRANSIENT, ValueError) as e:
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
            query = {"follow": "true", "timestamps": "true", "container": self.container}
            if since:
                query["sinceTime"] = since
            try:
                with self.kube.open("GET", path, query, timeout=60) as response:
                    if response.status != 200:
                        return
                    for raw in response:
                        line = raw.decode(errors="replace").rstrip("\n")
                        stamp = line.partition(" ")[0]
                        if not (stamp[:1].isdigit() and stamp.endswith("Z")):
                            continue  # the kubelet's word that the container is gone, not a log line
                        if since and stamp <= since and line in self.lines:
                            continue
                        self.lines.append(line)
                        since = stamp
            except TRANSIENT:
                pass
            time.sleep(0.5)
