{{/*
Shadow release (rollout.shadow): the challenger runs as the `shadow` track, a Deployment of its own for
both providers (Argo Rollouts has no mirroring without a service mesh), with the pod label
`app.kubernetes.io/component: shadow`, so no Service, PDB or HPA of the serving pods ever selects it:
it gets no live traffic. The stable pods copy a sample of their answered prediction requests to
`<fullname>-shadow`, as the mounted `<fullname>-mirror` ConfigMap says.
*/}}

{{/* Whether a shadow track runs: the feature is on and a shadow tag is set. */}}
{{- define "tabula.shadowRunning" -}}
{{- if and .Values.rollout.shadow.enabled .Values.rollout.shadow.tag }}true{{ end }}
{{- end }}

{{- define "tabula.shadowUrl" -}}
{{- printf "http://%s.%s.svc:%v" (include "tabula.suffixed" (list . "shadow")) .Release.Namespace .Values.service.port }}
{{- end }}

{{/* Series of the shadow pods: scraped through their own headless Service, so their job differs. */}}
{{- define "tabula.shadowMetricsServiceName" -}}
{{- include "tabula.suffixed" (list . "shadow-metrics") }}
{{- end }}

{{- define "tabula.shadowSelector" -}}
job="{{ include "tabula.shadowMetricsServiceName" . }}", namespace="{{ .Release.Namespace }}", model_name="{{ .Values.model.name }}"
{{- end }}

{{/* Where the mounted mirror control file lives in the stable pods. */}}
{{- define "tabula.mirrorControlDir" -}}/etc/tabula/mirror{{- end }}

{{/*
The shadow analysis, in the format of tabula.analysisSpec (the release loop reads both the same way),
with `{{args.candidate-track}}` the shadow's track (`shadow`). Each condition guards `result[0]`; a
quantile or ratio over no pairs is NaN or empty and fails. The disagreement and error counters only
exist once a pair disagreed or an answer failed, so their absence counts as zero, but only where the
shadow answered at all (the denominator): no pairs, no pass.
*/}}
{{- define "tabula.shadowAnalysisSpec" -}}
{{- $s := .Values.rollout.shadow }}
{{- $sel := printf "%s, tabula_io_track=\"{{args.candidate-track}}\"" (include "tabula.shadowSelector" .) }}
{{- $predict := include "tabula.predictMatcher" . }}
{{- $w := $s.window }}
{{- $metrics := list }}
{{- if eq (default "regression" .Values.model.task) "classification" }}
{{- $query := printf "(sum(rate(tabula_shadow_disagreements_total{%s}[%s])) or vector(0))\n/\nsum(rate(tabula_shadow_pairs_total{%s}[%s]))\n" $sel $w $sel $w }}
{{- $metrics = append $metrics (dict "name" "shadow-disagreement" "query" $query "successCondition" (printf "len(result) > 0 && result[0] <= %v" $s.maxDisagreementRate)) }}
{{- else }}
{{- $query := printf "histogram_quantile(0.95,\n  sum by (le) (rate(tabula_shadow_abs_difference_bucket{%s}[%s]))\n)\n" $sel $w }}
{{- $metrics = append $metrics (dict "name" "shadow-difference-p95" "query" $query "successCondition" (printf "len(result) > 0 && result[0] <= %v" $s.maxAbsDifferenceP95)) }}
{{- end }}
{{- $query := printf "(sum(rate(tabula_shadow_requests_total{%s, %s, status_code!=\"200\"}[%s])) or vector(0))\n/\nsum(rate(tabula_shadow_requests_total{%s, %s}[%s]))\n" $sel $predict $w $sel $predict $w }}
{{- $metrics = append $metrics (dict "name" "shadow-error-rate" "query" $query "successCondition" (printf "len(result) > 0 && result[0] <= %v" $s.maxErrorRate)) }}
{{- $query = printf "histogram_quantile(0.95,\n  sum by (le) (rate(tabula_shadow_request_duration_seconds_bucket{%s, %s}[%s]))\n)\n" $sel $predict $w }}
{{- $metrics = append $metrics (dict "name" "shadow-latency-p95" "query" $query "successCondition" (printf "len(result) > 0 && result[0] <= %v" $s.maxLatencyP95Seconds)) -}}
trackLabel: "tabula_io_track"
metrics:
{{- range $metrics }}
  - name: {{ .name | toJson }}
    query: {{ .query | toJson }}
    successCondition: {{ .successCondition | toJson }}
    interval: {{ $s.interval | toJson }}
    count: {{ int $s.count }}
    failureLimit: {{ int $s.failureLimit }}
    consecutiveErrorLimit: {{ int $.Values.rollout.analysis.consecutiveErrorLimit }}
    initialDelay: {{ $s.initialDelay | toJson }}
{{- end }}
evidence:
  requestsQuery: {{ printf "sum(increase(tabula_shadow_pairs_total{%s, tabula_io_track=\"{{args.track}}\"}[{{args.range}}]))" (include "tabula.shadowSelector" .) | toJson }}
  minRequests: {{ int $s.minPairs }}
  minMeasurements: {{ int $s.count }}
{{- end }}
