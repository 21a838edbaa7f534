# Sourced by every bash step of e2e.yml (BASH_ENV).

# The version the MLflow `production` alias points to, from the tracking server's REST API.
production_version() {
    curl --fail --silent --show-error --get "$MLFLOW_TRACKING_URI/api/2.0/mlflow/registered-models/alias" \
        --data-urlencode "name=${TABULA_MODEL_NAME:-housing-price}" --data-urlencode "alias=production" |
        jq --raw-output .model_version.version
}

# Chart values for kind: locally loaded images, the in-cluster MLflow, small requests, and a short
# canary (one analysis-backed step) so a release finishes in minutes.
write_kind_values() {
    cat >"$1" <<'VALUES'
image:
  repository: localhost/tabula-service
training:
  image:
    repository: localhost/tabula-training
    tag: dev
  mlflow:
    trackingUri: http://mlflow.tabula.svc:5000
  resources:
    requests:
      cpu: 500m
      memory: 1Gi
resources:
  requests:
    cpu: 100m
    memory: 256Mi
rollout:
  canary:
    steps:
      - setWeight: 50
      - pause:
          duration: 4m
  analysis:
    interval: 30s
    count: 6
    initialDelay: 30s
    window: 1m
VALUES
}

# TABULA_RELEASE_VALUES_FILES: a JSON list of the given values files that exist (an empty argument,
# an example without a values overlay, is left out), as absolute paths.
# Usage: values_files FILE [FILE...]
values_files() {
    local file files=()
    for file in "$@"; do
        [ -n "$file" ] && files+=("$(realpath "$file")")
    done
    printf '%s\n' "${files[@]}" | jq --raw-input . | jq --slurp --compact-output .
}

# Training parameters of $TABULA_EXAMPLE (default housing) whose only candidate predicts the constant
# $TABULA_SABOTAGE_TARGET for every row (housing: a price in units of $100k; iris: a species): a valid,
# servable model whose predictions the canary analysis must reject.
sabotaged_params() {
    local target="${TABULA_SABOTAGE_TARGET:?set TABULA_SABOTAGE_TARGET}"
    case "${TABULA_EXAMPLE:-housing}" in
        housing)
            cat >"$1" <<PARAMS
split:
  test_size: 0.2
  test_seed: 42
  validation_size: 0.1
  seed: 42
promotion:
  metric: rmse
  margin: 0.0
  bootstrap_samples: 1000
  confidence: 0.95
golden_set_rows: 16
candidates:
  sabotaged:
    estimator: sklearn.dummy.DummyRegressor
    params:
      strategy: constant
      constant: ${target}
PARAMS
            ;;
        iris)
            cat >"$1" <<PARAMS
split:
  test_size: 0.2
  test_seed: 42
  validation_size: 0.2
  seed: 42
promotion:
  metric: log_loss
  margin: 0.0
  bootstrap_samples: 1000
  confidence: 0.95
golden_set_rows: 16
candidates:
  sabotaged:
    estimator: sklearn.dummy.DummyClassifier
    params:
      strategy: constant
      constant: ${target}
PARAMS
            ;;
        *)
            echo "sabotaged_params: no sabotaged model for example ${TABULA_EXAMPLE}" >&2
            return 1
            ;;
    esac
}

# Load from inside the cluster: a pod of the training image runs `tabula loadtest` (the rows and answers
# of $TABULA_EXAMPLE) against the Service's DNS name ($SERVICE_URL), so kube-proxy spreads its
# connections over every ready pod (stable and canary alike) and a replaced pod does not end the load.
# (A port-forward from the runner binds only [::1] because kind already publishes 127.0.0.1:3000, and it
# pins one pod and dies with it.)
# Usage: start_cluster_load NAME USERS RUN_TIME [extra loadtest options...]
start_cluster_load() {
    local name="$1" users="$2" run_time="$3"
    shift 3
    local args=("loadtest" "--url=$SERVICE_URL" "--users=$users" "--run-time=$run_time" "--out=/tmp/loadtest" "$@")
    kubectl --namespace "$NAMESPACE" delete pod "$name" --ignore-not-found --wait=true >/dev/null
    # The namespace enforces the restricted Pod Security Standard.
    local args_json
    args_json="$(printf '%s\n' "${args[@]}" | jq --raw-input . | jq --slurp --compact-output .)"
    jq --null-input --arg name "$name" --arg image "$TABULA_RELEASE_TRAINING_IMAGE" \
        --arg example "${TABULA_EXAMPLE:-housing}" --argjson args "$args_json" '{
        apiVersion: "v1", kind: "Pod",
        metadata: {name: $name, labels: {"app.kubernetes.io/component": "e2e-load"}},
        spec: {
          restartPolicy: "Never", automountServiceAccountToken: false,
          securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 0,
                            seccompProfile: {type: "RuntimeDefault"}},
          containers: [{
            name: "loadtest", image: $image, imagePullPolicy: "IfNotPresent",
            command: ["tabula"], args: $args,
            env: [{name: "TABULA_LOAD_EXAMPLE", value: $example}],
            securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
                              capabilities: {drop: ["ALL"]}},
            resources: {requests: {cpu: "250m", memory: "256Mi"}, limits: {memory: "512Mi"}},
            volumeMounts: [{name: "tmp", mountPath: "/tmp"}]
          }],
          volumes: [{name: "tmp", emptyDir: {sizeLimit: "512Mi"}}]
        }}' | kubectl --namespace "$NAMESPACE" apply -f -
}

# Wait for a load pod to finish; print its log; succeed only when `tabula loadtest` exited 0.
wait_cluster_load() {
    local name="$1" deadline=$((SECONDS + ${2:-900})) phase=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        phase="$(kubectl --namespace "$NAMESPACE" get pod "$name" -o jsonpath='{.status.phase}')"
        case "$phase" in Succeeded | Failed) break ;; esac
        sleep 5
    done
    kubectl --namespace "$NAMESPACE" logs "$name" | tee "$RUNNER_TEMP/$name.log"
    echo "load pod $name: ${phase:-unknown}"
    [ "$phase" = Succeeded ]
}

# Stop a load pod that was only background traffic (its SLO verdict is not what the step tests).
stop_cluster_load() {
    kubectl --namespace "$NAMESPACE" logs "$1" >"$RUNNER_TEMP/$1.log" 2>&1 || true
    kubectl --namespace "$NAMESPACE" delete pod "$1" --ignore-not-found --wait=false
}
