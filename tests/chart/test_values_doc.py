"""Every value is documented, and the README's values table is the one values.yaml generates."""

from __future__ import annotations

import pytest

from tests.chart.values_doc import CHART_DIR, parse, readme_with_table

pytestmark = pytest.mark.chart


def test_every_value_is_documented() -> None:
    rows, undocumented = parse((CHART_DIR / "values.yaml").read_text())
    assert not undocumented, f"add a `# --` comment to: {undocumented}"
    assert all(row.description for row in rows)
    assert len(rows) > 100


def test_readme_values_table_is_in_sync() -> None:
    rows, _ = parse((CHART_DIR / "values.yaml").read_text())
    readme = (CHART_DIR / "README.md").read_text()
    assert readme == readme_with_table(readme, rows), (
        "charts/tabula/README.md is stale: run `uv run python -m tests.chart.values_doc --write`"
    )


def test_parser_reports_undocumented_and_nested_keys() -> None:
    rows, undocumented = parse(
        "# -- documented map\nmap:\n  child: 1\n"
        "section:\n  # -- a leaf\n  #   continued\n  leaf: x\n  bare: 2\n"
    )
    assert [(r.key, r.type, r.default, r.description) for r in rows] == [
        ("map", "object", '{"child": 1}', "documented map"),
        ("section.leaf", "string", '"x"', "a leaf continued"),
    ]
    assert undocumented == ["section.bare"]
