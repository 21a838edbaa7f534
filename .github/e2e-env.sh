# Sourced by every bash step of e2e.yml (BASH_ENV).
# The version the MLflow `production` alias points to, from the tracking server's REST API.
production_version() {
    curl --fail --silent --show-error --get "$MLFLOW_TRACKING_URI/api/2.0/mlflow/registered-models/alias" \
        --data-urlencode "name=${HOUSING_MODEL_NAME:-housing-price}" --data-urlencode "alias=production" |
        jq --raw-output .model_version.version
}
