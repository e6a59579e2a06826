"""The scenario reference in docs/ is generated from the schema's help text and must not drift."""

from pathlib import Path

from gwsim.reference import markdown

ROOT = Path(__file__).resolve().parents[1]


def test_scenario_reference_is_current() -> None:
    committed = (ROOT / "docs/scenario-reference.md").read_text()
    assert committed == markdown() + "\n", "regenerate with: gwsim schema --markdown --out docs/scenario-reference.md"


def test_every_schema_field_has_help_text() -> None:
    text = markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    assert all(not line.rstrip().endswith("|  |") for line in rows), [r for r in rows if r.rstrip().endswith("|  |")][:3]
