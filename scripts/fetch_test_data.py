"""Fetch the data the tests read from ``../shared/`` on a machine that has none (GitHub's runners).

    python scripts/fetch_test_data.py dataset DEST_DIR   # DEST_DIR/cal_housing.csv.gz
    python scripts/fetch_test_data.py crds DEST_DIR      # DEST_DIR/<the CRD files of test-data.sha256>

The dataset comes through scikit-learn's own ``fetch_california_housing``, which downloads the StatLib
archive and checks its sha256; the raw array it caches is written back in the StatLib column order
with a header (the layout of ``../shared/data/README.md``). Every file written is checked against
``scripts/test-data.sha256`` (for the dataset: the sha256 of the uncompressed CSV), so a changed
upstream fails the step instead of feeding the tests other data.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tempfile
import urllib.request
from pathlib import Path

CHECKSUMS = Path(__file__).with_name("test-data.sha256")
DATASET_FILE = "cal_housing.csv.gz"
DATASET_CHECKSUM_NAME = "cal_housing.csv"
# The StatLib column order; scikit-learn caches the columns in the order
# median_house_value, median_income, housing_median_age .. households, latitude, longitude.
STATLIB_COLUMNS = [
    "longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
    "population", "households", "median_income", "median_house_value",
]  # fmt: skip
FROM_SKLEARN_CACHE = [8, 7, 2, 3, 4, 5, 6, 1, 0]
# Pinned upstream releases: Argo Rollouts as installed by e2e.yml, and the prometheus-operator release
# whose CRDs kube-prometheus-stack 77.10.0 (e2e.yml) installs (its Chart.yaml appVersion).
ARGO_ROLLOUTS = "https://raw.githubusercontent.com/argoproj/argo-rollouts/v1.8.3/manifests/crds"
PROMETHEUS_OPERATOR = (
    "https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/v0.85.0"
    "/example/prometheus-operator-crd/monitoring.coreos.com"
)
CRDS = {
    "argo-rollouts.rollout-crd.yaml": f"{ARGO_ROLLOUTS}/rollout-crd.yaml",
    "argo-rollouts.analysis-run-crd.yaml": f"{ARGO_ROLLOUTS}/analysis-run-crd.yaml",
    "argo-rollouts.analysis-template-crd.yaml": f"{ARGO_ROLLOUTS}/analysis-template-crd.yaml",
    "argo-rollouts.cluster-analysis-template-crd.yaml": f"{ARGO_ROLLOUTS}/cluster-analysis-template-crd.yaml",
    "prometheus-operator.servicemonitors.yaml": f"{PROMETHEUS_OPERATOR}_servicemonitors.yaml",
    "prometheus-operator.podmonitors.yaml": f"{PROMETHEUS_OPERATOR}_podmonitors.yaml",
    "prometheus-operator.prometheusrules.yaml": f"{PROMETHEUS_OPERATOR}_prometheusrules.yaml",
}  # fmt: skip


def pinned() -> dict[str, str]:
    """File name -> sha256, from ``test-data.sha256`` (``sha256sum`` format)."""
    sums: dict[str, str] = {}
    for line in CHECKSUMS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def check(name: str, content: bytes) -> None:
    expected = pinned()[name]
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise SystemExit(f"error: {name}: sha256 {actual}, expected {expected} ({CHECKSUMS.name})")


def statlib_csv(raw_rows: object) -> bytes:
    """The raw array of scikit-learn's cache as the StatLib CSV with a header."""
    import numpy as np

    rows = np.asarray(raw_rows)[:, FROM_SKLEARN_CACHE]
    text = io.StringIO()
    np.savetxt(text, rows, fmt="%f", delimiter=",", header=",".join(STATLIB_COLUMNS), comments="")
    return text.getvalue().encode()


def fetch_dataset(dest: Path) -> Path:
    import joblib
    from sklearn.datasets import fetch_california_housing

    with tempfile.TemporaryDirectory() as data_home:
        fetch_california_housing(data_home=data_home)
        [cache] = Path(data_home).glob("cal_housing*.pkz")
        content = statlib_csv(joblib.load(cache))
    check(DATASET_CHECKSUM_NAME, content)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / DATASET_FILE
    # mtime=0: the same bytes on every run.
    path.write_bytes(gzip.compress(content, mtime=0))
    return path


def fetch_crds(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, url in CRDS.items():
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URLs
            content: bytes = response.read()
        check(name, content)
        (dest / name).write_bytes(content)
        written.append(dest / name)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"dataset", "crds"}:
        print(__doc__.split("\n\n")[1], file=sys.stderr)  # noqa: T201
        return 2
    kind, dest = argv[0], Path(argv[1])
    paths = [fetch_dataset(dest)] if kind == "dataset" else fetch_crds(dest)
    for path in paths:
        print(path)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
