"""The README's task table is the one the code generates (``acceleron backends --tasks``)."""

from pathlib import Path

import pytest

from acceleron.status import TABLE_BACKENDS, list_backends, task_table

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- task-table: begin (acceleron backends --tasks) -->", "<!-- task-table: end -->"


def test_the_readme_task_table_is_generated_from_the_code() -> None:
    statuses = list_backends()
    installed = {status.name for status in statuses if status.status == "ok"}
    missing = sorted(set(TABLE_BACKENDS) - installed)
    if missing:
        pytest.skip(f"the table needs every first-party backend; not installed here: {', '.join(missing)}")
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "the README lost its task-table markers"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == task_table(statuses), (
        "README task table is stale: paste `acceleron backends --tasks` between the markers"
    )
