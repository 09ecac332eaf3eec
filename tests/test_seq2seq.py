"""Encoder-decoder models in the core: the task table, the model class, the pipelines transformers 5 removed.

The numerics (tokens identical to PyTorch on every backend) are the conformance suite's; these run on
the ``torch`` reference backend and check the contract around them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import acceleron
from acceleron.errors import ArtifactNotFoundError, InvalidInputError, TaskNotSupportedError
from acceleron.tasks import Seq2SeqLM, get_task, infer_task, normalize_task, translation_languages
from acceleron.testing import tiny


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq2seq")
    return {arch: tiny.tiny_seq2seq(arch, root / arch) for arch in ("t5", "whisper", "vision-encoder-decoder")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _pipe(task: str, folder: Path, cache: Path, **kwargs: Any) -> Any:
    return acceleron.pipeline(
        task, model=str(folder), accelerator="torch", model_kwargs={"export_cache": cache}, **kwargs
    )


def test_translation_names_carry_their_languages() -> None:
    assert normalize_task("translation_en_to_fr") == "translation"
    assert normalize_task("TRANSLATION_en_to_de") == "translation"
    assert translation_languages("translation_en_to_fr") == ("en", "fr")
    assert translation_languages("translation") is None
    with pytest.raises(TaskNotSupportedError):
        normalize_task("translation_en")


def test_folders_infer_their_encoder_decoder_task(folders: dict[str, Path]) -> None:
    assert infer_task(folders["t5"]) == "text2text-generation"
    assert infer_task(folders["whisper"]) == "automatic-speech-recognition"
    assert infer_task(folders["vision-encoder-decoder"]) == "image-to-text"
    whisper = get_task("asr", ["WhisperForConditionalGeneration"])
    assert isinstance(whisper.kind, Seq2SeqLM) and whisper.kind.graph_names == ("encoder", "decoder")


def test_the_export_has_a_subfolder_per_graph_and_reloads_only_whole(
    folders: dict[str, Path], cache: Path, tmp_path: Path
) -> None:
    model = acceleron.OptimizedModel.from_pretrained(folders["t5"], accelerator="torch", export_cache=cache)
    assert set(model.sessions) == {"encoder", "decoder"}
    assert model.manifest["graphs"] == {"encoder": "encoder/model.safetensors", "decoder": "decoder/model.safetensors"}
    saved = model.save_pretrained(tmp_path / "saved")
    assert (saved / "encoder" / "model.safetensors").is_file() and (saved / "decoder" / "config.json").is_file()
    reloaded = acceleron.OptimizedModel.from_pretrained(saved, accelerator="torch", export=False)
    ids = torch.tensor([[5, 6, 7, 1]])
    settings = {"max_new_tokens": 6, "do_sample": False}
    assert torch.equal(reloaded.generate(input_ids=ids, **settings), model.generate(input_ids=ids, **settings))
    shutil.rmtree(saved / "decoder")
    with pytest.raises(ArtifactNotFoundError, match="not of decoder"):
        acceleron.OptimizedModel.from_pretrained(saved, accelerator="torch", export=False)


def test_text2text_pipelines_keep_transformers_4_results(folders: dict[str, Path], cache: Path) -> None:
    pipe = _pipe("text2text-generation", folders["t5"], cache)
    one = pipe("the movie was great fun", max_new_tokens=4)
    assert isinstance(one, list) and set(one[0]) == {"generated_text"}
    many = pipe(["the movie", "john lives in paris"], max_new_tokens=4)
    assert len(many) == 2 and all(set(item) == {"generated_text"} for item in many)
    two = pipe("the movie", max_new_tokens=4, num_beams=2, num_return_sequences=2)
    assert len(two) == 2
    ids = pipe("the movie", max_new_tokens=4, return_tensors=True)[0]["generated_token_ids"]
    assert isinstance(ids, torch.Tensor) and ids.dim() == 1
    assert pipe([]) == []
    with pytest.raises(TypeError, match="strings"):
        pipe(["fine", 3])
    summary = _pipe("summarization", folders["t5"], cache)("the movie was great fun", max_new_tokens=4)
    assert set(summary[0]) == {"summary_text"}


def test_translation_applies_the_task_prefix_and_languages(folders: dict[str, Path], cache: Path) -> None:
    pipe = _pipe("translation_en_to_fr", folders["t5"], cache)
    assert pipe.prefix == "translate english to french: "  # from the config's task_specific_params
    tokens = pipe.preprocess("the city")["input_ids"][0]
    assert pipe.tokenizer.decode(tokens, skip_special_tokens=True).startswith("translate english to french:")
    result = pipe("the city", max_new_tokens=4)
    assert set(result[0]) == {"translation_text"}
    assert pipe._preprocess_params == {"src_lang": "en", "tgt_lang": "fr"}


def test_whisper_refuses_word_timestamps_with_the_reason(folders: dict[str, Path], cache: Path) -> None:
    asr = _pipe("automatic-speech-recognition", folders["whisper"], cache)
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert set(asr(audio, max_new_tokens=4)) == {"text"}
    assert "chunks" in asr(audio, max_new_tokens=4, return_timestamps=True)
    with pytest.raises(InvalidInputError, match="attention weights"):
        asr(audio, max_new_tokens=4, return_timestamps="word")


def test_image_to_text_refuses_a_prompt(folders: dict[str, Path], cache: Path) -> None:
    from PIL import Image

    pipe = _pipe("image-to-text", folders["vision-encoder-decoder"], cache)
    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    result = pipe(image, max_new_tokens=3)
    assert isinstance(result, list) and set(result[0]) == {"generated_text"}
    assert [len(r) for r in pipe([image, image], max_new_tokens=3)] == [1, 1]
    with pytest.raises(InvalidInputError, match="prompt"):
        pipe(image, prompt="a photo of")


def test_decoder_steps_refuse_encoder_outputs_from_elsewhere(folders: dict[str, Path], cache: Path) -> None:
    from transformers.modeling_outputs import BaseModelOutput

    model = acceleron.OptimizedModel.from_pretrained(folders["t5"], accelerator="torch", export_cache=cache)
    foreign = BaseModelOutput(last_hidden_state=torch.zeros(1, 3, 32))
    with pytest.raises(InvalidInputError, match="cross-attention"):
        model(decoder_input_ids=torch.tensor([[0]]), encoder_outputs=foreign)
