"""Errors of the cluster side; each carries one readable line and the CLI's exit code."""

from __future__ import annotations

from contracts.errors import ProductError


class ReleaseError(ProductError):
    """A cluster, Helm or image operation that failed in a way the user can act on."""

    exit_code = 6


class ClusterTimeoutError(ReleaseError):
    """Something did not reach the awaited state in time; the message says what is still running."""

    exit_code = 7


class ReleaseRejectedError(ProductError):
    """The rollout's analysis failed or an operator aborted it: the new version was rolled back."""

    exit_code = 5
