{{/*
Chart name, cut to 63 characters (the DNS label limit of object names and label values).
*/}}
{{- define "tabula.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object: the release name alone when it already contains the chart name.
*/}}
{{- define "tabula.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Full name with a suffix, keeping the whole name within 63 characters.
Usage: include "tabula.suffixed" (list $ "canary")
*/}}
{{- define "tabula.suffixed" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $limit := sub 62 (len $suffix) | int }}
{{- printf "%s-%s" (include "tabula.fullname" $root | trunc $limit | trimSuffix "-") $suffix }}
{{- end }}

{{- define "tabula.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "tabula.labels" -}}
helm.sh/chart: {{ include "tabula.chart" . }}
{{ include "tabula.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tabula
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: identical in every scenario, so switching strategies never touches immutable selectors.
*/}}
{{- define "tabula.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tabula.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector of the serving pods (excludes training, load-test and helm-test pods).
*/}}
{{- define "tabula.serverSelectorLabels" -}}
{{ include "tabula.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "tabula.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tabula.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tabula.trainingServiceAccountName" -}}
{{- if .Values.training.serviceAccount.create }}
{{- default (include "tabula.suffixed" (list . "training")) .Values.training.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.training.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Service image tag; `latest` is refused here as well as by the schema, since it defeats rollbacks.
*/}}
{{- define "tabula.imageTag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}{{ fail "image.tag must not be 'latest': use <model-version>-<git-sha>" }}{{ end }}
{{- $tag }}
{{- end }}

{{/*
Image reference for a tag: repository:tag, plus @digest when pinned.
Usage: include "tabula.image" (list .Values.image $tag)
*/}}
{{- define "tabula.image" -}}
{{- $image := index . 0 }}
{{- $tag := index . 1 }}
{{- if $image.digest }}
{{- printf "%s:%s@%s" $image.repository $tag $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Model version of an image tag `<model-version>-<git-sha>`: the part before the first `-`.
*/}}
{{- define "tabula.versionOfTag" -}}
{{- regexReplaceAll "-.*$" . "" }}
{{- end }}

{{- define "tabula.modelVersion" -}}
{{- default (include "tabula.versionOfTag" (include "tabula.imageTag" .)) .Values.model.version }}
{{- end }}

{{- define "tabula.trainingImage" -}}
{{- printf "%s:%s" .Values.training.image.repository (default .Chart.AppVersion .Values.training.image.tag) }}
{{- end }}

{{- define "tabula.loadTestImage" -}}
{{- printf "%s:%s" .Values.loadTest.image.repository (default .Chart.AppVersion .Values.loadTest.image.tag) }}
{{- end }}

{{/*
Which workload objects to render.
*/}}
{{- define "tabula.argo" -}}
{{- if and (ne .Values.rollout.strategy "rollingUpdate") (eq .Values.rollout.provider "argo") }}true{{ end }}
{{- end }}

{{- define "tabula.nativeCanary" -}}
{{- if and (eq .Values.rollout.strategy "canary") (eq .Values.rollout.provider "native") }}true{{ end }}
{{- end }}

{{- define "tabula.nativeBlueGreen" -}}
{{- if and (eq .Values.rollout.strategy "blueGreen") (eq .Values.rollout.provider "native") }}true{{ end }}
{{- end }}

{{/*
Name of the Service the ServiceMonitor scrapes; Prometheus uses it as the `job` label,
so every PromQL selector of the chart starts with it.
*/}}
{{- define "tabula.metricsServiceName" -}}
{{- include "tabula.suffixed" (list . "metrics") }}
{{- end }}

{{/*
Label matchers shared by alerts, analysis and dashboard queries.
*/}}
{{- define "tabula.metricSelector" -}}
job="{{ include "tabula.metricsServiceName" . }}", namespace="{{ .Release.Namespace }}", model_name="{{ .Values.model.name }}"
{{- end }}

{{/*
Name of the workload the HPA scales: the Rollout, the stable Deployment, or the active colour.
*/}}
{{- define "tabula.primaryWorkloadName" -}}
{{- if include "tabula.nativeBlueGreen" . }}
{{- include "tabula.suffixed" (list . .Values.rollout.native.blueGreen.activeColor) }}
{{- else }}
{{- include "tabula.fullname" . }}
{{- end }}
{{- end }}

{{/*
Checksum of the service configuration, so pods restart when it changes.
*/}}
{{- define "tabula.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/*
Target label that tells the tracks apart in Prometheus (ServiceMonitor podTargetLabels, sanitised by
the operator). Argo: the pod-template hash of the ReplicaSet, fixed for a pod's whole life, so a
query window never mixes a canary's samples with stable's. The ephemeral `tabula.io/track` labels
of canaryMetadata/previewMetadata would not do: Argo moves them between ReplicaSets as their roles
change (rollout/ephemeralmetadata.go, applied with or without traffic routing), and the target
labels of a running pod change with them. Native Deployments: their fixed `tabula.io/track`.
*/}}
{{- define "tabula.trackLabel" -}}
{{- if include "tabula.argo" . }}rollouts_pod_template_hash{{ else }}tabula_io_track{{ end }}
{{- end }}

{{/*
Analysis reference of the Rollout (canary background analysis or blue/green pre-promotion): the
candidate and stable tracks are the pod-template hashes of the newest and the stable ReplicaSet,
which Argo resolves when it starts the run (utils/analysis/factory.go).
*/}}
{{- define "tabula.analysisRef" -}}
templates:
  {{- range .templates }}
  - templateName: {{ . }}
  {{- end }}
{{- if .analysis.enabled }}
args:
  - name: candidate-track
    valueFrom:
      podTemplateHashValue: Latest
  - name: stable-track
    valueFrom:
      podTemplateHashValue: Stable
{{- end }}
{{- end }}

{{/*
PromQL matchers of the prediction routes and of error responses (Go quoting = PromQL string quoting).
*/}}
{{- define "tabula.predictMatcher" -}}
route=~{{ printf "%q" .Values.predictRouteRegex }}
{{- end }}

{{/*
Matcher that leaves out a blue/green preview, which is idle by design between its analysis and the
promotion: Argo's previewMetadata track, or the native idle colour. Empty for canaries, whose
candidate takes a share of the traffic.
*/}}
{{- define "tabula.idleTrackMatcher" -}}
{{- if eq .Values.rollout.strategy "blueGreen" }}
{{- if include "tabula.nativeBlueGreen" . }}
{{- printf ", tabula_io_track!=%q" (ternary "green" "blue" (eq .Values.rollout.native.blueGreen.activeColor "blue")) }}
{{- else }}, tabula_io_track!="preview"
{{- end }}
{{- end }}
{{- end }}

{{- define "tabula.errorMatcher" -}}
status_code=~{{ printf "%q" .Values.errorStatusRegex }}
{{- end }}

{{/*
A string escaped for use inside a JSON string literal.
*/}}
{{- define "tabula.jsonInner" -}}
{{- toJson . | trimPrefix "\"" | trimSuffix "\"" }}
{{- end }}

{{/*
Container running the SLO-gated Locust load test (`tabula loadtest`) against a URL, with the
`loadTest` settings or others of the same keys (`settings`), plus extra environment (`env`).
Usage: include "tabula.loadTestContainer" (dict "root" $ "url" "http://...")
*/}}
{{- define "tabula.loadTestContainer" -}}
{{- $l := default .root.Values.loadTest .settings -}}
- name: loadtest
  image: {{ include "tabula.loadTestImage" .root | quote }}
  imagePullPolicy: {{ .root.Values.loadTest.image.pullPolicy }}
  command: ["tabula"]
  args:
    - loadtest
    - --url={{ .url }}
    - --users={{ $l.users }}
    - --spawn-rate={{ $l.spawnRate }}
    - --run-time={{ $l.runTime }}
    - --p95-ms={{ $l.p95Ms }}
    - --p99-ms={{ $l.p99Ms }}
    - --max-error-rate={{ $l.maxErrorRate }}
    - --min-rps={{ $l.minRps }}
    - --out=/tmp/loadtest
  env:
    # Rows of the served example's held-out test split.
    - name: TABULA_LOAD_EXAMPLE
      value: {{ .root.Values.model.example | quote }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml $l.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
