"""KServe's own REST client against a server speaking the Open Inference Protocol; prints one JSON object.

Runs in the KServe client's virtual environment (``kserve`` pins conflict with the project's), so it
imports nothing from the project. Usage: ``python kserve_client.py BASE_URL MODEL REQUEST_JSON``,
where the request names the feature columns and the rows to predict.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ServerMetadataResponse


def outputs(response: Any) -> dict[str, Any]:
    """Every output as a list, BYTES decoded to text."""
    read: dict[str, Any] = {}
    for output in response.outputs:
        values = output.as_numpy()
        if values.dtype == object:
            values = np.array([v.decode() if isinstance(v, bytes) else v for v in values.reshape(-1)])
        read[output.name] = values.tolist()
    return read


async def status_of(
    client: InferenceRESTClient, base_url: str, model: str, request: InferRequest
) -> list[Any]:
    """The status code and error text a bad request gets (KServe raises HTTPStatusError for it)."""
    try:
        await client.infer(base_url, request, model_name=model)
    except httpx.HTTPStatusError as error:
        return [error.response.status_code, error.response.json()["error"]]
    return [200, ""]


def tensor_request(model: str, rows: np.ndarray, binary: bool, datatype: str = "FP64") -> InferRequest:
    infer_input = InferInput(name="input", shape=list(rows.shape), datatype=datatype)
    infer_input.set_data_from_numpy(rows, binary_data=binary)
    return InferRequest(model_name=model, infer_inputs=[infer_input], request_id="kserve-1")


async def main(base_url: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
    features: list[str] = request["features"]
    rows = np.asarray(request["rows"], dtype=np.float64)
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        result: dict[str, Any] = {
            "live": await client.is_server_live(base_url),
            "ready": await client.is_server_ready(base_url),
            "model_ready": await client.is_model_ready(base_url, model),
        }
        # The REST client has no metadata call: KServe's own response models read our metadata.
        async with httpx.AsyncClient(base_url=base_url) as http:
            server = (await http.get("/v2")).json()
            metadata = (await http.get(f"/v2/models/{model}")).json()
        result["server"] = ServerMetadataResponse.model_validate(server).model_dump()
        result["metadata"] = ModelMetadataResponse.model_validate(metadata).model_dump()

        # From numpy, KServe sends JSON data; raw bytes when asked for binary data.
        for name, binary in (("json", False), ("binary", True)):
            response = await client.infer(base_url, tensor_request(model, rows, binary), model_name=model)
            result[name] = {"id": response.id, "outputs": outputs(response)}
        columns = []
        for index, feature in enumerate(features):
            column = InferInput(name=feature, shape=[rows.shape[0]], datatype="FP64")
            column.set_data_from_numpy(rows[:, index], binary_data=False)
            columns.append(column)
        by_column = InferRequest(model_name=model, infer_inputs=columns, parameters={"content_type": "pd"})
        result["columns"] = outputs(await client.infer(base_url, by_column, model_name=model))

        nan_rows = rows.copy()
        nan_rows[0, 0] = np.nan
        result["errors"] = {
            "shape": await status_of(client, base_url, model, tensor_request(model, rows[:, :-1], True)),
            "datatype": await status_of(
                client, base_url, model, tensor_request(model, rows.astype(np.int8), True, "INT8")
            ),
            # orjson writes NaN as null in JSON: the server sees a null where a number belongs.
            "nan_json": await status_of(client, base_url, model, tensor_request(model, nan_rows, False)),
            "nan_binary": await status_of(client, base_url, model, tensor_request(model, nan_rows, True)),
        }
    finally:
        await client.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))))
