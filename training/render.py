"""Terminal rendering of training outcomes, shared by ``tabula train`` and ``tabula pipeline``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from training.pipeline import TrainingReport
    from training.registry import Decision


def candidates_table(report: TrainingReport) -> Table:
    """All candidates of a training session, best first, the registered one starred."""
    from training.tasks import LABELS

    metric = report.metric
    reported = list(report.best.test)
    table = Table(title=f"Candidates (data digest {report.data_digest})")
    columns = ["candidate", f"val {metric.label}", *(f"test {LABELS[name]}" for name in reported)]
    for column in (*columns, "fit s", "ms/row", "size KB"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    ranked = sorted(report.candidates, key=lambda result: result.validation[metric.name])
    for result in reversed(ranked) if metric.higher_is_better else ranked:
        marker = " *" if result is report.best else ""
        table.add_row(
            result.name + marker,
            f"{result.validation[metric.name]:.4f}",
            *(f"{result.test[name]:.4f}" for name in reported),
            f"{result.fit_seconds:.2f}",
            f"{result.latency_seconds * 1000:.3f}",
            f"{result.size_bytes / 1024:.0f}",
        )
    return table


def print_decision(console: Console, decision: Decision, model_name: str) -> None:
    """One line saying what the promotion gate did and why."""
    verb = {"first": "promoted", "promoted": "promoted", "forced": "promoted (forced)"}.get(decision.outcome)
    if verb:
        console.print(f"[green]{model_name} v{decision.version} {verb} to production[/]: {decision.reason}")
    elif decision.outcome == "unchanged":
        console.print(f"{model_name} v{decision.version} is already production")
    else:
        console.print(f"[yellow]{model_name} v{decision.version} not promoted[/]: {decision.reason}")
