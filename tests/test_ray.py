"""acceleron on Ray Data, on a local two-CPU Ray (``./nox -s ray``): same results as one process, no worker exports.

Skipped where Ray is not installed (the other nox sessions).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_plugins.common import FakeBackend

from acceleron.bulk import PipelinePredictor, prepare_model
from acceleron.cli import main
from acceleron.testing import build_tiny_model

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from acceleron.ray import map_pipeline  # noqa: E402  (after the skips: needs ray to be useful)

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "great",
    "good",
    "bad",
    "terrible",
    "wonderful",
    "awful",
    "boring",
    "fun",
    "loved",
    "hated",
    "best",
    "worst",
    "really",
    "not",
]
TESTS = Path(__file__).parent


def sentences(count: int) -> list[str | None]:
    """Deterministic sentences of 2 to 20 words, with a null and an empty string among them."""
    texts: list[str | None] = [
        " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(2 + i % 19)) for i in range(count)
    ]
    texts[5], texts[17] = None, ""
    return texts


class LoggedExportBackend(FakeBackend):
    """The fake backend, which exports; each export appends its process id to $FAKE_EXPORT_LOG."""

    name = "loggedexport"
    tasks = frozenset({"text-classification"})


@pytest.fixture(scope="module")
def export_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports") / "exports.log"


@pytest.fixture(scope="module")
def local_ray(export_log: Path) -> Iterator[None]:
    """One local Ray for the module, two CPUs; workers log exports where the driver does."""
    env = {
        "FAKE_EXPORT_LOG": str(export_log),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),  # fake_plugins
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    # log_to_driver=False: Ray would copy its workers' and raylet's log lines into this process's stdout,
    # where the CLI test reads the CLI's JSON summary (an actor-pool note there failed CI).
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": env},
        logging_level="WARNING",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def table() -> Any:
    texts = sentences(300)
    return pa.table({"id": list(range(len(texts))), "text": texts})


def blocks(table: Any, rows: int = 50) -> Any:
    """A dataset of several blocks, so that both actors get work."""
    return ray.data.from_arrow([table.slice(start, rows) for start in range(0, table.num_rows, rows)])


def collect(dataset: Any) -> Any:
    """A dataset's rows as one Arrow table (runs it)."""
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def test_ray_gives_what_one_process_gives(local_ray: None, tiny_classifier: Path, table: Any, tmp_path: Path) -> None:
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    expected = PipelinePredictor(prepared, row_id_column="id")(table)
    dataset = blocks(table)
    mapped = map_pipeline(dataset, None, prepared, rows_per_batch=64, concurrency=2, row_id_column="id")
    result = collect(mapped).sort_by("id")
    assert result.schema == expected.schema
    assert result.column("label").to_pylist() == expected.column("label").to_pylist()
    assert result.column("error").to_pylist() == expected.column("error").to_pylist()
    assert result.column("label").null_count == 2
    # Scores from other batch compositions may differ in the last bits only.
    for left, right in zip(result.column("score").to_pylist(), expected.column("score").to_pylist()):
        assert (left is None and right is None) or abs(left - right) < 1e-5

    embedder = build_tiny_model("feature-extraction", tmp_path / "emb")
    embedded = map_pipeline(dataset, "feature-extraction", embedder, accelerator="torch", rows_per_batch=100)
    vectors = collect(embedded).sort_by("id")
    assert vectors.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    pq.write_table(vectors, tmp_path / "vectors.parquet")  # storable as it is
    local = PipelinePredictor(prepare_model("feature-extraction", embedder, accelerator="torch"))(table)
    for left, right in zip(vectors.column("embedding").to_pylist(), local.column("embedding").to_pylist()):
        assert (left is None and right is None) or max(abs(a - b) for a, b in zip(left, right)) < 1e-5


def test_no_worker_exports(
    local_ray: None, tiny_classifier: Path, table: Any, export_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export runs once, on the driver; a second job reuses it; two actors load it, neither exports."""
    monkeypatch.setenv("FAKE_EXPORT_LOG", str(export_log))
    export_log.unlink(missing_ok=True)
    backend = LoggedExportBackend()
    dataset = blocks(table)
    for _ in range(2):
        mapped = map_pipeline(
            dataset,
            "text-classification",
            tiny_classifier,
            accelerator=backend,
            concurrency=2,
            num_threads=1,
            rows_per_batch=50,
        )
        assert mapped.count() == table.num_rows
        labels = collect(mapped).column("label")
        assert labels.null_count == 2
    assert export_log.read_text().split() == [str(os.getpid())]


def test_defaults_fill_the_cpus_without_oversubscribing(local_ray: None, tiny_classifier: Path, table: Any) -> None:
    from acceleron.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="need 4 CPUs, but the Ray cluster has 2"):
        map_pipeline(
            blocks(table),
            "text-classification",
            tiny_classifier,
            accelerator="torch",
            concurrency=2,
            num_threads=2,
        )


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    code = main(["run", *args])
    captured = capsys.readouterr()
    # The module's Ray (not the CLI's) prints its raylet notes (an actor of an earlier test killed) to
    # stdout from a thread, at any time; the CLI sends them to stderr only while its own job runs.
    out = "".join(line for line in captured.out.splitlines(keepends=True) if "(raylet)" not in line)
    return code, (json.loads(out) if out.strip() else None), captured.err


def test_the_cli_writes_the_same_parquet_with_and_without_ray(
    local_ray: None, capsys: pytest.CaptureFixture[str], tiny_classifier: Path, tmp_path: Path
) -> None:
    source = tmp_path / "rows.jsonl"
    rows = [{"id": i, "text": text} for i, text in enumerate(sentences(200))]
    rows[42]["text"] = 42  # a number where text belongs
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = [
        "--task",
        "text-classification",
        "--model",
        str(tiny_classifier),
        "-a",
        "torch",
        "--input",
        str(source),
        "--rows-per-batch",
        "32",
    ]
    code, here, err = _cli(capsys, *args, "--output", str(tmp_path / "here.parquet"), "--threads", "2")
    assert code == 0, err
    code, on_ray, err = _cli(capsys, *args, "--output", str(tmp_path / "ray.parquet"), "--ray")
    assert code == 0, err
    assert on_ray is not None and (on_ray["actors"], on_ray["threads"], on_ray["failed"]) == (2, 1, 3)
    assert here is not None and here["failed"] == 3
    left, right = pq.read_table(tmp_path / "here.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert left.schema == right.schema
    for name in ("id", "text", "label", "error"):
        assert left.column(name).to_pylist() == right.column(name).to_pylist(), name
    assert right.column("error").to_pylist()[42] == "column 'text' holds int 42, not text"

    code, summary, err = _cli(
        capsys, *args, "--output", str(tmp_path / "raise.parquet"), "--ray", "--on-error", "raise"
    )
    assert code == 2 and summary is None
    assert "row 5 of the input failed: column 'text' is null" in err
    assert not (tmp_path / "raise.parquet").exists()
