"""Bulk inference over tables without Ray: the model prepared once, one predictor, Parquet-ready columns, bad rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_plugins.common import FakeBackend

from acceleron import pipeline
from acceleron.bulk import PipelinePredictor, prepare_model, task_outputs
from acceleron.errors import (
    AcceleronError,
    ArtifactNotFoundError,
    InvalidOptionError,
    RowError,
    TaskNotSupportedError,
)
from acceleron.testing import build_tiny_model

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SENTENCES = ["this movie was great fun", "the plot was boring and the actors were bad", "what a wonderful film"]


class ExportCountingBackend(FakeBackend):
    """The fake backend (it exports: the weights go into the cache entry), counting its exports."""

    name = "exportcounting"
    tasks = frozenset({"text-classification", "feature-extraction", "token-classification"})

    def __init__(self) -> None:
        self.exports = 0

    def export(self, plan: Any, output_dir: Path, options: Any) -> Path:
        self.exports += 1
        return super().export(plan, output_dir, options)


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("feature-extraction", tmp_path_factory.mktemp("tiny") / "bert-emb")


def _roundtrip(table: Any, tmp_path: Path) -> Any:
    """What a reader gets back from Parquet: the columns must be storable as they are."""
    pq.write_table(table, tmp_path / "out.parquet")
    return pq.read_table(tmp_path / "out.parquet")


# ---- the model is prepared once; workers only load ----


def test_prepare_exports_once_and_then_reuses_the_cache(tiny_classifier: Path) -> None:
    backend = ExportCountingBackend()
    first = prepare_model("text-classification", tiny_classifier, accelerator=backend)
    assert (first.exported, backend.exports) == (True, 1)
    assert first.in_export_cache and Path(first.path).is_dir() and first.file_name == "exportcounting.artifact"
    second = prepare_model("text-classification", tiny_classifier, accelerator=backend)
    assert (second.exported, backend.exports) == (False, 1)
    assert second.path == first.path
    # Workers load the prepared folder with export=False: neither building them nor running them exports.
    predictors = [PipelinePredictor(second) for _ in range(2)]
    for predictor in predictors:
        predictor(pa.table({"text": SENTENCES}))
    assert backend.exports == 1


def test_a_saved_folder_is_used_as_it_is(tiny_classifier: Path, tmp_path: Path) -> None:
    backend = ExportCountingBackend()
    prepared = prepare_model("text-classification", tiny_classifier, accelerator=backend, save_to=tmp_path / "saved")
    assert Path(prepared.path) == (tmp_path / "saved").resolve() or Path(prepared.path) == tmp_path / "saved"
    assert not prepared.in_export_cache and backend.exports == 1
    again = prepare_model("text-classification", tmp_path / "saved", accelerator=backend)
    assert (again.exported, again.in_export_cache, backend.exports) == (False, False, 1)
    assert PipelinePredictor(again)(pa.table({"text": SENTENCES})).column("error").null_count == 3


def test_a_predictor_never_exports(tiny_classifier: Path) -> None:
    """A folder without the backend's artifact is an error in a worker, not an export there."""
    backend = ExportCountingBackend()
    with pytest.raises(ArtifactNotFoundError, match="export"):
        PipelinePredictor(tiny_classifier, "text-classification", accelerator=backend)
    assert backend.exports == 0


# ---- output columns ----


def test_text_classification_gives_label_and_score_as_the_pipeline_does(tiny_classifier: Path, tmp_path: Path) -> None:
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    out = _roundtrip(
        PipelinePredictor(prepared, batch_size=2)(pa.table({"text": SENTENCES, "id": [7, 8, 9]})), tmp_path
    )
    assert out.column_names == ["text", "id", "label", "score", "error"]
    assert out.schema.field("score").type == pa.float64()
    expected = pipeline("text-classification", str(tiny_classifier), accelerator="torch")(SENTENCES)
    assert out.column("label").to_pylist() == [row["label"] for row in expected]
    assert out.column("score").to_pylist() == pytest.approx([row["score"] for row in expected], abs=1e-6)
    assert out.column("id").to_pylist() == [7, 8, 9]


def test_top_k_gives_lists_of_labels_and_scores(tiny_classifier: Path) -> None:
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    out = PipelinePredictor(prepared, call_args={"top_k": 2})(pa.table({"text": SENTENCES}))
    assert out.schema.field("labels").type == pa.list_(pa.string())
    assert all(sorted(labels) == ["NEGATIVE", "POSITIVE"] for labels in out.column("labels").to_pylist())
    assert all(sum(scores) == pytest.approx(1.0) for scores in out.column("scores").to_pylist())


def test_embeddings_are_fixed_size_float_lists_equal_to_mean_pooling(tiny_embedder: Path, tmp_path: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    prepared = prepare_model("feature-extraction", tiny_embedder, accelerator="torch")
    texts = [*SENTENCES, "a"]
    out = _roundtrip(PipelinePredictor(prepared, batch_size=3)(pa.table({"text": texts})), tmp_path)
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_embedder), AutoModel.from_pretrained(tiny_embedder)
    for text, vector in zip(texts, out.column("embedding").to_pylist()):
        with torch.inference_mode():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        expected = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy()
        assert np.allclose(vector, expected, atol=1e-5), text


def test_token_embeddings_without_pooling(tiny_embedder: Path) -> None:
    prepared = prepare_model("feature-extraction", tiny_embedder, accelerator="torch")
    out = PipelinePredictor(prepared, pooling="none")(pa.table({"text": ["great film", "a very very bad film"]}))
    tokens = out.column("token_embeddings").to_pylist()
    assert [len(t) for t in tokens] == [4, 7]  # [CLS] ... [SEP], no padding
    assert {len(vector) for row in tokens for vector in row} == {32}


def test_token_spans_are_structs(tmp_path: Path) -> None:
    folder = build_tiny_model("token-classification", tmp_path / "ner")
    prepared = prepare_model("token-classification", folder, accelerator="torch")
    out = _roundtrip(PipelinePredictor(prepared)(pa.table({"text": ["john lives in paris"]})), tmp_path)
    [entities] = out.column("entities").to_pylist()
    assert entities and set(entities[0]) == {"entity", "score", "index", "word", "start", "end"}
    grouped = PipelinePredictor(prepared, call_args={"aggregation_strategy": "simple"})
    [entities] = grouped(pa.table({"text": ["john lives in paris"]})).column("entities").to_pylist()
    assert entities and set(entities[0]) == {"entity_group", "score", "word", "start", "end"}


def test_question_answering_is_refused_up_front(tmp_path: Path) -> None:
    """question-answering rows hold two texts, which one input column cannot give: say so before loading anything."""
    with pytest.raises(TaskNotSupportedError, match="needs a question and a context"):
        PipelinePredictor(tmp_path, "question-answering", accelerator="torch")


def test_generated_text_is_a_string_column(tmp_path: Path) -> None:
    folder = build_tiny_model("text-generation", tmp_path / "llama")
    prepared = prepare_model("text-generation", folder, accelerator="torch")
    predictor = PipelinePredictor(prepared, call_args={"max_new_tokens": 3, "do_sample": False})
    out = _roundtrip(predictor(pa.table({"text": ["the movie", "john lives in"]})), tmp_path)
    assert out.schema.field("generated_text").type == pa.string()
    assert all(
        text.startswith(prompt)
        for text, prompt in zip(out.column("generated_text").to_pylist(), ["the movie", "john lives in"])
    )


def test_encoder_decoder_text_tasks_give_their_pipeline_text(tmp_path: Path) -> None:
    """Translation, summarization and text2text-generation rows get the pipeline's text, in its own column;
    a task with no columns (image-to-text) is refused before anything is exported."""
    from acceleron.testing import tiny_seq2seq

    folder = tiny_seq2seq("marian", tmp_path / "marian")
    prepared = prepare_model("translation", folder, accelerator="torch", export_cache=tmp_path / "cache")
    predictor = PipelinePredictor(prepared, call_args={"max_new_tokens": 3, "do_sample": False})
    out = _roundtrip(predictor(pa.table({"text": ["the movie", "john lives in paris"]})), tmp_path)
    expected = pipeline(
        "translation", str(folder), accelerator="torch", model_kwargs={"export_cache": tmp_path / "cache"}
    )(["the movie", "john lives in paris"], max_new_tokens=3, do_sample=False)
    assert out.column("translation_text").to_pylist() == [item["translation_text"] for item in expected]
    with pytest.raises(TaskNotSupportedError, match="no output columns for image-to-text"):
        PipelinePredictor(tmp_path, "image-to-text", accelerator="torch")


def test_every_task_has_a_fixed_schema() -> None:
    """Types never depend on the data, so a batch whose rows all failed still fits the file."""
    for task in (
        "text-classification",
        "zero-shot-classification",
        "token-classification",
        "fill-mask",
        "feature-extraction",
        "text-generation",
        "text2text-generation",
        "summarization",
        "translation",
        "image-classification",
        "audio-classification",
    ):
        outputs = task_outputs(task, hidden_size=8)
        assert all(not pa.types.is_null(f.type) for f in outputs.fields), task


def test_output_columns_can_be_renamed_and_clashes_are_refused(tiny_classifier: Path) -> None:
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    out = PipelinePredictor(prepared, output_columns={"label": "sentiment"})(pa.table({"text": SENTENCES}))
    assert out.column_names == ["text", "sentiment", "score", "error"]
    with pytest.raises(InvalidOptionError, match="output_columns"):
        PipelinePredictor(prepared)(pa.table({"text": SENTENCES, "label": ["x"] * 3}))
    with pytest.raises(InvalidOptionError, match="produces"):
        PipelinePredictor(prepared, output_columns={"labels": "x"})
    with pytest.raises(InvalidOptionError, match="input_column"):
        PipelinePredictor(prepared)(pa.table({"review": SENTENCES}))


# ---- bad rows ----

BAD = ["great film", None, "", "   ", "the worst story"]


def test_bad_rows_get_an_error_entry_and_the_others_their_results(tiny_classifier: Path) -> None:
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    out = PipelinePredictor(prepared, row_id_column="id")(pa.table({"text": BAD, "id": [10, 11, 12, 13, 14]}))
    assert out.column("error").to_pylist() == [
        None,
        "column 'text' is null",
        "column 'text' is an empty string",
        "column 'text' is an empty string",
        None,
    ]
    labels = out.column("label").to_pylist()
    assert labels[1:4] == [None, None, None] and labels[0] and labels[4]
    good = PipelinePredictor(prepared)(pa.table({"text": [BAD[0], BAD[4]]}))
    assert [labels[0], labels[4]] == good.column("label").to_pylist()


def test_a_number_in_a_text_column_is_a_bad_row(tiny_classifier: Path) -> None:
    pd = pytest.importorskip("pandas")
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    frame = pd.DataFrame({"text": ["great film", 42, 3.5, "bad"]})
    out = PipelinePredictor(prepared)(frame)
    assert isinstance(out, pd.DataFrame)
    assert out["error"].tolist()[1:3] == [
        "column 'text' holds int 42, not text",
        "column 'text' holds float 3.5, not text",
    ]
    assert out["label"].notna().tolist() == [True, False, False, True]


def test_skip_drops_the_bad_rows_only(tiny_classifier: Path) -> None:
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    out = PipelinePredictor(prepared, on_error="skip")(pa.table({"text": BAD, "id": [0, 1, 2, 3, 4]}))
    assert out.column("id").to_pylist() == [0, 4]
    assert "error" not in out.column_names and out.column("label").null_count == 0


def test_raise_names_the_row(tiny_classifier: Path) -> None:
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    with pytest.raises(RowError, match="row 11: column 'text' is null") as caught:
        PipelinePredictor(prepared, on_error="raise", row_id_column="id")(
            pa.table({"text": BAD, "id": [10, 11, 12, 13, 14]})
        )
    assert caught.value.row_id == 11
    with pytest.raises(RowError, match="row 1 of the batch"):
        PipelinePredictor(prepared, on_error="raise")(pa.table({"text": BAD}))


def test_a_row_the_model_fails_on_is_isolated(tiny_classifier: Path) -> None:
    """The tiny model has 72 positions: a longer sentence fails alone, its batch neighbours do not."""
    prepared = prepare_model("text-classification", tiny_classifier, accelerator="torch")
    long = " ".join(["film"] * 100)
    out = PipelinePredictor(prepared, batch_size=4)(pa.table({"text": ["great film", long, "bad film"]}))
    errors = out.column("error").to_pylist()
    assert errors[0] is None and errors[2] is None and errors[1]
    assert out.column("label").to_pylist()[1] is None
    truncated = PipelinePredictor(prepared, call_args={"truncation": True})(pa.table({"text": [long]}))
    assert truncated.column("error").to_pylist() == [None]


def test_a_batch_failing_the_same_way_everywhere_is_a_setup_error(tmp_path: Path) -> None:
    folder = build_tiny_model("zero-shot-classification", tmp_path / "nli")
    prepared = prepare_model("zero-shot-classification", folder, accelerator="torch")
    with pytest.raises(AcceleronError, match="every row of a batch failed"):
        PipelinePredictor(prepared)(pa.table({"text": SENTENCES}))  # candidate_labels missing
    out = PipelinePredictor(prepared, call_args={"candidate_labels": ["good", "bad"]})(pa.table({"text": SENTENCES}))
    assert all(sorted(labels) == ["bad", "good"] for labels in out.column("labels").to_pylist())


def test_numpy_batches_come_back_as_numpy(tiny_embedder: Path) -> None:
    import numpy as np

    prepared = prepare_model("feature-extraction", tiny_embedder, accelerator="torch")
    out = PipelinePredictor(prepared)({"text": np.array(SENTENCES, dtype=object)})
    assert out["embedding"].shape == (3, 32) and out["embedding"].dtype == np.float32


def test_bad_settings_are_refused_before_loading(tiny_classifier: Path) -> None:
    with pytest.raises(InvalidOptionError, match="on_error"):
        PipelinePredictor(tiny_classifier, "text-classification", accelerator="torch", on_error="ignore")
    with pytest.raises(InvalidOptionError, match="num_threads"):
        PipelinePredictor(tiny_classifier, "text-classification", accelerator="torch", num_threads=0)


# ---- acceleron.ray without ray ----


def test_actor_plans_never_oversubscribe() -> None:
    from acceleron.ray import plan_actors

    assert plan_actors(8) == (8, 1)
    assert plan_actors(8, num_threads=2) == (4, 2)
    assert plan_actors(8, concurrency=2) == (2, 4)
    assert plan_actors(3, num_threads=2) == (1, 2)
    assert plan_actors(0) == (1, 1)  # unknown CPU count: nothing to check
    with pytest.raises(InvalidOptionError, match="need 6 CPUs"):
        plan_actors(4, num_threads=2, concurrency=3)
    with pytest.raises(InvalidOptionError, match="positive"):
        plan_actors(4, num_threads=0)


def test_importing_acceleron_ray_does_not_import_ray() -> None:
    code = "import sys, acceleron, acceleron.ray, acceleron.tables; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
