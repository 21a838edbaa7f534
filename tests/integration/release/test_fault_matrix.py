"""The native release loop against REAL tracks (tests/integration/release/fleet.py): a good candidate is
promoted, a candidate whose predictions are shifted is caught by the chart's prediction-shift query,
one that errs by success-rate and a slow one by latency-p95.

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

from release.analysis import analysis_spec, fill
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
RATE = 8.0  # requests/s on each track
CASES: dict[str, tuple[dict[str, str], str | None, float]] = {
    # case: (faults of the candidate, None = promoted or the metric that rejects it, candidate's rate)
    "good": ({}, None, RATE),
    "shifted": ({"shift": SHIFT}, "prediction-shift", RATE),
    "erroring": ({"raise_rate": "0.1"}, "success-rate", RATE),  # 1 prediction in 10 raises: 500
    # 0.3s per prediction on one worker: about 3 requests/s at most, so 2/s queue nothing and time
    # nothing out, and p95 lands above the 0.25s objective.
    "slow": ({"delay_seconds": "0.3"}, "latency-p95", 2.0),
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


# The service of this branch lets an exception of the predictor escape uncounted (BentoML then answers
# a plain 500 after 30 s): success-rate never sees it. Branch `service` fixes that (d59071e, "Every
# response is counted once"); once merged this case passes and the strict marker says so.
UNCOUNTED_FAULTS = pytest.mark.xfail(
    reason="predictor exceptions are not counted by housing_http_requests_total before service@d59071e",
    raises=AssertionError,
    strict=True,
)


@pytest.fixture(params=[pytest.param(c, marks=UNCOUNTED_FAULTS) if c == "erroring" else c for c in CASES])
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fleet(bentos: Bentos, case: str, tmp_path: Path) -> Iterator[tuple[Fleet, dict[str, Any]]]:
    """The stable and canary tracks of the native canary, as the chart labels them, with traffic."""
    settings = ReleaseSettings(namespace=NAMESPACE)
    objects = Helm.from_settings(settings).template(
        settings.release_name, settings.chart, installed(bentos), [], {}
    )
    scrape = Scrape.of_chart(objects)
    spec = analysis_spec(objects, f"{settings.release_name}-analysis")
    assert spec is not None
    faults, _, rate = CASES[case]
    tracks = [
        Track("stable", bentos.tags["stable"]),
        Track("canary", bentos.tags["candidate"], faults=faults, rate=rate),
    ]
    with running_fleet(tracks, bentos.home, tmp_path / "fleet", scrape, RATE) as running:
        running.wait_for_traffic(["stable", "canary"])
        yield running, spec


def test_native_release_judges_the_candidates_real_predictions(
    fake: FakeKube, bentos: Bentos, fleet: tuple[Fleet, dict[str, Any]], case: str
) -> None:
    running, spec = fleet
    assert running.scrape.track_label == spec["trackLabel"] == "housing_io_track"
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
        retry=True,
    )
    _, failing, _ = CASES[case]
    training = training_of(bentos)
    client = registry.connect(training)
    # Each case starts from v1 in production, whatever an earlier case did to v2.
    client.set_registered_model_alias(MODEL_NAME, registry.PRODUCTION, bentos.versions.versions["stable"])
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
    # The evidence query counts what each track answered while Prometheus watched it.
    seconds = running.seconds_seen()
    statuses = {name: dict(t.statuses) for name, t in running.traffic.items()}
    counted, answered = {}, {}
    for track in running.traffic:
        promql = fill(spec["evidence"]["requestsQuery"], {"track": track, "range": f"{seconds}s"})
        answered[track] = running.answered(track)
        (sample,) = running.query(promql)
        counted[track] = float(sample["value"][1])
    # Up to two scrape intervals of requests are not yet scraped, or extrapolated past the range.
    for track, count in counted.items():
        assert abs(count - answered[track]) <= 0.1 * answered[track] + 3 * RATE, (counted, answered)
    record_figures(
        f"fault_matrix_{case}",
        {
            "measurements": measured,
            "statuses": statuses,
            "evidence": {"seconds": seconds, "counted": counted, "answered": answered},
        },
    )
    assert set(statuses["stable"]) == {200}, statuses
    if failing in (None, "prediction-shift"):
        assert set(statuses["canary"]) == {200}, statuses
    if failing == "success-rate":
        assert 500 in statuses["canary"], statuses
