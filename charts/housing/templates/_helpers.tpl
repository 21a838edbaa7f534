{{/*
Chart name, cut to 63 characters (the DNS label limit of object names and label values).
*/}}
{{- define "housing.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object: the release name alone when it already contains the chart name.
*/}}
{{- define "housing.fullname" -}}
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
Usage: include "housing.suffixed" (list $ "canary")
*/}}
{{- define "housing.suffixed" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $limit := sub 62 (len $suffix) | int }}
{{- printf "%s-%s" (include "housing.fullname" $root | trunc $limit | trimSuffix "-") $suffix }}
{{- end }}

{{- define "housing.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "housing.labels" -}}
helm.sh/chart: {{ include "housing.chart" . }}
{{ include "housing.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: housing
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: identical in every scenario, so switching strategies never touches immutable selectors.
*/}}
{{- define "housing.selectorLabels" -}}
app.kubernetes.io/name: {{ include "housing.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector of the serving pods (excludes training, load-test and helm-test pods).
*/}}
{{- define "housing.serverSelectorLabels" -}}
{{ include "housing.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "housing.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "housing.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "housing.trainingServiceAccountName" -}}
{{- if .Values.training.serviceAccount.create }}
{{- default (include "housing.suffixed" (list . "training")) .Values.training.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.training.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Service image tag; `latest` is refused here as well as by the schema, since it defeats rollbacks.
*/}}
{{- define "housing.imageTag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}{{ fail "image.tag must not be 'latest': use <model-version>-<git-sha>" }}{{ end }}
{{- $tag }}
{{- end }}

{{/*
Image reference for a tag: repository:tag, plus @digest when pinned.
Usage: include "housing.image" (list .Values.image $tag)
*/}}
{{- define "housing.image" -}}
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
{{- define "housing.versionOfTag" -}}
{{- regexReplaceAll "-.*$" . "" }}
{{- end }}

{{- define "housing.modelVersion" -}}
{{- default (include "housing.versionOfTag" (include "housing.imageTag" .)) .Values.model.version }}
{{- end }}

{{- define "housing.trainingImage" -}}
{{- printf "%s:%s" .Values.training.image.repository (default .Chart.AppVersion .Values.training.image.tag) }}
{{- end }}

{{- define "housing.loadTestImage" -}}
{{- printf "%s:%s" .Values.loadTest.image.repository (default .Chart.AppVersion .Values.loadTest.image.tag) }}
{{- end }}

{{/*
Which workload objects to render.
*/}}
{{- define "housing.argo" -}}
{{- if and (ne .Values.rollout.strategy "rollingUpdate") (eq .Values.rollout.provider "argo") }}true{{ end }}
{{- end }}

{{- define "housing.nativeCanary" -}}
{{- if and (eq .Values.rollout.strategy "canary") (eq .Values.rollout.provider "native") }}true{{ end }}
{{- end }}

{{- define "housing.nativeBlueGreen" -}}
{{- if and (eq .Values.rollout.strategy "blueGreen") (eq .Values.rollout.provider "native") }}true{{ end }}
{{- end }}

{{/*
Name of the Service the ServiceMonitor scrapes; Prometheus uses it as the `job` label,
so every PromQL selector of the chart starts with it.
*/}}
{{- define "housing.metricsServiceName" -}}
{{- include "housing.suffixed" (list . "metrics") }}
{{- end }}

{{/*
Label matchers shared by alerts, analysis and dashboard queries.
*/}}
{{- define "housing.metricSelector" -}}
job="{{ include "housing.metricsServiceName" . }}", namespace="{{ .Release.Namespace }}", model_name="{{ .Values.model.name }}"
{{- end }}

{{/*
Name of the workload the HPA scales: the Rollout, the stable Deployment, or the active colour.
*/}}
{{- define "housing.primaryWorkloadName" -}}
{{- if include "housing.nativeBlueGreen" . }}
{{- include "housing.suffixed" (list . .Values.rollout.native.blueGreen.activeColor) }}
{{- else }}
{{- include "housing.fullname" . }}
{{- end }}
{{- end }}

{{/*
Checksum of the service configuration, so pods restart when it changes.
*/}}
{{- define "housing.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/*
Target label that tells the tracks apart in Prometheus (ServiceMonitor podTargetLabels, sanitised by
the operator). Argo: the pod-template hash of the ReplicaSet, fixed for a pod's whole life, so a
query window never mixes a canary's samples with stable's. The ephemeral `housing.io/track` labels
of canaryMetadata/previewMetadata would not do: Argo moves them between ReplicaSets as their roles
change (rollout/ephemeralmetadata.go, applied with or without traffic routing), and the target
labels of a running pod change with them. Native Deployments: their fixed `housing.io/track`.
*/}}
{{- define "housing.trackLabel" -}}
{{- if include "housing.argo" . }}rollouts_pod_template_hash{{ else }}housing_io_track{{ end }}
{{- end }}

{{/*
Analysis reference of the Rollout (canary background analysis or blue/green pre-promotion): the
candidate and stable tracks are the pod-template hashes of the newest and the stable ReplicaSet,
which Argo resolves when it starts the run (utils/analysis/factory.go).
*/}}
{{- define "housing.analysisRef" -}}
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
{{- define "housing.predictMatcher" -}}
route=~{{ printf "%q" .Values.predictRouteRegex }}
{{- end }}

{{/*
Matcher that leaves out a blue/green preview, which is idle by design between its analysis and the
promotion: Argo's previewMetadata track, or the native idle colour. Empty for canaries, whose
candidate takes a share of the traffic.
*/}}
{{- define "housing.idleTrackMatcher" -}}
{{- if eq .Values.rollout.strategy "blueGreen" }}
{{- if include "housing.nativeBlueGreen" . }}
{{- printf ", housing_io_track!=%q" (ternary "green" "blue" (eq .Values.rollout.native.blueGreen.activeColor "blue")) }}
{{- else }}, housing_io_track!="preview"
{{- end }}
{{- end }}
{{- end }}

{{- define "housing.errorMatcher" -}}
status_code=~{{ printf "%q" .Values.errorStatusRegex }}
{{- end }}

{{/*
A string escaped for use inside a JSON string literal.
*/}}
{{- define "housing.jsonInner" -}}
{{- toJson . | trimPrefix "\"" | trimSuffix "\"" }}
{{- end }}

{{/*
Container running the SLO-gated Locust load test (`housing loadtest`) against a URL, with the
`loadTest` settings or others of the same keys (`settings`), plus extra environment (`env`).
Usage: include "housing.loadTestContainer" (dict "root" $ "url" "http://...")
*/}}
{{- define "housing.loadTestContainer" -}}
{{- $l := default .root.Values.loadTest .settings -}}
- name: loadtest
  image: {{ include "housing.loadTestImage" .root | quote }}
  imagePullPolicy: {{ .root.Values.loadTest.image.pullPolicy }}
  command: ["housing"]
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
    - name: HOUSING_LOAD_EXAMPLE
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
