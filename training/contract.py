"""The model contract of a training session, derived from the example and the training rows."""

from __future__ import annotations

from contracts.data import Split
from contracts.errors import DataError
from contracts.examples import Example
from contracts.model import FeatureSpec, ModelContract


def derive_contract(example: Example, features: list[str], target: str, split: Split) -> ModelContract:
    """Features in model order with the example's declared types and limits; a classifier's labels.

    A feature the settings add beyond the example's declarations is a float without bounds. The class
    labels are those of the training rows, sorted as scikit-learn orders ``classes_``; a validation or
    test label never seen in training is an error (no model could predict it).
    """
    declared = {spec.name: spec for spec in example.spec.features}
    specs = [declared.get(name) or FeatureSpec(name=name) for name in features]
    labels: list[str] = []
    if example.spec.task == "classification":
        labels = sorted({str(label) for label in split.y_train})
        unseen = sorted({str(label) for label in (*split.y_val, *split.y_test)} - set(labels))
        if unseen:
            raise DataError(f"labels {unseen} appear in validation/test rows but not in the training rows")
    return ModelContract(
        example=example.spec.name,
        task=example.spec.task,
        features=specs,
        target=target,
        description=example.spec.description,
        class_labels=labels,
    )
