"""A stand-in for the housing service with its API shape, for load-test integration tests.

Run as ``python fake_service.py MODE PORT``: it serves /livez, /predict
and /predict/batch on 127.0.0.1:PORT.
Modes: ``ok`` answers at once; ``slow`` waits SLOW_SECONDS per request; ``no-prediction``
answers 200 without a prediction (a broken body the locustfile must count as a failure).
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
MODES = ("ok", "slow", "no-prediction")


def make_app(mode: str) -> Starlette:
    async def livez(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def predict(request: Request) -> JSONResponse:
        row = await request.json()
        if mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if mode == "no-prediction":
            return JSONResponse({"model_name": "housing-price", "warnings": []})
        return JSONResponse({"prediction": row["MedInc"] / 2.0, "model_name": "housing-price"})

    async def predict_batch(request: Request) -> JSONResponse:
        rows = (await request.json())["rows"]
        if mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if mode == "no-prediction":
            return JSONResponse({"count": len(rows)})
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
