"""``acceleron run --input FILE --output OUT.parquet``: one process, every input format, every on_error choice."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest

from acceleron.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = ["great film", None, "", "the worst story", "what a wonderful film", "   ", "boring plot"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """Exit code, the summary printed on stdout (or None) and stderr of one command."""
    code = main(["run", *args])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"id": list(range(len(TEXTS))), "text": TEXTS}), path)
    return path


def common(model: Path, source: Path, output: Path) -> list[str]:
    return [
        "--task",
        "text-classification",
        "--model",
        str(model),
        "-a",
        "torch",
        "--input",
        str(source),
        "--output",
        str(output),
    ]


def test_every_row_comes_back_in_order_with_its_result_or_error(
    capsys: pytest.CaptureFixture[str],
    tiny_classifier: Path,
    reviews: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACCELERON_PROGRESS", "1")
    out = tmp_path / "out.parquet"
    code, summary, err = run(capsys, *common(tiny_classifier, reviews, out), "--rows-per-batch", "3")
    assert code == 0, err
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "label", "score", "error"]
    assert table.column("id").to_pylist() == list(range(len(TEXTS)))
    assert table.column("error").to_pylist() == [
        None,
        "column 'text' is null",
        "column 'text' is an empty string",
        None,
        None,
        "column 'text' is an empty string",
        None,
    ]
    assert table.column("label").null_count == 3
    assert summary is not None
    assert (summary["rows_in"], summary["rows_out"], summary["failed"], summary["skipped"]) == (7, 7, 3, 0)
    assert 0 <= summary["first_output_seconds"] <= summary["run_seconds"]
    assert summary["steady_rows_per_s"] > 0  # three batches: two after the first
    assert "row 1 failed (kept): column 'text' is null" in err and "rows, 3 failed" in err
    assert not list(tmp_path.glob(".out.parquet.*"))  # no temporary file left behind


def test_the_results_match_the_pipeline(
    capsys: pytest.CaptureFixture[str], tiny_classifier: Path, reviews: Path, tmp_path: Path
) -> None:
    from acceleron import pipeline

    out = tmp_path / "out.parquet"
    assert run(capsys, *common(tiny_classifier, reviews, out))[0] == 0
    table = pq.read_table(out).filter(pa.compute.is_null(pq.read_table(out).column("error")))
    expected = pipeline("text-classification", str(tiny_classifier), accelerator="torch")(
        table.column("text").to_pylist()
    )
    assert table.column("label").to_pylist() == [row["label"] for row in expected]


def test_skip_leaves_the_bad_rows_out_and_lists_them(
    capsys: pytest.CaptureFixture[str],
    tiny_classifier: Path,
    reviews: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACCELERON_PROGRESS", "1")
    out = tmp_path / "out.parquet"
    code, summary, err = run(capsys, *common(tiny_classifier, reviews, out), "--on-error", "skip")
    assert code == 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "label", "score"]
    assert table.column("id").to_pylist() == [0, 3, 4, 6]
    assert summary is not None and (summary["skipped"], summary["rows_out"]) == (3, 4)
    assert "row 5 failed (skipped)" in err


def test_raise_stops_at_the_first_bad_row_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tiny_classifier: Path, reviews: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    code, summary, err = run(capsys, *common(tiny_classifier, reviews, out), "--on-error", "raise")
    assert code == 2 and summary is None
    assert "row 1 of the input failed: column 'text' is null" in err
    assert not out.exists() and not list(tmp_path.glob(".out.parquet.*"))


def test_json_lines_with_numbers_nulls_and_broken_lines(
    capsys: pytest.CaptureFixture[str], tiny_classifier: Path, tmp_path: Path
) -> None:
    source = tmp_path / "rows.jsonl"
    lines = [
        json.dumps({"text": "great film", "stars": 5}),
        json.dumps({"text": 42, "stars": 1}),
        json.dumps({"text": None, "stars": 2.5}),
        "{not json",
        json.dumps({"stars": 3}),
        json.dumps({"text": "", "stars": 4}),
        json.dumps({"text": "bad film", "stars": 1}),
    ]
    source.write_text("\n".join(lines) + "\n\n")
    out = tmp_path / "out.parquet"
    code, _, err = run(capsys, *common(tiny_classifier, source, out), "--rows-per-batch", "2")
    assert code == 0, err
    table = pq.read_table(out)
    assert table.schema.field("stars").type == pa.float64()  # int and float promoted over the whole file
    errors = table.column("error").to_pylist()
    assert errors[0] is None and errors[6] is None
    assert errors[1] == "column 'text' holds int 42, not text"
    assert errors[2] == errors[4] == "column 'text' is null"
    assert errors[3].startswith("line 4 is not valid JSON")
    assert errors[5] == "column 'text' is an empty string"
    assert table.column("stars").to_pylist() == [5, 1, 2.5, None, 3, 4, 1]


def test_csv_fields_are_text(capsys: pytest.CaptureFixture[str], tiny_classifier: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.csv"
    source.write_text('review,stars\n"great film",5\n12345,1\n,2\n"bad, bad film",1\n')
    out = tmp_path / "out.parquet"
    code, _, err = run(
        capsys, *common(tiny_classifier, source, out), "--column", "review", "--rename", "label=sentiment"
    )
    assert code == 0, err
    table = pq.read_table(out)
    assert table.column_names == ["review", "stars", "sentiment", "score", "error"]
    # In a CSV file "12345" is text like any other field; only the empty one fails.
    assert table.column("error").to_pylist() == [None, None, "column 'review' is an empty string", None]


def test_mistakes_are_explained(
    capsys: pytest.CaptureFixture[str], tiny_classifier: Path, reviews: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    code, _, err = run(capsys, *common(tiny_classifier, reviews, out), "--column", "review")
    assert code == 2 and "has no column 'review'" in err and "'text'" in err
    out.write_bytes(b"")
    code, _, err = run(capsys, *common(tiny_classifier, reviews, out))
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, *common(tiny_classifier, reviews, tmp_path / "out.csv"))
    assert code == 2 and "Parquet" in err
    code, _, err = run(capsys, "--task", "text-classification", "--model", str(tiny_classifier), "--ray", "hello")
    assert code == 2 and "--input" in err
    code, _, err = run(capsys, *common(tiny_classifier, reviews, tmp_path / "o.parquet"), "--error-column", "text")
    assert code == 2 and "already has columns ['text']" in err


def _has_torchscript_plugin() -> bool:
    return bool(importlib.metadata.entry_points(group="acceleron.backends", name="jit"))


@pytest.mark.skipif(not _has_torchscript_plugin(), reason="nox installs the test plugins under tests/plugins")
def test_the_export_runs_once_and_later_jobs_reuse_it(
    capsys: pytest.CaptureFixture[str], tiny_classifier: Path, reviews: Path, tmp_path: Path
) -> None:
    args = ["--task", "text-classification", "--model", str(tiny_classifier), "-a", "jit", "--input", str(reviews)]
    first = run(capsys, *args, "--output", str(tmp_path / "a.parquet"))[1]
    second = run(capsys, *args, "--output", str(tmp_path / "b.parquet"))[1]
    assert first is not None and second is not None
    assert (first["exported"], second["exported"]) == (True, False)
    assert first["model_folder"] == second["model_folder"]
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


def test_stdout_holds_only_the_summary_when_the_job_prints(
    capsys: pytest.CaptureFixture[str],
    tiny_classifier: Path,
    reviews: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A library printing to stdout during the job (as Ray does with its raylet notes) lands on stderr."""
    import acceleron.tables

    real = acceleron.tables.run_file

    def noisy(*args: Any, **kwargs: Any) -> Any:
        print("(raylet) a note from a library")
        return real(*args, **kwargs)

    monkeypatch.setattr(acceleron.tables, "run_file", noisy)
    code, summary, err = run(capsys, *common(tiny_classifier, reviews, tmp_path / "out.parquet"))
    assert code == 0, err
    assert summary is not None and summary["rows_in"] == len(TEXTS)
    assert "(raylet) a note from a library" in err
