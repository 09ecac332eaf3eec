"""Sentence embeddings of sentence-transformers folders: pooling in the graph, the API, the errors, the cache key.

Runs on the built-in torch backend (every plugin runs the same checks in the conformance suite). The
comparison with sentence-transformers itself runs where it is installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import acceleron
from acceleron import SentenceEncoder, embed
from acceleron.cache import ExportCache
from acceleron.errors import InvalidInputError, TaskNotSupportedError, UnknownBackendError
from acceleron.sources import ModelSource, source_fingerprint
from acceleron.tasks import get_task, normalize_task
from acceleron.testing import build_tiny_model
from acceleron.testing.conformance import SENTENCES, cosines, reference_sentence_embeddings
from acceleron.testing.tiny import tiny_sentence_transformer

MODES = ["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


@pytest.fixture
def cache(tmp_path: Path) -> ExportCache:
    return ExportCache(tmp_path / "cache")


def _encoder(folder: Path, cache: ExportCache, **kwargs: Any) -> SentenceEncoder:
    return SentenceEncoder(folder, "torch", export_cache=cache, **kwargs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", [True, False], ids=["normalize", "raw"])
def test_every_pooling_mode_matches_the_reference(
    tmp_path: Path, cache: ExportCache, mode: str, normalize: bool
) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st", pooling=mode, normalize=normalize)
    got = _encoder(folder, cache).encode(SENTENCES, batch_size=3)
    expected = reference_sentence_embeddings(folder, SENTENCES)
    assert got.dtype == np.float32 and got.shape == (len(SENTENCES), 32)
    assert cosines(got, expected).min() >= 0.9999
    np.testing.assert_allclose(got, expected, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


def test_several_modes_concatenate_and_legacy_keys_are_read(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(
        tmp_path / "st", pooling=["cls", "mean"], normalize=False, legacy_pooling_keys=True
    )
    assert "pooling_mode_cls_token" in json.loads((folder / "1_Pooling" / "config.json").read_text())
    encoder = _encoder(folder, cache)
    got = encoder.encode(SENTENCES)
    assert got.shape == (len(SENTENCES), 64) == (len(SENTENCES), encoder.get_sentence_embedding_dimension())
    assert cosines(got, reference_sentence_embeddings(folder, SENTENCES)).min() >= 0.9999


def test_order_is_restored_after_length_sorting(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    encoder = _encoder(folder, cache)
    sentences = SENTENCES * 3
    batched = encoder.encode(sentences, batch_size=4)  # sorted by token count, batched, padded per batch
    one_by_one = np.stack([encoder.encode(sentence) for sentence in sentences])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert encoder.encode(sentences[0]).shape == (32,)  # a single string gives one vector


def test_inputs_are_truncated_to_max_seq_length(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st", max_seq_length=6)
    encoder = _encoder(folder, cache)
    assert encoder.max_seq_length == 6
    long = " ".join(["movie"] * 200)  # longer than the model's 72 positions: it would be refused untruncated
    first_tokens = "movie movie movie movie"  # [CLS] + 4 words + [SEP] = 6 tokens
    np.testing.assert_allclose(encoder.encode([long]), encoder.encode([first_tokens]), atol=1e-6)


def test_normalize_option(tmp_path: Path, cache: ExportCache) -> None:
    raw = tiny_sentence_transformer(tmp_path / "raw", normalize=False)
    plain = embed(SENTENCES[:3], raw, "torch", export_cache=cache)
    assert not np.allclose(np.linalg.norm(plain, axis=1), 1.0)
    unit = embed(SENTENCES[:3], raw, "torch", normalize=True, export_cache=cache)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=1e-6)
    # A folder whose modules normalise gives unit vectors whatever normalize says, as sentence-transformers does.
    normalised = tiny_sentence_transformer(tmp_path / "unit", normalize=True)
    kept = embed(SENTENCES[:3], normalised, "torch", normalize=False, export_cache=cache)
    np.testing.assert_allclose(np.linalg.norm(kept, axis=1), 1.0, atol=1e-6)


def test_the_pooling_config_is_part_of_the_export_key(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st", pooling="mean")
    before = source_fingerprint(ModelSource(folder, str(folder), None, True))
    mean = _encoder(folder, cache, export=True).encode(SENTENCES)  # torch runs a folder as it is unless exporting
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "cls"}))
    assert source_fingerprint(ModelSource(folder, str(folder), None, True)) != before
    cls = _encoder(folder, cache, export=True).encode(SENTENCES)
    assert len(list(cache.entries())) == 2, "a new pooling config must give a new export"
    assert cosines(cls, reference_sentence_embeddings(folder, SENTENCES)).min() >= 0.9999
    assert cosines(mean, cls).min() < 0.999


def test_a_saved_model_keeps_its_pooling(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st", pooling="cls")
    encoder = _encoder(folder, cache)
    saved = encoder.model.save_pretrained(tmp_path / "saved")
    assert (saved / "1_Pooling" / "config.json").is_file() and (saved / "modules.json").is_file()
    untouched = ExportCache(tmp_path / "must-stay-empty")
    reloaded = SentenceEncoder(saved, "torch", export=False, export_cache=untouched)
    assert not untouched.root.exists()
    np.testing.assert_allclose(reloaded.encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-6)
    again = SentenceEncoder(reloaded.model)  # a loaded model is reused as it is
    np.testing.assert_allclose(again.encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-6)


def test_the_task_and_its_alias() -> None:
    assert normalize_task("sentence-embeddings") == "sentence-embedding"
    assert normalize_task("embeddings") == "feature-extraction"
    spec = get_task("sentence-embedding")
    assert spec.output_names == ("sentence_embedding",)
    assert "sentence-embedding" in acceleron.get_backend("torch").supported_tasks()


def test_feature_extraction_keeps_token_vectors(tmp_path: Path) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    pipe = acceleron.pipeline("feature-extraction", model=str(folder), accelerator="torch")
    out = pipe("john lives in paris")
    assert np.asarray(out).shape == (1, 6, 32)  # [CLS] 4 words [SEP], token vectors as the stock pipeline gives


# ---- errors ----


def test_a_folder_without_modules_json_is_refused_with_what_is_needed(tmp_path: Path, cache: ExportCache) -> None:
    plain = build_tiny_model("feature-extraction", tmp_path / "bert")
    with pytest.raises(TaskNotSupportedError, match=r"no modules\.json.*1_Pooling/config\.json.*feature-extraction"):
        embed(["hello"], plain, "torch", export_cache=cache)
    assert not cache.root.exists() or list(cache.entries()) == [], "nothing may be exported for a refused folder"


@pytest.mark.parametrize("sentences", [[], ["fine", 3], "", None, ("a", None), {"a": 1}, (s for s in "ab")])
def test_bad_sentences_are_refused(tmp_path: Path, cache: ExportCache, sentences: Any) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    if sentences == "":  # an empty string is a sentence like any other
        assert embed(sentences, folder, "torch", export_cache=cache).shape == (32,)
        return
    with pytest.raises(InvalidInputError, match="sentences"):
        embed(sentences, folder, "torch", export_cache=cache)


def test_an_unknown_pooling_mode_is_refused(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"}))
    with pytest.raises(TaskNotSupportedError, match="'median'.*cls, max, mean"):
        embed(["hello"], folder, "torch", export_cache=cache)


def test_modules_acceleron_does_not_reproduce_are_refused(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(TaskNotSupportedError, match="Dense"):
        embed(["hello"], folder, "torch", export_cache=cache)


def test_an_unknown_backend_is_refused(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    with pytest.raises(UnknownBackendError, match="nope"):
        embed(["hello"], folder, "nope", export_cache=cache)


def test_pipeline_points_to_embed(tmp_path: Path) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    with pytest.raises(TaskNotSupportedError, match=r"acceleron\.embed"):
        acceleron.pipeline("sentence-embeddings", model=str(folder), accelerator="torch")


def test_a_module_path_leading_out_of_the_folder_is_not_copied(tmp_path: Path, cache: ExportCache) -> None:
    folder = tiny_sentence_transformer(tmp_path / "st")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "token.json").write_text("{}")
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["path"] = "../secret"
    (folder / "modules.json").write_text(json.dumps(modules))
    from acceleron.sources import sentence_module_files

    assert sentence_module_files(folder) == []
    shutil.rmtree(outside)


# ---- sentence-transformers itself ----


@pytest.mark.parametrize(
    ("pooling", "normalize"),
    [
        ("mean", True),
        ("cls", False),
        ("max", False),
        ("lasttoken", True),
        (["weightedmean", "mean_sqrt_len_tokens"], False),
    ],
)
def test_tiny_folders_match_sentence_transformers(
    tmp_path: Path, cache: ExportCache, pooling: Any, normalize: bool
) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = tiny_sentence_transformer(tmp_path / "st", pooling=pooling, normalize=normalize)
    expected = st.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, batch_size=3)
    got = _encoder(folder, cache).encode(SENTENCES, batch_size=3)
    assert cosines(got, expected).min() >= 0.9999
