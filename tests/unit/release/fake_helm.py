"""A recording FAKE of :class:`release.helm.Helm` for the paths that need a live cluster.

``helm upgrade --install``, ``rollback``, ``get values`` and ``status`` cannot run against the fake
API server, so this keeps the release's revisions in memory: each upgrade merges its overrides over
the previous user values, as ``--reset-then-reuse-values`` does. ``template`` runs the REAL helm.
Callbacks let a test apply the desired state to the fake API server when it changes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from release import chart
from release.config import PROJECT_ROOT
from release.helm import Helm

CHART_DEFAULTS: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "charts/tabula/values.yaml").read_text())


class RecordingFakeHelm(Helm):
    def __init__(self, real: Helm, installed: dict[str, Any] | None) -> None:
        super().__init__(real.binary, real.namespace, real.kube_context)
        self.revisions: list[dict[str, Any]] = [copy.deepcopy(installed)] if installed is not None else []
        self.calls: list[tuple[str, Any]] = []
        self.on_change: Callable[[dict[str, Any]], None] | None = None
        # Post-processing of what the real `helm template` renders: (computed values, objects) -> objects.
        self.rendered: Callable[[dict[str, Any], list[dict[str, Any]]], list[dict[str, Any]]] | None = None

    def template(
        self,
        release: str,
        chart_path: Path,
        base: dict[str, Any],
        values_files: Sequence[Path],
        overrides: dict[str, Any],
    ) -> list[dict[str, Any]]:
        objects = super().template(release, chart_path, base, values_files, overrides)
        if self.rendered is None:
            return objects
        return self.rendered(chart.merge(CHART_DEFAULTS, base, overrides), objects)

    def user_values(self) -> dict[str, Any]:
        return copy.deepcopy(self.revisions[-1])

    def upgrade_install(
        self, release: str, chart_path: Path, values_files: Sequence[Path], overrides: dict[str, Any]
    ) -> int:
        self.calls.append(("upgrade", copy.deepcopy(overrides)))
        base = self.revisions[-1] if self.revisions else {}
        self.revisions.append(chart.merge(base, overrides))
        self._changed()
        return len(self.revisions)

    def rollback(self, release: str, revision: int | None) -> None:
        self.calls.append(("rollback", revision))
        target = revision or len(self.revisions) - 1
        self.revisions.append(copy.deepcopy(self.revisions[target - 1]))
        self._changed()

    def test(self, release: str) -> str:
        self.calls.append(("test", release))
        return f"NAME: {release}\nTEST SUITE:     {release}-test-prediction\nPhase:          Succeeded\n"

    def get_values(self, release: str, *, computed: bool) -> dict[str, Any] | None:
        if not self.revisions:
            return None
        return chart.merge(CHART_DEFAULTS, self.user_values()) if computed else self.user_values()

    def revision(self, release: str) -> int | None:
        return len(self.revisions) or None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(chart.merge(CHART_DEFAULTS, self.user_values()))
