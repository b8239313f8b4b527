"""What the two chart scripts share: scripts/chart_check.py (the chart, the Kustomize stack and the
Dockerfiles, checked offline) and scripts/chart_live_test.py (the chart on a running cluster).

    Checks        counts checks by section, keeps failures and measured figures, prints the verdict
    Failure       a step that cannot go on
    RequestError  an HTTP answer with an error status; TRANSIENT, the errors worth a retry
    wait_until    polls a condition until it holds, with a deadline
    merge         Helm's way of layering values
    chart_yaml    a YAML file of the chart; copy_k8s, a renderable copy of the Kustomize stack

The scripts import it as a sibling module: `python3 scripts/<script>.py` puts scripts/ on the path.
"""

from __future__ import annotations

import copy
import http.client
import shutil
import sys
import time
from pathlib import Path
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
