"""Tests for benchmarks/asr.py that need no model: long-form window steps and the report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def _load_asr() -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load the script by its path.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "asr.py"
    spec = importlib.util.spec_from_file_location("acceleron_asr_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


asr = _load_asr()

TS = 100  # timestamp_begin in these token lists: 100 is <|0.00|>, 150 is <|1.00|>


def test_window_step_keeps_closed_segments_and_seeks_to_their_end() -> None:
    # <|0.00|> a b <|1.00|><|1.00|> c d  (cut by the window): keep the first segment, restart at 1 s
    assert asr.window_step([100, 1, 2, 150, 150, 3, 4], TS) == ([100, 1, 2, 150], pytest.approx(1.0))
    # ends with a lone timestamp: the last segment is complete, move past the whole window
    assert asr.window_step([100, 1, 150, 150, 3, 175], TS) == ([100, 1, 150, 150, 3, 175], None)
    # no timestamps at all, or no closing pair: keep everything
    assert asr.window_step([1, 2, 3], TS) == ([1, 2, 3], None)
    assert asr.window_step([100, 1, 2], TS) == ([100, 1, 2], None)
    # a closing pair at 0 s would not move on: take the whole window instead of looping
    assert asr.window_step([100, 100, 1, 2], TS) == ([100, 100, 1, 2], None)


def test_summary_scores_engines_against_the_known_text_and_stock() -> None:
    items = [
        asr.Item("short", np.zeros(16000, dtype=np.float32), "ten of clubs"),
        asr.Item("long", np.zeros(31 * 16000, dtype=np.float32), "go forward ten meters"),
    ]
    stock = asr.Engine(asr.REFERENCE, texts=["10 of clubs.", "Go forward, 10 meters."], wall=[2.0, 4.0, 3.0])
    stock.cpu = [1.0, 1.0, 1.0]
    other = asr.Engine("ctranslate2/int8/b1", texts=["10 of close.", "Go forward, 10 meters."], wall=[1.0])
    broken = asr.Engine("acceleron-ort/b1", error="pipeline(): boom")
    report = asr.summarise([stock, other, broken], items, beams=1, threads=2, repeats=3)
    rows = {row["engine"]: row for row in report["engines"]}
    assert report["settings"]["audio_seconds"] == 32.0 and report["settings"]["long_items"] == ["long"]
    assert rows[asr.REFERENCE]["wer_short"] == 0.0 and rows[asr.REFERENCE]["wer_long"] == 0.0
    assert rows[asr.REFERENCE]["rtf_wall"]["median"] == pytest.approx(3.0 / 32, abs=1e-4)
    assert rows["ctranslate2/int8/b1"]["wer_short"] == pytest.approx(1 / 3)
    assert rows["ctranslate2/int8/b1"]["same_text_as_stock"] == 1
    assert rows["ctranslate2/int8/b1"]["different_text"] == ["short"]
    assert rows["acceleron-ort/b1"]["error"] == "pipeline(): boom" and "texts" not in rows["acceleron-ort/b1"]
    table = asr.format_table(report)
    assert "acceleron-ort/b1" in table and "boom" in table and "1/2" in table
