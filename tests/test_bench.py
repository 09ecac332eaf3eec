"""The benchmark runs end to end on a tiny model and writes well-formed output (timings are never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from benchmarks import bench


def test_the_benchmark_writes_table_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--tiny", "--backends", "torch", "--sentences", "12", "--batch-size", "4", "--latency-calls", "3"]
    assert bench.main([*argv, "--repeats", "2", "--embed-sentences", "4", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    variants = [row["variant"] for row in report["results"]]
    assert variants == ["transformers/float32", "torch/float32", "torch/bfloat16"]
    reference, ours = report["results"][0], report["results"][1]
    assert reference["speedup_vs_stock"] == 1.0
    assert reference["agreement_with_stock"] == 1.0 and ours["agreement_with_stock"] == 1.0
    assert ours["embedding_cosine_to_stock"] == pytest.approx(1.0, abs=1e-5)
    for row in report["results"]:
        assert row["pipeline_sentences_per_s"]["runs"] == 2 and row["cold_start_s"]["runs"] == 1
        assert row["pipeline_sentences_per_s"]["min"] <= row["pipeline_sentences_per_s"]["median"]
        assert 0.0 <= row["accuracy"] <= 1.0
    assert report["settings"] == {
        "threads": 2,
        "batch_size": 4,
        "repeats": 2,
        "sentences": 12,
        "classifier": report["settings"]["classifier"],
    }
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "torch/bfloat16" in table and "speed-up" in table


def test_bad_counts_are_refused() -> None:
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--sentences", "0"])
