"""Hard limits of the request models built from the housing contract, and the structured error details."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.request import MAX_ROWS_CONTEXT, api_models
from service.errors import InvalidInputError, InvalidJsonError, from_validation_error
from service.schemas import details_from, json_safe
from tests.unit.service.conftest import FEATURES, HOUSING

pytestmark = pytest.mark.unit

MODELS = api_models(HOUSING)
HouseFeatures = MODELS.row
BatchRequest = MODELS.batch

ROW: dict[str, Any] = {
    "MedInc": 3.5,
    "HouseAge": 25,
    "AveRooms": 5.2,
    "AveBedrms": 1.05,
    "Population": 1200,
    "AveOccup": 2.9,
    "Latitude": 34.05,
    "Longitude": -118.25,
}


def errors_of(payload: str, **kwargs: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        HouseFeatures.model_validate_json(payload, **kwargs)
    return [detail.model_dump() for detail in details_from(caught.value)]


def test_valid_row_keeps_values_and_accepts_integers() -> None:
    features = HouseFeatures.model_validate_json(json.dumps(ROW))
    values = [getattr(features, name) for name in FEATURES]
    assert values == [3.5, 25.0, 5.2, 1.05, 1200.0, 2.9, 34.05, -118.25]


@pytest.mark.parametrize(
    ("field", "bad", "constraint"),
    [
        ("MedInc", -0.1, "greater_than_equal"),
        ("Population", -1, "greater_than_equal"),
        ("AveBedrms", -2.0, "greater_than_equal"),
        ("Latitude", 31.9, "greater_than_equal"),
        ("Latitude", 42.6, "less_than_equal"),
        ("Longitude", -125.1, "greater_than_equal"),
        ("Longitude", -113.9, "less_than_equal"),
        ("HouseAge", "25", "float_type"),
        ("AveRooms", True, "float_type"),
        ("AveOccup", None, "float_type"),
    ],
)
def test_hard_limit_names_field_constraint_and_value(field: str, bad: Any, constraint: str) -> None:
    (detail,) = errors_of(json.dumps({**ROW, field: bad}))
    assert (detail["field"], detail["constraint"], detail["value"]) == (field, constraint, bad)
    assert detail["message"]


@pytest.mark.parametrize(("token", "shown"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_non_finite_numbers_are_rejected_and_echoed_as_strings(token: str, shown: str) -> None:
    payload = json.dumps(ROW).replace("3.5", token)
    (detail,) = errors_of(payload)
    assert (detail["field"], detail["constraint"], detail["value"]) == ("MedInc", "finite_number", shown)


def test_missing_and_extra_fields() -> None:
    row = {k: v for k, v in ROW.items() if k != "Latitude"} | {"Rooms": 3}
    details = {(d["field"], d["constraint"], d["value"]) for d in errors_of(json.dumps(row))}
    assert details == {("Latitude", "missing", None), ("Rooms", "extra_forbidden", 3)}


def test_extra_fields_can_be_allowed_by_configuration() -> None:
    features = HouseFeatures.model_validate_json(json.dumps({**ROW, "Rooms": 3}), extra="ignore")
    assert features.MedInc == 3.5  # type: ignore[attr-defined]  # a field of the contract's model
    batch = BatchRequest.model_validate_json(json.dumps({"rows": [{**ROW, "Rooms": 3}]}), extra="ignore")
    assert len(batch.rows) == 1  # type: ignore[attr-defined]


def test_invalid_json_is_400_with_no_echoed_body() -> None:
    with pytest.raises(ValidationError) as caught:
        HouseFeatures.model_validate_json(b'{"MedInc": \xff')
    error = from_validation_error(caught.value)
    assert isinstance(error, InvalidJsonError)
    assert error.http_status == 400
    assert error.details[0].value is None


def test_batch_limits() -> None:
    context = {MAX_ROWS_CONTEXT: 3}
    three = BatchRequest.model_validate_json(json.dumps({"rows": [ROW] * 3}), context=context)
    assert len(three.rows) == 3  # type: ignore[attr-defined]
    for rows, constraint in (([ROW] * 4, "value_error"), ([], "too_short")):
        with pytest.raises(ValidationError) as caught:
            BatchRequest.model_validate_json(json.dumps({"rows": rows}), context=context)
        error = from_validation_error(caught.value)
        assert isinstance(error, InvalidInputError)
        assert (error.details[0].field, error.details[0].constraint) == ("rows", constraint)


def test_bad_row_in_batch_is_located_by_index() -> None:
    with pytest.raises(ValidationError) as caught:
        BatchRequest.model_validate_json(json.dumps({"rows": [ROW, {**ROW, "Longitude": 0}]}))
    assert [d.field for d in details_from(caught.value)] == ["rows.1.Longitude"]


def test_json_safe_keeps_error_bodies_valid_and_small() -> None:
    assert json_safe(float("nan")) == "nan"
    assert json_safe(b"\xff") == "\ufffd"
    assert json_safe([1, 2]) == "<list of 2 items>"
    assert len(json_safe("x" * 1000)) == 203
    assert json_safe(2.5) == 2.5


def test_rows_are_read_in_the_models_column_order_even_with_one_feature() -> None:
    from service.api import dict_reader, row_reader

    features = HouseFeatures.model_validate_json(json.dumps(ROW))
    assert row_reader(["Longitude", "MedInc"])(features) == (-118.25, 3.5)
    assert row_reader(["HouseAge"])(features) == (25,)
    assert dict_reader(["Longitude", "MedInc"])(ROW) == (-118.25, 3.5)
    assert dict_reader(["HouseAge"])(ROW) == (25,)


BAD_VALUES: list[Any] = ["3.5", True, None, -5.0, 1e6, [1.0], {"v": 1.0}]
BATCH_BODIES: list[str] = [
    json.dumps({"rows": [ROW]}),
    json.dumps({"rows": [ROW, {**ROW, "MedInc": 0, "Population": 3}]}),
    json.dumps({"rows": [ROW] * 5}),
    json.dumps({"rows": [ROW] * 6}),  # over the limit below
    json.dumps({"rows": []}),
    json.dumps({"rows": ROW}),
    json.dumps({"rows": [[*ROW.values()]]}),
    json.dumps({"rows": [ROW, 1.0]}),
    json.dumps({"rows": [ROW], "extra": 1}),
    json.dumps({}),
    json.dumps([ROW]),
    json.dumps(ROW),
    '{"rows": [' + json.dumps(ROW).replace("3.5", "NaN") + "]}",
    '{"rows": [' + json.dumps(ROW).replace("3.5", "1e999") + "]}",
    '{"rows": [',
    "",
    *(json.dumps({"rows": [ROW, {**ROW, name: bad}]}) for name in FEATURES for bad in BAD_VALUES),
    *(json.dumps({"rows": [{k: v for k, v in ROW.items() if k != name}]}) for name in FEATURES),
    json.dumps({"rows": [{**ROW, "Bedrooms": 3}]}),
]


@pytest.mark.parametrize("extra", [None, "ignore"])
def test_the_fast_batch_check_accepts_exactly_what_the_batch_model_accepts(extra: str | None) -> None:
    # service/api.py checks a batch with the dict validator first and trusts it when it accepts.
    context = {MAX_ROWS_CONTEXT: 5}
    accepted = rejected = 0
    for body in BATCH_BODIES:
        try:
            documented = BatchRequest.model_validate_json(body, extra=extra, context=context)  # type: ignore[arg-type]
        except ValidationError:
            with pytest.raises(ValidationError):
                MODELS.batch_rows.validate_json(body, extra=extra, context=context)  # type: ignore[arg-type]
            rejected += 1
            continue
        fast = MODELS.batch_rows.validate_json(body, extra=extra, context=context)  # type: ignore[arg-type]
        assert fast == documented.model_dump(), body
        accepted += 1
    assert accepted >= 3
    assert rejected >= 60
