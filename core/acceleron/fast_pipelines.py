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

    For a list of strings with ``batch_size > 1`` it tokenises each batch in one call (instead of
    item by item plus a collate step), sorts the sentences by token count so that each batch pads
    to a similar length, and post-processes each row with the stock ``postprocess``. Anything
    else (single inputs, text pairs, generators, datasets) takes the stock path.
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
        lengths = [len(ids) for ids in tokenizer(texts, **preprocess_params)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        results: list[Any] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            encode = {"padding": True, **preprocess_params}  # a caller's padding (e.g. "max_length") wins
            model_inputs = tokenizer([texts[i] for i in chunk], return_tensors="pt", **encode)
            logits = self.forward(model_inputs, **forward_params)["logits"]
            for row, index in enumerate(chunk):
                results[index] = self.postprocess({"logits": logits[row : row + 1]}, **postprocess_params)
        return results


#: Task -> the pipeline class the router uses when the caller names none.
FAST_PIPELINES: dict[str, type] = {"text-classification": LengthSortedTextClassificationPipeline}
