"""Tests for acceleron.testing.assets.

The slow tests use the real assets (they may download, install and fine-tune on first use) and run
only with ``ACCELERON_REAL_MODELS=1``::

    HF_HUB_OFFLINE=1 ACCELERON_REAL_MODELS=1 python -m pytest tests/test_assets.py
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from acceleron.testing import assets

real_models = pytest.mark.skipif(
    os.environ.get("ACCELERON_REAL_MODELS") != "1", reason="set ACCELERON_REAL_MODELS=1 to use real models"
)

SAMPLE = (
    "1\t2.26666666667\tA gorgeous, witty film.\r\n"
    "2\t0.5\tRated exactly at the positive threshold.\r\n"
    "3\t0.49\tJust below the positive threshold.\r\n"
    "4\t-0.49\tJust above the negative threshold.\r\n"
    "5\t-0.5\tRated exactly at the negative threshold.\r\n"
    "6\t-3.1\tA tedious mess.\r\n"
    "7\t1.2\tA gorgeous, witty film.\r\n"
    "8\t0\tNeutral, with a\ttab in the text.\r\n"
)


def test_parse_and_label_thresholds() -> None:
    rows = assets.parse_movie_ratings(SAMPLE)
    assert rows[0] == ("A gorgeous, witty film.", pytest.approx(2.26666666667))
    assert rows[-1] == ("Neutral, with a\ttab in the text.", 0.0)
    assert [assets.label_for_rating(rating) for _, rating in rows] == [1, 1, None, None, 0, 0, 1, None]
    assert assets.labelled_examples(rows) == [
        ("A gorgeous, witty film.", assets.POSITIVE),
        ("Rated exactly at the positive threshold.", assets.POSITIVE),
        ("Rated exactly at the negative threshold.", assets.NEGATIVE),
        ("A tedious mess.", assets.NEGATIVE),
    ]


def test_parse_rejects_malformed_lines() -> None:
    with pytest.raises(ValueError, match="line 2"):
        assets.parse_movie_ratings("1\t1.0\tfine\n2\tnot-a-number\tbroken\n")
    with pytest.raises(ValueError, match="3 tab-separated fields"):
        assets.parse_movie_ratings("1\t1.0\n")


def test_split_examples_is_deterministic_and_order_independent() -> None:
    examples = [(f"sentence {i}", i % 2) for i in range(100)]
    train, heldout = assets.split_examples(examples)
    assert (len(train), len(heldout)) == (80, 20)
    assert assets.split_examples(list(reversed(examples))) == (train, heldout)
    assert sorted(train + heldout) == sorted(examples)


def _fake_sdist(folder: Path, files: dict[str, bytes]) -> Path:
    """An sdist laid out as vaderSentiment's: the resources archive nested inside."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    sdist = folder / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(sdist, mode="w:gz") as outer:
        info = tarfile.TarInfo(f"vaderSentiment-3.3.2/{assets.VADER_RESOURCES_ARCHIVE}")
        info.size = len(inner.getvalue())
        outer.addfile(info, io.BytesIO(inner.getvalue()))
    return sdist


def test_all_four_rated_files_come_out_of_the_nested_archive(tmp_path: Path) -> None:
    files = {name: f"1\t0.5\t{name}\n".encode() for name in assets.RATED_FILES}
    sdist = _fake_sdist(tmp_path, {**files, "vader_sentiment_lexicon.txt": b"not wanted"})
    assert assets._extract_rated_files(sdist, assets.RATED_FILES) == files
    partial = _fake_sdist(tmp_path, {assets.MOVIE_FILE: b"1\t0.5\tonly movies\n"})
    with pytest.raises(RuntimeError, match="tweets_GroundTruth.txt"):
        assets._extract_rated_files(partial, assets.RATED_FILES)


def test_cache_root_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.delenv("ACCELERON_ASSETS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert assets.cache_root() == tmp_path / "acceleron" / "assets"
    monkeypatch.setenv("ACCELERON_ASSETS_DIR", str(tmp_path / "elsewhere"))
    assert assets.cache_root() == tmp_path / "elsewhere"


@real_models
@pytest.mark.slow
def test_minilm_cosine() -> None:
    assert assets.minilm_check_cosine() == pytest.approx(assets.MINILM_CHECK_COSINE, abs=0.005)


@real_models
@pytest.mark.slow
def test_labelled_split_is_deterministic_and_disjoint() -> None:
    train, heldout = assets.labelled_split()
    assert assets.labelled_split() == (train, heldout)
    assert len(train) > 7000
    assert len(heldout) > 1024
    assert not {s for s, _ in train} & {s for s, _ in heldout}
    assert assets.heldout_sentences(1024) == heldout[:1024]
    with pytest.raises(ValueError):
        assets.heldout_sentences(len(heldout) + 1)


@real_models
@pytest.mark.slow
def test_sentiment_pipeline_accuracy_and_seed_examples() -> None:
    classifier = assets.load_sentiment_pipeline()
    assert assets.pipeline_accuracy(classifier, assets.heldout_sentences(1024)) >= 0.80
    for sentence, expected in assets.SEED_EXAMPLES:
        assert classifier(sentence)[0]["label"] == expected


@real_models
@pytest.mark.slow
def test_smollm2_folder_and_chat_answer() -> None:
    path = assets.smollm2_path()
    assert assets.smollm2_path() == path
    for name in (*assets.SMOLLM2_REQUIRED_FILES, "source.json"):
        assert (path / name).is_file(), name
    model, tokenizer = assets.load_smollm2()
    assert model.config.model_type == "llama" and not hasattr(model.config, "quantization_config")
    assert tokenizer.chat_template and tokenizer.padding_side == "left"
    assert assets.SMOLLM2_CHECK_ANSWER in assets.smollm2_chat_answer(model, tokenizer)
