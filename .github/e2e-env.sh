# Sourced by every bash step of e2e.yml (BASH_ENV).

# The version the MLflow `production` alias points to, from the tracking server's REST API.
production_version() {
    curl --fail --silent --show-error --get "$MLFLOW_TRACKING_URI/api/2.0/mlflow/registered-models/alias" \
        --data-urlencode "name=${HOUSING_MODEL_NAME:-housing-price}" --data-urlencode "alias=production" |
        jq --raw-output .model_version.version
}

# Chart values for kind: locally loaded images, the in-cluster MLflow, small requests, and a short
# canary (one analysis-backed step) so a release finishes in minutes.
write_kind_values() {
    cat >"$1" <<'VALUES'
image:
  repository: localhost/housing-service
training:
  image:
    repository: localhost/housing-training
    tag: dev
  mlflow:
    trackingUri: http://mlflow.housing.svc:5000
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

# Training parameters whose only candidate predicts the constant $HOUSING_SABOTAGE_TARGET (in units of
# $100k) for every house: a valid, servable model whose predictions the canary analysis must reject.
sabotaged_params() {
    cat >"$1" <<PARAMS
split:
  test_size: 0.2
  test_seed: 42
  validation_size: 0.1
  seed: 42
promotion:
  margin: 0.0
  bootstrap_samples: 1000
  confidence: 0.95
golden_set_rows: 16
candidates:
  sabotaged:
    estimator: sklearn.dummy.DummyRegressor
    params:
      strategy: constant
      constant: ${HOUSING_SABOTAGE_TARGET:?set HOUSING_SABOTAGE_TARGET}
PARAMS
}
