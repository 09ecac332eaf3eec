"""all-MiniLM-L6-v2 through ``acceleron.embed`` against sentence-transformers' ``encode()``, on every backend.

Skipped unless ``ACCELERON_REAL_MODELS=1`` and sentence-transformers is installed. Accuracy only, never
timings (``benchmarks/embed.py`` measures throughput). Run::

    ACCELERON_REAL_MODELS=1 HF_HUB_OFFLINE=1 python -m pytest tests/test_real_sentence_embeddings.py -v
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from acceleron.cache import ExportCache
from acceleron.errors import BackendNotInstalledError, BackendUnavailableError
from acceleron.testing.conformance import cosines

pytestmark = pytest.mark.skipif(
    os.environ.get("ACCELERON_REAL_MODELS") != "1", reason="set ACCELERON_REAL_MODELS=1 to run on the real models"
)

SENTENCES = 200


@pytest.fixture(scope="module")
def minilm() -> Path:
    from acceleron.testing import assets

    return assets.minilm_path()


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    from acceleron.testing import assets

    return [sentence for sentence, _ in assets.heldout_sentences(SENTENCES)]


@pytest.fixture(scope="module")
def expected(minilm: Path, sentences: list[str]) -> Any:
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm), device="cpu").encode(sentences, batch_size=32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("real-sentence-cache"))


@pytest.mark.parametrize("backend", ["torch", "ort", "ov", "ipex"])
def test_minilm_matches_sentence_transformers(
    minilm: Path, sentences: list[str], expected: Any, cache: ExportCache, backend: str
) -> None:
    from acceleron import SentenceEncoder

    try:
        encoder = SentenceEncoder(
            minilm, backend, dtype="float32", num_threads=2, export=True, export_cache=cache, strict=True
        )
    except (BackendNotInstalledError, BackendUnavailableError) as error:
        pytest.skip(str(error))
    assert list(encoder.model.session.output_names) == ["sentence_embedding"]
    assert encoder.max_seq_length == 256 and encoder.modules.pooling == ("mean",) and encoder.modules.normalize
    got = encoder.encode(sentences, batch_size=32)
    assert got.shape == expected.shape == (SENTENCES, 384)
    similarity = cosines(got, expected)
    lowest = float(similarity.min())
    print(f"{backend}: min cosine {lowest:.7f} (1 - min = {1 - lowest:.1e}) over {len(sentences)} sentences")
    assert lowest >= 0.9999
