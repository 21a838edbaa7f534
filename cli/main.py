"""The ``tabula`` command line: one entry point, a subcommand per job.

Exit codes: 0 success, 1 unexpected failure, 2 bad parameters, 3 bad data, 4 registry/MLflow
failure, 5 promotion or release rejected, 6 cluster/Helm/image/serving failure, 7 timeout,
130 interrupted.
"""

from __future__ import annotations

import typer

from cli import images, load, release, service, training

app = typer.Typer(
    name="tabula",
    help="Train, register, package, serve and release the house-price model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help text is plain: "[env: X]" hints must not be read as rich markup.
    rich_markup_mode=None,
)
# Each module keeps its heavy imports inside its commands, so ``tabula --help`` stays fast.
for module in (training, service, images, load, release):
    module.register(app)
