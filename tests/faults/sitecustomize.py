"""Faults injected into a real `bentoml serve` of the service, for tests only.

Python imports ``sitecustomize`` from ``sys.path`` as it starts, so ``PYTHONPATH=tests/faults`` in a
server's environment brings this module into every process of `bentoml serve` (the server and each
worker inherit the environment). Where one of those processes imports ``service.model``, the served
model's predictor (``LoadedModel.predict``) and its golden-set check (``LoadedModel.golden_error``)
are wrapped as the variables below ask. Without any ``TABULA_TEST_FAULT_*`` variable nothing is
patched. The product code knows nothing of this.

``TABULA_TEST_FAULT_RAISE_RATE``     0-1: share of prediction calls that raise ``RuntimeError``,
                                      spread evenly (0.5: calls 2, 4, 6, ... of each worker raise).
``TABULA_TEST_FAULT_DELAY_SECONDS``  sleep before every prediction call. With the compiled
                                      predictor, calls of up to 32 rows run on the event loop, so
                                      the sleep blocks the worker, as a slow predictor would.
``TABULA_TEST_FAULT_SHIFT``          added to every prediction (units of $100k).
``TABULA_TEST_FAULT_NEVER_READY=1``  the golden set never reproduces: /readyz stays 503.
``TABULA_TEST_FAULT_CRASH_AFTER``    N: the worker answers N prediction calls, then exits at once
                                      (``os._exit``, like a kill) on the next one.

Prediction calls are counted per worker; micro-batching may answer several concurrent requests with
one call, so tests that count send requests one at a time. The golden-set check at start-up is not
a prediction call: it sees none of the raise, delay, shift and crash faults, so a faulty model still
becomes ready unless ``NEVER_READY`` says otherwise. A malformed or unknown variable stops the process
with a message on stderr, so that a mistyped fault cannot pass silently.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import ModuleType
from typing import Any

PREFIX = "TABULA_TEST_FAULT_"
TARGET_MODULE = "service.model"
# Exit code of an injected crash, distinct from Python's own (1) and from signals (128+n).
CRASH_EXIT_CODE = 86


@dataclass(frozen=True)
class Faults:
    raise_rate: Fraction = Fraction(0)
    delay_seconds: float = 0.0
    shift: float = 0.0
    never_ready: bool = False
    crash_after: int | None = None

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> Faults | None:
        """The faults the environment asks for, or None when it asks for none."""
        given = {key.removeprefix(PREFIX): value for key, value in environ.items() if key.startswith(PREFIX)}
        if not given:
            return None
        parsers: dict[str, Callable[[str], object]] = {
            "RAISE_RATE": _rate,
            "DELAY_SECONDS": _non_negative,
            "SHIFT": float,
            "NEVER_READY": _flag,
            "CRASH_AFTER": _count,
        }
        unknown = sorted(set(given) - set(parsers))
        if unknown:
            raise ValueError(f"unknown variables {[PREFIX + name for name in unknown]}")
        values: dict[str, Any] = {}
        for name, text in given.items():
            try:
                values[name.lower()] = parsers[name](text.strip())
            except ValueError as error:
                raise ValueError(f"{PREFIX}{name}={text!r}: {error}") from None
        return cls(**values)


def _rate(text: str) -> Fraction:
    # A fraction, not a float, so that the share of raising calls is exact (0.1: 1 call in 10).
    rate = Fraction(text)
    if not 0 <= rate <= 1:
        raise ValueError("must be between 0 and 1")
    return rate


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


def _flag(text: str) -> bool:
    if text not in {"0", "1"}:
        raise ValueError("must be 0 or 1")
    return text == "1"


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def patch_model_module(module: ModuleType, faults: Faults) -> None:
    """Wrap ``LoadedModel.predict`` and ``LoadedModel.golden_error`` of ``service.model``."""
    model_class = module.LoadedModel
    predict = model_class.predict
    golden_error = model_class.golden_error
    lock = threading.Lock()
    calls = 0
    # Set while the golden-set check runs on this thread: its predictions are left untouched.
    checking = threading.local()

    def faulty_predict(self: Any, rows: Any) -> Any:
        nonlocal calls
        if getattr(checking, "active", False):
            return predict(self, rows)
        with lock:
            calls += 1
            call = calls
        if faults.crash_after is not None and call > faults.crash_after:
            os._exit(CRASH_EXIT_CODE)
        if faults.delay_seconds:
            time.sleep(faults.delay_seconds)
        if math.floor(call * faults.raise_rate) > math.floor((call - 1) * faults.raise_rate):
            raise RuntimeError(f"injected fault: prediction call {call} raised")
        return predict(self, rows) + faults.shift

    def faulty_golden_error(self: Any) -> float:
        if faults.never_ready:
            return math.inf
        checking.active = True
        try:
            return float(golden_error(self))
        finally:
            checking.active = False

    model_class.predict = faulty_predict
    model_class.golden_error = faulty_golden_error


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``service.model`` as the path finder would and patches it right after it has run."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        loader = spec.loader
        run_module = loader.exec_module
        faults = self.faults

        def run_and_patch(module: ModuleType) -> None:
            run_module(module)
            patch_model_module(module, faults)

        loader.exec_module = run_and_patch  # type: ignore[method-assign]  # this one loader only
        return spec


def install() -> None:
    try:
        faults = Faults.from_environment(dict(os.environ))
    except ValueError as error:
        # SystemExit is not swallowed by site.py as other errors of sitecustomize are.
        sys.stderr.write(f"tests/faults/sitecustomize.py: {error}\n")
        raise SystemExit(2) from None
    if faults is not None:
        sys.meta_path.insert(0, PatchOnImport(faults))


install()
