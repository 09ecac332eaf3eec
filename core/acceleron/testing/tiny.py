"""Tiny random models for tests, built offline: every architecture the conformance suite runs on.

Each text architecture gets its own tokenizer class, as real checkpoints have: BERT a WordPiece
tokenizer with token type ids, RoBERTa a byte-level BPE tokenizer without them, DistilBERT a
WordPiece tokenizer without them. Causal LMs get a byte-level BPE tokenizer with a chat template.

Needs torch, transformers and tokenizers (and Pillow for the image model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acceleron.tasks import TASKS

WORDS = [
    "the",
    "a",
    "an",
    "is",
    "was",
    "were",
    "be",
    "this",
    "that",
    "it",
    "movie",
    "film",
    "story",
    "actor",
    "actors",
    "plot",
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
    "very",
    "not",
    "and",
    "or",
    "but",
    "of",
    "to",
    "in",
    "on",
    "with",
    "for",
    "paris",
    "france",
    "london",
    "city",
    "capital",
    "what",
    "where",
    "who",
    "when",
    "how",
    "man",
    "woman",
    "eating",
    "food",
    "bread",
    "piece",
    "john",
    "mary",
    "lives",
    "works",
    "at",
    "company",
    "acme",
    "music",
    "play",
    "played",
    "time",
    "day",
    "night",
    "happy",
    "sad",
]
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

TEXT_LABELS = {
    "text-classification": ["NEGATIVE", "POSITIVE"],
    "zero-shot-classification": ["contradiction", "neutral", "entailment"],
    "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
}
IMAGE_LABELS = ["cat", "dog", "bird"]
AUDIO_LABELS = ["yes", "no", "silence"]

TEXT_TASKS = (
    "feature-extraction",
    "text-classification",
    "zero-shot-classification",
    "token-classification",
    "question-answering",
    "fill-mask",
)


def _labels(names: list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


#: The text architectures :func:`build_tiny_model` builds, each with its own tokenizer class.
TEXT_ARCHITECTURES = ("bert", "roberta", "distilbert")
_BPE_SPECIAL = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def _wordpiece_vocab() -> dict[str, int]:
    return {token: index for index, token in enumerate((*SPECIAL, *WORDS))}


def _byte_level_bpe(special: tuple[str, ...], corpus: list[str]) -> Any:
    """A byte-level BPE tokenizer (GPT-2/RoBERTa style) trained on ``corpus``, ``special`` tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer)
    return tokenizer


def _roberta_tokenizer() -> Any:
    """A byte-level BPE tokenizer like RoBERTa's: ``<s> ... </s>``, no token type ids."""
    from tokenizers import processors
    from transformers import RobertaTokenizerFast

    tokenizer = _byte_level_bpe(_BPE_SPECIAL, [" ".join(WORDS), *WORDS, *sample_inputs("text-classification", 6)])
    ids: dict[str, int] = {token: tokenizer.token_to_id(token) or 0 for token in _BPE_SPECIAL}
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", ids["</s>"]), ("<s>", ids["<s>"]))
    return RobertaTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=64,
    )


def tiny_tokenizer(arch: str) -> Any:
    """The tokenizer of a tiny ``arch`` model (see the module docstring)."""
    import transformers

    if arch == "roberta":
        return _roberta_tokenizer()
    if arch == "distilbert":
        return transformers.DistilBertTokenizerFast(vocab=_wordpiece_vocab(), do_lower_case=True, model_max_length=64)
    if arch == "bert":
        bert: Any = transformers.BertTokenizerFast  # type: ignore[attr-defined]
        return bert(vocab=_wordpiece_vocab(), do_lower_case=True, model_max_length=64)
    raise ValueError(f"no tiny text architecture {arch!r}; choose one of {', '.join(TEXT_ARCHITECTURES)}")


def _text_config(arch: str, task: str, vocab_size: int) -> Any:
    import transformers

    labels = _labels(TEXT_LABELS.get(task, ["LABEL_0", "LABEL_1"]))
    common = {"vocab_size": vocab_size, "max_position_embeddings": 72, "pad_token_id": 0, **labels}
    if arch == "bert":
        return transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **common
        )
    if arch == "roberta":
        # A real RoBERTa: one token type (its tokenizer emits none), padding id 1, positions offset by it.
        return transformers.RobertaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            type_vocab_size=1,
            **{**common, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
        )
    if arch == "distilbert":
        return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **common)
    raise ValueError(f"no tiny text architecture {arch!r}; choose bert, roberta or distilbert")


#: The causal-LM families :func:`tiny_causal_lm` builds.
CAUSAL_LM_FAMILIES = ("gpt2", "llama", "qwen2")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CHAT_SPECIAL = ("<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>")


def _causal_tokenizer() -> Any:
    """A small byte-level BPE tokenizer (GPT-2 style) with a pad token and a chat template."""
    from transformers import PreTrainedTokenizerFast

    corpus = [*WORDS, *sample_inputs("text-classification", 6), "what is the capital of france? paris."]
    tokenizer = _byte_level_bpe(_CHAT_SPECIAL, corpus)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=256,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _causal_config(family: str, vocab_size: int, eos: int, pad: int) -> Any:
    import transformers

    common: dict[str, Any] = {"vocab_size": vocab_size, "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad}
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
    decoder: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        **common,
    }
    if family == "llama":
        return transformers.LlamaConfig(**decoder)
    if family == "qwen2":
        return transformers.Qwen2Config(**decoder)
    raise ValueError(f"no tiny causal LM family {family!r}; choose one of {', '.join(CAUSAL_LM_FAMILIES)}")


def tiny_causal_lm(family: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random causal LM of ``family`` (gpt2, llama, qwen2) with its tokenizer into ``directory``."""
    import torch
    import transformers

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = _causal_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|pad|>"])
    config = _causal_config(family, len(tokenizer), eos, pad)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.eval()
    model.generation_config.pad_token_id = pad
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def _image_parts() -> tuple[Any, Any]:
    import transformers

    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        **_labels(IMAGE_LABELS),
    )
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    return config, processor


#: The speech architectures :func:`build_tiny_model` builds: ``wav2vec2`` like wav2vec2-base (group
#: norm in the feature encoder; its extractor returns no attention mask) and ``wav2vec2-lv60`` like
#: wav2vec2-large-lv60 (layer norm, stable layer norm; its extractor returns attention masks).
AUDIO_ARCHITECTURES = ("wav2vec2", "wav2vec2-lv60")
#: The characters of the tiny CTC tokenizer (after its special tokens; ``|`` separates words).
CTC_CHARACTERS = "abcdefghijklmnopqrstuvwxyz'"
_CTC_SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "|")


def ctc_tokenizer() -> Any:
    """A character-level ``Wav2Vec2CTCTokenizer`` (``<pad>`` is the CTC blank, ``|`` the word delimiter)."""
    import json
    import tempfile

    from transformers import Wav2Vec2CTCTokenizer

    vocab = {token: index for index, token in enumerate((*_CTC_SPECIAL, *CTC_CHARACTERS))}
    with tempfile.TemporaryDirectory() as scratch:  # the tokenizer reads its vocab from a file only
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token="<unk>",
            pad_token="<pad>",
            bos_token="<s>",
            eos_token="</s>",
            word_delimiter_token="|",
        )


def _audio_parts(arch: str, task: str) -> tuple[Any, list[Any]]:
    """The config and preprocessors (feature extractor; a CTC tokenizer for speech recognition) of ``arch``."""
    import transformers

    if arch not in AUDIO_ARCHITECTURES:
        raise ValueError(f"no tiny audio architecture {arch!r}; choose one of {', '.join(AUDIO_ARCHITECTURES)}")
    large = arch == "wav2vec2-lv60"
    preprocessors: list[Any] = [
        transformers.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=large
        )
    ]
    head: dict[str, Any] = {"vocab_size": 8}
    if task == "automatic-speech-recognition":
        tokenizer = ctc_tokenizer()
        preprocessors.append(tokenizer)
        head = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    layout: dict[str, Any] = {}
    if large:
        layout = {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "feat_extract_activation": "gelu"}
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        **head,
        **layout,
        **_labels(AUDIO_LABELS),
    )
    return config, preprocessors


# ---- vision: one tiny architecture per task, with its slow (PIL) image processor ----

#: The architecture :func:`build_tiny_model` builds for each vision task.
VISION_ARCHITECTURES: dict[str, str] = {
    "object-detection": "yolos",
    "image-segmentation": "segformer",
    "depth-estimation": "dpt",
    "image-feature-extraction": "vit",
    "zero-shot-image-classification": "clip",
}
#: Candidate labels for zero-shot-image-classification (words of the tiny CLIP's vocabulary).
ZERO_SHOT_IMAGE_LABELS = ["cat", "dog", "bird"]
#: Weights wider than transformers' default initialisation, so that random outputs differ between
#: boxes, labels and pixels instead of tying (a tie makes the order of results arbitrary).
_VISION_INIT = 0.3
_TINY_VIT: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "initializer_range": _VISION_INIT,
}


def _clip_tokenizer() -> Any:
    """A WordPiece tokenizer whose vocabulary holds the zero-shot labels and the pipeline's template words."""
    import transformers

    vocab = _wordpiece_vocab()
    for word in ("photo", *ZERO_SHOT_IMAGE_LABELS):
        vocab.setdefault(word, len(vocab))
    bert: Any = transformers.BertTokenizerFast  # type: ignore[attr-defined]
    return bert(vocab=vocab, do_lower_case=True, model_max_length=64)


def _vision_parts(task: str) -> tuple[Any, list[Any]]:
    """The config and preprocessors of the tiny model of a vision task; images are resized to 32x32."""
    import transformers

    square = {"height": 32, "width": 32}
    if task == "object-detection":
        yolos = transformers.YolosConfig(
            image_size=[32, 32], patch_size=8, num_detection_tokens=4, **_TINY_VIT, **_labels(IMAGE_LABELS)
        )
        return yolos, [transformers.YolosImageProcessorPil(size=square)]
    if task == "image-segmentation":
        segformer = transformers.SegformerConfig(
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[16, 32],
            patch_sizes=[7, 3],
            strides=[4, 2],
            num_attention_heads=[1, 2],
            mlp_ratios=[2, 2],
            decoder_hidden_size=32,
            initializer_range=_VISION_INIT,
            **_labels(IMAGE_LABELS),
        )
        segformer.image_size = 32  # SegFormer takes any size; the export plan traces at image_size
        return segformer, [transformers.SegformerImageProcessorPil(size=square)]
    if task == "depth-estimation":
        # DPT's head multiplies the scale through four fusion stages: a narrower init keeps depths near 1.
        dpt = transformers.DPTConfig(
            image_size=32,
            patch_size=8,
            **{**_TINY_VIT, "num_hidden_layers": 4, "initializer_range": 0.1},
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16,
        )
        return dpt, [transformers.DPTImageProcessorPil(size=square)]
    if task == "image-feature-extraction":
        vit = transformers.ViTConfig(image_size=32, patch_size=8, **_TINY_VIT)
        return vit, [transformers.ViTImageProcessorPil(size=square)]
    if task == "zero-shot-image-classification":
        tokenizer = _clip_tokenizer()
        clip = transformers.CLIPConfig(
            text_config={
                **_TINY_VIT,
                "vocab_size": len(tokenizer),
                "max_position_embeddings": 64,
                "pad_token_id": 0,
                "bos_token_id": tokenizer.cls_token_id,
                "eos_token_id": tokenizer.sep_token_id,  # the text tower pools at the first [SEP]
            },
            vision_config={"image_size": 32, "patch_size": 8, **_TINY_VIT},
            projection_dim=16,
            initializer_factor=10.0,  # CLIP scales its init by this, not by initializer_range
        )
        processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size=square)
        return clip, [processor, tokenizer]
    raise ValueError(f"no tiny vision model for {task!r}; choose one of {', '.join(VISION_ARCHITECTURES)}")


def _vary_zero_initialised(model: Any) -> None:
    """YOLOS starts its detection tokens and positions at zero: every detection would be the same box."""
    import torch

    embeddings = getattr(getattr(model, "vit", None), "embeddings", None)
    with torch.no_grad():
        for name in ("detection_tokens", "position_embeddings"):
            parameter = getattr(embeddings, name, None)
            if parameter is not None and not bool(parameter.any()):
                parameter.normal_(std=_VISION_INIT)


#: The encoder-decoder architectures :func:`tiny_seq2seq` builds, and the default one of each task.
SEQ2SEQ_ARCHITECTURES = ("t5", "bart", "marian", "whisper", "vision-encoder-decoder")
SEQ2SEQ_DEFAULTS = {
    "text2text-generation": "t5",
    "summarization": "bart",
    "translation": "marian",
    "automatic-speech-recognition": "whisper",
    "image-to-text": "vision-encoder-decoder",
}
_SEQ2SEQ_SPECIAL = ("<pad>", "</s>", "<unk>", "<s>")
#: Whisper's special tokens before the timestamps (an English-only model's set).
_WHISPER_SPECIAL = (
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)


def _seq2seq_text_tokenizer(arch: str) -> Any:
    """A byte-level BPE tokenizer with ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``<s>`` 3; sentences end with ``</s>``
    (and BART's start with ``<s>``), as their real tokenizers do."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    corpus = [*WORDS, *sample_inputs("text-classification", 6), "translate english to french: the city"]
    tokenizer = _byte_level_bpe(_SEQ2SEQ_SPECIAL, corpus)
    single = "<s> $A </s>" if arch == "bart" else "$A </s>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} $B </s>", special_tokens=[("<s>", 3), ("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        model_max_length=64,
    )


def _whisper_parts() -> tuple[Any, Any, dict[str, Any]]:
    """A Whisper tokenizer (byte-level BPE, the special tokens and 1,501 timestamps) and feature extractor."""
    import json

    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    bpe = _byte_level_bpe(("<|endoftext|>",), [*WORDS, *sample_inputs("text-classification", 6)])
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = WhisperTokenizer(vocab=model["vocab"], merges=merges, model_max_length=64, pad_token="<|endoftext|>")
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tokenizer.add_special_tokens({"additional_special_tokens": list(_WHISPER_SPECIAL)})
    tokenizer.add_tokens(timestamps)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<|endoftext|>", *_WHISPER_SPECIAL)}
    return tokenizer, WhisperFeatureExtractor(feature_size=80), ids


def _seq2seq_model(arch: str, seed: int) -> tuple[Any, list[Any]]:
    """A tiny random encoder-decoder of ``arch`` and its preprocessors (see :data:`SEQ2SEQ_ARCHITECTURES`)."""
    import importlib

    import torch

    transformers: Any = importlib.import_module("transformers")  # configs' keyword arguments vary by version
    config: Any
    model: Any
    small: dict[str, Any] = {"encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4}
    small.update(decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, d_model=32)
    torch.manual_seed(seed)
    if arch in ("t5", "bart", "marian"):
        tokenizer = _seq2seq_text_tokenizer(arch)
        ids: dict[str, Any] = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 3, "vocab_size": len(tokenizer)}
        prefixes = {
            "summarization": {"prefix": "summarize: ", "max_length": 24, "min_length": 2},
            "translation_en_to_fr": {"prefix": "translate english to french: ", "max_length": 24},
        }
        if arch == "t5":
            config = transformers.T5Config(
                d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                decoder_start_token_id=0, task_specific_params=prefixes, **ids,
            )  # fmt: skip
            model = transformers.T5ForConditionalGeneration(config)
        elif arch == "bart":
            config = transformers.BartConfig(
                max_position_embeddings=64, decoder_start_token_id=1, forced_eos_token_id=1, forced_bos_token_id=None,
                **small, **ids,
            )  # fmt: skip
            model = transformers.BartForConditionalGeneration(config)
        else:
            config = transformers.MarianConfig(max_position_embeddings=64, decoder_start_token_id=0, **small, **ids)
            model = transformers.MarianMTModel(config)
        return model, [tokenizer]
    if arch == "whisper":
        tokenizer, extractor, special = _whisper_parts()
        config = transformers.WhisperConfig(
            vocab_size=len(tokenizer), num_mel_bins=80, max_source_positions=1500, max_target_positions=128,
            decoder_start_token_id=special["<|startoftranscript|>"], pad_token_id=special["<|endoftext|>"],
            eos_token_id=special["<|endoftext|>"], bos_token_id=special["<|endoftext|>"], **small,
        )  # fmt: skip
        model = transformers.WhisperForConditionalGeneration(config)
        generation: Any = model.generation_config
        generation.decoder_start_token_id = special["<|startoftranscript|>"]
        generation.no_timestamps_token_id = special["<|notimestamps|>"]
        generation.is_multilingual = False
        generation.max_length = 48
        generation.suppress_tokens = []
        generation.begin_suppress_tokens = [special["<|endoftext|>"]]
        generation.forced_decoder_ids = None
        generation.lang_to_id = {"<|en|>": special["<|en|>"]}
        generation.task_to_id = {"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]}
        generation.alignment_heads = [[1, 0], [1, 2]]  # (layer, head) pairs for word timestamps
        generation._from_model_config = False  # else generate() rebuilds it from the config, without the above
        return model, [tokenizer, extractor]
    if arch == "vision-encoder-decoder":
        tokenizer = _causal_tokenizer()
        eos, pad = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|pad|>"])
        encoder, processor = _image_parts()
        encoder = transformers.ViTConfig(
            **{k: v for k, v in encoder.to_dict().items() if k not in ("id2label", "label2id")}
        )
        decoder = transformers.GPT2Config(
            n_embd=24, n_layer=2, n_head=4, n_positions=64, vocab_size=len(tokenizer), bos_token_id=eos,
            eos_token_id=eos, pad_token_id=pad, add_cross_attention=True, is_decoder=True,
        )  # fmt: skip
        config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = eos, pad, eos
        model = transformers.VisionEncoderDecoderModel(config)
        model.generation_config.decoder_start_token_id = eos
        model.generation_config.pad_token_id, model.generation_config.eos_token_id = pad, eos
        model.generation_config.max_length = 24
        return model, [tokenizer, processor]
    raise ValueError(f"no tiny encoder-decoder {arch!r}; choose one of {', '.join(SEQ2SEQ_ARCHITECTURES)}")


def tiny_seq2seq(arch: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random encoder-decoder of ``arch`` (:data:`SEQ2SEQ_ARCHITECTURES`) with its preprocessors."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    model, preprocessors = _seq2seq_model(arch, seed)
    model.eval()
    model.save_pretrained(target)
    for part in preprocessors:
        part.save_pretrained(target)
    return target


def build_tiny_model(task: str, directory: str | Path, arch: str | None = None, seed: int = 0) -> Path:
    """Write a tiny random model for ``task`` (weights, config, preprocessor) into ``directory``.

    Text tasks take ``arch`` in :data:`TEXT_ARCHITECTURES`, audio tasks (audio-classification,
    automatic-speech-recognition with a CTC head) one in :data:`AUDIO_ARCHITECTURES`;
    image-classification builds a ViT, and each vision task its :data:`VISION_ARCHITECTURES` entry.
    The same seed gives the same weights.
    """
    import torch
    import transformers

    spec = TASKS[task]
    if arch in SEQ2SEQ_ARCHITECTURES or (
        arch is None and task in SEQ2SEQ_DEFAULTS and task != "automatic-speech-recognition"
    ):
        return tiny_seq2seq(arch or SEQ2SEQ_DEFAULTS[task], directory, seed)
    if spec.kind.generates:
        return tiny_causal_lm(arch or "llama", directory, seed)
    if task == "sentence-embedding":
        return tiny_sentence_transformer(directory, arch=arch or "bert", seed=seed)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    preprocessors: list[Any]
    if task in VISION_ARCHITECTURES:
        if arch not in (None, VISION_ARCHITECTURES[task]):
            raise ValueError(f"the tiny {task} model is a {VISION_ARCHITECTURES[task]}, not {arch!r}")
        config, preprocessors = _vision_parts(task)
        torch.manual_seed(seed)
        vision_model = getattr(transformers, spec.auto_class).from_config(config)
        _vary_zero_initialised(vision_model)
        vision_model.eval()
        vision_model.save_pretrained(target)
        for part in preprocessors:
            part.save_pretrained(target)
        return target
    if spec.modality == "text":
        tokenizer = tiny_tokenizer(arch or "bert")
        config, preprocessors = _text_config(arch or "bert", task, len(tokenizer)), [tokenizer]
    elif spec.modality == "image":
        config, processor = _image_parts()
        preprocessors = [processor]
    else:
        config, preprocessors = _audio_parts(arch or AUDIO_ARCHITECTURES[0], task)
    torch.manual_seed(seed)
    model = getattr(transformers, spec.auto_class).from_config(config)
    model.eval()
    model.save_pretrained(target)
    for preprocessor in preprocessors:
        preprocessor.save_pretrained(target)
    return target


def sample_inputs(task: str, count: int = 4, mask_token: str = "[MASK]") -> list[Any]:
    """Pipeline inputs for ``task`` (sentences, question/context pairs, images or waveforms)."""
    import numpy as np

    sentences = [
        "this movie was great fun",
        "the plot was boring and the actors were bad",
        "john lives in paris",
        "what a wonderful film",
        "mary works at acme in london",
        "the worst story of the day",
    ]
    rng = np.random.default_rng(0)
    if task == "question-answering":
        return [
            {"question": "where does john live", "context": sentences[i % 6] + " john lives in paris"}
            for i in range(count)
        ]
    if task == "fill-mask":
        return [f"the movie was {mask_token} {i}" if i % 2 else f"john lives in {mask_token}" for i in range(count)]
    if task == "image-classification":
        from PIL import Image

        return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(count)]
    if task in VISION_ARCHITECTURES:  # sizes differ: boxes, masks and depth maps scale back to each
        from PIL import Image

        shapes = [(40 + 8 * i, 48 - 4 * i, 3) for i in range(count)]
        return [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in shapes]
    if task == "audio-classification":
        return [rng.standard_normal(4000 + 800 * i).astype(np.float32) for i in range(count)]
    if task == "automatic-speech-recognition":
        # Odd lengths among them; the last is 1.5 s at 16 kHz, long enough to chunk (chunk_length_s=0.5).
        lengths = [4000 + 1201 * i for i in range(count - 1)] + [24011]
        return [rng.standard_normal(length).astype(np.float32) for length in lengths[-count:]]
    return [sentences[i % len(sentences)] for i in range(count)]


def outputs_close(left: Any, right: Any, atol: float, rtol: float = 1e-4) -> bool:
    """Whether two pipeline results (nested lists/dicts of numbers and strings) agree."""
    import numpy as np

    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(outputs_close(left[k], right[k], atol, rtol) for k in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(outputs_close(a, b, atol, rtol) for a, b in zip(left, right))
    if isinstance(left, (int, float, np.floating, np.integer)) and isinstance(
        right, (int, float, np.floating, np.integer)
    ):
        return bool(abs(float(left) - float(right)) <= atol + rtol * abs(float(right)))
    if hasattr(left, "shape") and hasattr(right, "shape"):
        return bool(np.allclose(np.asarray(left), np.asarray(right), atol=atol, rtol=rtol))
    return bool(left == right)


def tiny_sentence_transformer(
    directory: str | Path,
    pooling: str | list[str] = "mean",
    normalize: bool = True,
    arch: str = "bert",
    max_seq_length: int | None = 16,
    seed: int = 0,
    legacy_pooling_keys: bool = False,
) -> Path:
    """Write a tiny sentence-transformers folder: a random ``arch`` encoder at the top level, ``modules.json``
    (Transformer, Pooling and, with ``normalize``, Normalize), ``1_Pooling/config.json`` and
    ``sentence_bert_config.json``.

    ``pooling`` is a mode name or a list of them (``pooling_mode``); ``legacy_pooling_keys`` writes the
    older boolean ``pooling_mode_*_tokens`` keys instead. ``max_seq_length`` (16 by default, below the
    tiny models' 72 positions) makes truncation observable; None leaves it out.
    """
    import json

    target = build_tiny_model("feature-extraction", directory, arch, seed)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (target / "modules.json").write_text(json.dumps(modules, indent=2))
    modes = [pooling] if isinstance(pooling, str) else list(pooling)
    config: dict[str, Any] = {"word_embedding_dimension": 32}
    if legacy_pooling_keys:
        keys = {
            "cls": "pooling_mode_cls_token",
            "max": "pooling_mode_max_tokens",
            "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens",
            "lasttoken": "pooling_mode_lasttoken",
        }
        config.update({key: mode in modes for mode, key in keys.items()})
    else:
        config["pooling_mode"] = modes[0] if len(modes) == 1 else modes
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2))
    settings: dict[str, Any] = {"do_lower_case": False}
    if max_seq_length is not None:
        settings["max_seq_length"] = max_seq_length
    (target / "sentence_bert_config.json").write_text(json.dumps(settings, indent=2))
    return target
