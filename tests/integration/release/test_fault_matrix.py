"""The native release loop against REAL tracks (tests/integration/release/fleet.py): a good candidate is
promoted, a candidate whose predictions are shifted is caught by the chart's prediction-shift query.

Both tracks serve Bentos of two registered versions of one model (same data, same seed), so the good
candidate differs from stable only in its pods. The shifted candidate is that good Bento with
HOUSING_TEST_FAULT_SHIFT (tests/faults/sitecustomize.py): as fast and as error-free as stable, only its
predictions give it away. The loop is the one of release/loop.py with its queries read from the
chart's analysis ConfigMap; the Kubernetes API and Helm's cluster side are the fakes of
tests/integration/release/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from release.config import ReleaseSettings
from release.errors import ReleaseRejectedError
from release.helm import Helm
from release.loop import ReleaseRequest, release
from tests.integration.release.conftest import NAMESPACE, cluster_with, play_deployments
from tests.integration.release.fleet import Bentos, Fleet, Scrape, Track, build_bentos, running_fleet
from tests.integration.reliability.harness import MODEL_NAME, record_figures
from tests.unit.release.fake_kube import FakeKube
from training import registry
from training.config import TrainingSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPOSITORY = "localhost/housing-service"
NEW_IMAGE = f"{REPOSITORY}:2-bbb"
SHIFT = "1.0"  # $100k added to every prediction of the shifted candidate
# Four measurements two seconds apart over a 30s window, none may fail.
ANALYSIS = {"interval": "2s", "count": 4, "initialDelay": "2s", "failureLimit": 0, "window": "30s"}
CASES = {
    # case: (faults of the candidate, expected outcome: None = promoted, else the failing metric)
    "good": ({}, None),
    "shifted": ({"shift": SHIFT}, "prediction-shift"),
}


@pytest.fixture(scope="module")
def bentos(tmp_path_factory: pytest.TempPathFactory) -> Bentos:
    """v1 (production) and v2 of one model, each built into a Bento."""
    built = build_bentos(tmp_path_factory.mktemp("fault-matrix"), {"stable": 0.0, "candidate": 0.0})
    client = registry.connect(training_of(built))
    client.set_registered_model_alias(MODEL_NAME, registry.PRODUCTION, built.versions.versions["stable"])
    return built


def training_of(bentos: Bentos) -> TrainingSettings:
    return TrainingSettings(MLFLOW_TRACKING_URI=bentos.versions.tracking_uri, model_name=MODEL_NAME)


def installed(bentos: Bentos) -> dict[str, Any]:
    stable = bentos.versions.versions["stable"]
    return {
        "image": {"repository": REPOSITORY, "tag": f"{stable}-aaa"},
        "model": {"name": MODEL_NAME, "version": stable},
        "rollout": {"strategy": "canary", "provider": "native", "analysis": ANALYSIS},
    }


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fleet(bentos: Bentos, case: str, tmp_path: Path) -> Iterator[tuple[Fleet, Scrape]]:
    """The stable and canary tracks of the native canary, as the chart labels them, with traffic."""
    settings = ReleaseSettings(namespace=NAMESPACE)
    objects = Helm.from_settings(settings).template(
        settings.release_name, settings.chart, installed(bentos), [], {}
    )
    scrape = Scrape.of_chart(objects)
    faults, _ = CASES[case]
    tracks = [
        Track("stable", bentos.tags["stable"]),
        Track("canary", bentos.tags["candidate"], faults=faults),
    ]
    with running_fleet(tracks, bentos.home, tmp_path / "fleet", scrape) as running:
        running.wait_for_traffic(["stable", "canary"])
        yield running, scrape


def test_native_release_judges_the_candidates_real_predictions(
    fake: FakeKube, bentos: Bentos, fleet: tuple[Fleet, Scrape], case: str
) -> None:
    running, scrape = fleet
    assert scrape.track_label == "housing_io_track"
    candidate = bentos.versions.versions["candidate"]
    lines: list[str] = []
    target, helm = cluster_with(installed(bentos), lines, prometheus_url=running.prometheus)
    play_deployments(fake, target, helm)
    request = ReleaseRequest(
        version=candidate,
        strategy="canary",
        provider="native",
        image=NEW_IMAGE,
        git_sha=None,
        auto_promote=True,
        retry=False,
    )
    _, failing = CASES[case]
    training = training_of(bentos)
    client = registry.connect(training)
    if failing is None:
        assert release(target, training, request) == candidate
    else:
        with pytest.raises(ReleaseRejectedError, match=f"metric '{failing}' failed"):
            release(target, training, request)
        assert helm.calls[-1] == ("rollback", 1)
    production = registry.alias_version(client, MODEL_NAME, registry.PRODUCTION)
    assert production is not None
    assert str(production.version) == (candidate if failing is None else bentos.versions.versions["stable"])
    measured = [line for line in lines if line.startswith("analysis ")]
    assert measured, lines
    # Every measurement had data: the tracks were told apart by their target label alone.
    assert not [line for line in measured if "no data" in line], measured
    statuses = {name: dict(t.statuses) for name, t in running.traffic.items()}
    record_figures(f"fault_matrix_{case}", {"measurements": measured, "statuses": statuses})
    assert all(set(counts) == {200} for counts in statuses.values()), statuses
