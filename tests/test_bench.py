"""The benchmark runs end to end on a tiny model and writes well-formed output (timings are never asserted)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("matplotlib")


def _load_bench() -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load the script by its path.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("acceleron_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@dataclass
class ClassificationRun:
    out: Path
    table: str
    variants: list[Any]  # the benchmark's Variants, as _summarise got them: the outputs the figures come from


@pytest.fixture(scope="module")
def classification_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClassificationRun]:
    """The tiny classification benchmark through its command line, once per isolation mode."""
    argv = ["--tiny", "--workload", "classification", "--backends", "torch", "--sentences", "12", "--batch-size", "4"]
    argv += ["--latency-calls", "3", "--repeats", "2", "--embed-sentences", "4"]
    return {
        "process": _run_classification(argv, tmp_path_factory.mktemp("bench-process")),
        "none": _run_classification([*argv, "--same-process"], tmp_path_factory.mktemp("bench-none")),
    }


def _run_classification(argv: list[str], out: Path) -> ClassificationRun:
    seen: list[Any] = []
    summarise = bench._summarise

    def spy(workload: Any, variants: list[Any], **settings: Any) -> dict[str, Any]:
        seen.extend(variants)
        return summarise(workload, variants, **settings)

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as table:
        patch.setattr(bench, "_summarise", spy)
        patch.setenv("ACCELERON_CACHE_DIR", str(out / "export-cache"))  # as conftest's per-test fixture does
        assert bench.main([*argv, "--out", str(out)]) == 0
    return ClassificationRun(out, table.getvalue(), seen)


def test_the_benchmark_writes_table_json_and_chart(classification_runs: dict[str, ClassificationRun]) -> None:
    run = classification_runs["process"]  # the default: a process per variant
    report = json.loads((run.out / "bench.json").read_text())
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
        "isolation": "process",
        "sentences": 12,
        "classifier": report["settings"]["classifier"],
    }
    assert (run.out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torch/bfloat16" in run.table and "speed-up" in run.table
    assert "each variant in its own process" in run.table
    assert all(variant.pipe is None for variant in run.variants)  # the runtimes stayed in the workers


def test_same_process_and_a_process_per_variant_give_the_same_outputs(
    classification_runs: dict[str, ClassificationRun],
) -> None:
    import torch

    isolated, shared = classification_runs["process"], classification_runs["none"]
    assert "every variant in one process (--same-process)" in shared.table
    reports = [json.loads((run.out / "bench.json").read_text()) for run in (isolated, shared)]
    assert [report["settings"]["isolation"] for report in reports] == ["process", "none"]
    assert [v.name for v in isolated.variants] == [v.name for v in shared.variants]
    for ours, theirs in zip(isolated.variants, shared.variants):
        assert ours.results["labels"] == theirs.results["labels"]
        assert ours.results["runtime"] == theirs.results["runtime"]
        torch.testing.assert_close(ours.results["embeddings"], theirs.results["embeddings"])
    for ours, theirs in zip(reports[0]["results"], reports[1]["results"]):
        assert ours["variant"] == theirs["variant"]
        assert (ours["agreement_with_stock"], ours["accuracy"]) == (theirs["agreement_with_stock"], theirs["accuracy"])
        assert ours["embedding_cosine_to_stock"] == pytest.approx(theirs["embedding_cosine_to_stock"], abs=1e-6)


def test_a_worker_reports_skips_and_failures_and_its_death_by_variant(tmp_path: Path) -> None:
    workload = bench.tiny_workload(4, tmp_path / "models")
    job = bench.ClassificationJob(
        classifier=workload.classifier,
        embedder=None,
        sentences=workload.sentences,
        threads=1,
        batch_size=2,
        latency_calls=1,
        embed_sentences=1,
        cache_root=tmp_path / "cache",
    )
    variant = bench.Variant("torch", "int8")  # the torch backend has no int8: pipeline() refuses it
    worker = bench._WorkerProcess(job, variant)
    try:
        worker.send("setup")
        assert worker.receive() == {}
        bench._step(worker, variant, "prepare")
        assert "does not support dtype='int8'" in variant.results["skipped"]
        assert worker.process.wait(timeout=30) == 0  # a skipped variant's worker is shut down at once

        worker = bench._WorkerProcess(job, variant)
        worker.send("no_such_step")
        with pytest.raises(bench.WorkerError, match=r"(?s)torch/int8: no_such_step failed.*AttributeError"):
            worker.receive()
        worker.process.kill()
        with pytest.raises(bench.WorkerError, match="worker process of torch/int8 died during setup .*SIGKILL"):
            worker.send("setup")
            worker.receive()
    finally:
        worker.close()
    assert worker.process.poll() is not None


def test_the_generation_benchmark_writes_tables_json_and_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from acceleron import get_backend

    argv = ["--tiny", "--workload", "generation", "--backends", "torch", "--repeats", "2", "--new-tokens", "6"]
    argv += ["--generation-batch", "3", "--threads-list", "1,2", "--prefill-tokens", "20", "--bandwidth-mb", "8"]
    argv += ["--anchors", "llama.cpp,ov-genai"]  # never run on the tiny model: skipped, with the reason
    assert bench.main([*argv, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "generation.json").read_text())
    assert report["workload"] == "text-generation"
    assert report["threads_list"] == [1, 2] and report["anchors"] == ["llama.cpp", "ov-genai"]
    assert [run["settings"]["threads"] for run in report["runs"]] == [1, 2]
    for run in report["runs"]:
        settings = run["settings"]
        assert (settings["new_tokens"], settings["batch_sizes"], settings["repeats"], settings["prefill_tokens"]) == (
            6,
            [1, 3],
            2,
            20,
        )
        assert settings["prompts"] == list(bench.GENERATION_PROMPTS[:3]) and settings["isolation"] == "process"
        variants = [row["variant"] for row in run["results"]]
        assert variants[0] == "transformers/float32"
        skipped = {entry["variant"]: entry["reason"] for entry in run["skipped"]}
        assert sorted(variants[1:] + list(skipped)) == sorted(
            ["torch/bfloat16", "torch/float32", *(f"llama.cpp/{d}" for d in ("F32", "BF16", "Q8_0", "Q4_0"))]
            + [f"ov-genai/{d}" for d in ("fp32", "int8", "int4")]
        )
        assert all(skipped[f"llama.cpp/{d}"] for d in ("F32", "Q4_0"))  # a reason each
        if "text-generation" in get_backend("torch").supported_tasks():
            assert "torch/float32" in variants
        for row in run["results"]:
            for size in (1, 3):
                for name in ("first_token_ms", "decode_tokens_per_s", "decode_ms_per_step", "decode_cpu_ms_per_step"):
                    metric = f"{name}_b{size}"
                    assert row[metric]["runs"] == 2
                    assert 0 <= row[metric]["min"] <= row[metric]["median"] <= row[metric]["max"]
                assert 0.0 <= row[f"token_agreement_b{size}"] <= 1.0
                assert 0 <= row[f"identical_sequences_b{size}"] <= size
            assert row["first_token_ms_p20"]["runs"] == 2 and row["first_token_cpu_ms_p20"]["runs"] == 2
            assert row["cold_start_s"]["runs"] == 1 and row["kind"] in ("stock", "ours")
            assert row["floor_class"] == row["dtype"] and row["floor_ms_per_step"] > 0
            assert isinstance(row["chat_answer"], str) and isinstance(row["names_paris"], bool)
        reference = run["results"][0]
        assert reference["kind"] == "stock" and reference["decode_speedup_vs_stock_b1"] == 1.0
        assert reference["token_agreement_b3"] == 1.0 and reference["identical_sequences_b3"] == 3
        if "torch/float32" in variants:
            ours = run["results"][variants.index("torch/float32")]
            assert ours["token_agreement_b1"] == 1.0 and ours["token_agreement_b3"] == 1.0
        assert run["bandwidth"]["threads"] == settings["threads"] and run["bandwidth"]["read_gb_s"] > 0
        assert run["weights"]["parameters"] > 0
        assert [floor["dtype"] for floor in run["floor"]] == ["float32", "bfloat16", "int8", "int4"]
    assert (tmp_path / "generation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "bench.json").exists()
    markdown = (tmp_path / "generation.md").read_text()
    assert markdown.count("| variant | dtype | b1 ms/tok wall | b1 ms/tok CPU | b3 ms/step wall") == 2
    assert "| TTFT-20 ms |" in markdown and "| floor/int4 | int4 (0.5625 B/weight) |" in markdown
    assert "skipped llama.cpp/Q4_0: AnchorUnavailable" in markdown
    table = capsys.readouterr().out
    assert "tiny random Llama, 1 thread" in table and "tiny random Llama, 2 threads" in table


class _FakeAnchor:
    """Stands in for an anchor engine: greedy transformers generate() on each row alone, unpadded."""

    def __init__(self, engine: str, dtype: str, *, folder: Path, **_: Any) -> None:
        import transformers

        self.engine, self.dtype, self.convert_s = engine, dtype, 0.25
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()

    def runtime(self) -> dict[str, Any]:
        return {"engine": "fake", "dtype": self.dtype}

    def generate(self, rows: list[list[int]], new_tokens: int, stop: int | None = None) -> Any:
        import torch

        anchors = bench._anchors_module()
        ids = []
        for row in rows:
            with torch.inference_mode():
                out = self.model.generate(
                    torch.tensor([row]),
                    do_sample=False,
                    max_new_tokens=new_tokens,
                    pad_token_id=0,
                    min_new_tokens=new_tokens if stop is None else 0,
                    eos_token_id=stop,
                )
            ids.append(out[0, len(row) :].tolist())
        steps = [float(i) for i in range(len(ids[0]) + 1)]
        return anchors.Generated(wall=steps, cpu=[s / 2 for s in steps], ids=ids)


def test_an_anchor_is_a_variant_of_the_same_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    anchors = bench._anchors_module()
    monkeypatch.setattr(anchors, "Anchor", _FakeAnchor)
    monkeypatch.setattr(anchors, "unavailable", lambda engine, gguf: None)  # installed or not
    argv = ["--tiny", "--workload", "generation", "--backends", "torch", "--repeats", "1", "--new-tokens", "5"]
    argv += ["--generation-batch", "2", "--prefill-tokens", "12", "--bandwidth-mb", "8", "--same-process"]
    assert bench.main([*argv, "--anchors", "ort-genai", "--out", str(tmp_path)]) == 0
    (run,) = json.loads((tmp_path / "generation.json").read_text())["runs"]
    rows = {row["variant"]: row for row in run["results"]}
    assert [row["kind"] for row in run["results"]][-3:] == ["anchor"] * 3
    stock = rows["transformers/float32"]
    for dtype, floor in (("fp32", "float32"), ("int8", "int8"), ("int4", "int4")):
        row = rows[f"ort-genai/{dtype}"]
        assert row["floor_class"] == floor and row["runtime"] == {"engine": "fake", "dtype": dtype}
        assert row["decode_ms_per_step_b1"]["median"] == 1000.0  # the fake's clock: a second a token
        assert row["decode_cpu_ms_per_step_b2"]["median"] == 500.0
        assert row["first_token_ms_p12"]["median"] == 1000.0 and row["convert_s"]["median"] == 0.25
        assert row["token_agreement_b1"] == 1.0  # the same greedy tokens as the stock model, given the same ids
        assert row["chat_answer"] == stock["chat_answer"]
    markdown = (tmp_path / "generation.md").read_text()
    assert "| ort-genai/fp32 | fp32 (float32) | 1000.0 | 500.0 |" in markdown
    assert markdown.index("| transformers/float32 |") < markdown.index("| torch/float32 |")
    assert markdown.index("| torch/float32 |") < markdown.index("| ort-genai/fp32 |")
    assert markdown.index("| ort-genai/int4 |") < markdown.index("| floor/float32 |")


def test_the_floor_is_the_weight_bytes_over_the_read_bandwidth(tmp_path: Path) -> None:
    folder = bench.tiny_causal_lm(tmp_path / "lm")
    weights = bench.model_weights(folder)
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    unique = {id(p): p.numel() for p in model.parameters()}  # a tied LM head is the embedding: counted once
    assert weights["parameters"] == sum(unique.values())
    floors = bench.bandwidth_floor(1_000_000_000, {"read_gb_s": 10.0}, [1, 8])
    by_dtype = {floor["dtype"]: floor for floor in floors}
    assert by_dtype["float32"]["ms_per_step"] == pytest.approx(400.0)
    assert by_dtype["int4"]["ms_per_step"] == pytest.approx(56.25)
    assert by_dtype["bfloat16"]["tokens_per_s_b8"] == pytest.approx(8 * 1000 / 200.0)
    bandwidth = bench.measure_bandwidth(2, 4, repeats=1)
    assert bandwidth["threads"] == 2 and bandwidth["read_gb_s"] >= bandwidth["sum_gb_s"] > 0
    assert bandwidth["copy_gb_s"] > 0 and "2 Python thread(s)" in bandwidth["method"]


def test_the_prefill_prompt_has_exactly_the_count_asked(tmp_path: Path) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bench.tiny_causal_lm(tmp_path / "lm")))
    for count in (1, 20, 128):
        prompt = bench._prefill_prompt(tokenizer, count)
        assert prompt["input_ids"].shape == (1, count) and int(prompt["attention_mask"].sum()) == count


def test_token_agreement_counts_the_prefix_before_the_first_difference() -> None:
    import torch

    reference = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    ours = torch.tensor([[1, 2, 0, 4], [5, 6, 7, 8]])
    assert bench._agreement(ours, reference) == (0.75, 1)
    assert bench._agreement(reference, reference) == (1.0, 2)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--sentences", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--workload", "generation", "--new-tokens", "1"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--workload", "generation", "--generation-batch", "9"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--workload", "generation", "--threads-list", "1,x"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--workload", "generation", "--threads-list", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--workload", "generation", "--anchors", "vllm"])
