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

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise ``case`` (task, architecture) from the class attributes."""
        if "case" in metafunc.fixturenames:
            cases = _model_cases(type(self))
            metafunc.parametrize("case", cases, ids=[f"{task}-{arch}" for task, arch in cases])

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
