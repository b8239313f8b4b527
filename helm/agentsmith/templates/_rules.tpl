{{/*
The Prometheus rules of prometheusRules.*, in one place: templates/prometheus-rules.yaml puts
the same groups in a PrometheusRule or in a ConfigMap's plain rules file. scripts/chart-check
runs `promtool check rules` and `promtool test rules` (helm/agentsmith/tests/rules-test.yaml) on
both.

They read agentsmith_stage_seconds, the dispatcher's histogram of each stage of a job's life
(dispatcher/src/metrics), labelled stage, source, backend, target and profile.
*/}}

{{/*
The histogram's bucket bounds, as its `le` labels spell them: exponential_buckets(0.005, 2.0, 24)
of the dispatcher's metrics module (scripts/chart_rules_check.py checks the two agree). An
objective's share is read from one bucket, so its threshold must be one of these. None is a whole
number, so Prometheus 3's normalisation of `le` ("1" read as "1.0") changes none of them.
*/}}
{{- define "agentsmith.rules.bucketBounds" -}}
{{- list "0.005" "0.01" "0.02" "0.04" "0.08" "0.16" "0.32" "0.64" "1.28" "2.56" "5.12" "10.24" "20.48" "40.96" "81.92" "163.84" "327.68" "655.36" "1310.72" "2621.44" "5242.88" "10485.76" "20971.52" "41943.04" | toJson -}}
{{- end -}}

{{/* What each stage times, for the alerts' descriptions. */}}
{{- define "agentsmith.rules.stageMeaning" -}}
{{- $meaning := dict
  "acknowledge" "a webhook delivery received to answered, the job made durable"
  "queue" "a job queued to admitted, the wait for a slot"
  "spawn" "a job admitted to its workload created"
  "start" "a workload created to its agent running, scheduling and image pull included"
  "run" "an agent running to its attempt ended"
  "reply" "a job ended to its final reply delivered" -}}
{{- get $meaning . -}}
{{- end -}}

{{/*
The objectives with their defaults filled in and the threshold as its `le` label (JSON list of
{stage, percent, le, window, for, severity, ratio}). Fails, naming the objective, on a threshold
that is no bucket bound or on two objectives that would record the same series.
*/}}
{{- define "agentsmith.rules.objectives" -}}
{{- $bounds := include "agentsmith.rules.bucketBounds" . | fromJsonArray -}}
{{- $seen := dict -}}
{{- $out := list -}}
{{- range $i, $o := .Values.prometheusRules.objectives -}}
{{- $le := toString (float64 $o.seconds) -}}
{{- $name := printf "prometheusRules.objectives[%d] (stage %s, %v%% within %v s over %s)" $i $o.stage $o.percent $o.seconds $o.window -}}
{{- if not (has $le $bounds) -}}
{{- $below := "none" -}}
{{- $above := "none" -}}
{{- range $bounds -}}
{{- if lt (float64 .) (float64 $o.seconds) -}}{{- $below = . -}}{{- else if eq $above "none" -}}{{- $above = . -}}{{- end -}}
{{- end -}}
{{- fail (printf "%s: seconds %v is not a bucket bound of agentsmith_stage_seconds (the nearest: %s below, %s above). The share within a threshold is read from the histogram's bucket for it, so seconds must be one of: %s" $name $o.seconds $below $above (join ", " $bounds)) -}}
{{- end -}}
{{- $key := printf "%s/%s/%s" $o.stage $le $o.window -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "%s: the same stage, seconds and window as prometheusRules.objectives[%v]; the two would record the same series" $name (get $seen $key)) -}}
{{- end -}}
{{- $_ := set $seen $key $i -}}
{{- $out = append $out (dict "stage" $o.stage "percent" $o.percent "le" $le "window" $o.window
  "for" ($o.for | default "5m") "severity" ($o.severity | default "warning")
  "ratio" (toString (divf $o.percent 100))) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
The rule groups, a YAML list (`groups:` of a rules file, spec.groups of a PrometheusRule):

  agentsmith-stage-latency      stage:agentsmith_stage_seconds:p50_5m, p99_5m, p50_1h, p99_1h:
                                histogram_quantile over the buckets summed by stage (estimates:
                                interpolated within a bucket, whose bounds double)
  agentsmith-latency-objectives for each objective, stage:agentsmith_stage_seconds:good_ratio
                                {stage, threshold, window}: the share of the stage's observations
                                within the threshold over the window (its bucket over the count:
                                exact, no estimate), then the alert Agentsmith<Stage>Slow when the
                                share is under the objective's percent for `for`

Recording and alerting rules of an objective share a group, so each alert reads a ratio
evaluated just before it. prometheusRules.selector narrows every series and stays as a label.
*/}}
{{- define "agentsmith.rules.groups" -}}
{{- $selector := .Values.prometheusRules.selector | default dict -}}
{{- $matchers := list -}}
{{- range $name, $value := $selector -}}
{{- $matchers = append $matchers (printf "%s=%q" $name $value) -}}
{{- end -}}
{{- $kept := keys $selector | sortAlpha -}}
{{- $by := concat (list "stage") $kept | join ", " -}}
{{- $buckets := "agentsmith_stage_seconds_bucket" -}}
{{- if $matchers -}}
{{- $buckets = printf "agentsmith_stage_seconds_bucket{%s}" (join ", " $matchers) -}}
{{- end -}}
{{- $objectives := include "agentsmith.rules.objectives" . | fromJsonArray -}}
- name: agentsmith-stage-latency
  rules:
{{- range $window := list "5m" "1h" }}
{{- range $quantile := list "50" "99" }}
    - record: stage:agentsmith_stage_seconds:p{{ $quantile }}_{{ $window }}
      expr: histogram_quantile(0.{{ $quantile }}, sum by (le, {{ $by }}) (rate({{ $buckets }}[{{ $window }}])))
{{- end }}
{{- end }}
{{- if $objectives }}
- name: agentsmith-latency-objectives
  rules:
{{- range $objectives }}
{{- $stage := printf "stage=%q" .stage }}
    - record: stage:agentsmith_stage_seconds:good_ratio
      expr: |-
        sum by ({{ $by }}) (rate(agentsmith_stage_seconds_bucket{{ printf "{%s}" (concat (list $stage (printf "le=%q" .le)) $matchers | join ", ") }}[{{ .window }}]))
          /
        sum by ({{ $by }}) (rate(agentsmith_stage_seconds_count{{ printf "{%s}" (concat (list $stage) $matchers | join ", ") }}[{{ .window }}]))
      labels:
        stage: {{ .stage }}
        threshold: {{ .le | quote }}
        window: {{ .window | quote }}
    - alert: Agentsmith{{ .stage | title }}Slow
      expr: stage:agentsmith_stage_seconds:good_ratio{{ printf "{%s}" (concat (list $stage (printf "threshold=%q" .le) (printf "window=%q" .window)) $matchers | join ", ") }} < {{ .ratio }}
      for: {{ .for }}
      labels:
        severity: {{ .severity | quote }}
        {{- range $name, $value := $.Values.prometheusRules.alertLabels }}
        {{ $name }}: {{ $value | quote }}
        {{- end }}
      annotations:
        summary: {{ printf "agentsmith: fewer than %v%% of %s stages took %s s or less over the last %s" .percent .stage .le .window | quote }}
        description: {{ printf "%s of %s stages (%s) took at most %s s over the last %s, below the objective of %v%%. Recent percentiles: stage:agentsmith_stage_seconds:p50_5m and p99_5m." "{{ $value | humanizePercentage }}" .stage (include "agentsmith.rules.stageMeaning" .stage) .le .window .percent | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The kind of object that holds the rules: prometheusRules.kind, auto resolved. */}}
{{- define "agentsmith.rules.kind" -}}
{{- $kind := .Values.prometheusRules.kind -}}
{{- if eq $kind "auto" -}}
{{- $kind = ternary "PrometheusRule" "ConfigMap" (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") -}}
{{- end -}}
{{- $kind -}}
{{- end -}}
