{{/*
Pod template of the serving container, shared by the Deployment, the Rollout and the native tracks.
Usage: include "tabula.podTemplate" (dict "root" $ "track" "stable" "tag" $tag "hashLabel" "pod-template-hash")
`hashLabel` is the label its controller puts on every pod of one revision: `pod-template-hash` for a
Deployment, `rollouts-pod-template-hash` for an Argo Rollout (whose pods lack the former).
`component` is `server` unless given: the shadow track's pods are `shadow`, which no serving Service
selects. With rollout.shadow.enabled every serving pod mounts the mirror control (the shadow's never).
*/}}
{{- define "tabula.podTemplate" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $modelVersion := default (include "tabula.versionOfTag" .tag) .modelVersion -}}
{{- $component := default "server" .component }}
{{- $mirror := and $values.rollout.shadow.enabled (eq $component "server") -}}
metadata:
  labels:
    {{- include "tabula.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
    {{- with .track }}
    tabula.io/track: {{ . }}
    {{- end }}
    tabula.io/model-version: {{ $modelVersion | quote }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "tabula.configChecksum" $root }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "tabula.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $values.serviceAccount.automountToken }}
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
  {{- with $values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  containers:
    - name: server
      image: {{ include "tabula.image" (list $values.image .tag) | quote }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      ports:
        - name: http
          containerPort: 3000
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "tabula.fullname" $root }}
      env:
        - name: BENTOML_HOME
          value: {{ $values.bentomlHome | quote }}
        {{- if eq $component "shadow" }}
        # Mirrored copies are paired and kept out of the live series only here.
        - name: TABULA_SERVICE_SHADOW_TRACK
          value: "true"
        {{- end }}
        {{- if $mirror }}
        {{- $m := $values.rollout.shadow.mirror }}
        - name: TABULA_SERVICE_SHADOW_CONTROL_FILE
          value: {{ printf "%s/mirror.json" (include "tabula.mirrorControlDir" $root) | quote }}
        - name: TABULA_SERVICE_SHADOW_CONTROL_SECONDS
          value: {{ $m.controlSeconds | quote }}
        - name: TABULA_SERVICE_SHADOW_TIMEOUT_SECONDS
          value: {{ $m.timeoutSeconds | quote }}
        - name: TABULA_SERVICE_SHADOW_QUEUE_SIZE
          value: {{ $m.queueSize | quote }}
        - name: TABULA_SERVICE_SHADOW_SENDERS
          value: {{ $m.senders | quote }}
        {{- end }}
      startupProbe:
        httpGet:
          path: /livez
          port: http
        periodSeconds: {{ $values.probes.startup.periodSeconds }}
        failureThreshold: {{ $values.probes.startup.failureThreshold }}
        timeoutSeconds: {{ $values.probes.startup.timeoutSeconds }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $values.probes.readiness.periodSeconds }}
        failureThreshold: {{ $values.probes.readiness.failureThreshold }}
        timeoutSeconds: {{ $values.probes.readiness.timeoutSeconds }}
      livenessProbe:
        httpGet:
          path: /livez
          port: http
        periodSeconds: {{ $values.probes.liveness.periodSeconds }}
        failureThreshold: {{ $values.probes.liveness.failureThreshold }}
        timeoutSeconds: {{ $values.probes.liveness.timeoutSeconds }}
      {{- if gt (int $values.preStopSleepSeconds) 0 }}
      # The kubelet's own sleep action (no `sleep` binary needed in the image): KEP-3960
      # PodLifecycleSleepAction, beta and on by default from Kubernetes 1.30, the chart's kubeVersion floor.
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $values.preStopSleepSeconds }}
      {{- end }}
      resources:
        {{- toYaml $values.resources | nindent 8 }}
      securityContext:
        {{- toYaml $values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: bentoml-home
          mountPath: {{ $values.bentomlHome }}
        {{- if $mirror }}
        # The whole directory, not a subPath: only then does the kubelet update the file in place.
        - name: mirror
          mountPath: {{ include "tabula.mirrorControlDir" $root }}
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    - name: bentoml-home
      emptyDir:
        sizeLimit: 256Mi
    {{- if $mirror }}
    - name: mirror
      configMap:
        name: {{ include "tabula.suffixed" (list $root "mirror") }}
    {{- end }}
  {{- if $values.affinity }}
  affinity:
    {{- toYaml $values.affinity | nindent 4 }}
  {{- else if eq $values.podAntiAffinity "soft" }}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "tabula.serverSelectorLabels" $root | nindent 16 }}
  {{- else if eq $values.podAntiAffinity "hard" }}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "tabula.serverSelectorLabels" $root | nindent 14 }}
  {{- end }}
  {{- if $values.topologySpread.enabled }}
  topologySpreadConstraints:
    - maxSkew: {{ $values.topologySpread.maxSkew }}
      topologyKey: {{ $values.topologySpread.topologyKey }}
      whenUnsatisfiable: {{ $values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "tabula.serverSelectorLabels" $root | nindent 10 }}
      # Spread each revision on its own, not old and new pods together.
      matchLabelKeys:
        - {{ .hashLabel }}
  {{- end }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
