"""The conformance suite a backend plugin's tests subclass, and the tiny models it runs on.

In a plugin's test module::

    from acceleron.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend_name = "mine"
        text_architectures = ("bert", "roberta", "distilbert")

pytest then checks that the entry point is named after the backend, that ``availability()``
leaves the runtime unimported, that export + load + forward on tiny random models matches
PyTorch within the task's tolerance, that ``save_pretrained``/``from_pretrained`` round-trips
without exporting again, that unsupported tasks are refused with ``TaskNotSupportedError``, and
that concurrent calls from threads give the same results as serial ones.

Needs pytest, torch and transformers (and Pillow for the image model).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from acceleron.errors import TaskNotSupportedError
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


def _tiny_tokenizer(arch: str) -> Any:
    import transformers

    vocab = {token: index for index, token in enumerate((*SPECIAL, *WORDS))}
    # A WordPiece tokenizer for every text architecture: the models only ever see ids.
    tokenizer_class: Any = transformers.BertTokenizerFast  # type: ignore[attr-defined]
    return tokenizer_class(vocab=vocab, do_lower_case=True, model_max_length=64)


def _text_config(arch: str, task: str, vocab_size: int) -> Any:
    import transformers

    labels = _labels(TEXT_LABELS.get(task, ["LABEL_0", "LABEL_1"]))
    common = {"vocab_size": vocab_size, "max_position_embeddings": 72, "pad_token_id": 0, **labels}
    if arch == "bert":
        return transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **common
        )
    if arch == "roberta":
        # type_vocab_size=2 because the WordPiece tokenizer emits segment ids for sentence pairs.
        return transformers.RobertaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            type_vocab_size=2,
            bos_token_id=2,
            eos_token_id=3,
            **common,
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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=list(_CHAT_SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*WORDS, *sample_inputs("text-classification", 6), "what is the capital of france? paris."]
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer)
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


def _audio_parts() -> tuple[Any, Any]:
    import transformers

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
        vocab_size=8,
        **_labels(AUDIO_LABELS),
    )
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    return config, extractor


def build_tiny_model(task: str, directory: str | Path, arch: str | None = None, seed: int = 0) -> Path:
    """Write a tiny random model for ``task`` (weights, config, preprocessor) into ``directory``.

    Text tasks take ``arch`` in bert, roberta, distilbert; image-classification a ViT and
    audio-classification a wav2vec2. The same seed gives the same weights.
    """
    import torch
    import transformers

    spec = TASKS[task]
    if spec.generative:
        return tiny_causal_lm(arch or "llama", directory, seed)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    preprocessor: Any
    if spec.modality == "text":
        preprocessor = _tiny_tokenizer(arch or "bert")
        config = _text_config(arch or "bert", task, len(preprocessor))
    elif spec.modality == "image":
        config, preprocessor = _image_parts()
    else:
        config, preprocessor = _audio_parts()
    torch.manual_seed(seed)
    model = getattr(transformers, spec.auto_class).from_config(config)
    model.eval()
    model.save_pretrained(target)
    preprocessor.save_pretrained(target)
    return target


def sample_inputs(task: str, count: int = 4) -> list[Any]:
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
        return [f"the movie was [MASK] {i}" if i % 2 else "john lives in [MASK]" for i in range(count)]
    if task == "image-classification":
        from PIL import Image

        return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(count)]
    if task == "audio-classification":
        return [rng.standard_normal(4000 + 800 * i).astype(np.float32) for i in range(count)]
    return [sentences[i % len(sentences)] for i in range(count)]


def pipeline_kwargs(task: str) -> dict[str, Any]:
    """Call arguments some pipelines require (zero-shot needs candidate labels)."""
    if task == "zero-shot-classification":
        return {"candidate_labels": ["film", "city", "food"]}
    return {}


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


def _model_cases(suite: type[BackendConformance]) -> list[tuple[str, str]]:
    cases = [(task, arch) for task in TEXT_TASKS for arch in suite.text_architectures]
    cases += [("image-classification", arch) for arch in suite.image_architectures]
    cases += [("audio-classification", arch) for arch in suite.audio_architectures]
    return cases


class BackendConformance:
    """Subclass in a plugin's tests, set ``backend_name``; pytest runs the checks below."""

    #: The backend's canonical name (its entry point name).
    backend_name: ClassVar[str]
    #: Backend options every model in the suite is loaded with.
    options: ClassVar[Mapping[str, Any]] = {}
    text_architectures: ClassVar[tuple[str, ...]] = ("bert",)
    image_architectures: ClassVar[tuple[str, ...]] = ("vit",)
    audio_architectures: ClassVar[tuple[str, ...]] = ("wav2vec2",)

    #: Causal-LM families the text-generation checks run on (when the backend supports the task).
    causal_lm_families: ClassVar[tuple[str, ...]] = CAUSAL_LM_FAMILIES
    #: New tokens of the greedy checks.
    generation_tokens: ClassVar[int] = 64

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise ``case`` (task, architecture) and ``family`` (causal LM) from the class attributes."""
        if "case" in metafunc.fixturenames:
            cases = _model_cases(type(self))
            metafunc.parametrize("case", cases, ids=[f"{task}-{arch}" for task, arch in cases])
        if "family" in metafunc.fixturenames:
            metafunc.parametrize("family", list(type(self).causal_lm_families))

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        from acceleron.plugins import get_backend, reset_plugin_manager

        reset_plugin_manager()
        return get_backend(cls.backend_name)

    @pytest.fixture(scope="class")
    @classmethod
    def export_cache(cls, tmp_path_factory: pytest.TempPathFactory) -> Any:
        from acceleron.cache import ExportCache

        return ExportCache(tmp_path_factory.mktemp("export-cache"))

    @pytest.fixture(scope="class")
    @classmethod
    def tiny_models(cls, tmp_path_factory: pytest.TempPathFactory) -> Any:
        root = tmp_path_factory.mktemp("tiny-models")
        built: dict[tuple[str, str], Path] = {}

        def get(task: str, arch: str) -> Path:
            if (task, arch) not in built:
                built[(task, arch)] = build_tiny_model(
                    task, root / f"{task}-{arch}", None if arch in {"vit", "wav2vec2"} else arch
                )
            return built[(task, arch)]

        return get

    def _load(self, backend: Any, folder: Path, task: str, cache: Any, **kwargs: Any) -> Any:
        return backend.model_class().from_pretrained(
            folder, task=task, export_cache=cache, strict=True, **{**dict(self.options), **kwargs}
        )

    # ---- the checks ----

    def test_entry_point_name_is_the_backend_name(self, backend: Any) -> None:
        from acceleron.plugins import get_plugin_manager

        record = get_plugin_manager().records()[self.backend_name]
        assert backend.name == self.backend_name == record.name
        assert record.builtin or record.entry_point is not None

    def test_availability_leaves_the_runtime_unimported(self, backend: Any) -> None:
        watched = sorted({*backend.runtime_modules})
        code = (
            "import sys, json\n"
            "from acceleron.plugins import get_plugin_manager\n"
            f"backend = get_plugin_manager().load({self.backend_name!r})\n"
            "assert backend.availability().ok, backend.availability().reason\n"
            "backend.supported_tasks()\n"
            f"print(json.dumps([m for m in {watched!r} if m in sys.modules]))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == []

    def test_export_matches_pytorch(self, backend: Any, export_cache: Any, tiny_models: Any, case: Any) -> None:
        import torch

        from acceleron.tasks import get_task
        from acceleron.validate import compare_outputs

        task, arch = case
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        folder = tiny_models(task, arch)
        model = self._load(backend, folder, task, export_cache, export=True)
        spec = get_task(task)
        reference_model = spec.load_torch_model(folder)
        inputs = spec.example_inputs(reference_model, batch_size=3, sequence_length=13, seed=7)
        with torch.inference_mode():
            reference = dict(reference_model(**inputs))
        actual = dict(model(**inputs))
        report = compare_outputs(reference, actual, spec, backend.effective_dtype(model.options))
        assert report.passed, report.summary()
        assert model.manifest["validation"]["passed"] is True

    def test_save_and_reload_round_trip(
        self, backend: Any, export_cache: Any, tiny_models: Any, tmp_path: Path
    ) -> None:
        import torch

        from acceleron.cache import ExportCache
        from acceleron.tasks import get_task

        task = "text-classification"
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        folder = tiny_models(task, self.text_architectures[0])
        model = self._load(backend, folder, task, export_cache, export=True)
        saved = model.save_pretrained(tmp_path / "saved")
        untouched = ExportCache(tmp_path / "must-stay-empty")
        reloaded = backend.model_class().from_pretrained(
            saved, export=False, export_cache=untouched, **dict(self.options)
        )
        assert not untouched.root.exists(), "loading a saved model must not export again"
        assert reloaded.task.name == task
        spec = get_task(task)
        inputs = spec.example_inputs(spec.load_torch_model(folder))
        assert torch.allclose(model(**inputs).logits, reloaded(**inputs).logits, atol=1e-6)

    def test_unsupported_task_is_refused(self, backend: Any, tiny_models: Any) -> None:
        from acceleron import pipeline

        unsupported = sorted(set(TASKS) - set(backend.supported_tasks()))
        if not unsupported:
            pytest.skip(f"{self.backend_name} supports every task")
        with pytest.raises(TaskNotSupportedError, match=unsupported[0]):
            pipeline(
                unsupported[0],
                model=tiny_models("text-classification", "bert"),
                accelerator=self.backend_name,
            )

    def test_pipeline_matches_transformers(self, backend: Any, export_cache: Any, tiny_models: Any) -> None:
        import transformers

        from acceleron import pipeline

        task = "text-classification"
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        folder = str(tiny_models(task, "bert"))
        sentences = sample_inputs(task, 6)
        ours = pipeline(
            task,
            model=folder,
            accelerator=self.backend_name,
            accelerator_options=dict(self.options),
            model_kwargs={"export_cache": export_cache},
        )
        assert isinstance(ours, transformers.TextClassificationPipeline)
        reference: Any = transformers.pipeline
        expected = reference(task, model=folder)(sentences, batch_size=4)
        got = ours(sentences, batch_size=4)
        assert [r["label"] for r in got] == [r["label"] for r in expected]
        assert outputs_close(got, expected, atol=self.pipeline_atol)

    #: Tolerance on pipeline scores against stock transformers.
    pipeline_atol: ClassVar[float] = 1e-4

    def test_concurrent_calls_match_serial(self, backend: Any, export_cache: Any, tiny_models: Any) -> None:
        from acceleron import pipeline

        task = "text-classification"
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        pipe = pipeline(
            task,
            model=str(tiny_models(task, "bert")),
            accelerator=self.backend_name,
            accelerator_options=dict(self.options),
            model_kwargs={"export_cache": export_cache},
        )
        sentences = sample_inputs(task, 6)
        serial = [pipe(sentence) for sentence in sentences]
        results: dict[int, Any] = {}
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                for _ in range(3):
                    results[index] = pipe(sentences[index % len(sentences)])
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for index, result in results.items():
            assert outputs_close(result, serial[index % len(sentences)], atol=1e-5)

    # ---- text generation (run only when the backend supports it) ----

    @pytest.fixture(scope="class")
    @classmethod
    def causal_lms(cls, backend: Any, tiny_models: Any, export_cache: Any) -> Any:
        """``get(family)`` -> (folder, model loaded on the backend, exported once per family)."""
        if "text-generation" not in backend.supported_tasks():
            pytest.skip(f"{cls.backend_name} does not support text-generation")
        loaded: dict[str, tuple[Path, Any]] = {}

        def get(family: str) -> tuple[Path, Any]:
            if family not in loaded:
                folder = tiny_models("text-generation", family)
                model = backend.model_class().from_pretrained(
                    folder,
                    task="text-generation",
                    export=True,
                    export_cache=export_cache,
                    strict=True,
                    **dict(cls.options),
                )
                loaded[family] = (folder, model)
            return loaded[family]

        return get

    def _float32(self, model: Any) -> bool:
        return bool(model.backend.effective_dtype(model.options) == "float32")

    def test_generation_greedy_matches_pytorch(self, causal_lms: Any, family: str) -> None:
        import torch
        import transformers

        folder, model = causal_lms(family)
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        count = self.generation_tokens
        settings = {"max_new_tokens": count, "min_new_tokens": count, "do_sample": False}
        single = tokenizer(["what is the capital of france?"], return_tensors="pt")
        batch = tokenizer(
            ["what is the capital of france?", "paris"], return_tensors="pt", padding=True, padding_side="left"
        )
        for inputs in (single, batch):
            got = model.generate(**inputs, **settings)
            assert got.shape == (inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] + count)
            if self._float32(model):
                with torch.inference_mode():
                    expected = reference.generate(**inputs, **settings)
                assert torch.equal(got, expected), f"{family}: greedy tokens differ from PyTorch float32"

    def _generation_model(self, causal_lms: Any) -> tuple[Path, Any, Any]:
        import transformers

        folder, model = causal_lms(self.causal_lm_families[0])
        return folder, model, transformers.AutoTokenizer.from_pretrained(folder)

    def test_generation_sampling_and_beam_search(self, causal_lms: Any) -> None:
        import torch

        _, model, tokenizer = self._generation_model(causal_lms)
        inputs = tokenizer(
            ["the movie was", "john lives in paris"], return_tensors="pt", padding=True, padding_side="left"
        )
        length = inputs["input_ids"].shape[1]
        torch.manual_seed(0)
        first = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=True, top_k=20)
        torch.manual_seed(0)
        second = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=True, top_k=20)
        assert first.shape == (2, length + 12)
        assert torch.equal(first, second), "sampling with the same seed must repeat"
        beams = model.generate(
            **inputs, max_new_tokens=10, min_new_tokens=10, num_beams=3, num_return_sequences=2, do_sample=False
        )
        assert beams.shape == (4, length + 10)

    def test_generation_stop_strings_and_streaming(self, causal_lms: Any) -> None:
        import transformers

        _, model, tokenizer = self._generation_model(causal_lms)
        inputs = tokenizer(["what is the capital"], return_tensors="pt")
        length = inputs["input_ids"].shape[1]
        full = model.generate(**inputs, max_new_tokens=24, min_new_tokens=24, do_sample=False)
        new_tokens = full[0, length:]
        # stop at the first word-like new token after the second: generation must end there, not at 24
        words = [tokenizer.decode(token) for token in new_tokens[2:].tolist()]
        stop = next((word for word in words if word.strip().isalpha()), None)
        assert stop is not None, f"no word-like token to stop at in {words}"
        stopped = model.generate(**inputs, max_new_tokens=24, do_sample=False, stop_strings=[stop], tokenizer=tokenizer)
        assert stopped.shape[1] < full.shape[1], (repr(stop), full.tolist(), stopped.tolist())
        assert tokenizer.decode(stopped[0, length:]).endswith(stop)
        streamer = transformers.TextIteratorStreamer(tokenizer, skip_prompt=True)
        worker = threading.Thread(
            target=model.generate,
            kwargs={**inputs, "max_new_tokens": 24, "min_new_tokens": 24, "do_sample": False, "streamer": streamer},
        )
        worker.start()
        streamed = "".join(streamer)
        worker.join()
        assert streamed == tokenizer.decode(new_tokens)

    def test_generation_pipeline_and_threads(self, causal_lms: Any) -> None:
        import transformers

        from acceleron import pipeline

        _, model, _ = self._generation_model(causal_lms)
        pipe = pipeline("text-generation", model=model)
        assert isinstance(pipe, transformers.TextGenerationPipeline)
        settings = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False}
        chat = pipe([{"role": "user", "content": "what is the capital of france?"}], **settings)
        assert chat[0]["generated_text"][-1]["role"] == "assistant"
        prompts = ["what is the capital", "paris", "the movie was great fun", "john"]
        serial = [pipe(prompt, **settings)[0]["generated_text"] for prompt in prompts]
        results: dict[int, Any] = {}
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                for _ in range(2):
                    results[index] = pipe(prompts[index], **settings)[0]["generated_text"]
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert [results[i] for i in range(len(prompts))] == serial

    def test_generation_save_and_reload(self, causal_lms: Any, tmp_path: Path) -> None:
        import torch

        from acceleron.cache import ExportCache

        _, model, tokenizer = self._generation_model(causal_lms)
        saved = model.save_pretrained(tmp_path / "saved")
        untouched = ExportCache(tmp_path / "must-stay-empty")
        reloaded = type(model).from_pretrained(saved, export=False, export_cache=untouched, **dict(self.options))
        assert not untouched.root.exists(), "loading a saved model must not export again"
        assert reloaded.task.name == "text-generation"
        inputs = tokenizer(["what is the capital"], return_tensors="pt")
        settings = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False}
        assert torch.equal(model.generate(**inputs, **settings), reloaded.generate(**inputs, **settings))
