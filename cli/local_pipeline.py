"""``tabula pipeline``: the whole local flow for one example (housing by default), step after step.

data -> train -> register -> promote -> build the Bento -> serve locally -> sample predictions
-> a short Locust run, then where to look. Every step reuses the command that does it alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from rich.console import Console
from rich.table import Table

from contracts.errors import ProductError
from contracts.examples import Example
from contracts.model import Task
from training.config import TrainingSettings
from training.render import candidates_table, print_decision

if TYPE_CHECKING:
    from training.pipeline import TrainingReport

READY_TIMEOUT_SECONDS = 180.0


class ServingError(ProductError):
    """The packaged service could not be built or did not become ready."""

    exit_code = 6


@dataclass(frozen=True)
class PipelineOptions:
    host: str
    port: int
    load_seconds: int
    users: int
    report_dir: Path
    keep_serving: bool


def _step(console: Console, number: int, title: str) -> None:
    console.rule(f"[bold]{number}/6 {title}")


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> float:
    """Seconds until ``/readyz`` answers 200 (model loaded and golden set reproduced)."""
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_SECONDS:
        if process.poll() is not None:
            raise ServingError(f"the service exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise ServingError(f"the service was not ready within {READY_TIMEOUT_SECONDS:.0f}s; see {log_path}")


@contextmanager
def serving(bento_tag: str, options: PipelineOptions, console: Console) -> Iterator[str]:
    """``bentoml serve`` in the background for the block; stopped with SIGTERM at its end."""
    options.report_dir.mkdir(parents=True, exist_ok=True)
    log_path = options.report_dir / "service.log"
    url = f"http://{options.host}:{options.port}"
    command = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", options.host]
    command += ["--port", str(options.port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - fixed argv
        try:
            seconds = _wait_ready(url, process, log_path)
            console.print(f"serving {bento_tag} at {url} (ready in {seconds:.1f}s; logs in {log_path})")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


class AnswerView(Protocol):
    """The columns a task's answer fills in the sample-predictions table."""

    headers: tuple[str, ...]

    def cells(self, answer: dict[str, Any]) -> tuple[str, ...]: ...


class RegressionView:
    headers: tuple[str, ...] = ("prediction",)

    def cells(self, answer: dict[str, Any]) -> tuple[str, ...]:
        return (f"{answer['prediction']:.4g}",)


class ClassificationView:
    headers: tuple[str, ...] = ("prediction", "probability")

    def cells(self, answer: dict[str, Any]) -> tuple[str, ...]:
        label = answer["prediction"]
        return (label, f"{answer['probabilities'][label]:.3f}")


VIEWS: dict[Task, AnswerView] = {"regression": RegressionView(), "classification": ClassificationView()}
SHOWN_FEATURES = 4  # columns of the table given to the inputs; the rest are in the request


def sample_predictions(url: str, example: Example, console: Console, rows: int = 3) -> list[dict[str, Any]]:
    """Send a few of the example's held-out rows to ``/predict`` and print what came back."""
    from load.answers import ANSWERS
    from load.payloads import example_rows

    task = example.spec.task
    view = VIEWS[task]
    shown = example.spec.feature_names[:SHOWN_FEATURES]
    table = Table(title=f"Sample predictions from {url}/predict")
    for column in (*shown, *view.headers, "model"):
        table.add_column(column, justify="right")
    answers = []
    for row in example_rows(example)[:rows]:
        response = httpx.post(f"{url}/predict", json=row, timeout=10)
        if response.status_code != 200:
            raise ServingError(f"/predict answered {response.status_code}: {response.text[:300]}")
        answer = response.json()
        problem = ANSWERS[task].single(answer) if isinstance(answer, dict) else "not a JSON object"
        if problem is not None:
            raise ServingError(f"/predict gave no {task} answer ({problem}): {response.text[:300]}")
        answers.append(answer)
        inputs = (f"{row[name]:.4g}" for name in shown)
        table.add_row(*inputs, *view.cells(answer), f"{answer['model_name']} v{answer['model_version']}")
    console.print(table)
    return answers


def load_test(url: str, example: str, options: PipelineOptions, console: Console) -> bool:
    from load.config import LoadSettings
    from load.runner import run_load_test

    settings = LoadSettings(
        url=url,
        example=example,
        users=options.users,
        spawn_rate=options.users,
        run_time=f"{options.load_seconds}s",
        out=options.report_dir / "loadtest",
    )
    summary = run_load_test(settings)
    table = Table(title=f"Locust: {options.users} users for {options.load_seconds}s")
    for column in ("gate", "result", "measured"):
        table.add_column(column)
    for gate in summary.gates:
        table.add_row(gate.gate, "[green]pass" if gate.passed else "[red]breach", gate.message)
    console.print(table)
    return summary.passed


def train_and_promote(settings: TrainingSettings, console: Console) -> TrainingReport:
    """Steps 1 and 2: the example's data, every candidate trained and registered, the gate's decision."""
    from training.pipeline import load_settings_dataset, train

    example = settings.resolved_example.spec
    _step(console, 1, "data")
    dataset = load_settings_dataset(settings)
    console.print(
        f"example {example.name} ({example.task}): {len(dataset.features)} rows from {dataset.source} "
        f"(digest {dataset.digest})"
    )

    _step(console, 2, "train, register, promote")
    report = train(settings, lambda result: console.print(f"  trained {result.name}"), dataset)
    console.print(candidates_table(report))
    print_decision(console, report.decision, settings.model_name)
    return report


def run(settings: TrainingSettings, options: PipelineOptions, console: Console) -> None:
    from service.packaging import PackagingError, build_bento

    train_and_promote(settings, console)

    _step(console, 3, "package the production model as a Bento")
    try:
        bento_tag = build_bento(settings.model_name, "production", settings.tracking_uri)
    except PackagingError as exc:
        raise ServingError(f"packaging failed: {exc}") from exc
    console.print(f"built {bento_tag}")

    _step(console, 4, "serve locally")
    with serving(bento_tag, options, console) as url:
        _step(console, 5, "sample predictions")
        sample_predictions(url, settings.resolved_example, console)
        _step(console, 6, "short load test")
        passed = load_test(url, settings.example, options, console)
        console.rule("[bold]where to look")
        store = settings.tracking_uri
        ui = "" if store.startswith("http") else f"uv run mlflow ui --backend-store-uri {store}  # then "
        console.print(f"MLflow UI:   {ui}{store if store.startswith('http') else 'http://127.0.0.1:5000'}")
        console.print(f"Swagger UI:  {url}/docs")
        console.print(f"Metrics:     {url}/metrics")
        console.print(f"Model card:  {url}/model")
        console.print(f"Locust:      {options.report_dir / 'loadtest' / 'report.html'}")
        if not passed:
            console.print("[yellow]the load test breached an SLO gate on this machine (see the table)")
        if options.keep_serving:
            console.print(f"[bold]serving at {url}; press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping")


def default_keep_serving() -> bool:
    """Keep the service up for a person at a terminal; stop it for scripts and CI."""
    return sys.stdin.isatty() and os.environ.get("CI", "").lower() not in {"1", "true"}
