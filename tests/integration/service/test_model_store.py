"""`tabula build`'s import into the BentoML model store (service/packaging.py `import_model`): an entry
left by an older version of the code, without an artifact the service now needs, is imported again
instead of being packaged into a Bento that is never ready."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.service.conftest import PROJECT_ROOT, RegisteredModel
from tests.support import service_env

pytestmark = [pytest.mark.integration]

# Runs in a child process so that BentoML takes the test's own store (BENTOML_HOME) from its start.
SCRIPT = """
import pathlib, sys
import bentoml
from service.packaging import import_model, resolve

resolved = resolve(sys.argv[1], "production", None)
tag = import_model(resolved, None)
folder = pathlib.Path(bentoml.models.get(tag).path)
(folder / "contract.json").unlink()  # as the code before the model contract left its entries
again = import_model(resolved, None)
print(again == tag, (pathlib.Path(bentoml.models.get(again).path) / "contract.json").is_file())
"""


def test_a_store_entry_missing_an_artifact_is_imported_again(
    registered_model: RegisteredModel, tmp_path: Path
) -> None:
    env = {**service_env(tmp_path / "bentoml"), "MLFLOW_TRACKING_URI": registered_model.tracking_uri}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, registered_model.name],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "True True"
