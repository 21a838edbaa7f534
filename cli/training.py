"""Training commands of the ``tabula`` CLI: ``data``, ``train``, ``promote``, ``models`` and ``pipeline``."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.exits import error_console, handle_errors
from cli.release import (
    ContextOption,
    HelmReleaseOption,
    NamespaceOption,
    ProviderName,
    StrategyName,
    TimeoutOption,
    ValuesOption,
)
from contracts.errors import ConfigError
from training.config import TrainingSettings
from training.render import candidates_table, print_decision

# Tables stay readable when piped (rich assumes 80 columns without a terminal).
console = Console(width=None if sys.stdout.isatty() else 120)
logger = logging.getLogger(__name__)

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="CSV/CSV.gz to train on [env: TABULA_DATA_PATH]; default: download."),
]
ExampleOption = Annotated[
    str | None,
    typer.Option("--example", help="Example folder: housing, iris, or a path [env: TABULA_EXAMPLE]."),
]
ModelNameOption = Annotated[
    str | None, typer.Option("--model-name", help="Registered model [env: TABULA_MODEL_NAME].")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def settings_from(**overrides: Any) -> TrainingSettings:
    """Settings from the environment, with the options the user gave on the command line on top."""
    from contracts.settings import settings_with_overrides
    from training import logs

    settings = settings_with_overrides(TrainingSettings, **overrides)
    logs.configure(settings.log_format)
    return settings


@handle_errors
def data(
    data_path: DataOption = None,
    example: ExampleOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the validated frame (features + target) to this CSV/CSV.gz.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Load and validate the data; show its size, digest, split and feature ranges."""
    from contracts.params import load_params
    from training.pipeline import load_settings_dataset, load_split

    settings = settings_from(data_path=data_path, example=example)
    dataset = load_settings_dataset(settings)
    _, split, _ = load_split(settings, load_params(settings.params_file), dataset)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        dataset.frame.to_csv(out, index=False, float_format="%.10g")
    summary: dict[str, Any] = {
        "example": settings.resolved_example.spec.name,
        "source": dataset.source,
        "rows": len(dataset.features),
        "digest": dataset.digest,
        "split": {"train": len(split.x_train), "validation": len(split.x_val), "test": len(split.x_test)},
        "describe": dataset.frame.describe().loc[["mean", "min", "max"]].to_dict(),
        **(
            {"classes": {str(k): int(v) for k, v in dataset.target.value_counts().sort_index().items()}}
            if settings.resolved_example.spec.task == "classification"
            else {}
        ),
    }
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    table = Table(title=f"{summary['rows']} rows from {dataset.source} (digest {dataset.digest})")
    for column in ("column", "mean", "min", "max"):
        table.add_column(column, justify="left" if column == "column" else "right")
    for column, stats in summary["describe"].items():
        table.add_row(column, f"{stats['mean']:.6f}", f"{stats['min']:.5g}", f"{stats['max']:.5g}")
    console.print(table)
    if "classes" in summary:
        console.print(f"classes of {settings.target}: {summary['classes']}")
    console.print(f"split: {summary['split']}" + (f"; written to {out}" if out else ""))


@handle_errors
def train(
    data_path: DataOption = None,
    example: ExampleOption = None,
    model_name: ModelNameOption = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment [env: TABULA_EXPERIMENT].")
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("--params", help="Params YAML [env: TABULA_PARAMS_FILE].")
    ] = None,
    candidate: Annotated[
        list[str] | None, typer.Option("--candidate", "-c", help="Train only this candidate (repeatable).")
    ] = None,
    metrics_dir: Annotated[
        Path | None, typer.Option(help="Also write metrics.json here [env: TABULA_METRICS_DIR].")
    ] = None,
    as_json: JsonOption = False,
    if_changed: Annotated[
        bool,
        typer.Option(
            "--if-changed",
            help="Train only when the data digest differs from the champion's or drift is over threshold.",
        ),
    ] = False,
    k8s: Annotated[
        bool,
        typer.Option("--k8s", help="Run as the chart's training Job on the cluster [env: TABULA_RELEASE_*]"),
    ] = False,
) -> None:
    """Train every candidate, log each as an MLflow run, register the best, and run the promotion gate."""
    from training.pipeline import train as run_training

    settings = settings_from(
        data_path=data_path,
        example=example,
        model_name=model_name,
        experiment=experiment,
        params_file=params_file,
        candidates=candidate or None,
        metrics_dir=metrics_dir,
    )
    notes = error_console if as_json else console
    if k8s:
        from release.jobs import train_on_cluster

        outcome = train_on_cluster(
            settings,
            if_changed=if_changed,
            params_file=params_file,
            candidates=candidate,
            log=lambda line: notes.print(line, markup=False, highlight=False),
        )
        if as_json:
            sys.stdout.write(json.dumps(outcome, indent=2) + "\n")
        return
    if if_changed:
        from release.config import load_settings
        from release.retrain import should_train

        needed, why = should_train(settings, load_settings())
        notes.print(f"{'training' if needed else 'not training'}: {why}", markup=False, highlight=False)
        if not needed:
            return

    def progress(result: Any) -> None:
        if not as_json:
            from training.tasks import LABELS

            name = next(iter(result.test))
            console.print(
                f"  {result.name:<24} val {LABELS[name]} {result.validation[name]:.4f}  "
                f"test {LABELS[name]} {result.test[name]:.4f}  fit {result.fit_seconds:.1f}s  "
                f"run {result.run_id[:8]}"
            )

    if not as_json:
        source = settings.data_path or "its own data source"
        console.print(f"training example {settings.example} on {source} -> {settings.tracking_uri}")
    report = run_training(settings, on_candidate=progress)
    summary = report.summary()
    if settings.metrics_dir is not None:
        settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        (settings.metrics_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    console.print(candidates_table(report))
    registered = "registered as" if report.newly_registered else "identical to existing"
    console.print(
        f"best: {report.best.name}, {registered} {settings.model_name} v{report.version} (challenger)"
    )
    print_decision(console, report.decision, settings.model_name)


@handle_errors
def promote(
    version: Annotated[str | None, typer.Option("--version", "-v", help="Version to promote.")] = None,
    force: Annotated[bool, typer.Option(help="Skip the gate: promote even if not provably better.")] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Move production back to the champion it replaced.")
    ] = False,
    data_path: DataOption = None,
    example: ExampleOption = None,
    model_name: ModelNameOption = None,
) -> None:
    """Move the production alias: through the gate, by force, or back to the previous champion."""
    from training import pipeline, registry

    if rollback == (version is not None):
        raise ConfigError("give exactly one of --version N or --rollback")
    if force and rollback:
        raise ConfigError("--force goes with --version, not --rollback")
    settings = settings_from(data_path=data_path, example=example, model_name=model_name)
    if rollback:
        client = registry.connect(settings)
        previous, current = registry.rollback(client, settings.model_name)
        console.print(f"{settings.model_name}: production rolled back from v{previous} to v{current}")
        return
    assert version is not None  # noqa: S101 - guaranteed by the check above; narrows the type
    decision = pipeline.promote_version(settings, version, force=force)
    print_decision(console, decision, settings.model_name)
    if decision.outcome == "rejected":
        raise typer.Exit(5)


@handle_errors
def models(
    example: ExampleOption = None, model_name: ModelNameOption = None, as_json: JsonOption = False
) -> None:
    """List registered versions with their aliases, test metrics and promotion decisions."""
    from training import registry
    from training.tasks import LABELS, REPORTED

    settings = settings_from(example=example, model_name=model_name)
    reported = REPORTED[settings.resolved_example.spec.task]
    rows = registry.list_versions(registry.connect(settings), settings.model_name)
    if as_json:
        sys.stdout.write(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
        return
    table = Table(title=f"{settings.model_name} ({settings.tracking_uri})")
    for column in ("version", "aliases", "candidate", *(f"test {LABELS[name]}" for name in reported)):
        table.add_column(column)
    for column in ("decision", "run"):
        table.add_column(column)

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4f}"

    for row in rows:
        table.add_row(
            row.version,
            ", ".join(row.aliases),
            row.candidate,
            *(number(row.metrics.get(f"test_{name}")) for name in reported),
            row.decision,
            row.run_id[:8],
        )
    console.print(table)


@handle_errors
def pipeline(
    data_path: DataOption = None,
    example: ExampleOption = None,
    model_name: ModelNameOption = None,
    port: Annotated[int, typer.Option(help="Port of the local service.")] = 3000,
    load_seconds: Annotated[int, typer.Option(min=1, help="Duration of the closing load test.")] = 10,
    users: Annotated[int, typer.Option(min=1, help="Locust users in the closing load test.")] = 8,
    report_dir: Annotated[Path, typer.Option(help="Where logs and the Locust report go.")] = Path("reports"),
    keep_serving: Annotated[
        bool | None,
        typer.Option(
            "--keep-serving/--no-keep-serving",
            help="Keep the service up at the end (default: yes at a terminal, no in scripts).",
        ),
    ] = None,
    k8s: Annotated[
        bool,
        typer.Option(
            "--k8s",
            help="Run on the current cluster: training Job, image, deploy or release, helm test "
            "[env: TABULA_RELEASE_*].",
        ),
    ] = False,
    strategy: Annotated[StrategyName, typer.Option(help="--k8s: how a new version goes out.")] = "canary",
    provider: Annotated[ProviderName, typer.Option(help="--k8s: argo or native.")] = "argo",
    registry: Annotated[
        str | None, typer.Option(help="--k8s: image registry prefix [env: TABULA_RELEASE_REGISTRY].")
    ] = None,
    kind_cluster: Annotated[
        str | None, typer.Option(help="--k8s: load the image into this kind cluster instead of pushing.")
    ] = None,
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
    values: ValuesOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """The whole flow: data, train, register, promote, package, serve, predict, load test.

    Locally (default): embedded MLflow and `bentoml serve`. With --k8s, on the current cluster: the
    chart's training Job, then the first install or a canary/blue-green release of the new version
    with analysis, then `helm test` (the Locust SLO gate when loadTest.enabled).
    """
    if k8s:
        if data_path is not None:
            raise typer.BadParameter("is a local file; on the cluster, set the chart value training.env")
        from cli.release import run_pipeline_on_cluster

        run_pipeline_on_cluster(
            settings_from(example=example, model_name=model_name),
            strategy=strategy,
            provider=provider,
            registry=registry,
            kind_cluster=kind_cluster,
            namespace=namespace,
            helm_release=helm_release,
            kube_context=kube_context,
            values=values,
            timeout=timeout,
        )
        return
    from cli.local_pipeline import PipelineOptions, default_keep_serving, run

    settings = settings_from(data_path=data_path, example=example, model_name=model_name)
    options = PipelineOptions(
        host="127.0.0.1",
        port=port,
        load_seconds=load_seconds,
        users=users,
        report_dir=report_dir.resolve(),
        keep_serving=default_keep_serving() if keep_serving is None else keep_serving,
    )
    run(settings, options, console)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root CLI."""
    for command in (data, train, promote, models, pipeline):
        app.command()(command)
