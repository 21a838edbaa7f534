"""Saving and loading scikit-learn models with skops and a fixed allow-list.

MLflow records the trusted types inside the model itself, so a crafted model could trust anything;
we load with our own list instead. The service image ships this module: keep imports light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.errors import ProductError

# Types scikit-learn's tree ensembles need beyond what skops trusts by default.
TRUSTED_TYPES: list[str] = [
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
SKOPS_FILE = "model.skops"


class ModelLoadError(ProductError):
    """The model file is missing, corrupt, or holds a type outside the allow-list."""


def load_sklearn_model(model_dir: Path) -> Any:
    """Load the estimator from an MLflow sklearn-flavor folder (the one holding ``MLmodel``)."""
    import skops.io

    path = model_dir / SKOPS_FILE
    if not path.is_file():
        raise ModelLoadError(f"no {SKOPS_FILE} in {model_dir}")
    try:
        untrusted = set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ModelLoadError(f"{path} holds types outside the allow-list: {sorted(untrusted)}")
        return skops.io.load(path, trusted=TRUSTED_TYPES)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path}: {exc.__class__.__name__}: {exc}") from exc
