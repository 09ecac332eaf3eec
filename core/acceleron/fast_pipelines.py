"""Pipeline subclasses that change speed, never results.

Batches padded to their longest sentence waste much of their compute on padding (about half on
real movie-review sentences). Sorting the inputs by length before batching removes most of that
waste; the results are put back in the caller's order. Only tasks whose per-item outputs do not
depend on the padding of the batch are sorted (feature-extraction returns padded hidden states,
so it keeps the stock order).
"""

from __future__ import annotations

from typing import Any

from transformers import TextClassificationPipeline


class LengthSortedTextClassificationPipeline(TextClassificationPipeline):
    """``TextClassificationPipeline`` that batches a list of sentences by length.

    For a list of strings with ``batch_size > 1`` it tokenises the whole list in one call (instead of
    item by item plus a collate step), sorts the sentences by token count so that each batch pads
    to a similar length, pads each batch as ``padding=True`` would, and scores each batch at once
    as the stock ``postprocess`` scores each row. Anything else (single inputs, text pairs,
    generators, datasets, left-padding tokenizers) takes the stock path.
    """

    def get_iterator(
        self,
        inputs: Any,
        num_workers: int,
        batch_size: int,
        preprocess_params: dict[str, Any],
        forward_params: dict[str, Any],
        postprocess_params: dict[str, Any],
    ) -> Any:
        sortable = (
            isinstance(inputs, list)
            and batch_size > 1
            and len(inputs) > 1
            and self.tokenizer is not None
            # Left padding shifts a row's tokens by the batch's longest row; with absolute positions
            # (BERT) that changes results, so only right-padded batches may be regrouped.
            and getattr(self.tokenizer, "padding_side", "right") == "right"
            and all(isinstance(text, str) for text in inputs)
        )
        if not sortable:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        return iter(self._run_sorted(inputs, batch_size, preprocess_params, forward_params, postprocess_params))

    def _run_sorted(
        self,
        texts: list[str],
        batch_size: int,
        preprocess_params: dict[str, Any],
        forward_params: dict[str, Any],
        postprocess_params: dict[str, Any],
    ) -> list[Any]:
        tokenizer: Any = self.tokenizer
        encoded = tokenizer(texts, **preprocess_params)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        pad_values = _pad_values(tokenizer, encoded, preprocess_params)
        score = _batch_scoring(self.model.config, postprocess_params)
        results: list[Any] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if pad_values is None:  # a padding the caller chose, or one we cannot reproduce: the tokenizer pads
                encode = {"padding": True, **preprocess_params}
                model_inputs = tokenizer([texts[i] for i in chunk], return_tensors="pt", **encode)
            else:
                model_inputs = _padded(encoded, chunk, lengths, pad_values)
            logits = self.forward(model_inputs, **forward_params)["logits"]
            rows = None if score is None else self._top_labels(logits, score, postprocess_params)
            if rows is None:
                rows = [
                    self.postprocess({"logits": logits[row : row + 1]}, **postprocess_params)
                    for row in range(len(chunk))
                ]
            for index, result in zip(chunk, rows, strict=True):
                results[index] = result
        return results

    def _top_labels(self, logits: Any, score: Any, postprocess_params: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The stock one-label-per-input results for every row of a batch at once (None: post-process per row).

        ``score`` is the stock scoring function (:func:`_batch_scoring`); per row, the stock
        ``postprocess`` looks the model's config up again for each sentence, a fifth of the
        pipeline's own overhead on a bfloat16 OpenVINO model. The first row is checked against the
        stock ``postprocess``, so if transformers changes its rules the batch falls back to it
        instead of answering differently.
        """
        scores = score(logits.float().numpy())
        id2label: Any = self.model.config.id2label
        rows = [
            {"label": id2label[best], "score": top}
            for best, top in zip(scores.argmax(axis=-1).tolist(), scores.max(axis=-1).tolist(), strict=True)
        ]
        if rows[0] != self.postprocess({"logits": logits[0:1]}, **postprocess_params):
            return None
        return rows


def _batch_scoring(config: Any, postprocess_params: dict[str, Any]) -> Any:
    """The function the stock ``postprocess`` applies to logits, for its default output; None otherwise.

    Only the default output (``top_k=1``, one dict per input) is scored by batch; for anything
    else, or a rule this does not know, None sends every row through the stock ``postprocess``.
    """
    if postprocess_params.get("top_k", 1) != 1 or not postprocess_params.get("_legacy", True):
        return None
    try:
        from transformers.pipelines.text_classification import ClassificationFunction, sigmoid, softmax
    except ImportError:  # a transformers release that moved them: the stock per-row path
        return None
    requested = postprocess_params.get("function_to_apply")
    if requested is None:  # the stock default: from the model's problem type and label count
        problem = getattr(config, "problem_type", None)
        labels = int(getattr(config, "num_labels", 0))
        if problem == "regression":
            requested = ClassificationFunction.NONE
        elif problem == "multi_label_classification" or labels == 1:
            requested = ClassificationFunction.SIGMOID
        elif problem == "single_label_classification" or labels > 1:
            requested = ClassificationFunction.SOFTMAX
        else:
            return None
    functions = {
        ClassificationFunction.SIGMOID: sigmoid,
        ClassificationFunction.SOFTMAX: softmax,
        ClassificationFunction.NONE: lambda values: values,
    }
    return functions.get(requested)


def _pad_values(tokenizer: Any, encoded: Any, preprocess_params: dict[str, Any]) -> dict[str, int] | None:
    """The value each encoded field pads with, as the tokenizer's ``padding=True`` would; None to let it pad.

    The texts are tokenised once, unpadded; each batch is then padded here with numpy as
    ``padding=True`` pads (on the right, to the batch's longest row), without tokenising the batch
    a second time (that second pass was about half of the pipeline's own overhead on a bfloat16
    OpenVINO model).
    """
    if preprocess_params.get("padding") not in (None, True, "longest"):
        return None
    if preprocess_params.get("pad_to_multiple_of") is not None or tokenizer.pad_token_id is None:
        return None
    known = {
        "input_ids": int(tokenizer.pad_token_id),
        "attention_mask": 0,
        "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0)),
    }
    if not set(encoded.keys()) <= set(known):
        return None
    return {key: known[key] for key in encoded}


def _padded(encoded: Any, chunk: list[int], lengths: list[int], pad_values: dict[str, int]) -> dict[str, Any]:
    """The rows ``chunk`` of ``encoded`` as int64 tensors, right-padded to their longest row."""
    import numpy as np
    import torch

    width = max(lengths[i] for i in chunk)
    batch: dict[str, Any] = {}
    for key, pad in pad_values.items():
        rows = encoded[key]
        array = np.full((len(chunk), width), pad, dtype=np.int64)
        for row, index in enumerate(chunk):
            values = rows[index]
            array[row, : len(values)] = values
        batch[key] = torch.from_numpy(array)
    return batch


#: Task -> the pipeline class the router uses when the caller names none.
FAST_PIPELINES: dict[str, type] = {"text-classification": LengthSortedTextClassificationPipeline}
