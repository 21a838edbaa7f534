"""How a failure leaves the ``tabula`` CLI: one readable line on stderr and a meaningful exit code.

The one place exit codes are mapped: every command is wrapped in :func:`handle_errors`, which turns a
:class:`contracts.errors.ProductError` into its ``exit_code``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from contracts.errors import ProductError

P = ParamSpec("P")
R = TypeVar("R")

# Long messages stay on one line when piped (rich assumes 80 columns without a terminal).
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str, code: int) -> typer.Exit:
    """Print one readable line to stderr and return the exit to raise."""
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Domain errors (:class:`ProductError` and its subclasses) become one line and their exit code."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ProductError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper
