"""The conformance suite a backend plugin's tests subclass (tiny models from :mod:`acceleron.testing.tiny`).

In a plugin's test module::

    from acceleron.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend_name = "mine"

pytest then checks that the entry point is named after the backend, that ``availability()``
leaves the runtime unimported, that export + load + forward on tiny random models matches
PyTorch within the task's tolerance (each text architecture with its own tokenizer: BERT with
token type ids, RoBERTa and DistilBERT without), that the stock pipeline's labels come back,
that ``save_pretrained``/``from_pretrained`` round-trips without exporting again, that
unsupported tasks are refused with ``TaskNotSupportedError``, that an absurd ``num_threads`` is
refused with ``InvalidOptionError`` before the runtime sees it, that concurrent calls from threads
give the serial results, that the vision pipelines (object detection, segmentation, depth, image
features, zero-shot image classification) give the stock pipeline's results in float32, that tiny
sentence-transformers folders (mean, cls and mixed pooling, with and without Normalize) give pooled
sentence vectors from the exported graph within cosine 0.9999 of PyTorch in float32, and that a
backend claiming text-generation either generates the tokens PyTorch generates or is refused at
export with an ``ExportError``, nothing cached.

Needs pytest, torch and transformers (and Pillow for the image models).
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

from acceleron.errors import ExportError, InvalidOptionError, TaskNotSupportedError, UntrustedArtifactError
from acceleron.tasks import TASKS
from acceleron.testing.tiny import (
    AUDIO_ARCHITECTURES,
    CAUSAL_LM_FAMILIES,
    SEQ2SEQ_ARCHITECTURES,
    TEXT_ARCHITECTURES,
    TEXT_TASKS,
    VISION_ARCHITECTURES,
    ZERO_SHOT_IMAGE_LABELS,
    build_tiny_model,
    outputs_close,
    sample_inputs,
    tiny_sentence_transformer,
)


def _model_cases(suite: type[BackendConformance]) -> list[tuple[str, str]]:
    cases = [(task, arch) for task in TEXT_TASKS for arch in suite.text_architectures]
    cases += [("image-classification", arch) for arch in suite.image_architectures]
    cases += [("audio-classification", arch) for arch in suite.audio_architectures]
    cases += [("automatic-speech-recognition", arch) for arch in suite.speech_architectures]
    cases += [(task, VISION_ARCHITECTURES[task]) for task in suite.vision_tasks]
    return cases


def _comparable(result: Any) -> Any:
    """A pipeline result with images (masks, depth maps) as integer arrays and tensors as arrays."""
    import numpy as np

    if isinstance(result, dict):
        return {key: _comparable(value) for key, value in result.items()}
    if isinstance(result, (list, tuple)):
        return [_comparable(value) for value in result]
    if hasattr(result, "getdata"):  # a PIL image
        return np.asarray(result).astype(np.int64)
    if hasattr(result, "detach"):
        return result.detach().float().numpy()
    return result


#: Sentence-transformers folders the sentence-embedding check runs on: (pooling modes, Normalize module).
SENTENCE_CASES: tuple[tuple[str | tuple[str, ...], bool], ...] = (
    ("mean", True),
    ("mean", False),
    ("cls", True),
    ("cls", False),
    (("max", "weightedmean", "lasttoken"), False),
)
#: Sentences of several lengths, one longer than the tiny folders' max_seq_length (16 tokens).
SENTENCES = [
    "this movie was great fun",
    "john lives in paris",
    "the plot was boring and the actors were bad and the story was the worst of the day and night",
    "a",
    "what a wonderful film",
    "mary works at acme in london",
    "happy",
]


def reference_sentence_embeddings(folder: str | Path, sentences: list[str]) -> Any:
    """Sentence vectors of a sentence-transformers folder computed in PyTorch, one unpadded sentence at a time.

    Written from the definitions of the pooling modes, independently of :mod:`acceleron.sentence`: the
    token vectors of each sentence (truncated to ``max_seq_length``) are pooled, the modes concatenated,
    and normalised when ``modules.json`` lists a ``Normalize`` module. Returns a float32 numpy array.
    """
    import numpy as np
    import torch
    import transformers

    folder = Path(folder)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    modes = pooling.get("pooling_mode") or [
        mode
        for key, mode in (
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
            ("pooling_mode_weightedmean_tokens", "weightedmean"),
            ("pooling_mode_lasttoken", "lasttoken"),
        )
        if pooling.get(key)
    ]
    modes = [modes] if isinstance(modes, str) else modes
    normalize = any(m["type"].endswith("Normalize") for m in json.loads((folder / "modules.json").read_text()))
    limit = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
    model = transformers.AutoModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    vectors = []
    for sentence in sentences:
        encoded = tokenizer(sentence, truncation=True, max_length=limit, return_tensors="pt")
        with torch.inference_mode():
            tokens = model(**encoded).last_hidden_state[0].double()  # [length, dim], every token kept
        weights = torch.arange(1, tokens.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
        pooled = {
            "cls": tokens[0],
            "lasttoken": tokens[-1],
            "max": tokens.max(dim=0).values,
            "mean": tokens.mean(dim=0),
            "mean_sqrt_len_tokens": tokens.sum(dim=0) / tokens.shape[0] ** 0.5,
            "weightedmean": (tokens * weights).sum(dim=0) / weights.sum(),
        }
        vector = torch.cat([pooled[mode] for mode in modes])
        vectors.append(vector / vector.norm() if normalize else vector)
    return torch.stack(vectors).float().numpy().astype(np.float32)


def cosines(left: Any, right: Any) -> Any:
    """Row-wise cosine similarity of two ``[n, dim]`` arrays."""
    import numpy as np

    left, right = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
    return (left * right).sum(axis=1) / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1))


#: Call arguments of the vision pipelines in the suite (every box is kept, however unlikely).
_VISION_CALLS: dict[str, dict[str, Any]] = {
    "object-detection": {"threshold": 0.0},
    "zero-shot-image-classification": {"candidate_labels": ZERO_SHOT_IMAGE_LABELS},
}


class BackendConformance:
    """Subclass in a plugin's tests, set ``backend_name``; pytest runs the checks below."""

    #: The backend's canonical name (its entry point name).
    backend_name: ClassVar[str]
    #: Backend options every model in the suite is loaded with.
    options: ClassVar[Mapping[str, Any]] = {}
    text_architectures: ClassVar[tuple[str, ...]] = TEXT_ARCHITECTURES
    image_architectures: ClassVar[tuple[str, ...]] = ("vit",)
    audio_architectures: ClassVar[tuple[str, ...]] = ("wav2vec2",)
    #: CTC speech-recognition models: wav2vec2-base style (no attention mask from the feature
    #: extractor) and wav2vec2-large-lv60 style (masked batches).
    speech_architectures: ClassVar[tuple[str, ...]] = AUDIO_ARCHITECTURES
    #: Vision tasks checked, each on its tiny architecture (:data:`~acceleron.testing.tiny.VISION_ARCHITECTURES`).
    vision_tasks: ClassVar[tuple[str, ...]] = tuple(VISION_ARCHITECTURES)

    #: Sentence-transformers folders (pooling, Normalize) the sentence-embedding check runs on.
    sentence_cases: ClassVar[tuple[tuple[str | tuple[str, ...], bool], ...]] = SENTENCE_CASES
    #: Causal-LM families the text-generation checks run on (when the backend supports the task).
    causal_lm_families: ClassVar[tuple[str, ...]] = CAUSAL_LM_FAMILIES
    #: New tokens of the greedy checks.
    generation_tokens: ClassVar[int] = 64
    #: Encoder-decoder architectures the encoder-decoder checks run on, each with its task (below).
    seq2seq_architectures: ClassVar[tuple[str, ...]] = SEQ2SEQ_ARCHITECTURES
    #: New tokens of the encoder-decoder greedy checks.
    seq2seq_tokens: ClassVar[int] = 32

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise ``case`` (task, architecture), ``vision_task``, ``arch`` (text) and ``family`` (causal LM)
        from the class attributes."""
        if "case" in metafunc.fixturenames:
            cases = _model_cases(type(self))
            metafunc.parametrize("case", cases, ids=[f"{task}-{arch}" for task, arch in cases])
        if "vision_task" in metafunc.fixturenames:
            metafunc.parametrize("vision_task", list(type(self).vision_tasks))
        if "arch" in metafunc.fixturenames:
            metafunc.parametrize("arch", list(type(self).text_architectures))
        if "speech_arch" in metafunc.fixturenames:
            metafunc.parametrize("speech_arch", list(type(self).speech_architectures))
        if "family" in metafunc.fixturenames:
            metafunc.parametrize("family", list(type(self).causal_lm_families))
        if "seq2seq_arch" in metafunc.fixturenames:
            metafunc.parametrize("seq2seq_arch", list(type(self).seq2seq_architectures))
        if "sentence_case" in metafunc.fixturenames:
            sentence_cases = list(type(self).sentence_cases)
            names = [
                f"{'+'.join([m] if isinstance(m, str) else m)}-{'normalize' if n else 'raw'}" for m, n in sentence_cases
            ]
            metafunc.parametrize("sentence_case", sentence_cases, ids=names)

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Any:
        from acceleron.plugins import get_backend, reset_plugin_manager

        reset_plugin_manager()
        return get_backend(cls.backend_name)

    @staticmethod
    def load(backend: Any, folder: Path, **kwargs: Any) -> Any:
        """``OptimizedModel.from_pretrained(folder, accelerator=backend, ...)``."""
        from acceleron.modeling import OptimizedModel

        return OptimizedModel.from_pretrained(folder, accelerator=backend, **kwargs)

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
                built[(task, arch)] = build_tiny_model(task, root / f"{task}-{arch}", None if arch == "vit" else arch)
            return built[(task, arch)]

        return get

    def _pipeline(self, task: str, folder: str, cache: Any) -> Any:
        """``acceleron.pipeline`` for ``task`` on this backend with the suite's options and export cache."""
        from acceleron import pipeline

        return pipeline(
            task,
            model=folder,
            accelerator=self.backend_name,
            accelerator_options=dict(self.options),
            model_kwargs={"export_cache": cache},
        )

    def _load(self, backend: Any, folder: Path, task: str, cache: Any, **kwargs: Any) -> Any:
        return self.load(
            backend, folder, task=task, export_cache=cache, strict=True, **{**dict(self.options), **kwargs}
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
        report = compare_outputs(reference, actual, spec, model.options.compute_dtype)
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
        trust = {"trust_remote_code": True} if backend.artifact_runs_code else {}
        if backend.artifact_runs_code:  # a folder from elsewhere must not run code unless the caller opts in
            with pytest.raises(UntrustedArtifactError):
                self.load(backend, saved, export=False, export_cache=untouched, **dict(self.options))
        reloaded = self.load(backend, saved, export=False, export_cache=untouched, **trust, **dict(self.options))
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
        with pytest.raises(TaskNotSupportedError, match=unsupported[0]) as refused:
            pipeline(
                unsupported[0],
                model=tiny_models("text-classification", "bert"),
                accelerator=self.backend_name,
            )
        assert backend.unsupported_reason(unsupported[0]) in str(refused.value), "the refusal must give the reason"

    def test_absurd_thread_counts_are_refused_before_the_runtime(self, backend: Any, tiny_models: Any) -> None:
        # libgomp kills the process on num_threads=10**9 (torch, IPEX): the core must refuse it first.
        with pytest.raises(InvalidOptionError, match="num_threads=1000000000 is more than"):
            self.load(backend, tiny_models("text-classification", "bert"), num_threads=10**9)

    def test_pipeline_matches_transformers(self, backend: Any, export_cache: Any, tiny_models: Any, arch: str) -> None:
        """The stock pipeline's labels and scores, whatever inputs the architecture's tokenizer emits."""
        import transformers

        task = "text-classification"
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        folder = str(tiny_models(task, arch))
        sentences = sample_inputs(task, 6)
        ours = self._pipeline(task, folder, export_cache)
        assert isinstance(ours, transformers.TextClassificationPipeline)
        reference: Any = transformers.pipeline
        expected = reference(task, model=folder)(sentences, batch_size=4)
        got = ours(sentences, batch_size=4)
        assert [r["label"] for r in got] == [r["label"] for r in expected]
        assert outputs_close(got, expected, atol=self.pipeline_atol)

    def test_vision_pipeline_matches_transformers(
        self, backend: Any, export_cache: Any, tiny_models: Any, vision_task: str
    ) -> None:
        """The stock vision pipeline's labels, boxes and masks exactly, its scores and depths within tolerance.

        Images of different sizes, two to a batch. Exact boxes and masks hold in float32 only; in a
        reduced precision the export check above covers the task at that precision's tolerance.
        """
        import transformers

        if vision_task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {vision_task}")
        folder = str(tiny_models(vision_task, VISION_ARCHITECTURES[vision_task]))
        ours = self._pipeline(vision_task, folder, export_cache)
        optimized: Any = ours.model
        if not self._float32(optimized):
            pytest.skip(f"boxes and masks are compared exactly in float32 only, not {optimized.options.compute_dtype}")
        reference: Any = transformers.pipeline
        stock = reference(vision_task, model=folder)
        assert isinstance(ours, type(stock))
        images = sample_inputs(vision_task, 5)
        call = _VISION_CALLS.get(vision_task, {})
        expected = _comparable(stock(images, batch_size=2, **call))
        got = _comparable(ours(images, batch_size=2, **call))
        if vision_task == "depth-estimation":
            # The depth image is the depth scaled to 0-255 and truncated: one level either way is rounding.
            for ours_item, stock_item in zip(got, expected):
                assert outputs_close(ours_item.pop("depth"), stock_item.pop("depth"), atol=1.0, rtol=0.0)
        assert outputs_close(got, expected, atol=self.pipeline_atol)

    def test_over_length_input_is_refused_and_the_process_survives(
        self, backend: Any, export_cache: Any, tiny_models: Any
    ) -> None:
        """Text longer than the position table raises InputTooLongError before the runtime reads past it."""
        import transformers

        from acceleron.errors import InputTooLongError

        task = "text-classification"
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        folder = str(tiny_models(task, "bert"))
        pipe = self._pipeline(task, folder, export_cache)
        too_long = " ".join(["movie"] * 200)  # the tiny models hold 72 positions
        for _ in range(3):  # a second over-length call used to crash OpenVINO
            with pytest.raises(InputTooLongError, match="truncation=True"):
                pipe(too_long)
        reference: Any = transformers.pipeline
        expected = reference(task, model=folder)(too_long, truncation=True)
        assert outputs_close(pipe(too_long, truncation=True), expected, atol=self.pipeline_atol)

    #: Tolerance on pipeline scores against stock transformers.
    pipeline_atol: ClassVar[float] = 1e-4

    def test_speech_recognition_matches_transformers(
        self, backend: Any, export_cache: Any, tiny_models: Any, speech_arch: str
    ) -> None:
        """The stock CTC pipeline's transcripts, exactly: one by one, in padded batches, chunked, with timestamps.

        A tiny random model transcribes deterministic garbage; every character is one frame's argmax,
        so a wrong frame, a mishandled padding mask or a wrong chunk alignment changes the text.
        """
        import transformers

        task = "automatic-speech-recognition"
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        dtype = backend.parse_options(dict(self.options)).compute_dtype
        if dtype != "float32":
            pytest.skip(
                f"exact transcripts need float32 logits (near-ties of a random model flip in {dtype}); "
                "test_export_matches_pytorch checks this precision's logits"
            )
        folder = str(tiny_models(task, speech_arch))
        ours = self._pipeline(task, folder, export_cache)
        assert isinstance(ours, transformers.AutomaticSpeechRecognitionPipeline)
        assert ours.type == "ctc"
        transcribe: Any = ours  # its __call__ is typed for one input; it takes lists as well
        reference: Any = transformers.pipeline
        stock = reference(task, model=folder)
        waveforms = sample_inputs(task, 4)  # odd lengths; the last is long enough to chunk
        calls: list[dict[str, Any]] = [
            {},
            {"batch_size": 3},  # padded batches
            {"chunk_length_s": 0.5, "stride_length_s": 0.1},
            {"chunk_length_s": 0.5, "batch_size": 4},  # chunks of several waveforms in one batch
            {"return_timestamps": "char"},
            {"return_timestamps": "word", "chunk_length_s": 0.5},
        ]
        for call in calls:
            expected = stock(waveforms, **call)
            assert any(result["text"] for result in expected), "the tiny model must transcribe something"
            assert transcribe(waveforms, **call) == expected, call

    def test_concurrent_calls_match_serial(self, backend: Any, export_cache: Any, tiny_models: Any) -> None:

        task = "text-classification"
        if task not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support {task}")
        pipe = self._pipeline(task, str(tiny_models(task, "bert")), export_cache)
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

    def test_sentence_embeddings_match_pytorch_pooling(
        self, backend: Any, export_cache: Any, tmp_path_factory: pytest.TempPathFactory, sentence_case: Any
    ) -> None:
        """Pooled (and normalised) sentence vectors from the exported graph, in the caller's order after
        length-sorted batching, truncated to ``max_seq_length``: cosine >= 0.9999 to PyTorch in float32."""
        from acceleron.embeddings import SentenceEncoder

        if "sentence-embedding" not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not support sentence-embedding")
        pooling, normalize = sentence_case
        name = f"{'+'.join([pooling] if isinstance(pooling, str) else pooling)}-{normalize}"
        folder = tiny_sentence_transformer(
            tmp_path_factory.mktemp("sentence") / name,
            pooling=[pooling] if isinstance(pooling, str) else list(pooling),
            normalize=normalize,
        )
        encoder = SentenceEncoder(folder, backend, export_cache=export_cache, strict=True, **dict(self.options))
        assert list(encoder.model.session.output_names) == ["sentence_embedding"], "the pooling must be in the graph"
        got = encoder.encode(SENTENCES, batch_size=3)
        expected = reference_sentence_embeddings(folder, SENTENCES)
        assert got.shape == expected.shape
        float32 = self._float32(encoder.model)
        similarity = cosines(got, expected)
        assert similarity.min() >= (0.9999 if float32 else 0.99), similarity
        if normalize and float32:
            assert abs(float(got[0] @ got[0]) - 1.0) < 1e-5

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
                try:
                    model = cls.load(
                        backend,
                        folder,
                        task="text-generation",
                        export=True,
                        export_cache=export_cache,
                        strict=True,
                        **dict(cls.options),
                    )
                except ExportError as error:
                    pytest.skip(f"{cls.backend_name} refuses to export text-generation: {error}")
                loaded[family] = (folder, model)
            return loaded[family]

        return get

    def test_text_generation_is_exported_or_refused(
        self, backend: Any, tiny_models: Any, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """A backend claiming text-generation exports a graph that passes validation, or refuses clearly."""
        from acceleron.cache import ExportCache

        if "text-generation" not in backend.supported_tasks():
            pytest.skip(f"{self.backend_name} does not claim text-generation")
        cache = ExportCache(tmp_path_factory.mktemp("generation-claim"))
        folder = tiny_models("text-generation", self.causal_lm_families[0])
        try:
            model = self.load(backend, folder, task="text-generation", export=True, export_cache=cache, strict=True)
        except ExportError as error:
            assert list(cache.entries()) == [], "a refused export must leave nothing in the cache"
            assert str(error), "the refusal must say why"
            return
        assert model.manifest["validation"]["passed"] is True
        assert {"logits", "present.0.key"} <= set(model.session.output_names)

    def _float32(self, model: Any) -> bool:
        return bool(model.options.compute_dtype == "float32")

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

    def test_generation_cache_handover_beams_and_assisted_decoding(self, causal_lms: Any) -> None:
        """The backend's runtime cache: continued step by step, handed in as a transformers cache, reordered
        by beam search and cropped by assisted decoding, with PyTorch float32's results."""
        import torch
        import transformers

        folder, model, tokenizer = self._generation_model(causal_lms)
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        ids = tokenizer(["the movie was good and the end"], return_tensors="pt")["input_ids"]
        exact = self._float32(model)
        full = model(input_ids=ids).logits
        head = model(input_ids=ids[:, :-2])
        cache = head.past_key_values
        assert cache.get_seq_length() == ids.shape[1] - 2
        copy = cache.to_dynamic()
        tail = model(input_ids=ids[:, -2:], past_key_values=cache).logits
        assert cache.get_seq_length() == ids.shape[1]
        handed = model(input_ids=ids[:, -2:], past_key_values=copy).logits
        with torch.inference_mode():
            torch_cache = reference(input_ids=ids[:, :-2], use_cache=True).past_key_values
        from_torch = model(input_ids=ids[:, -2:], past_key_values=torch_cache).logits
        for name, got in (("continued", tail), ("handed in", handed), ("from PyTorch", from_torch)):
            assert got.shape == full[:, -2:].shape, name
            if exact:
                assert (got - full[:, -2:]).abs().max().item() < 1e-4, f"{name} cache gives other logits"
        cache.crop(3)
        assert cache.get_seq_length() == 3
        inputs = tokenizer(
            ["the movie was", "john lives in paris"], return_tensors="pt", padding=True, padding_side="left"
        )
        settings = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False}
        beams = model.generate(**inputs, num_beams=3, **settings)
        greedy = model.generate(**inputs, **settings)
        one = tokenizer(["the movie was the movie was the movie"], return_tensors="pt")
        assisted = model.generate(**one, prompt_lookup_num_tokens=3, **settings)  # batch 1 only, in transformers
        plain = model.generate(**one, **settings)
        assert beams.shape == greedy.shape and assisted.shape == plain.shape
        if exact:
            with torch.inference_mode():
                expected = reference.generate(**inputs, num_beams=3, **settings)
            assert torch.equal(beams, expected), "beam search differs from PyTorch float32"
            assert torch.equal(assisted, plain), "assisted (prompt lookup) decoding differs from greedy"

    def test_generation_keeps_its_torch_work_off_the_runtime_threads(self, causal_lms: Any) -> None:
        _, model, tokenizer = self._generation_model(causal_lms)
        _check_generate_threads(model, dict(tokenizer(["the movie was"], return_tensors="pt")))

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

    def _saved_and_reloaded(self, model: Any, tmp_path: Path) -> Any:
        """``model`` saved with ``save_pretrained`` and loaded back with ``export=False``; no export happens."""
        from acceleron.cache import ExportCache

        saved = model.save_pretrained(tmp_path / "saved")
        untouched = ExportCache(tmp_path / "must-stay-empty")
        reloaded = type(model).from_pretrained(
            saved,
            accelerator=model.backend,
            export=False,
            export_cache=untouched,
            trust_remote_code=model.backend.artifact_runs_code,
            **dict(self.options),
        )
        assert not untouched.root.exists(), "loading a saved model must not export again"
        return reloaded

    def test_generation_save_and_reload(self, causal_lms: Any, tmp_path: Path) -> None:
        import torch

        _, model, tokenizer = self._generation_model(causal_lms)
        reloaded = self._saved_and_reloaded(model, tmp_path)
        assert reloaded.task.name == "text-generation"
        inputs = tokenizer(["what is the capital"], return_tensors="pt")
        settings = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False}
        assert torch.equal(model.generate(**inputs, **settings), reloaded.generate(**inputs, **settings))

    # ---- encoder-decoder models (run for the tasks the backend supports) ----

    @pytest.fixture(scope="class")
    @classmethod
    def seq2seq_models(cls, backend: Any, tiny_models: Any, export_cache: Any) -> Any:
        """``get(arch)`` -> (task, folder, model on the backend, PyTorch float32 model), exported once per arch."""
        loaded: dict[str, tuple[str, Path, Any, Any]] = {}

        def get(arch: str) -> tuple[str, Path, Any, Any]:
            if arch not in loaded:
                import transformers

                from acceleron.tasks import get_task

                task = _SEQ2SEQ_TASKS[arch]
                if task not in backend.supported_tasks():
                    pytest.skip(f"{cls.backend_name} does not support {task}")
                folder = tiny_models(task, arch)
                model = cls.load(
                    backend, folder, task=task, export=True, export_cache=export_cache, strict=True, **dict(cls.options)
                )
                spec = get_task(task, [_SEQ2SEQ_CLASSES[arch]])
                reference = getattr(transformers, spec.auto_class).from_pretrained(folder).eval()
                loaded[arch] = (task, folder, model, reference)
            return loaded[arch]

        return get

    def test_seq2seq_greedy_and_beam_match_pytorch(self, seq2seq_models: Any, seq2seq_arch: str) -> None:
        """Greedy decoding of ``seq2seq_tokens`` tokens (a padded batch for text) and beam search give PyTorch's
        tokens in float32; the decoder graph serves the first step and every later one."""
        import torch

        from acceleron.seq2seq import encoder_example

        _, _, model, reference = seq2seq_models(seq2seq_arch)
        inputs = encoder_example(reference, batch_size=2, length=9, seed=3)
        count = self.seq2seq_tokens
        for settings in (
            {"max_new_tokens": count, "min_new_tokens": count, "do_sample": False},
            {"max_new_tokens": 8, "num_beams": 3, "do_sample": False},
        ):
            got = model.generate(**inputs, **settings)
            assert got.shape[0] == 2
            if self._float32(model):
                with torch.inference_mode():
                    expected = reference.generate(**inputs, **settings)
                assert torch.equal(got, expected), f"{seq2seq_arch}: {settings} tokens differ from PyTorch float32"

    def test_seq2seq_pipelines_match_transformers(self, seq2seq_models: Any, seq2seq_arch: str) -> None:
        """Each encoder-decoder task's pipeline (acceleron's where transformers 5 has none) gives the results of
        the same pipeline on the PyTorch model, in float32."""
        from acceleron.router import pipeline

        task, folder, model, reference = seq2seq_models(seq2seq_arch)
        pipeline_task = "translation_en_to_fr" if seq2seq_arch == "t5" else task
        inputs, settings = _seq2seq_pipeline_inputs(task)
        ours = pipeline(pipeline_task, model=model)
        got = ours(inputs, **settings)
        assert isinstance(got, list) and len(got) == len(inputs)
        if self._float32(model):
            expected = _reference_pipeline(pipeline_task, reference, folder)(inputs, **settings)
            assert got == expected

    def test_seq2seq_keeps_its_torch_work_off_the_runtime_threads(self, seq2seq_models: Any) -> None:
        from acceleron.seq2seq import encoder_example

        if not self.seq2seq_architectures:
            pytest.skip("no encoder-decoder architectures in this suite")
        _, _, model, reference = seq2seq_models(self.seq2seq_architectures[0])
        _check_generate_threads(model, encoder_example(reference, batch_size=1, length=5, seed=0))

    def test_seq2seq_save_reload_and_threads(self, seq2seq_models: Any, tmp_path: Path) -> None:
        """A saved encoder-decoder reloads without exporting; four threads generating from one model at once give
        the serial results (token for token in float32: on OpenVINO's bfloat16 a tiny random model's near-tied
        logits flipped one run in two when requests ran concurrently)."""
        import torch

        from acceleron.seq2seq import encoder_example

        if not self.seq2seq_architectures:
            pytest.skip("no encoder-decoder architectures in this suite")
        _, _, model, reference = seq2seq_models(self.seq2seq_architectures[0])
        reloaded = self._saved_and_reloaded(model, tmp_path)
        inputs = [encoder_example(reference, batch_size=1, length=5 + i, seed=i) for i in range(4)]
        settings = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False}
        serial = [model.generate(**x, **settings) for x in inputs]
        assert torch.equal(reloaded.generate(**inputs[0], **settings), serial[0])
        results: dict[int, Any] = {}
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                results[index] = model.generate(**inputs[index], **settings)
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert all(results[i].shape == serial[i].shape for i in range(len(inputs)))
        if self._float32(model):  # reduced precision may round differently when requests run at once
            assert all(torch.equal(results[i], serial[i]) for i in range(len(inputs)))


#: The task each tiny encoder-decoder is checked on, and its transformers class.
_SEQ2SEQ_TASKS = {
    "t5": "text2text-generation",
    "bart": "summarization",
    "marian": "translation",
    "whisper": "automatic-speech-recognition",
    "vision-encoder-decoder": "image-to-text",
}
_SEQ2SEQ_CLASSES = {
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
    "marian": "MarianMTModel",
    "whisper": "WhisperForConditionalGeneration",
    "vision-encoder-decoder": "VisionEncoderDecoderModel",
}


def _check_generate_threads(model: Any, inputs: dict[str, Any]) -> None:
    """A backend computing on its own threads gets generate()'s per-token torch work on one thread; one
    computing with torch's threads keeps them (``Session.computes_with_torch``, :mod:`acceleron.threads`)."""
    import torch
    import transformers

    from acceleron.threads import _openmp

    seen: list[int] = []

    class Record(transformers.LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            seen.append(torch.get_num_threads())
            return scores

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        processors = transformers.LogitsProcessorList([Record()])
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, logits_processor=processors)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    own_threads = not any(session.computes_with_torch for session in model.sessions.values())
    assert seen == [1 if own_threads and _openmp() is not None else 2] * 3
    assert after == 2


def _seq2seq_pipeline_inputs(task: str) -> tuple[list[Any], dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(0)
    if task == "automatic-speech-recognition":  # one 2.5 s clip, chunked by 1 s windows, with timestamps
        clips = [rng.standard_normal(16000).astype(np.float32), rng.standard_normal(40000).astype(np.float32)]
        return clips, {"max_new_tokens": 10, "return_timestamps": True, "chunk_length_s": 1.0, "batch_size": 2}
    if task == "image-to-text":
        from PIL import Image

        images = [Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)) for i in range(2)]
        return images, {"max_new_tokens": 10}
    return ["the movie was great fun", "john lives in paris and mary in london"], {"max_new_tokens": 10}


def _reference_pipeline(task: str, model: Any, folder: Path) -> Any:
    """The same pipeline on the PyTorch model: transformers' own, or acceleron's where transformers has none."""
    import transformers

    from acceleron.pipelines import replacement_pipeline
    from acceleron.tasks import normalize_task

    replacement = replacement_pipeline(normalize_task(task))
    if replacement is None:
        build: Any = transformers.pipeline
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        extractor = transformers.AutoFeatureExtractor.from_pretrained(folder)
        return build(task, model=model, tokenizer=tokenizer, feature_extractor=extractor)
    parts: dict[str, Any] = {"tokenizer": transformers.AutoTokenizer.from_pretrained(folder)}
    if getattr(replacement, "_load_image_processor", None):
        parts["image_processor"] = transformers.AutoImageProcessor.from_pretrained(folder)
    return replacement(model=model, task=task, **parts)
