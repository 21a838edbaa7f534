"""A stand-in for the service with its API shape, for load-test integration tests.

Run as ``python fake_service.py MODE PORT``: it serves /livez, /predict
and /predict/batch on 127.0.0.1:PORT.
Modes: ``ok`` answers at once; ``slow`` waits SLOW_SECONDS per request; ``no-prediction``
answers 200 without a prediction (a broken body the locustfile must count as a failure).
``classifier`` answers like the service serving the iris example: a label with its class probabilities
per row (the classification shapes of ``/predict`` and ``/predict/batch`` in the branches' contract,
CONTRACT3 "Classification in the service"); ``classifier-no-probabilities`` leaves the probabilities
out (a broken body).
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

SLOW_SECONDS = 0.25
MODES = ("ok", "slow", "no-prediction", "classifier", "classifier-no-probabilities")
CLASSES = ("setosa", "versicolor", "virginica")


def classify(row: dict[str, float]) -> tuple[str, dict[str, float]]:
    """Iris by petal length, with a probability for every class: ``(label, {label: probability})``."""
    index = 0 if row["petal_length"] < 2.5 else 1 if row["petal_length"] < 4.9 else 2
    probabilities = {label: 0.9 if i == index else 0.05 for i, label in enumerate(CLASSES)}
    return CLASSES[index], probabilities


def make_app(mode: str) -> Starlette:
    async def livez(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def predict(request: Request) -> JSONResponse:
        row = await request.json()
        if mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if mode == "no-prediction":
            return JSONResponse({"model_name": "housing-price", "warnings": []})
        if mode.startswith("classifier"):
            label, probabilities = classify(row)
            answer: dict[str, object] = {"prediction": label, "model_name": "iris-species"}
            if mode == "classifier":
                answer["probabilities"] = probabilities
            return JSONResponse(answer)
        return JSONResponse({"prediction": row["MedInc"] / 2.0, "model_name": "housing-price"})

    async def predict_batch(request: Request) -> JSONResponse:
        rows = (await request.json())["rows"]
        if mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if mode == "no-prediction":
            return JSONResponse({"count": len(rows)})
        if mode.startswith("classifier"):
            labels, probabilities = zip(*(classify(row) for row in rows), strict=True)
            answers: dict[str, object] = {"predictions": list(labels), "count": len(rows)}
            if mode == "classifier":
                answers["probabilities"] = list(probabilities)
            return JSONResponse(answers)
        return JSONResponse({"predictions": [row["MedInc"] / 2.0 for row in rows], "count": len(rows)})

    return Starlette(
        routes=[
            Route("/livez", livez),
            Route("/predict", predict, methods=["POST"]),
            Route("/predict/batch", predict_batch, methods=["POST"]),
        ]
    )


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {MODES}")
    uvicorn.run(make_app(mode), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
