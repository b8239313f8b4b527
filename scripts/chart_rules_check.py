#!/usr/bin/env python3
"""Static checks of the chart's Prometheus rules (prometheusRules.*, helm/agentsmith/templates/
_rules.tpl), with Prometheus's own promtool. Nothing here talks to a cluster. In order:

 - the bucket bounds the template accepts are the ones the dispatcher's metrics module gives
   agentsmith_stage_seconds, spelled as its `le` labels (and values.yaml lists the same);
 - the rules render only when enabled, as a PrometheusRule or a ConfigMap (kind auto: by the
   cluster's APIs), with the same groups, the chart's labels and prometheusRules.labels;
 - `promtool check rules` on the groups of both kinds and of other value sets (a selector,
   alert labels, objectives for every stage, none);
 - `promtool test rules` with helm/agentsmith/tests/rules-test.yaml on both kinds: the default
   alerts fire when their objective is broken, after their `for`, with their labels and
   annotations, stay silent when it holds, and the percentiles are recorded; then the same
   tests against deliberately broken copies of the rules (another bucket, percent, window or
   `for`, no sum over sources), each of which they must fail;
 - a threshold that is no bucket bound fails rendering (from a values file too), naming the
   objective and the valid bounds; so do duplicate objectives; the schema refuses the rest;
 - `helm lint --strict` with the rules on; the ConfigMap valid for Kubernetes 1.20 and 1.37
   (scripts/kube-validate; the PrometheusRule is a custom resource no schema there knows, so
   its shape is checked here instead); NOTES.txt names the object.

Run it through scripts/chart-check, which installs promtool (Debian package prometheus) and
passes the tools in the environment:

    PROMTOOL     the promtool binary
    PYTHONPATH   with helm-python-sdk (module helm_python) on it
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from chart_check import FULLNAME, KUBE_120, KUBE_137, NAMESPACE, RELEASE, WITH_TOKEN, labels_ok, load_chart, objects_of, render
from chartkit import CHART, ROOT, Checks, Failure, merge

RULES_KEY = "agentsmith-rules.yaml"
RULES_NAME = f"{FULLNAME}-rules"
UNIT_TESTS = CHART / "tests" / "rules-test.yaml"
# The dispatcher's metrics module: dispatcher/src/metrics.rs, or metrics/mod.rs.
METRICS = ROOT / "dispatcher" / "src" / "metrics"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
ENABLED = merge(WITH_TOKEN, {"prometheusRules": {"enabled": True}})
DEFAULT_ALERTS = {"AgentsmithAcknowledgeSlow", "AgentsmithSpawnSlow", "AgentsmithStartSlow", "AgentsmithReplySlow"}
# The fields of a rule group and of a rule that the PrometheusRule CRD (monitoring.coreos.com/v1)
# defines; kube-validate has no schema for it.
GROUP_FIELDS = {"name", "interval", "rules", "partial_response_strategy", "limit"}
RULE_FIELDS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}

checks = Checks()


def with_api(caps: dict, api: str) -> dict:
    return {**caps, "api_versions": [*caps.get("api_versions", []), api]}


def rules_object(chart, values: dict, caps: dict | None = None) -> dict | None:
    """The rendered object holding the rules, or None."""
    found = [o for o in objects_of(render(chart, values, caps)) if o["metadata"]["name"] == RULES_NAME]
    if len(found) > 1:
        raise AssertionError(f"{len(found)} objects named {RULES_NAME}")
    return found[0] if found else None


def groups_of(obj: dict) -> list[dict]:
    """The rule groups of a PrometheusRule or of the ConfigMap's rules file."""
    if obj["kind"] == "PrometheusRule":
        return obj["spec"]["groups"]
    return yaml.safe_load(obj["data"][RULES_KEY])["groups"]


def stage_buckets() -> list[str]:
    """The `le` labels of agentsmith_stage_seconds: the exponential_buckets(start, factor, count)
    its histograms are made with in the dispatcher's metrics module (a `fn stage_buckets`, or
    the call in the StageLabels family's constructor), each spelled as the shortest decimal that
    reads back as the same float (what prometheus-client's dtoa writes, and Python's repr)."""
    sources = [METRICS / "mod.rs", METRICS.with_suffix(".rs")]
    source = "\n".join(path.read_text() for path in sources if path.is_file())
    buckets = re.compile(r"exponential_buckets\(([0-9.]+),\s*([0-9.]+),\s*([0-9]+)\)")
    function = re.search(r"fn stage_buckets\(\)[^{]*\{([^}]*)\}", source)
    family = source.find("Family::<StageLabels, Histogram>::new_with_constructor")
    match = buckets.search(function.group(1)) if function else (buckets.search(source, family) if family >= 0 else None)
    if not match:
        raise Failure(f"no exponential_buckets(...) of agentsmith_stage_seconds in {' or '.join(map(str, sources))} "
                      "(fn stage_buckets, or the StageLabels family's constructor): update stage_buckets() here")
    start, factor, count = float(match.group(1)), float(match.group(2)), int(match.group(3))
    return [repr(start * factor ** i) for i in range(count)]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([os.environ["PROMTOOL"], *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def said(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).strip()


def write_rules(directory: Path, groups: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RULES_KEY
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def unit_test(directory: Path, groups: list[dict]) -> subprocess.CompletedProcess:
    """`promtool test rules` of the chart's unit tests against `groups` (written beside a copy)."""
    write_rules(directory, groups)
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    return promtool("test", "rules", UNIT_TESTS.name, cwd=directory)


# --- the checks ---------------------------------------------------------------------------


def check_bounds(helm, chart) -> list[str]:
    checks.start("bucket bounds: the dispatcher, the template and values.yaml agree")
    bounds = stage_buckets()
    checks.equal("the dispatcher: agentsmith_stage_seconds has 24 buckets from 0.005 s, doubling",
                 (len(bounds), bounds[0], bounds[-1]), (24, "0.005", "41943.04"))
    values = merge(ENABLED, {"prometheusRules": {"objectives": [
        {"stage": "start", "percent": 99, "seconds": 30, "window": "1h"}]}})
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
        checks.ok("the template names the valid bounds when it refuses one", False, "it rendered")
    except helm.HelmError as e:
        listed = re.search(r"must be one of: ([0-9., ]+)", str(e))
        checks.equal("the template's valid bounds are the dispatcher's", listed and listed.group(1).strip().split(", "), bounds)
    documented = ", ".join(bounds[:-1]) + " or " + bounds[-1]
    values_text = " ".join(line.strip().lstrip("#").strip() for line in (CHART / "values.yaml").read_text().splitlines())
    checks.ok("values.yaml lists the same bounds (prometheusRules.objectives)", documented in values_text, documented)
    return bounds


def check_kinds(chart, tmp: Path) -> list[dict]:
    """Renders the rules as each kind, checks the objects, and returns the default groups."""
    checks.start("rules rendered as a PrometheusRule or a ConfigMap")
    checks.ok("off by default: no rules object", rules_object(chart, WITH_TOKEN) is None)
    checks.ok("off by default even where the PrometheusRule API is served",
              rules_object(chart, WITH_TOKEN, with_api(KUBE_137, PROMETHEUS_RULE_API)) is None)
    labelled = merge(ENABLED, {"prometheusRules": {"labels": {"release": "prom"}}})
    cases = [
        ("auto, Kubernetes 1.20 without the PrometheusRule API", labelled, KUBE_120, "ConfigMap"),
        ("auto, Kubernetes 1.37 without the PrometheusRule API", labelled, KUBE_137, "ConfigMap"),
        ("auto, Kubernetes 1.20 with the PrometheusRule API", labelled, with_api(KUBE_120, PROMETHEUS_RULE_API), "PrometheusRule"),
        ("auto, Kubernetes 1.37 with the PrometheusRule API", labelled, with_api(KUBE_137, PROMETHEUS_RULE_API), "PrometheusRule"),
        ("kind PrometheusRule without the API (helm template)", merge(labelled, {"prometheusRules": {"kind": "PrometheusRule"}}),
         KUBE_137, "PrometheusRule"),
        ("kind ConfigMap with the API", merge(labelled, {"prometheusRules": {"kind": "ConfigMap"}}),
         with_api(KUBE_137, PROMETHEUS_RULE_API), "ConfigMap"),
    ]
    groups_by_case = {}
    for label, values, caps, kind in cases:
        obj = rules_object(chart, values, caps)
        if not checks.ok(f"{label}: renders a {kind}", obj is not None and obj["kind"] == kind, obj and obj["kind"]):
            continue
        checks.equal(f"{label}: API version", obj["apiVersion"], "monitoring.coreos.com/v1" if kind == "PrometheusRule" else "v1")
        checks.ok(f"{label}: the chart's labels, component monitoring and prometheusRules.labels",
                  labels_ok(obj) and obj["metadata"]["labels"].get("app.kubernetes.io/component") == "monitoring"
                  and obj["metadata"]["labels"].get("release") == "prom", obj["metadata"]["labels"])
        checks.equal(f"{label}: in the release namespace", obj["metadata"].get("namespace"), NAMESPACE)
        if kind == "ConfigMap":
            checks.equal(f"{label}: one key, {RULES_KEY}", list(obj["data"]), [RULES_KEY])
        else:
            checks.equal(f"{label}: spec holds groups only", list(obj["spec"]), ["groups"])
        groups_by_case[label] = groups_of(obj)
    distinct = {json.dumps(g, sort_keys=True) for g in groups_by_case.values()}
    checks.ok("every kind and version holds the same groups", len(distinct) == 1, f"{len(distinct)} different sets")
    groups = next(iter(groups_by_case.values()))
    checks.equal("two groups: percentiles and objectives", [g["name"] for g in groups],
                 ["agentsmith-stage-latency", "agentsmith-latency-objectives"])
    records = [r["record"] for r in groups[0]["rules"]]
    checks.equal("percentiles: p50 and p99 over 5m and 1h",
                 records, [f"stage:agentsmith_stage_seconds:p{q}_{w}" for w in ("5m", "1h") for q in ("50", "99")])
    checks.ok("percentiles: histogram_quantile over the buckets summed by le and stage",
              all(re.fullmatch(r"histogram_quantile\(0\.(50|99), sum by \(le, stage\) \(rate\(agentsmith_stage_seconds_bucket\[(5m|1h)\]\)\)\)",
                               r["expr"]) for r in groups[0]["rules"]), [r["expr"] for r in groups[0]["rules"]])
    alerts = [r for r in groups[1]["rules"] if "alert" in r]
    checks.equal("one alert per default objective", {a["alert"] for a in alerts}, DEFAULT_ALERTS)
    checks.ok("every alert has a for, a severity, a summary and a description",
              all(a.get("for") and a["labels"].get("severity") and a["annotations"].get("summary") and a["annotations"].get("description")
                  for a in alerts), alerts)
    for alert in alerts:
        stage = re.search(r'stage="(\w+)"', alert["expr"])
        threshold = re.search(r'threshold="([0-9.]+)"', alert["expr"])
        summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]
        checks.ok(f"{alert['alert']}: the summary and description name the stage and threshold",
                  stage and threshold and all(f" of {stage.group(1)} stages " in text and f" {threshold.group(1)} s " in text
                                              for text in (summary, description)), (alert["expr"], summary, description))
    # The CRD's shape, which no schema here checks.
    checks.ok("groups and rules use only the fields the PrometheusRule CRD defines",
              all(set(g) <= GROUP_FIELDS and all(set(r) <= RULE_FIELDS for r in g["rules"]) for g in groups), groups)
    return groups


def check_promtool(chart, groups: list[dict], tmp: Path) -> None:
    checks.start("promtool check rules and test rules (helm/agentsmith/tests/rules-test.yaml)")
    version = promtool("--version")
    checks.require("promtool runs", version.returncode == 0, said(version))
    print(f"     {said(version).splitlines()[0]}")
    for kind, caps in (("ConfigMap", KUBE_137), ("PrometheusRule", with_api(KUBE_137, PROMETHEUS_RULE_API))):
        kind_groups = groups_of(rules_object(chart, ENABLED, caps))
        path = write_rules(tmp / f"check-{kind}", kind_groups)
        result = promtool("check", "rules", "--lint=duplicate-rules", "--lint-fatal", str(path))
        checks.ok(f"{kind}: promtool check rules (duplicate-rules lint fatal)", result.returncode == 0, said(result))
        checks.ok(f"{kind}: promtool counts 12 rules", "SUCCESS: 12 rules found" in result.stdout, said(result))
        result = unit_test(tmp / f"test-{kind}", kind_groups)
        checks.ok(f"{kind}: promtool test rules passes", result.returncode == 0 and "SUCCESS" in result.stdout, said(result))
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    tested = {t["alertname"] for test in tests for t in test.get("alert_rule_test", [])}
    firing = {t["alertname"] for test in tests for t in test.get("alert_rule_test", []) if t.get("exp_alerts")}
    silent = {t["alertname"] for test in tests for t in test.get("alert_rule_test", []) if not t.get("exp_alerts")}
    checks.equal("the unit tests cover every default alert", tested, DEFAULT_ALERTS)
    checks.equal("... each firing in some test", firing, DEFAULT_ALERTS)
    checks.equal("... and silent in another", silent, DEFAULT_ALERTS)

    # The tests must notice rules that are wrong: each of these copies must fail them.
    text = json.dumps(groups)
    mutations = [
        ("the acknowledge share read from the next bucket (2.56 s)", 'le=\\"1.28\\"', 'le=\\"2.56\\"'),
        ("the start share read from the bucket below (20.48 s)", 'le=\\"40.96\\"', 'le=\\"20.48\\"'),
        ("the objectives at 97 % instead of 99 %", "< 0.99", "< 0.97"),
        ("the objectives at 99.9 % instead of 99 %", "< 0.99", "< 0.999"),
        ("the shares over 5m instead of the objectives' 1h", "[1h]))", "[5m]))"),
        ("the shares over 3h instead of 1h", "[1h]))", "[3h]))"),
        ("alerts without a for", '"for": "5m"', '"for": "0s"'),
        ("alerts with a for of 15m", '"for": "5m"', '"for": "15m"'),
        ("shares per source, not summed over sources", "sum by (stage)", "sum by (stage, source)"),
        ("the comparison turned round", "< 0.99", "> 0.99"),
        ("percentiles not summed over backends", "sum by (le, stage)", "sum by (le, stage, backend)"),
    ]
    for label, old, new in mutations:
        if not checks.ok(f"mutation applies: {label}", old in text, old):
            continue
        mutant = json.loads(text.replace(old, new))
        result = unit_test(tmp / "mutant", mutant)
        valid = promtool("check", "rules", str(tmp / "mutant" / RULES_KEY))
        # Valid rules that fail the tests' expectations, not rules promtool cannot load.
        checks.ok(f"the unit tests fail with {label}",
                  valid.returncode == 0 and result.returncode != 0 and "FAILED" in said(result),
                  said(valid) if valid.returncode else said(result)[-400:])


def check_variants(helm, chart, tmp: Path) -> None:
    checks.start("other value sets: selector, alert labels, objectives for every stage, none")
    every_stage = [
        {"stage": "acknowledge", "percent": 99.9, "seconds": 0.64, "window": "30m", "for": "2m", "severity": "page"},
        {"stage": "acknowledge", "percent": 99, "seconds": 2.56, "window": "1h"},
        {"stage": "queue", "percent": 95, "seconds": 655.36, "window": "6h", "for": "30m"},
        {"stage": "spawn", "percent": 99.5, "seconds": 1.28, "window": "1d"},
        {"stage": "start", "percent": 90, "seconds": 81.92, "window": "2h"},
        {"stage": "run", "percent": 99, "seconds": 41943.04, "window": "1w"},
        {"stage": "reply", "percent": 99.99, "seconds": 0.005, "window": "1h30m"},
    ]
    values = merge(ENABLED, {"prometheusRules": {"selector": {"namespace": "agentsmith", "job": 'odd"job'},
                                                 "alertLabels": {"team": "platform"}, "objectives": every_stage}})
    groups = groups_of(rules_object(chart, values, KUBE_137))
    result = promtool("check", "rules", "--lint=duplicate-rules", "--lint-fatal", str(write_rules(tmp / "variant", groups)))
    checks.ok("objectives for every stage, a selector with a quote: promtool check rules", result.returncode == 0, said(result))
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    checks.ok("every expression selects by the selector",
              all('job="odd\\"job"' in e and 'namespace="agentsmith"' in e for e in exprs), exprs)
    checks.ok("every sum keeps the selector's labels",
              all("sum by (" not in e or re.search(r"sum by \((le, )?stage, job, namespace\)", e) for e in exprs), exprs)
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    checks.equal("one alert per objective", len(alerts), len(every_stage))
    checks.ok("every alert has prometheusRules.alertLabels", all(a["labels"].get("team") == "platform" for a in alerts))
    checks.equal("an objective's percent, window, for and severity, or the defaults",
                 [(a["expr"].rsplit(" ", 1)[1], a["for"], a["labels"]["severity"]) for a in alerts[:3]],
                 [("0.999", "2m", "page"), ("0.99", "5m", "warning"), ("0.95", "30m", "warning")])
    checks.ok("a threshold is its le label", 'le="41943.04"' in json.dumps(groups).replace('\\"', '"'))

    # The example in helm/agentsmith/README.md, "Prometheus rules".
    readme = (CHART / "README.md").read_text()
    section = readme[readme.index("## Prometheus rules"):]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    if checks.ok("the chart README's rules section has a values example", example):
        groups = groups_of(rules_object(chart, merge(WITH_TOKEN, helm.values_from_yaml(example.group(1))), KUBE_137))
        result = promtool("check", "rules", "--lint=duplicate-rules", "--lint-fatal", str(write_rules(tmp / "readme", groups)))
        checks.ok("the chart README's example renders and passes promtool check rules", result.returncode == 0, said(result))

    groups = groups_of(rules_object(chart, merge(ENABLED, {"prometheusRules": {"objectives": []}}), KUBE_137))
    checks.equal("objectives []: the percentiles only", [g["name"] for g in groups], ["agentsmith-stage-latency"])
    result = promtool("check", "rules", str(write_rules(tmp / "none", groups)))
    checks.ok("objectives []: promtool check rules", result.returncode == 0, said(result))

    # Numbers as Helm reads them from a values file (-f), trailing zero included.
    from_file = helm.values_from_yaml("prometheusRules:\n  enabled: true\n  objectives:\n"
                                      "    - {stage: start, percent: 99, seconds: 40.960, window: 1h}\n")
    groups = groups_of(rules_object(chart, merge(WITH_TOKEN, from_file), KUBE_137))
    checks.ok("seconds: 40.960 in a values file is the bucket 40.96",
              'le=\\"40.96\\"' in json.dumps(groups), groups)


def check_refusals(helm, chart) -> None:
    checks.start("bad objectives refused, naming them")
    bad_file = ("prometheusRules:\n  enabled: true\n  objectives:\n"
                "    - {stage: acknowledge, percent: 99, seconds: 1.28, window: 1h}\n"
                "    - {stage: start, percent: 99, seconds: 30, window: 1h, severity: warning}\n")
    failures = [
        ("a threshold of 30 s in a values file", merge(WITH_TOKEN, helm.values_from_yaml(bad_file)),
         ["prometheusRules.objectives[1] (stage start, 99% within 30 s over 1h)", "seconds 30 is not a bucket bound",
          "the nearest: 20.48 below, 40.96 above", "must be one of: 0.005, 0.01,"]),
        ("a threshold of 1 s", merge(ENABLED, {"prometheusRules": {"objectives": [
            {"stage": "acknowledge", "percent": 99, "seconds": 1, "window": "1h"}]}}),
         ["prometheusRules.objectives[0] (stage acknowledge, 99% within 1 s over 1h)", "0.64 below, 1.28 above"]),
        ("a threshold above every bound", merge(ENABLED, {"prometheusRules": {"objectives": [
            {"stage": "run", "percent": 99, "seconds": 86400, "window": "1d"}]}}),
         ["seconds 86400 is not a bucket bound", "41943.04 below, none above"]),
        ("two objectives with the same stage, seconds and window", merge(ENABLED, {"prometheusRules": {"objectives": [
            {"stage": "reply", "percent": 99, "seconds": 5.12, "window": "1h"},
            {"stage": "reply", "percent": 95, "seconds": 5.12, "window": "1h"}]}}),
         ["prometheusRules.objectives[1] (stage reply, 95% within 5.12 s over 1h)", "as prometheusRules.objectives[0]"]),
    ]
    for label, values, messages in failures:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
            checks.ok(f"refuses {label}", False, "it rendered")
        except helm.HelmError as e:
            checks.ok(f"refuses {label}, saying {messages[0]!r}", all(m in str(e) for m in messages), str(e))
    objective = {"stage": "start", "percent": 99, "seconds": 40.96, "window": "1h"}
    refused = [
        ("kind Rule", {"kind": "Rule"}, "/prometheusRules/kind"),
        ("an objective for stage boot", {"objectives": [{**objective, "stage": "boot"}]}, "/prometheusRules/objectives/0/stage"),
        ("percent 100", {"objectives": [{**objective, "percent": 100}]}, "/prometheusRules/objectives/0/percent"),
        ("seconds as a string", {"objectives": [{**objective, "seconds": "40.96"}]}, "/prometheusRules/objectives/0/seconds"),
        ("window 1 hour", {"objectives": [{**objective, "window": "1 hour"}]}, "/prometheusRules/objectives/0/window"),
        ("an objective without a window", {"objectives": [{k: v for k, v in objective.items() if k != "window"}]}, "window"),
        ("an unknown key in an objective (threshold)", {"objectives": [{**objective, "threshold": 1}]}, "threshold"),
        ("a selector on le", {"selector": {"le": "1.28"}}, "/prometheusRules/selector"),
        ("a selector label that is no label name", {"selector": {"kubernetes.io/name": "x"}}, "/prometheusRules/selector"),
        ("an alert label overriding severity", {"alertLabels": {"severity": "info"}}, "/prometheusRules/alertLabels"),
    ]
    for label, bad, where in refused:
        try:
            chart.render(merge(ENABLED, {"prometheusRules": bad}), name=RELEASE, namespace=NAMESPACE)
            checks.ok(f"refuses {label}", False, "it rendered")
        except helm.HelmValuesError as e:
            checks.ok(f"refuses {label}, naming {where}", where in str(e), str(e))
        except helm.HelmError as e:
            checks.ok(f"refuses {label} in the schema", False, e)


def check_lint_and_validation(helm, chart, tmp: Path) -> None:
    checks.start("helm lint with the rules on; the ConfigMap valid for Kubernetes 1.20 and 1.37")
    for kind in ("ConfigMap", "PrometheusRule", "auto"):
        report = helm.lint(CHART, merge(ENABLED, {"prometheusRules": {"kind": kind}}), strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
        checks.ok(f"lint --strict with kind {kind}: no warnings or errors", not problems, problems)
    for version, caps in (("1.20.0", KUBE_120), ("1.37.0", KUBE_137)):
        obj = rules_object(chart, ENABLED, caps)
        path = tmp / f"rules-configmap-{version}.yaml"
        path.write_text(yaml.safe_dump(obj))
        result = subprocess.run([str(ROOT / "scripts" / "kube-validate"), "--only", version, str(path)],
                                capture_output=True, text=True, timeout=300)
        checks.ok(f"the ConfigMap passes scripts/kube-validate for {version}",
                  result.returncode == 0 and re.search(rf"passed for resource configmap/{RULES_NAME} against version {version[:4]}", result.stdout),
                  said(result))
    # The PrometheusRule is not validated against a schema: kube-validate knows only Kubernetes'
    # own kinds (chart_check.py skips the ServiceMonitor the same way); check_kinds checks its
    # fields against the CRD's.
    for values, kind, needle in ((ENABLED, "ConfigMap", f"ConfigMap/{RULES_NAME} (each stage's p50 and p99 recorded, 4 latency objectives"),
                                 (merge(ENABLED, {"prometheusRules": {"kind": "PrometheusRule"}}), "PrometheusRule",
                                  f"PrometheusRule/{RULES_NAME}")):
        notes = next(t for p, t in render(chart, values, KUBE_137).items() if p.endswith("NOTES.txt"))
        checks.ok(f"NOTES.txt names the {kind}", needle in notes, notes)


def main() -> int:
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.monotonic()
    helm, chart = load_chart()
    with tempfile.TemporaryDirectory(prefix="agentsmith-chart-rules.") as name:
        tmp = Path(name)
        try:
            check_bounds(helm, chart)
            groups = check_kinds(chart, tmp)
            check_promtool(chart, groups, tmp)
            check_variants(helm, chart, tmp)
            check_refusals(helm, chart)
            check_lint_and_validation(helm, chart, tmp)
        except Failure as e:
            print(f"stopped: {e}", file=sys.stderr)
    return checks.verdict("chart-check (Prometheus rules)", started)


if __name__ == "__main__":
    sys.exit(main())
