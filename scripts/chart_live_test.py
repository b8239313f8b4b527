#!/usr/bin/env python3
"""The live test of the Helm chart (helm/agentsmith) on a running Kubernetes cluster.

Run it through scripts/chart-live-test, which finds the cluster and the tools first and passes
them in the environment:

    KUBECONFIG           the cluster (admin rights: it creates and deletes a namespace)
    AGENTSMITH_KUBECTL   a kubectl, for `kubectl apply -k` of the Kustomize dev overlay
    AGENTSMITH_BIN       the agentsmith binary, for `agentsmith jobs logs` against the release
    AGENTSMITH_CHAOS     the chaos binary, whose `traffic` and `judge` commands load and judge
                         the upgrades
    PYTHONPATH           with helm-python-sdk (module helm_python) on it

What it does, in a namespace of its own (agentsmith-live-<random>) with the release `agentsmith`:

 0. builds the three images from the real Dockerfiles (scripts/build-images --profile debug)
    into the local Docker, which the test cluster's kubelet runs pods from;
 1. installs the chart with the default values plus what this cluster needs
    (values.local.yaml.example: local images, no persistence) and no secret but a Slack signing
    secret: Redis and the dispatcher Ready, `helm test` passes, the release is `deployed`, NOTES
    name the webhooks' address and the command that reads the token; the chart generated the API
    token and the Redis password; Redis refuses an unauthenticated PING (NOAUTH) through its
    Service and inside its own pod, and a wrong password; the NetworkPolicies are there, and,
    as the API server stored them, keep agents from Redis and the metadata address (this
    cluster enforces none: scripts/chart_check.py evaluates every range); the API server lets
    the dispatcher create, patch and delete Secrets and read none (SubjectAccessReviews);
 2. submits a job through the dispatcher's Service (its ClusterIP, which kube-proxy makes
    reachable from this machine) with the generated token: it runs as a Kubernetes Job in the
    namespace, its runner calls back through the Service, it ends `succeeded` with its log
    lines; an agent that PINGs Redis from its pod gets NOAUTH; then a signed Slack slash command
    (`fix LIVE-1`; the signing secret given as a chart value turns Slack on) is answered "Queued
    as <id>" and its job runs the same way (a wrong signature: 401);
 3. upgrades to a new dispatcher image tag while `chaos traffic` sends GET /ready and POST
    /v1/jobs to the Service every 150 ms each: no request may fail (the generated token must
    survive the upgrade); `chaos judge` then follows every acknowledged job, which must succeed
    on its first attempt, and the Job watch here must have seen exactly one Kubernetes Job for
    each; the token and the Redis password are unchanged and Redis was not restarted;
 4. upgrades with a new agent profile in config.content (same traffic): the checksum rolls the
    pods to a new ReplicaSet and a job of the new profile succeeds; secrets unchanged again;
 5. uninstalls: nothing labelled with the release is left in the namespace, the agent Jobs go
    when their TTL (10 s here) has passed; the namespace is deleted;
 6. the upgrade from the previous chart: installs the chart of git commit PREVIOUS_CHART (no
    Redis password, a token given as a value) into a second namespace, then upgrades it to this
    tree's chart without the token: the dispatcher comes Ready, Redis now requires the generated
    password, the old token still works (kept by lookup), a job runs; a second upgrade keeps the
    password and the token, and restarts nothing; the namespace is deleted;
 7. applies the Kustomize dev overlay (k8s/overlays/dev) into its namespace agentsmith-dev, runs
    a job there and deletes the namespace (skipped, saying so, with --no-kustomize or when that
    namespace exists already);
 8. a cluster whose platform team owns RBAC: rbac.create and serviceAccount.create false, the
    dispatcher's ServiceAccount, the README's Role and its RoleBinding made beforehand, agents in
    a namespace of their own (with their Secret there) and a profile shaped through
    agents.profileShapes (a Secret volume, an init container, a PriorityClass): the chart makes
    no RBAC, the shaped job succeeds with what its init container copied, and its pod is read
    back from the agents' namespace; both namespaces and the PriorityClass are deleted;

then prints the measured figures and `chart-live-test: N checks passed`. Whatever happens, the
release and the namespaces it made are removed before it exits. All traffic stays on this
machine and the cluster.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from time import monotonic as now
from typing import Any

import yaml

from chartkit import (CHART, ROOT, TRANSIENT, Checks, Endpoint, Failure, RequestError, allowed, chart_yaml, copy_k8s, log,
                      merge, wait_until)
from chartkube import AGENT_JOBS, JobWatch, Kube, LogFollower, body_of, epoch, pod_ready, request

RELEASE = "agentsmith"
FULLNAME = "agentsmith"  # the release name already holds the chart name
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
DISPATCHER_PODS = f"{INSTANCE},app.kubernetes.io/component=dispatcher"
REDIS_PODS = f"{INSTANCE},app.kubernetes.io/component=redis"
AGENT_TTL = 10
KUSTOMIZE_NAMESPACE = "agentsmith-dev"
TRAFFIC_INTERVAL_MS = 150
PRESTOP_SLEEP = 5  # dispatcher.preStopSleepSeconds, the chart's default
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
# A profile only the new configuration has (step 4); `echo` is kept, as the chart's default.
NEW_PROFILE = "live-check"
NEW_PROFILE_MARKER = "profile live-check from the new configuration"
ECHO_COMMAND = ["sh", "-c", "echo \"agent starting: $AGENTSMITH_TASK\"; for step in 1 2 3; do echo \"step $step of 3\"; "
                "sleep 1; done; printf '{\"summary\":\"did: %s\",\"links\":[]}' \"$AGENTSMITH_TASK\" > \"$AGENTSMITH_RESULT_FILE\"; "
                "echo \"agent done\""]
# Short-lived agent Jobs, so step 5 can see the TTL at work; small agent pods, so the jobs of the
# upgrade traffic fit on one test node at once.
AGENT_VALUES = {"ttlSecondsAfterFinished": AGENT_TTL, "memory": "256Mi"}
# The project a Slack command's ticket (LIVE-1) maps to, in every config of the release.
LIVE_PROJECTS = {"live": {"agent": "echo", "jira_projects": ["LIVE"]}}
# An agent that tries Redis from its pod (through the Redis Service, by its short name): curl
# speaks the Redis protocol well enough over telnet:// to send a PING and print the answer.
REDIS_PROBE = "redis-probe"
REDIS_PROBE_COMMAND = ["sh", "-c", "answer=$(printf 'PING\\r\\n' | curl -s --max-time 2 telnet://agentsmith-redis:6379 | tr -d '\\r'); "
                       "echo \"redis answered: $answer\"; printf '{\"summary\":\"probed\",\"links\":[]}' > \"$AGENTSMITH_RESULT_FILE\""]
FIRST_CONFIG = yaml.safe_dump({
    "projects": LIVE_PROJECTS,
    "agents": {"echo": {"command": ECHO_COMMAND, "timeout_secs": 600},
               REDIS_PROBE: {"command": REDIS_PROBE_COMMAND, "timeout_secs": 60}},
}, sort_keys=False)
# The chart as it was before Redis had a password and the API token could be generated (step 6).
PREVIOUS_CHART = "77d6501"
GENERATED_TOKEN = re.compile(r"[A-Za-z0-9]{40}")
GENERATED_PASSWORD = re.compile(r"[A-Za-z0-9]{32}")
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

checks = Checks(verbose=True)


class Api:
    """The dispatcher's HTTP API at `url`, a new connection for every request."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: Any = None, data: bytes | None = None,
             headers: dict | None = None, timeout: float = 5.0) -> tuple[int, Any]:
        """(status, answer) of a request with the token (if any); `body` is sent as JSON."""
        headers = dict(headers or {}, **({"Authorization": f"Bearer {self.token}"} if self.token else {}))
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        response = request(self.url + path, method, data, headers, timeout)
        return response.status, body_of(response)

    def submit(self, agent: str, task: str) -> tuple[int, Any]:
        return self.call("POST", "/v1/jobs", {"agent": agent, "task": task})

    def job(self, job_id: str) -> dict:
        status, body = self.call("GET", f"/v1/jobs/{job_id}")
        if status != 200:
            raise RequestError(status, f"GET /v1/jobs/{job_id}: {body}")
        return body

    def events(self, job_id: str) -> list[tuple[str, dict]]:
        """The job's event stream (SSE): its history, up to its end."""
        status, text = self.call("GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}, timeout=30)
        if status != 200:
            raise Failure(f"GET /v1/jobs/{job_id}/events: {status} {text}")
        events = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            name = next((line[6:].strip() for line in lines if line.startswith("event:")), "")
            data = [line[5:].strip() for line in lines if line.startswith("data:")]
            if name and data:
                events.append((name, json.loads("\n".join(data))))
        return events

    def wait_ended(self, job_id: str, timeout: float) -> dict:
        return wait_until(timeout, f"job {job_id} to end",
                          lambda: (lambda j: j if j["state"] in TERMINAL else None)(self.job(job_id)), 0.1)


class Traffic:
    """`chaos traffic` (the Rust harness) against the dispatcher: GET /ready and POST /v1/jobs, each
    every TRAFFIC_INTERVAL_MS on a new connection, from its creation until `stop`, which keeps its
    report (requests, failures, the ids of the acknowledged jobs) for `judge` and the checks."""

    def __init__(self, chaos: str, api: Api, label: str, directory: Path) -> None:
        """Starts the traffic and returns once it runs."""
        self.chaos, self.api = chaos, api
        slug = re.sub(r"[^a-z0-9]+", "-", label)
        self.report, self.output = directory / f"{slug}.json", directory / f"{slug}.log"
        self.result: dict = {}
        with self.output.open("w") as output:
            self.process = subprocess.Popen(
                [chaos, "traffic", "--url", api.url, "--token", api.token, "--agent", "echo", "--label", label,
                 "--interval-ms", str(TRAFFIC_INTERVAL_MS), "--out", str(self.report)],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until(20, "chaos traffic to say `traffic: started`", lambda: self.process.poll() is not None
                       or "traffic: started" in self.output.read_text(), 0.1)
            if self.process.poll() is not None:
                raise Failure(f"chaos traffic exited {self.process.returncode}: {self.output.read_text().strip()}")
        except Failure:
            self.process.kill()
            raise

    def stop(self) -> None:
        """SIGTERM: it finishes the requests in flight and writes its report."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise Failure("chaos traffic did not stop within 30 s of SIGTERM") from None
        if code != 0 or not self.report.exists():
            raise Failure(f"chaos traffic exited {code} without its report: {self.output.read_text().strip()}")
        self.result = json.loads(self.report.read_text())

    def judge(self, limit: float) -> dict:
        """`chaos judge`: follows every acknowledged job until it ends, or `limit` seconds pass."""
        result = subprocess.run([self.chaos, "judge", "--url", self.api.url, "--token", self.api.token,
                                 "--report", str(self.report), "--limit-secs", f"{limit:.0f}"],
                                capture_output=True, text=True, timeout=limit + 120)
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise Failure(f"chaos judge exited {result.returncode} with no verdict: {result.stdout}{result.stderr}") from None


class LiveTest:
    """The steps, in order, and what they leave behind for the cleanup."""

    def __init__(self, kubeconfig: str, kubectl: str, binary: str, chaos: str, kustomize: bool,
                 previous_only: bool = False) -> None:
        import helm_python as helm

        self.helm = helm
        self.kubeconfig, self.kubectl, self.binary, self.chaos, self.kustomize = kubeconfig, kubectl, binary, chaos, kustomize
        self.previous_only = previous_only
        self.kube = Kube(kubeconfig)
        self.tmp = tempfile.TemporaryDirectory(prefix="agentsmith-live.")
        self.namespace = f"agentsmith-live-{secrets.token_hex(3)}"
        self.token = ""  # the chart generates it (step 1 reads it from the Secret)
        self.redis_password = ""
        self.redis_uid = ""
        self.slack_secret = "live-slack-" + secrets.token_urlsafe(24)
        self.app_version = chart_yaml("Chart.yaml")["appVersion"]
        self.new_tag = f"{self.app_version}-live2"
        self.dispatcher_image = f"agentsmith-dispatcher:{self.app_version}"
        self.cfg = None
        self.installed = False
        self.namespaces_made: list[str] = []
        self.priority_classes: list[str] = []
        self.tagged = False
        self.watch: JobWatch | None = None
        self.api: Api | None = None
        self.all_job_ids: list[str] = []
        # The default values, and what this cluster needs: no API token or runner secret (the
        # chart generates the token, the dispatcher the runner secret), no Redis password.
        self.values = merge(chart_yaml("values.local.yaml.example"), {
            # Given as a value, so the chart turns the Slack routes on.
            "secrets": {"slack": {"signingSecret": self.slack_secret}},
            "config": {"content": FIRST_CONFIG},
            "agents": AGENT_VALUES,
        })

    # --- helpers

    def ns(self, path: str = "", namespace: str | None = None) -> str:
        return f"/api/v1/namespaces/{namespace or self.namespace}{path}"

    def pods(self, selector: str, namespace: str | None = None) -> list[dict]:
        return self.kube.items(self.ns("/pods", namespace), selector)

    def ready_pods(self, selector: str, count: int, namespace: str | None = None) -> list[dict] | None:
        """The `count` pods of `selector`, when there are that many and all are Ready."""
        pods = [p for p in self.pods(selector, namespace) if not p["metadata"].get("deletionTimestamp")]
        return pods if len(pods) == count and all(pod_ready(p) for p in pods) else None

    def make_namespace(self, namespace: str) -> None:
        self.kube.call("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"agentsmith.io/live-test": "true"}}})
        self.namespaces_made.append(namespace)

    def service_api(self, namespace: str, service: str) -> Api:
        svc = self.kube.get(f"/api/v1/namespaces/{namespace}/services/{service}")
        # A connection to a Service without endpoints hangs on this cluster (TESTENV.md); and
        # kube-proxy programs a new Service a moment after its endpoints appear in the API
        # (until then a connection is refused): wait for both.
        wait_until(60, f"endpoints of Service {namespace}/{service}", lambda: any(
            subset.get("addresses")
            for subset in self.kube.get(f"/api/v1/namespaces/{namespace}/endpoints/{service}").get("subsets") or []))
        api = Api(f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}", self.token)
        wait_until(30, f"the Service {namespace}/{service} to answer at {api.url}",
                   lambda: api.call("GET", "/health", timeout=2)[0] == 200, 0.2)
        return api

    def deployment(self) -> dict:
        return self.kube.get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{FULLNAME}")

    def secret(self, name: str, namespace: str | None = None) -> dict[str, str]:
        """A Secret's data, decoded (the test reads what the dispatcher and Redis are given)."""
        data = self.kube.get(self.ns(f"/secrets/{name}", namespace)).get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def redis_address(self, namespace: str) -> tuple[str, int]:
        """The Redis Service's ClusterIP and port, once it has an endpoint."""
        service = f"{FULLNAME}-redis"
        svc = self.kube.get(f"/api/v1/namespaces/{namespace}/services/{service}")
        wait_until(60, f"endpoints of Service {namespace}/{service}", lambda: any(
            subset.get("addresses")
            for subset in self.kube.get(f"/api/v1/namespaces/{namespace}/endpoints/{service}").get("subsets") or []))
        return svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]

    def redis_says(self, namespace: str, *commands: str) -> list[str]:
        """Redis's answer (its first line) to each inline command, on one connection through its
        Service from this machine: a client with nothing but the network."""
        address = self.redis_address(namespace)

        def talk() -> list[str]:
            with socket.create_connection(address, timeout=5) as connection:
                answers = connection.makefile("rb")
                replies = []
                for command in commands:
                    connection.sendall(command.encode() + b"\r\n")
                    replies.append(answers.readline().decode(errors="replace").strip())
                return replies

        # kube-proxy programs a new Service a moment after its endpoints appear.
        return wait_until(30, f"Redis at {address[0]}:{address[1]} to answer", talk, 0.3)

    def check_redis_auth(self, namespace: str, password: str) -> None:
        """Redis refuses a client without the password, or with a wrong one, and takes the right one."""
        replies = self.redis_says(namespace, "PING", "AUTH not-the-password-0123456789", "PING")
        checks.ok("Redis through its Service: PING without the password is refused (NOAUTH)", replies[0].startswith("-NOAUTH"), replies)
        checks.ok("... a wrong password too (WRONGPASS), and PING after it still NOAUTH",
                  replies[1].startswith("-WRONGPASS") and replies[2].startswith("-NOAUTH"), replies)
        replies = self.redis_says(namespace, f"AUTH {password}", "PING")
        checks.equal("... the Secret's password is taken: +OK, then +PONG", replies, ["+OK", "+PONG"])
        pod = self.pods(REDIS_PODS, namespace)[0]["metadata"]["name"]
        result = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, "--namespace", namespace, "exec", pod, "-c", "redis",
                                 "--", "env", "-u", "REDISCLI_AUTH", "redis-cli", "-p", "6379", "ping"],
                                capture_output=True, text=True, timeout=60)
        checks.ok("inside the Redis pod, redis-cli without REDISCLI_AUTH: NOAUTH too",
                  "NOAUTH" in result.stdout + result.stderr, f"exit {result.returncode}: {result.stdout}{result.stderr}")
        result = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, "--namespace", namespace, "exec", pod, "-c", "redis",
                                 "--", "redis-cli", "-p", "6379", "ping"], capture_output=True, text=True, timeout=60)
        checks.equal("... and with it (what the probes run): PONG", (result.returncode, result.stdout.strip()), (0, "PONG"))

    def check_policies(self, namespace: str) -> None:
        """The NetworkPolicies as the API server stored them (defaults filled in), evaluated: this
        cluster enforces none, so what they would do is all there is to check here."""
        policies = self.kube.items(f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies", INSTANCE)
        checks.equal("the NetworkPolicies are there", sorted(p["metadata"]["name"] for p in policies),
                     [f"{FULLNAME}-agents", f"{FULLNAME}-redis"])
        dispatcher_pod = self.pods(DISPATCHER_PODS, namespace)[0]
        redis_pod = self.pods(REDIS_PODS, namespace)[0]
        dispatcher = Endpoint(dispatcher_pod["status"].get("podIP") or "10.0.0.10", dispatcher_pod["metadata"]["labels"], namespace)
        redis = Endpoint(redis_pod["status"].get("podIP") or "10.0.0.11", redis_pod["metadata"]["labels"], namespace)
        installation = yaml.safe_load(self.kube.get(self.ns(f"/configmaps/{FULLNAME}", namespace))["data"]["agentsmith.yml"])["server"]["installation"]
        agent = Endpoint("10.0.0.20", {"app.kubernetes.io/managed-by": "agentsmith", "agentsmith.io/installation": installation}, namespace)
        verdicts = {
            "agents -> the metadata address :80": allowed(policies, agent, Endpoint("169.254.169.254"), 80),
            "agents -> the API Service :443": allowed(policies, agent, Endpoint("10.96.0.1"), 443),
            "agents -> Redis :6379": allowed(policies, agent, redis, 6379),
            "agents -> the dispatcher :8080": allowed(policies, agent, dispatcher, 8080),
            "agents -> a public address :443": allowed(policies, agent, Endpoint("140.82.112.3"), 443),
            "agents -> a public address :22": allowed(policies, agent, Endpoint("140.82.112.3"), 22),
            "dispatcher -> Redis :6379": allowed(policies, redis, dispatcher, 6379, direction="Ingress"),
        }
        checks.equal("as stored, they let agents reach the dispatcher and public 443 only, and only the dispatcher reach Redis",
                     verdicts, {"agents -> the metadata address :80": False, "agents -> the API Service :443": False,
                                "agents -> Redis :6379": False, "agents -> the dispatcher :8080": True,
                                "agents -> a public address :443": True, "agents -> a public address :22": False,
                                "dispatcher -> Redis :6379": True})

    def check_rbac(self, namespace: str) -> None:
        """What the API server lets the dispatcher's ServiceAccount do with Secrets (a
        SubjectAccessReview per verb): write them, for the attempts' credentials; never read one."""
        user = f"system:serviceaccount:{namespace}:{FULLNAME}"

        def may(verb: str) -> bool:
            review = self.kube.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                         "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": "secrets"}}})
            return bool(review.get("status", {}).get("allowed"))

        verdicts = {verb: may(verb) for verb in ("create", "patch", "delete", "get", "list", "watch", "update")}
        checks.equal("the API server lets the dispatcher create, patch and delete Secrets, and not read (or update) one",
                     verdicts, {"create": True, "patch": True, "delete": True, "get": False, "list": False, "watch": False,
                                "update": False})

    def check_secrets_kept(self, what: str) -> None:
        """The generated token and password are what they were, and Redis was not restarted."""
        checks.equal(f"{what}: the API token is the one generated at install (lookup)", self.secret(FULLNAME).get("api-tokens"), self.token)
        checks.equal(f"{what}: the Redis password too", self.secret(f"{FULLNAME}-redis").get("redis-password"), self.redis_password)
        uids = [p["metadata"]["uid"] for p in self.pods(REDIS_PODS)]
        checks.equal(f"{what}: the Redis pod is the same (not restarted: without persistence that would lose every job)",
                     uids, [self.redis_uid])

    def replica_sets(self) -> list[dict]:
        return self.kube.items(f"/apis/apps/v1/namespaces/{self.namespace}/replicasets", DISPATCHER_PODS)

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
        checks.start(f"1. helm install {RELEASE} into {self.namespace} (default values + values.local.yaml.example, no token)")
        self.make_namespace(self.namespace)
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
        status = self.cfg.status(RELEASE)
        checks.equal("helm status: deployed", status["status"], "deployed")
        checks.equal("helm status: revision 1", status["revision"], 1)
        webhooks = f"http://{FULLNAME}.{self.namespace}.svc.cluster.local:8080/webhooks/"
        notes = release.get("notes") or ""
        checks.ok(f"NOTES say where the webhooks point ({webhooks}...)", webhooks in notes, notes)
        # The generated secrets: the token the rest of the test uses, the password Redis requires.
        self.token = self.secret(FULLNAME).get("api-tokens", "")
        checks.require("the chart generated the API token: 40 random letters and digits in Secret/agentsmith, key api-tokens",
                       GENERATED_TOKEN.fullmatch(self.token), self.token)
        command = f"kubectl --namespace {self.namespace} get secret {FULLNAME} -o jsonpath='{{.data.api-tokens}}' | base64 -d"
        checks.ok("NOTES give the command that reads it", command in notes, notes)
        read = subprocess.run(["sh", "-c", command.replace("kubectl", f"{self.kubectl} --kubeconfig {self.kubeconfig}", 1)],
                              capture_output=True, text=True, timeout=60)
        checks.equal("... and that command prints it", read.stdout, self.token)
        self.redis_password = self.secret(f"{FULLNAME}-redis").get("redis-password", "")
        checks.require("the chart generated the Redis password: 32 random letters and digits in Secret/agentsmith-redis",
                       GENERATED_PASSWORD.fullmatch(self.redis_password), self.redis_password)
        self.redis_uid = redis[0]["metadata"]["uid"]
        self.check_redis_auth(self.namespace, self.redis_password)
        self.check_policies(self.namespace)
        self.check_rbac(self.namespace)
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
        unauthorised = Api(api.url, "wrong-token-0123456789").call("GET", "/v1/jobs")[0]
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
        # An agent trying Redis from its own pod: the network lets it through here (no policy is
        # enforced on this cluster), the password does not.
        job, took, events = self.run_job(api, REDIS_PROBE, "ping redis")
        lines = [e["line"] for name, e in events if name == "log"]
        checks.ok("an agent that PINGs Redis from its pod is refused: NOAUTH",
                  job["state"] == "succeeded" and any(line.startswith("redis answered: -NOAUTH") for line in lines), (job["state"], lines))
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
            return Api(api.url, "").call("POST", "/webhooks/slack/commands", data=form, timeout=10, headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()})

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
        """Upgrades to `values` under traffic; returns (helm upgrade s, whole roll s, the stopped
        traffic, the old pods' logs, the ReplicaSets before)."""
        old_pods = [p["metadata"]["name"] for p in self.pods(DISPATCHER_PODS)]
        followers = [LogFollower(self.kube, self.namespace, name) for name in old_pods]
        for follower in followers:
            follower.start()
        sets_before = {rs["metadata"]["name"] for rs in self.replica_sets()}
        traffic = Traffic(self.chaos, self.api, label, Path(self.tmp.name))
        error = None
        timeline: dict[str, float] = {}
        try:
            time.sleep(2)  # traffic before the roll, too
            t, started = now(), time.time()
            try:
                self.cfg.upgrade(CHART, RELEASE, values, wait="watcher", timeout=240)
            except self.helm.HelmError as e:
                error = e
            helm_s = roll_s = now() - t
            timeline["helm returned"] = time.time()
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
            for follower in followers:
                follower.stopping.set()
                follower.join(timeout=10)
                for what, text in (("SIGTERM (drain starts)", "shutting down"), ("exited", '"message":"stopped"')):
                    when = follower.time_of(text)
                    if when:
                        timeline[f"old pod {follower.pod} {what}"] = when
            traffic.stop()
        log("    timeline (API times are whole seconds): " + ", ".join(
            f"{name} {when - started:+.1f} s" for name, when in sorted(timeline.items(), key=lambda item: item[1])))
        checks.require("helm upgrade (wait: watcher) succeeds", error is None, error)
        return helm_s, roll_s, traffic, followers, sets_before

    def judge_traffic(self, traffic: Traffic, followers: list[LogFollower]) -> None:
        """No request failed (`chaos traffic`'s report); the replaced pods drained."""
        report = traffic.result
        failed = report["failed"]
        checks.figure("requests sent / failed", f"{report['requests']} / {len(failed)} (GET /ready {report['ready']}, "
                      f"POST /v1/jobs {report['submits']}; slowest {report['slowest_secs']:.2f} s)")
        checks.ok("no request failed (any non-2xx or connection error counts)", not failed,
                  "\n" + "\n".join(f"      {r['at']} {r['kind']}: {r['error']}" for r in failed))
        for follower in followers:
            text = "\n".join(follower.lines)
            drain_start, stopped = follower.time_of("shutting down"), follower.time_of('"message":"stopped"')
            if drain_start and stopped:
                checks.figure(f"drain of {follower.pod} s", f"{stopped - drain_start:.1f} (SIGTERM to exit, after the {PRESTOP_SLEEP} s preStop sleep)")
            checks.ok(f"the replaced pod {follower.pod} drained and stopped cleanly",
                      "shutting down" in text and '"stopped"' in text and "did not finish" not in text,
                      "its last log lines:\n" + "\n".join(f"      {line}" for line in follower.lines[-15:]))
            if failed:
                log(f"---- log of the replaced pod {follower.pod} (last 20 lines) ----")
                for line in follower.lines[-20:]:
                    log(f"    {line}")

    def judge_jobs(self, traffic: Traffic) -> None:
        """Every acknowledged job exists and succeeds on attempt 1 (`chaos judge` asks the API), with
        exactly one Kubernetes Job (the Job watch saw them all, though their TTL deletes them)."""
        job_ids = traffic.result["acknowledged"]
        self.all_job_ids += job_ids
        # max_concurrent_jobs (10) at a time, each a pod of ~4 s: about 0.5 s a job here.
        limit = 120 + 1.5 * len(job_ids)
        verdict = traffic.judge(limit)
        missing, unfinished = verdict["missing"], verdict["unfinished"]
        checks.ok(f"no acknowledged job lost ({verdict['acknowledged']} acknowledged with 202, all found)", not missing, missing)
        checks.ok(f"every one ended within {limit:.0f} s", not unfinished, unfinished)
        checks.figure("the traffic's jobs all ended after s", f"{verdict['ended_after_secs']:.1f} (from the end of the traffic)")
        checks.ok("every one succeeded", not verdict["not_succeeded"], verdict["not_succeeded"])
        checks.ok("every one ran on attempt 1", not verdict["retried"], verdict["retried"])
        ended = [j for j in job_ids if j not in missing and j not in unfinished]
        seen = wait_until(20, "the watch to have seen every job's Kubernetes Job",
                          lambda: (lambda by: by if all(j in by for j in ended) else None)(self.watch.by_job_id()), 0.5)
        extra = {j: [k["name"] for k in seen[j]] for j in ended if len(seen.get(j, [])) != 1}
        checks.ok("exactly one Kubernetes Job per job id (label agentsmith.io/job-id)", not extra, extra)
        wrong = {j: seen[j][0]["attempt"] for j in ended if j in seen and seen[j][0]["attempt"] != "1"}
        checks.ok("each labelled agentsmith.io/attempt=1", not wrong, wrong)

    def upgrade_image(self) -> None:
        checks.start(f"3. helm upgrade to dispatcher image tag {self.new_tag} under traffic")
        subprocess.run(["docker", "tag", self.dispatcher_image, f"agentsmith-dispatcher:{self.new_tag}"], check=True)
        self.tagged = True
        self.values = merge(self.values, {"image": {"tag": self.new_tag}})
        helm_s, roll_s, traffic, followers, sets_before = self.roll("upgrade traffic", self.values)
        checks.figure("upgrade duration s", f"{roll_s:.1f} (until the old pod was gone; helm upgrade returned after {helm_s:.1f})")
        status = self.cfg.status(RELEASE)
        checks.equal("helm status: deployed, revision 2", (status["status"], status["revision"]), ("deployed", 2))
        pods = wait_until(30, "one Ready dispatcher pod", lambda: self.ready_pods(DISPATCHER_PODS, 1))
        checks.equal("the dispatcher pod runs the new tag", pods[0]["spec"]["containers"][0]["image"],
                     f"agentsmith-dispatcher:{self.new_tag}")
        self.check_secrets_kept("after the upgrade")
        self.judge_traffic(traffic, followers)
        self.judge_jobs(traffic)

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
        self.check_secrets_kept("after the second upgrade")
        self.judge_traffic(traffic, followers)
        self.judge_jobs(traffic)
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
            for path in [p.format(namespace=self.namespace) for p in namespaced] + cluster_wide:
                where = "" if "/namespaces/" in path else " (cluster-wide)"
                try:
                    found += [f"{path.rsplit('/', 1)[1]}/{o['metadata']['name']}{where}" for o in self.kube.items(path, INSTANCE)]
                except RequestError as e:
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

    def previous_chart(self) -> Path:
        """The chart as it was at PREVIOUS_CHART, from git (a clear failure when the history lacks it)."""
        known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_CHART}^{{commit}}"], capture_output=True)
        if known.returncode != 0:
            raise Failure(f"the upgrade test needs the chart of commit {PREVIOUS_CHART}, which this clone's history lacks "
                          "(a shallow clone?): fetch it (`git fetch --unshallow`, or a deeper --depth) and run again")
        target = Path(self.tmp.name) / "previous"
        target.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_CHART, "helm/agentsmith"], capture_output=True, timeout=60)
        if archive.returncode != 0:
            raise Failure(f"git archive {PREVIOUS_CHART} helm/agentsmith: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=60)
        return target / "helm" / "agentsmith"

    def upgrade_from_previous(self) -> None:
        namespace = f"{self.namespace}-prev"
        checks.start(f"6. the upgrade from the chart of {PREVIOUS_CHART} (no Redis password) in {namespace}")
        previous = self.previous_chart()
        self.make_namespace(namespace)
        cfg = self.helm.Config(kubeconfig_path=self.kubeconfig, namespace=namespace)
        token = "live-previous-" + secrets.token_hex(16)
        # The previous chart required a token; the upgrade gives none, as a user who now relies
        # on the chart would: the token in the Secret must be kept.
        old_values = merge(yaml.safe_load((previous / "values.local.yaml.example").read_text()) or {},
                           {"secrets": {"apiTokens": [token]}, "agents": AGENT_VALUES})
        new_values = merge(chart_yaml("values.local.yaml.example"), {"agents": AGENT_VALUES})
        t = now()
        try:
            cfg.install(previous, RELEASE, old_values, wait="watcher", timeout=240)
        except self.helm.HelmError as e:
            checks.require(f"helm install of the chart of {PREVIOUS_CHART} succeeds", False, e)
        wait_until(120, "the previous chart's Redis and dispatcher to be Ready",
                   lambda: self.ready_pods(REDIS_PODS, 1, namespace) and self.ready_pods(DISPATCHER_PODS, 1, namespace))
        checks.figure("previous chart install -> Ready s", f"{now() - t:.1f}")
        checks.equal(f"the chart of {PREVIOUS_CHART} is installed: its Redis answers PING without a password",
                     self.redis_says(namespace, "PING"), ["+PONG"])

        t = now()
        try:
            cfg.upgrade(CHART, RELEASE, new_values, wait="watcher", timeout=240)
            error = None
        except self.helm.HelmError as e:
            error = e
        checks.require("helm upgrade to this tree's chart (no token given) succeeds", error is None, error)
        # Until the previous chart's dispatcher is gone (it drains after helm returns), the
        # Service may still route to it, and it cannot authenticate to the restarted Redis:
        # its answers fail (the chart's README says so). The roll is over when it is gone.
        def only_the_new_dispatcher() -> list[dict] | None:
            pods = self.pods(DISPATCHER_PODS, namespace)
            return self.ready_pods(DISPATCHER_PODS, 1, namespace) if len(pods) == 1 else None

        dispatchers = wait_until(120, "one Ready dispatcher pod after the upgrade, the previous one gone", only_the_new_dispatcher)
        checks.figure("upgrade from the previous chart -> Ready s", f"{now() - t:.1f}")
        status = cfg.status(RELEASE)
        checks.equal("helm status: deployed, revision 2", (status["status"], status["revision"]), ("deployed", 2))
        checks.ok("the dispatcher pod is Ready", dispatchers)
        password = self.secret(f"{FULLNAME}-redis", namespace).get("redis-password", "")
        checks.require("the upgrade generated a Redis password (Secret/agentsmith-redis)", GENERATED_PASSWORD.fullmatch(password), password)
        self.check_redis_auth(namespace, password)
        checks.equal("the API token given to the previous chart is kept, though the upgrade gave none",
                     self.secret(FULLNAME, namespace).get("api-tokens"), token)
        api = self.service_api(namespace, FULLNAME)
        api.token = token
        status_code, body = api.call("GET", "/ready")
        checks.equal("GET /ready through the Service: 200", status_code, 200)
        checks.equal("GET /v1/jobs with the old token: 200", api.call("GET", "/v1/jobs")[0], 200)
        # Redis was replaced without persistence: the jobs of before are gone; new ones run.
        job, took, _ = self.run_job(api, "echo", "after the upgrade from the previous chart")
        checks.equal("a job runs and succeeds after the upgrade", (job["state"], job["attempt"]), ("succeeded", 1))
        rules = self.kube.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{FULLNAME}")["rules"]
        checks.ok("the Role now lets the dispatcher create, patch and delete Secrets, never read them",
                  {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete"]} in rules, rules)
        names = sorted(p["metadata"]["name"] for p in
                       self.kube.items(f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies", INSTANCE))
        checks.equal("the NetworkPolicies, off before, are there", names, [f"{FULLNAME}-agents", f"{FULLNAME}-redis"])

        # A second upgrade: lookup reads the generated password back; nothing restarts.
        redis_uid = self.pods(REDIS_PODS, namespace)[0]["metadata"]["uid"]
        dispatcher_uids = sorted(p["metadata"]["uid"] for p in self.pods(DISPATCHER_PODS, namespace))
        t = now()
        try:
            cfg.upgrade(CHART, RELEASE, new_values, wait="watcher", timeout=240)
            error = None
        except self.helm.HelmError as e:
            error = e
        checks.require("a second helm upgrade with the same values succeeds", error is None, error)
        checks.figure("second upgrade s", f"{now() - t:.1f}")
        checks.equal("helm status: deployed, revision 3", (cfg.status(RELEASE)["status"], cfg.status(RELEASE)["revision"]),
                     ("deployed", 3))
        checks.equal("the Redis password is the same", self.secret(f"{FULLNAME}-redis", namespace).get("redis-password"), password)
        checks.equal("the API token is the same", self.secret(FULLNAME, namespace).get("api-tokens"), token)
        checks.equal("Redis was not restarted", [p["metadata"]["uid"] for p in self.pods(REDIS_PODS, namespace)], [redis_uid])
        checks.equal("nor the dispatcher (the checksums did not move)",
                     sorted(p["metadata"]["uid"] for p in self.pods(DISPATCHER_PODS, namespace)), dispatcher_uids)
        job, took, _ = self.run_job(api, "echo", "after the second upgrade")
        checks.equal("a job still runs and succeeds", (job["state"], job["attempt"]), ("succeeded", 1))
        # Uninstalled first: deleting the namespace with the pods still running takes the
        # namespace controller about a minute here, against a few seconds after helm's deletes.
        t = now()
        try:
            cfg.uninstall(RELEASE, wait="watcher", timeout=120)
            error = None
        except self.helm.HelmError as e:
            error = e
        checks.ok("helm uninstall of the upgraded release succeeds", error is None, error)
        self.delete_namespace(namespace)
        checks.figure("upgraded release uninstall + namespace delete s", f"{now() - t:.1f}")

    def locked_down_install(self) -> None:
        """A cluster whose platform team owns RBAC: rbac.create and serviceAccount.create false,
        the dispatcher's ServiceAccount and the README's Role made beforehand, agents in a
        namespace of their own, and a profile shaped with a Secret volume, an init container and
        a PriorityClass."""
        namespace, agents = f"{self.namespace}-own", f"{self.namespace}-agents"
        checks.start(f"8. rbac.create false, a ServiceAccount and Role made beforehand, agents in {agents}, a shaped profile")
        self.make_namespace(namespace)
        self.make_namespace(agents)
        account, seed = "platform-agentsmith", "seeded from the platform team's Secret"
        readme = (ROOT / "README.md").read_text()
        rules = yaml.safe_load(readme.split("**RBAC.**", 1)[1].split("```yaml", 1)[1].split("```", 1)[0])["rules"]
        made = [
            (f"/api/v1/namespaces/{namespace}/serviceaccounts",
             {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}),
            (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{agents}/roles",
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "agentsmith-jobs"},
              "rules": rules}),
            (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{agents}/rolebindings",
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "agentsmith-jobs"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agentsmith-jobs"},
              "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}),
            (f"/api/v1/namespaces/{agents}/secrets",
             {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "agent-files"}, "stringData": {"seed": seed}}),
        ]
        for path, body in made:
            self.kube.call("POST", path, body=body)
        priority = agents
        self.kube.call("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", body={
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": 1000,
            "metadata": {"name": priority, "labels": {"agentsmith.io/live-test": "true"}}})
        self.priority_classes.append(priority)
        shaped = {"command": ["sh", "-c", "cat /shared/seed; echo; printf '{\"summary\":\"shaped\",\"links\":[]}' > \"$AGENTSMITH_RESULT_FILE\""],
                  "timeout_secs": 120}
        token = "live-own-" + secrets.token_hex(16)
        values = merge(chart_yaml("values.local.yaml.example"), {
            "rbac": {"create": False},
            "serviceAccount": {"create": False, "name": account},
            "secrets": {"apiTokens": [token]},
            "config": {"content": yaml.safe_dump({"agents": {"echo": {"command": ECHO_COMMAND, "timeout_secs": 600},
                                                             "shaped": shaped}})},
            "agents": {**AGENT_VALUES, "namespace": agents, "secret": {"existingSecret": "agent-files"},
                       "profileShapes": {"shaped": {
                           "volumes": [{"name": "seed", "secret": {"secretName": "agent-files"}},
                                       {"name": "shared", "emptyDir": {}}],
                           "volume_mounts": [{"name": "shared", "mountPath": "/shared"}],
                           "init_containers": [{"name": "prepare", "command": ["sh", "-c", "cp /seed/seed /shared/seed"],
                                                "volumeMounts": [{"name": "seed", "mountPath": "/seed"},
                                                                 {"name": "shared", "mountPath": "/shared"}]}],
                           "priority_class_name": priority}}},
        })
        cfg = self.helm.Config(kubeconfig_path=self.kubeconfig, namespace=namespace)
        t = now()
        try:
            cfg.install(CHART, RELEASE, values, wait="watcher", timeout=240)
            error = None
        except self.helm.HelmError as e:
            error = e
        checks.require("helm install with rbac.create and serviceAccount.create false succeeds", error is None, error)
        try:
            dispatchers = wait_until(120, "the dispatcher pod to be Ready", lambda: self.ready_pods(DISPATCHER_PODS, 1, namespace))
            checks.figure("locked-down install -> Ready s", f"{now() - t:.1f}")
            checks.equal("the dispatcher runs as the ServiceAccount made beforehand",
                         dispatchers[0]["spec"].get("serviceAccountName"), account)
            chart_rbac = [o["metadata"]["name"] for ns in (namespace, agents) for kind in ("roles", "rolebindings")
                          for o in self.kube.items(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{kind}", INSTANCE)]
            checks.equal("the chart made no Role or RoleBinding", chart_rbac, [])
            api = self.service_api(namespace, FULLNAME)
            api.token = token
            job, took, events = self.run_job(api, "shaped", "a shaped profile")
            checks.figure("shaped job submit -> succeeded s", f"{took:.1f}")
            lines = [e["line"] for name, e in events if name == "log"]
            checks.ok("the shaped job succeeds with what its init container copied from the Secret volume",
                      job["state"] == "succeeded" and seed in lines, (job["state"], lines))
            pods = self.pods(f"agentsmith.io/job-id={job['id']}", agents)
            checks.require(f"its pod is in {agents}", len(pods) == 1, [p["metadata"]["name"] for p in pods])
            spec, status = pods[0]["spec"], pods[0].get("status") or {}
            checks.equal("its pod has the PriorityClass and its value",
                         (spec.get("priorityClassName"), spec.get("priority")), (priority, 1000))
            checks.equal("its init container ran and ended 0",
                         [(s["name"], ((s.get("state") or {}).get("terminated") or {}).get("exitCode"))
                          for s in status.get("initContainerStatuses") or []], [("prepare", 0)])
            checks.ok("the Secret volume is in its pod spec",
                      any((v.get("secret") or {}).get("secretName") == "agent-files" for v in spec.get("volumes") or []),
                      spec.get("volumes"))
            job, _, _ = self.run_job(api, "echo", "an unshaped profile beside it")
            checks.equal("an unshaped profile runs there too", job["state"], "succeeded")
        finally:
            try:
                cfg.uninstall(RELEASE, wait="watcher", timeout=120, ignore_not_found=True)
            except self.helm.HelmError as e:
                log(f"    helm uninstall failed: {e}")
        for made_namespace in (namespace, agents):
            self.delete_namespace(made_namespace)
        self.delete_priority_classes()

    def delete_priority_classes(self) -> None:
        for name in list(self.priority_classes):
            try:
                self.kube.call("DELETE", f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}")
            except RequestError as e:
                if e.status != 404:
                    raise
            self.priority_classes.remove(name)

    def kustomize_dev(self) -> None:
        checks.start(f"7. kubectl apply -k k8s/overlays/dev (namespace {KUSTOMIZE_NAMESPACE})")
        if not self.kustomize:
            log("    SKIPPED: --no-kustomize")
            return
        if self.kube.exists(f"/api/v1/namespaces/{KUSTOMIZE_NAMESPACE}"):
            log(f"    SKIPPED: namespace {KUSTOMIZE_NAMESPACE} exists already and is not this test's")
            return
        overlay = copy_k8s(Path(self.tmp.name)) / "overlays" / "dev"
        (overlay / "secrets.env").write_text(f"api-tokens={self.token}\nredis-password={secrets.token_hex(16)}\n")
        self.make_namespace(KUSTOMIZE_NAMESPACE)
        t = now()
        result = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, "apply", "-k", str(overlay)],
                                capture_output=True, text=True, timeout=120)
        checks.require("kubectl apply -k succeeds", result.returncode == 0, result.stdout + result.stderr)
        wait_until(120, "the dev overlay's Redis and dispatcher to be Ready", lambda: all(
            self.ready_pods(f"app.kubernetes.io/component={component}", 1, KUSTOMIZE_NAMESPACE)
            for component in ("redis", "dispatcher")))
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
        except RequestError as e:
            if e.status != 404:
                raise
        wait_until(timeout, f"namespace {namespace} to be gone",
                   lambda: not self.kube.exists(f"/api/v1/namespaces/{namespace}"), 1)
        if namespace in self.namespaces_made:
            self.namespaces_made.remove(namespace)

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
                # The agents' runners: what they said about reaching the dispatcher.
                for pod in self.kube.items(f"/api/v1/namespaces/{namespace}/pods", "agentsmith.io/job-id"):
                    name = pod["metadata"]["name"]
                    text = self.kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}/log", container="agent", tailLines="20")
                    log(f"    ---- log of {name} (last 20 lines) ----")
                    for line in str(text).splitlines():
                        log(f"    {line}")
            except TRANSIENT as e:
                log(f"    (could not read it: {e})")

    def cleanup(self) -> None:
        if self.watch and self.watch.is_alive():
            self.watch.stop()
        try:
            self.kube.get("/version")
        except TRANSIENT as e:
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
            except (Failure, *TRANSIENT) as e:
                log(f"    {e}")
        try:
            self.delete_priority_classes()
        except (Failure, *TRANSIENT) as e:
            log(f"    {e}")
        if self.tagged:
            subprocess.run(["docker", "image", "rm", f"agentsmith-dispatcher:{self.new_tag}"], capture_output=True)
        self.kube.close()
        self.tmp.cleanup()

    def run(self) -> None:
        # The cluster first: fail at once, clearly, when none answers.
        try:
            version = self.kube.get("/version")
        except TRANSIENT as e:
            raise Failure(f"no Kubernetes API answers at {self.kube.server} ({e}): start the test cluster with "
                          "scripts/k8s-testenv/start.sh, or point KUBECONFIG at a running one")
        log(f"==> cluster: Kubernetes {version.get('gitVersion')} at {self.kube.server}; namespace {self.namespace}")
        self.build_images()
        if self.previous_only:
            self.upgrade_from_previous()
            return
        self.install()
        self.first_job()
        self.upgrade_image()
        self.upgrade_config()
        self.uninstall()
        self.upgrade_from_previous()
        self.kustomize_dev()
        self.locked_down_install()


def main() -> int:
    args = sys.argv[1:]
    if args not in ([], ["--no-kustomize"], ["--previous-only"]):
        print(__doc__, file=sys.stderr)
        return 2

    # SIGTERM (a CI timeout) cleans up like a failure does.
    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    started = now()
    test = LiveTest(os.environ["KUBECONFIG"], os.environ.get("AGENTSMITH_KUBECTL", "kubectl"), os.environ["AGENTSMITH_BIN"],
                    os.environ["AGENTSMITH_CHAOS"], kustomize=not args,
                    previous_only=args == ["--previous-only"])
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
    if stopped:
        checks.failures.append(f"stopped: {stopped}")
    return checks.verdict("chart-live-test", started)


if __name__ == "__main__":
    sys.exit(main())
