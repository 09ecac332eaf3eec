"""Extractive question answering: the pipeline transformers 5 removed, with transformers 4's calls and results.

Called as transformers 4.57's ``QuestionAnsweringPipeline`` was with a fast tokenizer, it returns
the same answers, character offsets and scores (``tests/test_question_answering.py`` compares it
with answers recorded from transformers 4.57.6). How an answer is found:

1. The question and the context are tokenised as a pair (the question first, unless the tokenizer
   pads on the left). A context too long for ``max_seq_len`` tokens is cut into windows that
   overlap by ``doc_stride`` tokens.
2. For each window the model gives a start and an end logit per token. A softmax turns each into
   probabilities over the window's context tokens and its CLS token: every other token (the
   question, separators, padding) is first set to -10000, so it gets none.
3. A span from token ``i`` to token ``j`` of the context scores ``p_start[i] * p_end[j]``, with
   ``i <= j`` and ``j - i < max_answer_len``. Each window offers its best spans: ``top_k`` of them,
   or ``2 * top_k + 10`` with ``align_to_words``, where several spans may become one answer.
4. A span becomes a character range of the context: from the start of its first word to the end of
   its last word with ``align_to_words``, else from its first token's first character to its last
   token's last. Spans with the same text (ignoring case), in one window or in several, are one
   answer: the first one's offsets, the sum of their scores.
5. With ``handle_impossible_answer``, the empty answer ``""`` (start 0, end 0) competes too; its
   score is the smallest ``p_start[CLS] * p_end[CLS]`` over the windows.

The answers are sorted by score and the best ``top_k`` returned: a dict when there is one, else a
list of dicts.

Where this differs from transformers 4 (none of it changes a result of a right-padding tokenizer,
the BERT, RoBERTa and DistilBERT kind, on valid input):

* Only context tokens make spans. transformers 4 ranked all token pairs and then dropped those
  outside the context; where a window had fewer scored spans than it asked for, spans touching
  the CLS token (score 0) could slip through as answers. Here a window offers fewer spans instead.
* Tokenizers that pad on the left put the context first; here its question tokens are masked like
  any other (transformers 4 masked nothing for them) and the null answer is read at the CLS token.
* Bad input raises :class:`~acceleron.errors.InvalidInputError` and bad parameters
  :class:`~acceleron.errors.InvalidOptionError` (both ``ValueError``s), before any model call
  where they can be seen up front. An unknown parameter is an error (transformers 4 ignored it);
  a whitespace-only question or context counts as empty.
* ``max_question_len`` is accepted and checked but, as in transformers 4 with a fast tokenizer,
  never truncates the question. A question too long for ``max_seq_len`` raises
  :class:`~acceleron.errors.InputTooLongError`.
* Slow (Python) tokenizers are refused: answers need the character offsets only fast tokenizers give.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers.pipelines.base import ChunkPipeline

from acceleron.errors import InputTooLongError, InvalidInputError, InvalidOptionError

#: The value masked logits get before the softmax (transformers 4's, so that scores agree).
_MASKED_LOGIT = np.float32(-10000.0)
#: Keys of a window that travel next to the model inputs (the collate step pads tensors, keeps lists).
_SOFTMAX_MASK = "qa_softmax_mask"
_SPAN_MASK = "qa_span_mask"
_PARAMETERS = (
    "top_k",
    "doc_stride",
    "max_answer_len",
    "max_seq_len",
    "max_question_len",
    "handle_impossible_answer",
    "align_to_words",
    "padding",
)


@dataclass(frozen=True)
class QuestionContext:
    """One question about one context: the pipeline's unit of input."""

    question: str
    context: str


class QuestionAnsweringPipeline(ChunkPipeline):
    """Answers a question with a span of a context, with transformers 4's call forms and results.

    Inputs: ``pipe(question=..., context=...)``; ``pipe(question=[...], context=[...])`` (equal
    lengths) or ``pipe(question=[...], context="one context")``; ``pipe({"question": ..., "context":
    ...})``, a list of such dicts or a generator of them; ``pipe(question, context)``. A list of one
    input answers like a single input (as in transformers 4); an empty list gives an empty list.

    Parameters (at construction or per call):

    * ``top_k`` (1): how many answers; fewer come back when the context offers fewer. ``topk`` is
      the deprecated spelling.
    * ``doc_stride`` (``min(max_seq_len // 2, 128)``): tokens shared by consecutive windows of a
      long context.
    * ``max_answer_len`` (15): the longest answer, in tokens.
    * ``max_seq_len`` (``min(tokenizer.model_max_length, 384)``): tokens per window, question and
      special tokens included.
    * ``max_question_len`` (64): accepted for compatibility; the question is never truncated.
    * ``handle_impossible_answer`` (False): let the empty answer ``""`` compete.
    * ``align_to_words`` (True): widen answers to whole words.
    * ``padding`` (``"do_not_pad"``): the tokenizer's padding of each window.

    Each answer is ``{"score": float, "start": int, "end": int, "answer": str}``, ``start`` and
    ``end`` being character offsets into the context (``context[start:end] == answer``). The
    algorithm is in the module docstring.
    """

    # transformers declares these None on Pipeline; subclasses set them (True: needed, False: unused).
    _load_tokenizer = True  # type: ignore[assignment]
    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_video_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    default_input_names = "question,context"  # type: ignore[assignment]

    def __init__(self, model: Any, tokenizer: Any = None, **kwargs: Any) -> None:
        if tokenizer is None or not getattr(tokenizer, "is_fast", False):
            raise InvalidOptionError(
                "the question-answering pipeline needs a fast tokenizer (one backed by the tokenizers library, "
                f"which gives character offsets); got {type(tokenizer).__name__}. Pass tokenizer= a fast "
                "tokenizer, or save the model with its tokenizer.json."
            )
        super().__init__(model=model, tokenizer=tokenizer, **kwargs)

    # ---- calls and parameters ----

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Answer one input, a list of inputs or a generator of inputs (see the class docstring)."""
        inputs = _gather_inputs(args, kwargs)
        if isinstance(inputs, list):
            if not inputs:
                return []
            if len(inputs) == 1:  # transformers 4 answered a list of one as a single input
                return super().__call__(inputs[0], **kwargs)
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        top_k: Any = None,
        topk: Any = None,
        doc_stride: Any = None,
        max_answer_len: Any = None,
        max_seq_len: Any = None,
        max_question_len: Any = None,
        handle_impossible_answer: Any = None,
        align_to_words: Any = None,
        padding: Any = None,
        **unknown: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if unknown:
            raise InvalidOptionError(
                f"question-answering takes no parameter {', '.join(map(repr, sorted(unknown)))}; "
                f"it takes {', '.join(_PARAMETERS)} (and the inputs as question= and context=)."
            )
        if topk is not None:
            warnings.warn("topk is deprecated; use top_k", FutureWarning, stacklevel=4)
            top_k = topk if top_k is None else top_k
        preprocess: dict[str, Any] = {}
        postprocess: dict[str, Any] = {}
        if top_k is not None:
            postprocess["top_k"] = _count("top_k", top_k, minimum=1)
        if max_answer_len is not None:
            postprocess["max_answer_len"] = _count("max_answer_len", max_answer_len, minimum=1)
        if handle_impossible_answer is not None:
            postprocess["handle_impossible_answer"] = bool(handle_impossible_answer)
        if align_to_words is not None:
            postprocess["align_to_words"] = bool(align_to_words)
        if max_seq_len is not None:
            preprocess["max_seq_len"] = _count("max_seq_len", max_seq_len, minimum=2)
        if doc_stride is not None:
            preprocess["doc_stride"] = _count("doc_stride", doc_stride, minimum=0)
        if max_question_len is not None:
            preprocess["max_question_len"] = _count("max_question_len", max_question_len, minimum=1)
        if padding is not None:
            preprocess["padding"] = padding
        if "doc_stride" in preprocess and "max_seq_len" in preprocess:
            _check_stride(preprocess["doc_stride"], preprocess["max_seq_len"])
        return preprocess, {}, postprocess

    # ---- preprocess -> _forward -> postprocess ----

    def preprocess(  # type: ignore[override]
        self,
        example: Any,
        padding: Any = "do_not_pad",
        doc_stride: int | None = None,
        max_question_len: int = 64,
        max_seq_len: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """One item per window of the context: the model inputs, the masks and the offsets it needs."""
        pair = _as_question_context(example)
        tokenizer: Any = self.tokenizer
        if max_seq_len is None:
            max_seq_len = min(int(tokenizer.model_max_length), 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        _check_stride(doc_stride, max_seq_len)
        question_first = tokenizer.padding_side == "right"
        self._check_window_room(pair, max_seq_len, doc_stride)
        encoded = tokenizer(
            pair.question if question_first else pair.context,
            pair.context if question_first else pair.question,
            padding=padding,
            truncation="only_second" if question_first else "only_first",
            max_length=max_seq_len,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        context_sequence = 1 if question_first else 0
        model_inputs = [name for name in tokenizer.model_input_names if name in encoded]
        count = len(encoded["input_ids"])
        for index in range(count):
            ids = encoded["input_ids"][index]
            attention = encoded["attention_mask"][index] if "attention_mask" in encoded else [1] * len(ids)
            offsets = [tuple(pair_) for pair_ in encoded["offset_mapping"][index]]
            in_context = [
                sequence == context_sequence and bool(mask)
                for sequence, mask in zip(encoded.sequence_ids(index), attention)
            ]
            is_cls = [token == tokenizer.cls_token_id and bool(mask) for token, mask in zip(ids, attention)]
            window: dict[str, Any] = {
                name: torch.tensor([encoded[name][index]], dtype=torch.long) for name in model_inputs
            }
            # The CLS token takes part in the softmax (its probability is the null answer's) but never in a span.
            window[_SOFTMAX_MASK] = torch.tensor([[a or b for a, b in zip(in_context, is_cls)]])
            window[_SPAN_MASK] = torch.tensor([in_context])
            window["offsets"] = offsets
            window["word_spans"] = _word_spans(offsets, encoded.word_ids(index), in_context)
            window["example"] = pair
            window["is_last"] = index == count - 1
            yield window

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        names = [name for name in self.tokenizer.model_input_names if name in inputs]  # type: ignore[union-attr]
        outputs = self.model(**{name: inputs[name] for name in names})
        # start_logits first: the batch iterators read the batch size from the first entry.
        return {
            "start_logits": outputs["start_logits"],
            "end_logits": outputs["end_logits"],
            **{key: value for key, value in inputs.items() if key not in names},
        }

    def postprocess(  # type: ignore[override]
        self,
        windows: list[dict[str, Any]],
        top_k: int = 1,
        handle_impossible_answer: bool = False,
        max_answer_len: int = 15,
        align_to_words: bool = True,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """The best ``top_k`` answers over every window of one input."""
        spans_per_window = 2 * top_k + 10 if align_to_words else top_k
        answers: list[dict[str, Any]] = []
        by_text: dict[str, dict[str, Any]] = {}
        null_score: float | None = None
        for window in windows:
            offsets: list[tuple[int, int]] = window["offsets"]
            # Windows batched together are padded to the longest; the lists describe the unpadded window.
            padded = int(window[_SPAN_MASK].shape[-1]) - len(offsets)
            first = padded if self.tokenizer.padding_side == "left" else 0  # type: ignore[union-attr]
            last = first + len(offsets)
            softmax_mask = window[_SOFTMAX_MASK][0, first:last].numpy()
            span_mask = window[_SPAN_MASK][0, first:last].numpy()
            start = _probabilities(window["start_logits"][0, first:last], softmax_mask)
            end = _probabilities(window["end_logits"][0, first:last], softmax_mask)
            cls_positions = np.flatnonzero(softmax_mask & ~span_mask)
            null = int(cls_positions[0]) if cls_positions.size else 0
            window_null = float(start[null] * end[null])
            null_score = window_null if null_score is None else min(null_score, window_null)
            context: str = window["example"].context
            for first_token, last_token, score in _best_spans(start, end, span_mask, max_answer_len, spans_per_window):
                if align_to_words:
                    begin, stop = window["word_spans"][first_token][0], window["word_spans"][last_token][1]
                else:
                    begin, stop = offsets[first_token][0], offsets[last_token][1]
                text = context[begin:stop]
                same = by_text.get(text.lower())
                if same is not None:
                    same["score"] += score
                    continue
                answer = {"score": score, "start": begin, "end": stop, "answer": text}
                by_text[text.lower()] = answer
                answers.append(answer)
        if handle_impossible_answer and null_score is not None:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        best = sorted(answers, key=lambda answer: answer["score"], reverse=True)[:top_k]
        return best[0] if len(best) == 1 else best

    # ---- checks ----

    def _check_window_room(self, pair: QuestionContext, max_seq_len: int, doc_stride: int) -> None:
        """Refuse what the tokenizer cannot window (it panics, or raises an opaque truncation error)."""
        tokenizer: Any = self.tokenizer
        question = len(tokenizer(pair.question, add_special_tokens=False)["input_ids"])
        special = tokenizer.num_special_tokens_to_add(pair=True)
        room = max_seq_len - question - special
        if room > doc_stride:
            return
        context = len(tokenizer(pair.context, add_special_tokens=False)["input_ids"])
        if context <= room:  # one window holds it all: nothing to cut
            return
        if room <= 0:
            raise InputTooLongError(
                f"the question takes {question} tokens, which with {special} special tokens leaves no room for "
                f"the context in max_seq_len={max_seq_len} tokens; shorten the question or raise max_seq_len."
            )
        raise InvalidOptionError(
            f"doc_stride={doc_stride} must be less than the {room} context tokens a window holds (max_seq_len="
            f"{max_seq_len} minus the question's {question} tokens and {special} special tokens); lower doc_stride "
            "or raise max_seq_len."
        )


# ---- inputs ---------------------------------------------------------------------------------------


def _gather_inputs(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[QuestionContext] | Iterable[Any] | Dataset[Any]:
    """The call's inputs as a list of checked pairs, or a generator/dataset checked item by item later.

    Takes ``question`` and ``context`` out of ``kwargs``; what remains are the call's parameters.
    """
    question = kwargs.pop("question", None)
    context = kwargs.pop("context", None)
    if args:
        if question is not None or context is not None:
            raise InvalidInputError("pass the inputs either positionally or as question= and context=, not both.")
        if len(args) == 2 and all(isinstance(arg, str) for arg in args):
            return [_as_question_context({"question": args[0], "context": args[1]})]
        inputs = args[0] if len(args) == 1 else list(args)
    elif question is None and context is None:
        raise InvalidInputError(
            "question-answering needs a question and a context: pipe(question=..., context=...), "
            "or a dict {'question': ..., 'context': ...}, or a list of such dicts."
        )
    elif question is None or context is None:
        missing = "question" if question is None else "context"
        raise InvalidInputError(f"no {missing} was given; pass both question= and context=.")
    else:
        return _pairs_from_keywords(question, context)
    if isinstance(inputs, (types.GeneratorType, Dataset)):
        return inputs  # streamed: preprocess checks each item
    if isinstance(inputs, (str, bytes)):
        raise InvalidInputError(
            f"a lone string is not a question-answering input; pass pipe(question=..., context=...) "
            f"(got {_describe(inputs)})."
        )
    if isinstance(inputs, Mapping) or not isinstance(inputs, Iterable):
        return [_as_question_context(inputs)]
    return [_as_question_context(item, index) for index, item in enumerate(inputs)]


def _pairs_from_keywords(question: Any, context: Any) -> list[QuestionContext]:
    if isinstance(question, str) and isinstance(context, str):
        return [_as_question_context({"question": question, "context": context})]
    if isinstance(question, list) and isinstance(context, str):
        return [_as_question_context({"question": q, "context": context}, i) for i, q in enumerate(question)]
    if isinstance(question, list) and isinstance(context, list):
        if len(question) != len(context):
            raise InvalidInputError(
                f"question= has {len(question)} items but context= has {len(context)}; pass one context per "
                "question, or a single context string for all of them."
            )
        return [
            _as_question_context({"question": q, "context": c}, i) for i, (q, c) in enumerate(zip(question, context))
        ]
    raise InvalidInputError(
        "question= and context= must be strings, lists of strings of the same length, or a list of questions "
        f"with one context string; got question={_describe(question)}, context={_describe(context)}."
    )


def _as_question_context(item: Any, index: int | None = None) -> QuestionContext:
    """One input (a dict, a :class:`QuestionContext` or a SQuAD-example-like object), checked."""
    where = "" if index is None else f"input {index}: "
    if isinstance(item, QuestionContext):
        fields = {"question": item.question, "context": item.context}
    elif isinstance(item, Mapping):
        fields = dict(item)
    elif hasattr(item, "question_text") and hasattr(item, "context_text"):  # transformers 4's SquadExample
        fields = {"question": item.question_text, "context": item.context_text}
    else:
        raise InvalidInputError(
            f"{where}a question-answering input is a dict {{'question': ..., 'context': ...}}, got {_describe(item)}."
        )
    for key in ("question", "context"):
        if key not in fields:
            raise InvalidInputError(f"{where}the input has no {key!r} key; give {{'question': ..., 'context': ...}}.")
        value = fields[key]
        if not isinstance(value, str):
            raise InvalidInputError(f"{where}the {key} must be a string, got {_describe(value)}.")
        if not value.strip():
            raise InvalidInputError(f"{where}the {key} is empty.")
    return QuestionContext(fields["question"], fields["context"])


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidOptionError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_stride(doc_stride: int, max_seq_len: int) -> None:
    if doc_stride >= max_seq_len:
        raise InvalidOptionError(
            f"doc_stride={doc_stride} must be less than max_seq_len={max_seq_len} (windows of max_seq_len tokens "
            "overlap by doc_stride tokens); lower doc_stride."
        )


# ---- spans ----------------------------------------------------------------------------------------


def _word_spans(
    offsets: list[tuple[int, int]], word_ids: list[int | None], in_context: list[bool]
) -> list[tuple[int, int]]:
    """For each token, the characters of the whole context word it belongs to (its own for other tokens).

    A word cut by a window's edge spans only the characters this window holds.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for (begin, stop), word, context in zip(offsets, word_ids, in_context):
        if context and word is not None:
            first.setdefault(word, begin)
            last[word] = stop
    return [
        (first[word], last[word]) if context and word is not None else span
        for span, word, context in zip(offsets, word_ids, in_context)
    ]


def _probabilities(logits: torch.Tensor, keep: np.ndarray) -> np.ndarray:
    """Softmax over the kept tokens (float32; the others get -10000 first, as in transformers 4)."""
    values = np.where(keep, logits.float().numpy(), _MASKED_LOGIT)
    values = np.exp(values - values.max())
    result: np.ndarray = values / values.sum()
    return result


def _best_spans(
    start: np.ndarray, end: np.ndarray, allowed: np.ndarray, max_answer_len: int, count: int
) -> list[tuple[int, int, float]]:
    """The ``count`` best (first token, last token, score) spans of allowed tokens, best first.

    Only spans of at most ``max_answer_len`` tokens are scored: a (token, length) grid, not every pair.
    """
    size = len(start)
    lengths = min(max_answer_len, size)
    firsts = np.arange(size)[:, None]
    lasts = firsts + np.arange(lengths)[None, :]
    inside = lasts < size
    lasts = np.where(inside, lasts, size - 1)
    valid = (inside & allowed[:, None] & allowed[lasts]).ravel()
    scores = (start[:, None] * end[lasts]).ravel()
    last_of = lasts.ravel()
    candidates = np.flatnonzero(valid)
    # Stable: equal scores keep the order (first token, then last token), as transformers 4's argmax did.
    ranked = candidates[np.argsort(-scores[candidates], kind="stable")[:count]]
    return [(int(cell // lengths), int(last_of[cell]), float(scores[cell])) for cell in ranked]
