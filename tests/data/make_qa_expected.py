"""Make the question-answering fixture and record what transformers 4's own pipeline answers on it.

``tests/test_question_answering.py`` checks that acceleron's question-answering pipeline (transformers
5 has none) answers as transformers 4's did. This script makes both halves of that check; run it
from the repository root, in two environments:

1. ``python tests/data/make_qa_expected.py fixture`` in an acceleron environment (transformers 5):
   writes ``tests/data/tiny-bert-qa/``, a tiny random BERT for question answering (2 layers, hidden
   size 32, ``torch.manual_seed(0)``, ``initializer_range=0.2`` so that spans score apart) and its
   fast WordPiece tokenizer: the words of ``acceleron.testing.tiny`` plus a few ``##`` suffixes, so
   that some words split into pieces and ``align_to_words`` matters. ``model_max_length`` is 64,
   so the default windows are 64 tokens with a stride of 32. About 80 KB.

2. ``python tests/data/make_qa_expected.py expected`` in a transformers 4 environment: runs the
   stock ``transformers.pipeline("question-answering", model=<the fixture>)`` on every case of
   :data:`CASES` and writes ``tests/data/qa_expected.json`` (the calls and their results, with the
   versions used). The recorded file was made with transformers 4.57.6, tokenizers 0.22.2 and torch
   2.13.0+cpu, in a virtualenv made as::

       python -m venv /tmp/tf4
       echo torch==2.13.0 > /tmp/tf4-constraints.txt
       /tmp/tf4/bin/pip install -c /tmp/tf4-constraints.txt "transformers>=4.57,<5" torch safetensors
       HF_HUB_OFFLINE=1 /tmp/tf4/bin/python tests/data/make_qa_expected.py expected

   transformers 4.57 reads the folder transformers 5 wrote as it is (``config.json``,
   ``model.safetensors``, ``tokenizer.json``); both tokenise every case identically (the test
   checks the token ids against the recorded ones).

Before writing, step 2 checks that no recorded answer hangs on a near tie: the cases are run again
with every weight scaled by ``1 + 1e-5 * noise`` (two seeds) and must give the same answers,
offsets and scores within 1e-5, far above the float32 differences between backends.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
FIXTURE = HERE / "tiny-bert-qa"
EXPECTED = HERE / "qa_expected.json"
SEED = 0
SUFFIXES = ("##s", "##ing", "##ed", "##er", "##ly")

SHORT = "john lives in paris and mary works at acme in london ."
CAPITALS = "Mary works at Acme, in London. John lives in Paris! The best city of France is Paris."
PIECES = "john is playing music and mary is eating bread in the capitals of france, happily"
FILM = "this movie was really fun : the actors played very well but the plot was boring and the story awful"
LONG = " ".join(
    [
        "the story of the day : john lives in paris , the capital of france , and works at acme .",
        "mary lives in london and she loved the music played at night in the city .",
        "what a wonderful film that was , the actors were great and the plot was not boring .",
        "the man was eating bread and the woman was eating food when the music played .",
        "john and mary were happy in paris , but the worst time was a sad night in london .",
        "acme is a company in london ; it works with the best actors of the day .",
    ]
)


def _pair(question: str, context: str) -> dict[str, str]:
    return {"question": question, "context": context}


#: name -> (positional arguments, keyword arguments) of one pipeline call.
CASES: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "keywords": ([], {"question": "where does john live", "context": SHORT}),
    "keywords_cased_punctuation": ([], {"question": "Who works at Acme?", "context": CAPITALS}),
    "word_pieces": ([], {"question": "what is john doing", "context": PIECES}),
    "positional_pair": (["what was the plot", FILM], {}),
    "single_dict": ([_pair("where does mary work", SHORT)], {}),
    "list_of_one_dict": ([[_pair("who loved the music", LONG[:200])]], {}),
    "top_k_3": ([], {"question": "what is john doing", "context": PIECES, "top_k": 3}),
    "top_k_3_repeated_words": ([], {"question": "which city", "context": CAPITALS, "top_k": 3}),
    "impossible_answer": ([], {"question": "who was happy", "context": FILM, "handle_impossible_answer": True}),
    "impossible_answer_ranked": (
        [],
        {
            "question": "who was happy",
            "context": FILM,
            "handle_impossible_answer": True,
            "max_answer_len": 1,
            "top_k": 6,
        },
    ),
    "impossible_answer_top_k_2": (
        [],
        {"question": "where", "context": SHORT, "handle_impossible_answer": True, "top_k": 2},
    ),
    "max_answer_len_1": ([], {"question": "what city", "context": CAPITALS, "max_answer_len": 1, "top_k": 2}),
    "max_answer_len_3": ([], {"question": "what did the actors do", "context": FILM, "max_answer_len": 3}),
    "not_aligned_to_words": ([], {"question": "what is mary doing", "context": PIECES, "align_to_words": False}),
    "not_aligned_top_k_3": (
        [],
        {"question": "what is john doing", "context": PIECES, "align_to_words": False, "top_k": 3},
    ),
    "long_context_default_windows": ([], {"question": "where does john work", "context": LONG}),
    "long_context_small_windows": (
        [],
        {"question": "who was eating bread", "context": LONG, "max_seq_len": 24, "doc_stride": 8, "top_k": 2},
    ),
    "long_context_impossible_answer": (
        [],
        {
            "question": "what is acme",
            "context": LONG,
            "max_seq_len": 32,
            "doc_stride": 12,
            "handle_impossible_answer": True,
            "top_k": 2,
        },
    ),
    "batch_of_dicts": (
        [
            [
                _pair("where does john live", SHORT),
                _pair("who works at acme", LONG),
                _pair("what is john doing", PIECES),
                _pair("what was boring", FILM),
                _pair("where is acme", LONG),
                _pair("what city", CAPITALS),
            ]
        ],
        {"batch_size": 4, "max_seq_len": 40, "doc_stride": 16},
    ),
    "batch_questions_one_context": (
        [],
        {
            "question": ["who lives in paris", "what was played at night", "who was sad"],
            "context": LONG,
            "batch_size": 4,
            "top_k": 2,
        },
    ),
    "question_and_context_lists": (
        [],
        {"question": ["who works at acme", "what was fun"], "context": [CAPITALS, FILM]},
    ),
    "padding_max_length_batch": (
        [[_pair("what was fun", FILM), _pair("who lives in london", CAPITALS)]],
        {"padding": "max_length", "max_seq_len": 48, "doc_stride": 16, "batch_size": 2},
    ),
}


def make_fixture() -> None:
    """Step 1 (transformers 5): the seeded tiny BERT and its tokenizer, in :data:`FIXTURE`."""
    import torch
    import transformers

    from acceleron.testing.tiny import SPECIAL, WORDS

    vocab = {token: index for index, token in enumerate((*SPECIAL, *WORDS, *SUFFIXES))}
    tokenizer: Any = transformers.BertTokenizerFast  # type: ignore[attr-defined]
    tokenizer = tokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=72,
        pad_token_id=0,
        initializer_range=0.2,
    )
    torch.manual_seed(SEED)
    model = transformers.BertForQuestionAnswering(config).eval()
    model.save_pretrained(FIXTURE)
    tokenizer.save_pretrained(FIXTURE)
    print(f"wrote {FIXTURE}: {sum(f.stat().st_size for f in FIXTURE.iterdir()) // 1024} KB")


def _run_cases(pipe: Any) -> dict[str, Any]:
    results = {}
    for name, (args, kwargs) in CASES.items():
        results[name] = pipe(*copy.deepcopy(args), **copy.deepcopy(kwargs))
    return results


def _flatten(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, dict):
        return [result]
    return [answer for item in result for answer in _flatten(item)]


def _check_stable(pipe: Any, recorded: dict[str, Any]) -> None:
    """Fail if slightly different weights change an answer: a recorded result must not hang on a near tie."""
    import torch
    from transformers import pipeline

    for seed in (1, 2):
        model = copy.deepcopy(pipe.model)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.mul_(1 + 1e-5 * noise)
        nudged = _run_cases(pipeline("question-answering", model=model, tokenizer=pipe.tokenizer))
        for name, result in recorded.items():
            again = nudged[name]
            left, right = _flatten(result), _flatten(again)
            same = len(left) == len(right) and all(
                (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"])
                and abs(a["score"] - b["score"]) < 1e-5
                for a, b in zip(left, right)
            )
            if not same:
                raise SystemExit(f"case {name!r} is not stable under a 1e-5 weight change:\n{result}\n{again}")


def _token_ids(tokenizer: Any) -> dict[str, list[list[int]]]:
    """The token ids of every (question, context) pair of the cases, for the tokenizer check in the test."""
    pairs: dict[str, list[list[int]]] = {}
    for name, (args, kwargs) in CASES.items():
        items: list[tuple[str, str]] = []
        if "question" in kwargs:
            questions = kwargs["question"] if isinstance(kwargs["question"], list) else [kwargs["question"]]
            contexts = (
                kwargs["context"] if isinstance(kwargs["context"], list) else [kwargs["context"]] * len(questions)
            )
            items = list(zip(questions, contexts))
        elif len(args) == 2:
            items = [(args[0], args[1])]
        else:
            inputs = args[0] if isinstance(args[0], list) else [args[0]]
            items = [(item["question"], item["context"]) for item in inputs]
        pairs[name] = [tokenizer(question, context)["input_ids"] for question, context in items]
    return pairs


def record_expected() -> None:
    """Step 2 (transformers 4): the stock pipeline's results on :data:`CASES`, in :data:`EXPECTED`."""
    import tokenizers
    import torch
    import transformers
    from transformers import pipeline

    if int(transformers.__version__.split(".")[0]) >= 5:
        raise SystemExit(f"run this step with transformers 4 (this is {transformers.__version__})")
    pipe = pipeline("question-answering", model=str(FIXTURE))
    recorded = _run_cases(pipe)
    _check_stable(pipe, recorded)
    document = {
        "made_by": "tests/data/make_qa_expected.py expected",
        "versions": {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
        },
        "cases": [
            {"name": name, "args": args, "kwargs": kwargs, "expected": recorded[name]}
            for name, (args, kwargs) in CASES.items()
        ],
        "token_ids": _token_ids(pipe.tokenizer),
    }
    EXPECTED.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {EXPECTED}: {len(CASES)} cases with transformers {transformers.__version__}")


if __name__ == "__main__":
    steps = {"fixture": make_fixture, "expected": record_expected}
    if len(sys.argv) != 2 or sys.argv[1] not in steps:
        raise SystemExit(f"usage: python {sys.argv[0]} {{{'|'.join(steps)}}}")
    steps[sys.argv[1]]()
