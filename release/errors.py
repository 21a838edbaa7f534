"""Errors of the cluster side; each carries one readable line and the CLI's exit code.

They extend :class:`training.errors.TrainingError`, so ``housing train --k8s`` reports them like any
other training failure.
"""

from __future__ import annotations

from training.errors import TrainingError


class ReleaseError(TrainingError):
    """A cluster, Helm or image operation that failed in a way the user can act on."""

    exit_code = 6


class ClusterTimeoutError(ReleaseError):
    """Something did not reach the awaited state in time; the message says what is still running."""

    exit_code = 7


class ReleaseRejectedError(TrainingError):
    """The rollout's analysis failed or an operator aborted it: the new version was rolled back."""

    exit_code = 5
