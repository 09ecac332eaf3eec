"""Question answering, which transformers 5 dropped: acceleron's pipeline answers as transformers 4's did.

The expected answers were recorded with transformers 4.57.6's own pipeline on the tiny BERT in
``tests/data/tiny-bert-qa`` (``tests/data/make_qa_expected.py`` makes both and says how).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from acceleron import OptimizedModel, pipeline
from acceleron.errors import (
    BackendNotInstalledError,
    BackendUnavailableError,
    InputTooLongError,
    InvalidInputError,
    InvalidOptionError,
    PluginLoadError,
)
from acceleron.pipelines import REMOVED_PIPELINES, replacement_pipeline, transformers_has_pipeline
from acceleron.pipelines.question_answering import QuestionAnsweringPipeline
from acceleron.plugins import get_plugin_manager
from acceleron.selection import resolve_backend
from acceleron.testing import build_tiny_model

DATA = Path(__file__).parent / "data"
RECORDED = json.loads((DATA / "qa_expected.json").read_text(encoding="utf-8"))
CASES = {case["name"]: case for case in RECORDED["cases"]}
#: float32 on every backend: transformers 4's scores were float32 too.
SCORE_TOLERANCE = 1e-4
BACKENDS = ("torch", "ort", "ov", "ipex")
FILM = "this movie was really fun : the actors played very well but the plot was boring and the story awful"


@pytest.fixture(scope="module")
def fixture_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the recorded model, so that nothing a test does can touch the checked-in files."""
    return Path(shutil.copytree(DATA / "tiny-bert-qa", tmp_path_factory.mktemp("qa") / "tiny-bert-qa"))


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module fixtures run before conftest's per-test cache directory exists: name one explicitly.
    return tmp_path_factory.mktemp("qa-export-cache")


def _load(folder: Path, cache: Path, **kwargs: Any) -> Any:
    options = {"accelerator": "torch", "dtype": "float32", **kwargs}
    return pipeline("question-answering", model=str(folder), model_kwargs={"export_cache": str(cache)}, **options)


@pytest.fixture(scope="module", params=BACKENDS)
def backend_pipe(request: pytest.FixtureRequest, fixture_folder: Path, export_cache: Path) -> Any:
    """The question-answering pipeline on one backend; skipped where that backend cannot run."""
    name = request.param
    manager = get_plugin_manager()
    try:
        backend = manager.get(name)
    except (BackendNotInstalledError, BackendUnavailableError, PluginLoadError) as error:
        pytest.skip(f"{name}: {error}")
    if not manager.availability(backend) or "question-answering" not in manager.supported_tasks(backend):
        pytest.skip(f"{name} cannot run question-answering here")
    return _load(fixture_folder, export_cache, accelerator=name)


@pytest.fixture(scope="module")
def torch_pipe(fixture_folder: Path, export_cache: Path) -> Any:
    return _load(fixture_folder, export_cache)


def _assert_same_answers(got: Any, expected: Any, where: str = "result") -> None:
    """Same shape (dict, list, list of lists), same answers and offsets, scores within the tolerance."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: expected a dict, got {got!r}"
        assert list(got) == ["score", "start", "end", "answer"], f"{where}: keys {list(got)}"
        assert (got["answer"], got["start"], got["end"]) == (expected["answer"], expected["start"], expected["end"]), (
            f"{where}: got {got}, transformers 4 answered {expected}"
        )
        assert isinstance(got["score"], float) and isinstance(got["start"], int) and isinstance(got["end"], int)
        assert got["score"] == pytest.approx(expected["score"], abs=SCORE_TOLERANCE), where
        return
    assert isinstance(got, list) and len(got) == len(expected), f"{where}: got {got!r}, expected {expected!r}"
    for index, (item, wanted) in enumerate(zip(got, expected)):
        _assert_same_answers(item, wanted, f"{where}[{index}]")


# ---- the same answers as transformers 4 ---------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_answers_equal_what_transformers_4_answered(backend_pipe: Any, case: str) -> None:
    recorded = CASES[case]
    got = backend_pipe(*recorded["args"], **recorded["kwargs"])
    _assert_same_answers(got, recorded["expected"], case)


def test_the_recorded_cases_cover_what_they_claim() -> None:
    """A guard on the recording: the cases must exercise windows, ranking, null answers and batches."""
    kwargs = [case["kwargs"] for case in CASES.values()]
    assert any(k.get("top_k") == 3 for k in kwargs)
    assert any(k.get("align_to_words") is False for k in kwargs)
    assert any(k.get("batch_size") == 4 for k in kwargs)
    assert any(k.get("max_seq_len", 64) < 64 and k.get("doc_stride") for k in kwargs)
    null_answers = [
        answer
        for case in CASES.values()
        if case["kwargs"].get("handle_impossible_answer")
        for answer in (case["expected"] if isinstance(case["expected"], list) else [case["expected"]])
        if answer["answer"] == ""
    ]
    assert null_answers, "no recorded case shows the null answer"
    assert RECORDED["versions"]["transformers"].startswith("4.")


def test_the_fixture_tokenizes_as_transformers_4_did(torch_pipe: Any) -> None:
    for name, expected in RECORDED["token_ids"].items():
        args, kwargs = CASES[name]["args"], CASES[name]["kwargs"]
        if "question" in kwargs:
            questions = kwargs["question"] if isinstance(kwargs["question"], list) else [kwargs["question"]]
            contexts = (
                kwargs["context"] if isinstance(kwargs["context"], list) else [kwargs["context"]] * len(questions)
            )
        elif len(args) == 2:
            questions, contexts = [args[0]], [args[1]]
        else:
            items = args[0] if isinstance(args[0], list) else [args[0]]
            questions, contexts = [i["question"] for i in items], [i["context"] for i in items]
        got = [torch_pipe.tokenizer(q, c)["input_ids"] for q, c in zip(questions, contexts)]
        assert got == expected, name


def test_a_long_context_is_answered_across_several_windows(torch_pipe: Any) -> None:
    windows: list[int] = []
    forward = torch_pipe.model.forward

    def counting(**inputs: Any) -> Any:
        windows.append(int(inputs["input_ids"].shape[0]))
        return forward(**inputs)

    torch_pipe.model.forward = counting
    try:
        recorded = CASES["long_context_small_windows"]
        got = torch_pipe(*recorded["args"], **recorded["kwargs"])
    finally:
        del torch_pipe.model.forward
    assert sum(windows) > 5
    _assert_same_answers(got, recorded["expected"])


# ---- how the router builds it -------------------------------------------------------------------------


def test_the_router_builds_acceleron_pipeline_where_transformers_has_none(torch_pipe: Any) -> None:
    assert not transformers_has_pipeline("question-answering")
    assert type(torch_pipe) is QuestionAnsweringPipeline
    assert isinstance(torch_pipe, transformers.Pipeline)
    assert replacement_pipeline("question-answering") is QuestionAnsweringPipeline
    assert replacement_pipeline("text-classification") is None  # not a removed task


def test_transformers_own_class_is_used_where_transformers_has_the_task(
    monkeypatch: pytest.MonkeyPatch, fixture_folder: Path
) -> None:
    """Stand in for a transformers that still has question-answering: its registered class is built."""
    from transformers import pipelines

    class StockQuestionAnswering(QuestionAnsweringPipeline):
        pass

    entry = {"impl": StockQuestionAnswering, "pt": (), "type": "text", "default": {}}
    monkeypatch.setitem(pipelines.SUPPORTED_TASKS, "question-answering", entry)
    monkeypatch.delitem(pipelines.REMOVED_TASKS, "question-answering", raising=False)
    assert replacement_pipeline("question-answering") is None
    pipe = pipeline("question-answering", model=str(fixture_folder), accelerator="torch")
    assert type(pipe) is StockQuestionAnswering


def test_every_removed_pipeline_entry_names_a_pipeline_class() -> None:
    import importlib

    for task, target in REMOVED_PIPELINES.items():
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, transformers.Pipeline), task


def test_an_optimized_model_instance_can_be_passed(fixture_folder: Path, export_cache: Path) -> None:
    model = OptimizedModel.from_pretrained(
        fixture_folder, accelerator="torch", task="question-answering", export_cache=export_cache
    )
    pipe = pipeline("question-answering", model=model)
    assert pipe.model is model
    recorded = CASES["keywords"]
    _assert_same_answers(pipe(*recorded["args"], **recorded["kwargs"]), recorded["expected"])


def test_the_best_installed_backend_is_chosen_without_an_accelerator(fixture_folder: Path, export_cache: Path) -> None:
    pipe = _load(fixture_folder, export_cache, accelerator=None)
    assert type(pipe) is QuestionAnsweringPipeline
    assert pipe.model.backend.name == resolve_backend(None, "question-answering").name
    recorded = CASES["top_k_3"]
    _assert_same_answers(pipe(*recorded["args"], **recorded["kwargs"]), recorded["expected"])


def test_the_qa_alias_and_an_inferred_task_give_the_same_pipeline(fixture_folder: Path, export_cache: Path) -> None:
    by_alias = pipeline(
        "qa", model=str(fixture_folder), accelerator="torch", model_kwargs={"export_cache": export_cache}
    )
    inferred = pipeline(model=str(fixture_folder), accelerator="torch", model_kwargs={"export_cache": export_cache})
    recorded = CASES["keywords"]
    for pipe in (by_alias, inferred):
        assert type(pipe) is QuestionAnsweringPipeline
        _assert_same_answers(pipe(*recorded["args"], **recorded["kwargs"]), recorded["expected"])


def test_parameters_given_at_construction_apply_to_every_call(fixture_folder: Path, export_cache: Path) -> None:
    recorded = CASES["top_k_3"]
    pipe = _load(fixture_folder, export_cache, top_k=3)
    kwargs = {key: value for key, value in recorded["kwargs"].items() if key != "top_k"}
    _assert_same_answers(pipe(**kwargs), recorded["expected"])


# ---- call forms ----------------------------------------------------------------------------------------


def test_an_empty_list_gives_an_empty_list(torch_pipe: Any) -> None:
    assert torch_pipe([]) == []
    assert torch_pipe(question=[], context="john lives in paris") == []


def test_a_generator_streams_one_result_per_input(torch_pipe: Any) -> None:
    recorded = CASES["batch_of_dicts"]
    items = recorded["args"][0]

    def inputs() -> Iterator[dict[str, str]]:
        yield from items

    streamed = torch_pipe(inputs(), **recorded["kwargs"])
    assert not isinstance(streamed, list)
    _assert_same_answers(list(streamed), recorded["expected"])


def test_the_deprecated_topk_still_works_with_a_warning(torch_pipe: Any) -> None:
    recorded = CASES["top_k_3"]
    kwargs = {key: value for key, value in recorded["kwargs"].items() if key != "top_k"}
    with pytest.warns(FutureWarning, match="topk is deprecated"):
        got = torch_pipe(topk=3, **kwargs)
    _assert_same_answers(got, recorded["expected"])


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padding_a_batch_of_windows_changes_no_answer(fixture_folder: Path, padding_side: str) -> None:
    """With a model that ignores positions, a padded batch must answer exactly as windows one by one.

    A left-padding tokenizer also puts the context first; the answers must still be spans of the context.
    """
    pipe = pipeline("question-answering", model=str(fixture_folder), accelerator="torch")
    pipe.tokenizer.padding_side = padding_side
    generator = torch.Generator().manual_seed(0)
    start_by_token = 3 * torch.randn(pipe.model.config.vocab_size, generator=generator)
    end_by_token = 3 * torch.randn(pipe.model.config.vocab_size, generator=generator)

    def by_token(**inputs: Any) -> QuestionAnsweringModelOutput:
        ids = inputs["input_ids"]
        return QuestionAnsweringModelOutput(start_logits=start_by_token[ids], end_logits=end_by_token[ids])

    pipe.model.forward = by_token
    items = CASES["batch_of_dicts"]["args"][0]
    one_by_one = pipe(items, max_seq_len=40, doc_stride=16, top_k=2)
    batched = pipe(items, max_seq_len=40, doc_stride=16, top_k=2, batch_size=4)
    _assert_same_answers(batched, one_by_one)
    for item, answers in zip(items, batched):
        for answer in answers:
            assert item["context"][answer["start"] : answer["end"]] == answer["answer"] != ""


@pytest.mark.parametrize("arch", ["roberta", "distilbert"])
def test_models_without_token_type_ids_answer_with_spans_of_the_context(arch: str, tmp_path: Path) -> None:
    folder = build_tiny_model("question-answering", tmp_path / arch, arch=arch)
    pipe = pipeline("question-answering", model=str(folder), accelerator="torch")
    context = "john lives in paris and mary works at acme in london"
    answers = pipe(question="where does mary work", context=context, top_k=3, handle_impossible_answer=True)
    assert len(answers) == 3
    for answer in answers:
        assert context[answer["start"] : answer["end"]] == answer["answer"]
        assert 0.0 < answer["score"] <= 1.0


# ---- errors -------------------------------------------------------------------------------------------

LONG_QUESTION = " ".join(["where does john live"] * 9)  # 36 tokens
LONG_CONTEXT = " ".join(["john lives in paris and mary works at acme in london"] * 8)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((), {}, InvalidInputError, "needs a question and a context"),
        ((), {"question": "who"}, InvalidInputError, "no context was given"),
        ((), {"context": FILM}, InvalidInputError, "no question was given"),
        ((), {"question": "", "context": FILM}, InvalidInputError, "the question is empty"),
        ((), {"question": "who", "context": "   "}, InvalidInputError, "the context is empty"),
        (({"question": None, "context": FILM},), {}, InvalidInputError, "the question must be a string, got NoneType"),
        (({"question": "who"},), {}, InvalidInputError, "has no 'context' key"),
        (({"question": 3, "context": FILM},), {}, InvalidInputError, "the question must be a string, got int"),
        ((), {"question": 3, "context": FILM}, InvalidInputError, "must be strings, lists of strings"),
        ((), {"question": ["who", 3], "context": FILM}, InvalidInputError, "input 1: the question must be a string"),
        ((), {"question": ["who", "what"], "context": [FILM]}, InvalidInputError, "has 2 items but context= has 1"),
        (("who was fun",), {}, InvalidInputError, "a lone string is not a question-answering input"),
        (([FILM],), {}, InvalidInputError, r"input 0: a question-answering input is a dict"),
        (("who", FILM), {"question": "who"}, InvalidInputError, "either positionally or as question="),
        ((), {"question": LONG_QUESTION, "context": LONG_CONTEXT, "max_seq_len": 36}, InputTooLongError, "no room"),
        ((), {"question": "who", "context": FILM, "top_k": 0}, InvalidOptionError, "top_k must be an integer >= 1"),
        ((), {"question": "who", "context": FILM, "top_k": 1.5}, InvalidOptionError, "top_k must be an integer"),
        ((), {"question": "who", "context": FILM, "max_answer_len": 0}, InvalidOptionError, "max_answer_len must be"),
        ((), {"question": "who", "context": FILM, "max_seq_len": 1}, InvalidOptionError, "max_seq_len must be"),
        ((), {"question": "who", "context": FILM, "doc_stride": -1}, InvalidOptionError, "doc_stride must be"),
        (
            (),
            {"question": "who", "context": FILM, "doc_stride": 32, "max_seq_len": 32},
            InvalidOptionError,
            "doc_stride=32 must be less than max_seq_len=32",
        ),
        # The default max_seq_len is the tokenizer's 64 tokens.
        ((), {"question": "who", "context": FILM, "doc_stride": 64}, InvalidOptionError, "less than max_seq_len=64"),
        (
            (),
            {"question": LONG_QUESTION, "context": LONG_CONTEXT, "max_seq_len": 48, "doc_stride": 10},
            InvalidOptionError,
            "doc_stride=10 must be less than the 9 context tokens a window holds",
        ),
        ((), {"question": "who", "context": FILM, "truncation": True}, InvalidOptionError, "no parameter 'truncation'"),
    ],
)
def test_bad_calls_raise_the_exact_error(
    torch_pipe: Any, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        torch_pipe(*args, **kwargs)
    assert raised.type is error
    assert isinstance(raised.value, ValueError)


def test_a_bad_parameter_at_construction_raises_before_any_call(fixture_folder: Path, export_cache: Path) -> None:
    with pytest.raises(InvalidOptionError, match="top_k must be an integer >= 1") as raised:
        _load(fixture_folder, export_cache, top_k=0)
    assert raised.type is InvalidOptionError


def test_a_tokenizer_without_offsets_is_refused(torch_pipe: Any) -> None:
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(InvalidOptionError, match="needs a fast tokenizer") as raised:
        QuestionAnsweringPipeline(model=torch_pipe.model, tokenizer=SlowTokenizer(), device=torch_pipe.device)
    assert raised.type is InvalidOptionError
