{{/*
The analysis, rendered once for both providers: the Argo AnalysisTemplate wraps each metric in a
Prometheus provider, the `<fullname>-analysis` ConfigMap carries it as analysis.json for the release
loop (native measurements and the evidence of every release). Placeholders are Argo's
`{{args.NAME}}`: candidate-track and stable-track in the metrics, track and range (a Prometheus
duration) in the evidence query.

Every condition guards `result[0]` with `len(result) > 0` (docs/features/analysis.md, "Empty array"):
an empty vector then fails the measurement instead of erroring it, and NaN, the value of a ratio or
quantile over no traffic, fails every comparison (utils/evaluate/evaluate.go). Missing data never
passes.
*/}}
{{- define "tabula.analysisSpec" -}}
{{- $a := .Values.rollout.analysis }}
{{- if and (eq .Values.rollout.strategy "blueGreen") (eq (int $a.count) 0) }}
{{- fail "rollout.analysis.count must be > 0 for blue/green pre-promotion analysis, or promotion never happens" }}
{{- end }}
{{- if and (eq .Values.rollout.provider "native") (eq (int $a.count) 0) }}
{{- fail "rollout.analysis.count must be > 0 with rollout.provider=native: the release loop measures a finite number of times" }}
{{- end }}
{{- $sel := include "tabula.metricSelector" . }}
{{- $track := include "tabula.trackLabel" . }}
{{- $candidate := printf "%s, %s=\"{{args.candidate-track}}\"" $sel $track }}
{{- $stable := printf "%s, %s=\"{{args.stable-track}}\"" $sel $track }}
{{- $predict := include "tabula.predictMatcher" . }}
{{- $errors := printf "status_code!~%q" .Values.errorStatusRegex }}
{{- $w := $a.window }}
{{- $metrics := list }}
{{- if $a.successRate.enabled }}
{{- $query := printf "sum(rate(tabula_http_requests_total{%s, %s, %s}[%s]))\n/\nsum(rate(tabula_http_requests_total{%s, %s}[%s]))\n" $candidate $predict $errors $w $candidate $predict $w }}
{{- $metrics = append $metrics (dict "name" "success-rate" "query" $query "successCondition" (printf "len(result) > 0 && result[0] >= %v" $a.successRate.min)) }}
{{- end }}
{{- if $a.latency.enabled }}
{{- $query := printf "histogram_quantile(0.95,\n  sum by (le) (rate(tabula_http_request_duration_seconds_bucket{%s, %s}[%s]))\n)\n" $candidate $predict $w }}
{{- $metrics = append $metrics (dict "name" "latency-p95" "query" $query "successCondition" (printf "len(result) > 0 && result[0] <= %v" $a.latency.maxP95Seconds)) }}
{{- end }}
{{- $classification := eq .Values.model.task "classification" }}
{{- if and $a.predictionShift.enabled (not $classification) }}
{{- /* Kolmogorov-Smirnov distance between the candidate's and stable's prediction distributions: the
largest gap between their cumulative shares over the histogram's buckets. */}}
{{- $cdf := "sum by (le) (rate(tabula_prediction_value_bucket{%s}[%s]))\n  / ignoring (le) group_left\n    sum(rate(tabula_prediction_value_count{%s}[%s]))" }}
{{- $query := printf "max(abs(\n    %s\n  -\n    %s\n))\n" (printf $cdf $candidate $w $candidate $w) (printf $cdf $stable $w $stable $w) }}
{{- $metrics = append $metrics (dict "name" "prediction-shift" "query" $query "successCondition" (printf "len(result) > 0 && result[0] <= %v" $a.predictionShift.maxDistance)) }}
{{- end }}
{{- if and $a.classShift.enabled $classification }}
{{- /* Total variation distance between the candidate's and stable's shares of predicted classes: half
the sum over classes of |share difference|. Subtraction matches only classes both tracks predicted; the
`or` terms add a class predicted by one track only with its full share, as if the other's were 0. Both
tracks must have answered rows in the window (`and on ()`), or the result is empty: no data fails. */}}
{{- $rows := "sum(rate(tabula_predicted_class_total{%s}[%s]))" }}
{{- $shares := "(\n      sum by (class) (rate(tabula_predicted_class_total{%s}[%s]))\n        / ignoring (class) group_left\n      %s\n    )" }}
{{- $candidateShares := printf $shares $candidate $w (printf $rows $candidate $w) }}
{{- $stableShares := printf $shares $stable $w (printf $rows $stable $w) }}
{{- $query := printf "0.5 * sum(\n    abs(%s - %s)\n  or\n    %s\n  or\n    %s\n)\nand on () (%s > 0)\nand on () (%s > 0)\n" $candidateShares $stableShares $candidateShares $stableShares (printf $rows $candidate $w) (printf $rows $stable $w) }}
{{- $metrics = append $metrics (dict "name" "class-shift" "query" $query "successCondition" (printf "len(result) > 0 && result[0] <= %v" $a.classShift.maxDistance)) }}
{{- end -}}
trackLabel: {{ $track | toJson }}
metrics:
{{- range $metrics }}
  - name: {{ .name | toJson }}
    query: {{ .query | toJson }}
    successCondition: {{ .successCondition | toJson }}
    interval: {{ $a.interval | toJson }}
    count: {{ int $a.count }}
    failureLimit: {{ int $a.failureLimit }}
    consecutiveErrorLimit: {{ int $a.consecutiveErrorLimit }}
    initialDelay: {{ $a.initialDelay | toJson }}
{{- end }}
evidence:
  requestsQuery: {{ printf "sum(increase(tabula_http_requests_total{%s, %s=\"{{args.track}}\", %s}[{{args.range}}]))" $sel $track $predict | toJson }}
  minRequests: {{ int $a.minRequests }}
  minMeasurements: {{ int $a.minMeasurements }}
{{- end }}

{{/*
Whether the chart renders an analysis: rollout.analysis.enabled with a canary or blue/green strategy.
*/}}
{{- define "tabula.analysisEnabled" -}}
{{- if and .Values.rollout.analysis.enabled (ne .Values.rollout.strategy "rollingUpdate") }}true{{ end }}
{{- end }}

{{/*
Seconds of a duration in Argo's, Prometheus' and Locust's syntax (`30s`, `1m30s`, `2m`, `1h`, `500ms`, `1d`).
*/}}
{{- define "tabula.durationSeconds" -}}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" (toString .) -1 }}
{{- $amount := regexReplaceAll "[a-z]+$" . "" | float64 }}
{{- $unit := regexReplaceAll "^[0-9]+" . "" }}
{{- $total = addf $total (mulf $amount (get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 "w" 604800.0 "y" 31536000.0) $unit)) }}
{{- end }}
{{- if regexMatch "^[0-9]+$" (toString .) }}{{ $total = float64 . }}{{ end }}
{{- $total | ceil | int }}
{{- end }}

{{/*
Seconds the analysis load runs: `rollout.analysis.load.runTime`, or the analysis' own length
(initialDelay + count × interval) plus `marginSeconds`.
*/}}
{{- define "tabula.analysisLoadSeconds" -}}
{{- $a := .Values.rollout.analysis }}
{{- if $a.load.runTime }}
{{- include "tabula.durationSeconds" $a.load.runTime }}
{{- else if eq (int $a.count) 0 }}
{{- fail "rollout.analysis.load.runTime is required when rollout.analysis.count is 0 (the analysis runs until the rollout ends)" }}
{{- else }}
{{- add (include "tabula.durationSeconds" $a.initialDelay | int) (mul (int $a.count) (include "tabula.durationSeconds" $a.interval | int)) (int $a.load.marginSeconds) }}
{{- end }}
{{- end }}

{{/*
The load generator of the analysis: `tabula loadtest` against the candidate's Service at about
`requestsPerSecond` (each user waits users / rate seconds between requests). It only makes traffic:
the Prometheus analysis judges the candidate, so the Locust gates are left wide open and the Job fails
only when the load cannot run at all.
Usage: include "tabula.analysisLoadContainer" (dict "root" $ "url" "http://...")
*/}}
{{- define "tabula.analysisLoadContainer" -}}
{{- $values := .root.Values }}
{{- $load := $values.rollout.analysis.load }}
{{- $settings := dict "users" $load.users "spawnRate" $load.users "runTime" (printf "%ss" (include "tabula.analysisLoadSeconds" .root)) "p95Ms" 3600000 "p99Ms" 3600000 "maxErrorRate" 1 "minRps" 0 "resources" $load.resources }}
{{- $wait := printf "%.3f" (divf $load.users $load.requestsPerSecond) }}
{{- $env := list (dict "name" "TABULA_LOAD_WAIT_MIN_S" "value" $wait) (dict "name" "TABULA_LOAD_WAIT_MAX_S" "value" $wait) }}
{{- include "tabula.loadTestContainer" (dict "root" .root "url" .url "settings" $settings "env" $env) }}
{{- end }}

{{/*
URL of the candidate's Service: `<fullname>-canary` for canaries, `<fullname>-preview` for blue/green.
*/}}
{{- define "tabula.candidateUrl" -}}
{{- $service := ternary "canary" "preview" (eq .Values.rollout.strategy "canary") }}
{{- printf "http://%s.%s.svc:%v" (include "tabula.suffixed" (list . $service)) .Release.Namespace .Values.service.port }}
{{- end }}
