{{/*
Pod-ratio canary: the share of pods Argo Rollouts gives the canary for `setWeight` when no traffic router
is configured. Argo docs/features/canary/index.md ("the Rollout makes a best effort attempt to achieve
the percentage ... finding the whole number with the smallest delta") and
utils/replicaset/canary.go approximateWeightedCanaryStableReplicaCounts (v1.8.3): the canary gets
floor or ceil of replicas*weight/100 pods, out of replicas or, with a surge, replicas+1; the ceiling
only when it leaves a stable pod, never zero pods for a weight of 1-99; the option closest to the weight
wins, the first listed on equal gaps. Returns the achieved share in percent.
Usage: include "tabula.podRatioShare" (dict "replicas" 2 "weight" 10 "surge" true)
*/}}
{{- define "tabula.podRatioShare" -}}
{{- $replicas := int .replicas }}
{{- $weight := int .weight }}
{{- $exact := divf (mul $replicas $weight) 100 }}
{{- $floor := int (floor $exact) }}
{{- $ceil := int (ceil $exact) }}
{{- $options := list }}
{{- if lt $ceil $replicas }}{{ $options = append $options (list $ceil $replicas) }}{{ end }}
{{- /* floorCeilingTied: on an exact half the larger count is taken, the floor is no option. */}}
{{- if and (gt $floor 0) (ne (mod (mul $replicas $weight) 100) 50) }}
{{- $options = append $options (list $floor $replicas) }}
{{- end }}
{{- if .surge }}
{{- $options = append $options (list $ceil (add1 $replicas)) }}
{{- if and (gt $floor 0) (ne (mod (mul (add1 $replicas) $weight) 100) 50) }}
{{- $options = append $options (list $floor (add1 $replicas)) }}
{{- end }}
{{- end }}
{{- $best := -1.0 }}
{{- $bestDelta := 1000.0 }}
{{- range $options }}
{{- $share := divf (mul (index . 0) 100) (index . 1) }}
{{- $delta := subf $share $weight }}
{{- if lt $delta 0.0 }}{{ $delta = mulf $delta -1 }}{{ end }}
{{- if lt $delta $bestDelta }}{{ $bestDelta = $delta }}{{ $best = $share }}{{ end }}
{{- end }}
{{- $best }}
{{- end }}

{{/*
Fewest pods the workload runs: replicaCount, or the HPA's floor when it owns the replica count.
*/}}
{{- define "tabula.fewestReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
Argo canary without a traffic router: the steps whose weight the pod count cannot express within
`rollout.canary.maxWeightDeviation` percentage points (e.g. setWeight 10 on 2 pods sends 33-50%), as a
JSON list of messages. `rollout.canary.weightCheck` decides: `fail` the render, or `warn` in NOTES.txt.
*/}}
{{- define "tabula.canaryWeightProblems" -}}
{{- $problems := list }}
{{- $canary := .Values.rollout.canary }}
{{- if and (include "tabula.argo" .) (eq .Values.rollout.strategy "canary") (not $canary.nginxTrafficRouting) }}
{{- $replicas := int (include "tabula.fewestReplicas" .) }}
{{- $surge := not (or (eq (toString $canary.maxSurge) "0") (eq (toString $canary.maxSurge) "0%")) }}
{{- range $canary.steps }}
{{- if and (hasKey . "setWeight") (gt (int .setWeight) 0) (lt (int .setWeight) 100) }}
{{- $share := include "tabula.podRatioShare" (dict "replicas" $replicas "weight" .setWeight "surge" $surge) | float64 }}
{{- $delta := subf $share (int .setWeight) }}
{{- if lt $delta 0.0 }}{{ $delta = mulf $delta -1 }}{{ end }}
{{- if gt $delta (float64 $canary.maxWeightDeviation) }}
{{- $problems = append $problems (printf "setWeight %d cannot be expressed with %d pods without traffic routing: Argo Rollouts would send about %.0f%% of the traffic to the canary (more than rollout.canary.maxWeightDeviation=%v points off)" (int .setWeight) $replicas $share $canary.maxWeightDeviation) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $problems }}
{{- end }}

{{- define "tabula.canaryWeightFix" -}}
Raise replicaCount (or autoscaling.minReplicas), use weights the pod count can express, or set rollout.canary.nginxTrafficRouting=true
{{- end }}

{{- define "tabula.checkCanaryWeights" -}}
{{- $problems := include "tabula.canaryWeightProblems" . | fromJsonArray }}
{{- if and $problems (eq .Values.rollout.canary.weightCheck "fail") }}
{{- fail (printf "rollout.canary.steps: %s. %s" (index $problems 0) (include "tabula.canaryWeightFix" .)) }}
{{- end }}
{{- end }}

{{/*
Native canary: the share of the pods behind `<fullname>` that the canary track holds (in percent).
*/}}
{{- define "tabula.nativeCanaryPodShare" -}}
{{- $canary := int .Values.rollout.native.canary.replicas }}
{{- $total := add (int (include "tabula.fewestReplicas" .)) $canary }}
{{- if gt $total 0 }}{{ divf (mul $canary 100) $total }}{{ else }}0{{ end }}
{{- end }}

{{/*
Native canary: the main Service splits by pods. Refuse a canary holding more than
`rollout.native.canary.maxPodShare` percent of them (with an Ingress only in-cluster clients see
this split; the Ingress sends `ingressWeight`).
*/}}
{{- define "tabula.checkNativeCanaryShare" -}}
{{- $native := .Values.rollout.native.canary }}
{{- if and (include "tabula.nativeCanary" .) $native.tag }}
{{- $share := include "tabula.nativeCanaryPodShare" . | float64 }}
{{- if gt $share (float64 $native.maxPodShare) }}
{{- fail (printf "rollout.native.canary.replicas=%d of %d pods gives the canary %.0f%% of the Service's traffic, more than rollout.native.canary.maxPodShare=%v: add stable replicas or lower the canary's" (int $native.replicas) (add (int (include "tabula.fewestReplicas" .)) (int $native.replicas)) $share $native.maxPodShare) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The serving workloads this revision renders, as a JSON list of "Kind/name".
*/}}
{{- define "tabula.renderedWorkloads" -}}
{{- $workloads := list }}
{{- if include "tabula.argo" . }}
{{- $workloads = append $workloads (printf "Rollout/%s" (include "tabula.fullname" .)) }}
{{- else if include "tabula.nativeBlueGreen" . }}
{{- $bg := .Values.rollout.native.blueGreen }}
{{- $tags := dict "blue" (default (include "tabula.imageTag" .) $bg.blueTag) "green" $bg.greenTag }}
{{- range $color := list "blue" "green" }}
{{- if index $tags $color }}
{{- $workloads = append $workloads (printf "Deployment/%s" (include "tabula.suffixed" (list $ $color))) }}
{{- end }}
{{- end }}
{{- else }}
{{- $workloads = append $workloads (printf "Deployment/%s" (include "tabula.fullname" .)) }}
{{- if and (include "tabula.nativeCanary" .) .Values.rollout.native.canary.tag }}
{{- $workloads = append $workloads (printf "Deployment/%s" (include "tabula.suffixed" (list . "canary"))) }}
{{- end }}
{{- end }}
{{- toJson $workloads }}
{{- end }}

{{/*
Switching strategy or provider replaces the serving workload (Deployment <-> Rollout, or the plain
Deployment <-> the blue/green colours). Helm deletes the old objects as soon as the new ones are applied
and `tabula deploy` runs without --wait, so every serving pod would go while the new ones still load
their model. Refuse the upgrade when none of the running serving workloads carries over (those annotated
`helm.sh/resource-policy: keep` are left running by Helm and do not count), and print the safe procedure (Argo docs/migrating.md: run the Rollout next to the Deployment before deleting it).
`lookup` is empty under `helm template` and dry runs without a cluster: release/switch.py makes the same
check from the cluster for the release loop.
*/}}
{{- define "tabula.checkWorkloadSwitch" -}}
{{- $existing := list }}
{{- $kinds := list (list "apps/v1" "Deployment") }}
{{- if .Capabilities.APIVersions.Has "argoproj.io/v1alpha1/Rollout" }}
{{- $kinds = append $kinds (list "argoproj.io/v1alpha1" "Rollout") }}
{{- end }}
{{- range $kinds }}
{{- $kind := index . 1 }}
{{- range (lookup (index . 0) $kind $.Release.Namespace "").items | default list }}
{{- $labels := .metadata.labels | default dict }}
{{- $keep := eq (get (.metadata.annotations | default dict) "helm.sh/resource-policy") "keep" }}
{{- if and (not $keep) (eq (get $labels "app.kubernetes.io/instance") $.Release.Name) (eq (get $labels "app.kubernetes.io/component") "server") (eq (get $labels "app.kubernetes.io/name") (include "tabula.name" $)) }}
{{- $existing = append $existing (printf "%s/%s" $kind .metadata.name) }}
{{- end }}
{{- end }}
{{- end }}
{{- $rendered := include "tabula.renderedWorkloads" . | fromJsonArray }}
{{- $kept := list }}
{{- range $existing }}{{ if has . $rendered }}{{ $kept = append $kept . }}{{ end }}{{ end }}
{{- if and $existing (not $kept) }}
{{- $refs := lower (join " " $existing) }}
{{- fail (printf "refusing to replace the serving workload(s) %s with %s: Helm would delete the running pods before the new ones are ready (an outage). Switch safely: 1) kubectl -n %s annotate %s helm.sh/resource-policy=keep (Helm then leaves it running and this check lets the upgrade through); 2) run the upgrade again; 3) wait until the new workload is ready and serving; 4) kubectl -n %s delete %s" (join ", " $existing) (join ", " $rendered) .Release.Namespace $refs .Release.Namespace $refs) }}
{{- end }}
{{- end }}

{{/*
Native blue/green: switching `activeColor` to a colour that has fewer ready pods than the colour now
serving drops capacity at once. Refuse it with the order that keeps capacity (the release loop's steps).
The colour now serving is the live Service's track; `lookup` is empty under `helm template`.
*/}}
{{- define "tabula.checkBlueGreenSwitch" -}}
{{- if include "tabula.nativeBlueGreen" . }}
{{- $bg := .Values.rollout.native.blueGreen }}
{{- $service := lookup "v1" "Service" .Release.Namespace (include "tabula.fullname" .) }}
{{- $serving := get (dig "spec" "selector" (dict) $service) "tabula.io/track" }}
{{- if and $serving (ne $serving $bg.activeColor) }}
{{- $old := lookup "apps/v1" "Deployment" .Release.Namespace (include "tabula.suffixed" (list . $serving)) }}
{{- $new := lookup "apps/v1" "Deployment" .Release.Namespace (include "tabula.suffixed" (list . $bg.activeColor)) }}
{{- $needed := dig "spec" "replicas" 0 $old | int }}
{{- $ready := dig "status" "readyReplicas" 0 $new | int }}
{{- if lt $ready $needed }}
{{- fail (printf "rollout.native.blueGreen.activeColor=%s would switch traffic from %s (%d pods) to %s with %d ready pods: first set rollout.native.blueGreen.previewReplicas=%d and wait until %s is ready, then switch (and keep previewReplicas for scaleDownDelaySeconds)" $bg.activeColor $serving $needed $bg.activeColor $ready $needed (include "tabula.suffixed" (list . $bg.activeColor))) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
