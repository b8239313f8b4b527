"""What the two chart scripts share: scripts/chart_check.py (the chart, the Kustomize stack and the
Dockerfiles, checked offline) and scripts/chart_live_test.py (the chart on a running cluster).

    Checks        counts checks by section, keeps failures and measured figures, prints the verdict
    Failure       a step that cannot go on
    RequestError  an HTTP answer with an error status; TRANSIENT, the errors worth a retry
    wait_until    polls a condition until it holds, with a deadline
    merge         Helm's way of layering values
    chart_yaml    a YAML file of the chart; copy_k8s, a renderable copy of the Kustomize stack
    Endpoint, allowed
                  NetworkPolicies evaluated as a network plugin would: may this pod reach that
                  address and port (the test cluster enforces none, so both scripts check the
                  policies this way: the rendered ones, and the ones the API server stored)

The scripts import it as a sibling module: `python3 scripts/<script>.py` puts scripts/ on the path.
"""

from __future__ import annotations

import copy
import http.client
import ipaddress
import shutil
import sys
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "agentsmith"


class Failure(Exception):
    """A step cannot go on."""


class RequestError(Exception):
    """An HTTP answer with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


# What a request may fail with and be worth trying again: no connection, a broken answer, an
# error status.
TRANSIENT = (OSError, http.client.HTTPException, RequestError)


def log(message: str) -> None:
    print(message, flush=True)


def merge(base: dict, over: dict) -> dict:
    """`over` laid on `base` as Helm layers values: maps merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_yaml(name: str) -> dict:
    """A YAML file of the chart (values.yaml, an example values file, Chart.yaml); {} when empty."""
    return yaml.safe_load((CHART / name).read_text()) or {}


def copy_k8s(tmp: Path) -> Path:
    """A copy of k8s/ in `tmp`, with each overlay's gitignored secrets.env made from its example
    where it is missing (the overlays read it)."""
    target = tmp / "k8s"
    shutil.copytree(ROOT / "k8s", target)
    for example in target.glob("overlays/*/secrets.env.example"):
        env_file = example.with_name("secrets.env")
        if not env_file.exists():
            shutil.copy(example, env_file)
    return target


def wait_until(timeout: float, what: str, condition: Callable[[], Any], interval: float = 0.5) -> Any:
    """Calls `condition` until it returns something true, and returns that; Failure at `timeout`.

    Connection errors and error answers count as "not yet" (the last one is named on timeout).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except TRANSIENT as e:
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


class Checks:
    """Counts checks by section, remembers failures with what was expected, keeps the figures.

    `verbose` prints each section as it starts and every check (the live test, whose steps
    take minutes); otherwise a section is one line when it ends, and only failures are shown.
    """

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.passed = 0
        self.failures: list[str] = []
        self.figures: list[tuple[str, str]] = []
        self.section = ""
        self.section_passed = 0
        self.section_start = 0.0

    def start(self, section: str) -> None:
        self.finish()
        self.section, self.section_passed, self.section_start = section, 0, time.monotonic()
        if self.verbose:
            log(f"==> {section}")

    def finish(self) -> None:
        if self.section:
            took = time.monotonic() - self.section_start
            log(f"==> {self.section}: {self.section_passed} checks passed ({took:.1f} s)")
            self.section = ""

    def ok(self, name: str, condition: Any, detail: Any = "") -> bool:
        said = name + (f": {detail}" if detail != "" else "")
        if condition:
            self.passed += 1
            self.section_passed += 1
            if self.verbose:
                log(f"    ok   {name}")
        else:
            self.failures.append(f"{self.section}: {said}")
            log(f"    FAIL {said}" if self.verbose else f"FAIL {self.section}: {said}")
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

    def verdict(self, title: str, started: float) -> int:
        """Prints the figures and `<title>: N checks passed`, or the failures; the exit code."""
        self.finish()
        took = time.monotonic() - started
        if self.figures:
            log("==> measured")
            for name, value in self.figures:
                log(f"    {name:<36} {value}")
        if self.failures:
            total = self.passed + len(self.failures)
            print(f"{title}: {len(self.failures)} of {total} checks FAILED ({took:.1f} s):", file=sys.stderr)
            for failure in self.failures:
                print(f"  - {failure}", file=sys.stderr)
            return 1
        log(f"{title}: {self.passed} checks passed ({took:.1f} s)")
        return 0


# --- NetworkPolicies, evaluated --------------------------------------------------------------


@dataclass
class Endpoint:
    """One end of a connection: an address, and, for a pod, its labels and namespace."""

    ip: str
    labels: dict[str, str] | None = None  # None: not a pod (an address outside the cluster, a node, a Service's backend elsewhere)
    namespace: str | None = None
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.namespace and not self.namespace_labels:
            # What Kubernetes 1.21 and later set on every namespace.
            self.namespace_labels = {"kubernetes.io/metadata.name": self.namespace}


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector against labels ({} selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def _peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    """One NetworkPolicyPeer. ipBlock is matched against pods' addresses too: whether it applies
    to pods is up to the network plugin, so a check that something is denied must hold either way."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except") or []
                       if ipaddress.ip_network(e).version == address.version)
    if other.labels is None:
        return False  # selectors pick pods only
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        if isinstance(entry["port"], str):
            raise ValueError(f"named port {entry['port']!r}: not evaluated here")
        if entry["port"] <= port <= entry.get("endPort", entry["port"]):
            return True
    return False


def policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))


def allowed(policies: list[dict], pod: Endpoint, other: Endpoint, port: int, protocol: str = "TCP",
            direction: str = "Egress") -> bool:
    """Whether the NetworkPolicies let `pod` connect to `other` on port/protocol (Egress), or let
    `other` connect to `pod` on port/protocol (Ingress). Policies add up; a pod no policy of that
    direction selects is open."""
    selecting = [p for p in policies
                 if p["metadata"].get("namespace") == pod.namespace and selects(p["spec"].get("podSelector"), pod.labels or {})
                 and direction in policy_types(p)]
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, other, policy["metadata"]["namespace"]) for peer in peers)) \
                    and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False
