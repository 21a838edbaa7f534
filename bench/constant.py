"""Transport ceiling for the benchmark: a bare Starlette app on uvicorn answering a constant.

``python -m bench.constant --port 8000`` serves ``POST /predict`` with a fixed JSON body,
without reading or validating the request: the fastest any Python HTTP service can be here.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"prediction": 2.0}'


async def predict(_: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(
    routes=[Route("/predict", predict, methods=["POST"]), Route("/livez", predict, methods=["GET"])]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
