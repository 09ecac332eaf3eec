"""Pipelines transformers removed, written for acceleron.

transformers 5 dropped pipelines whose models acceleron still exports and runs (question-answering
first; summarization, translation, text2text-generation and image-to-text are candidates). The
router builds the class named here for such a task, but only where the installed transformers has
no pipeline for it: where transformers still has one, its own class is used.

Adding a pipeline is one entry in :data:`REMOVED_PIPELINES`: the task and the class that serves it,
as ``"module:Class"`` so that nothing is imported before a pipeline is built. The class is a
``transformers.Pipeline`` subclass; the router gives it the model, the components its ``_load_*``
flags ask for (a tokenizer, an image processor, ...) and the device (see
:func:`acceleron.router.pipeline`).

This module imports neither torch nor transformers at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import Pipeline

#: Task -> ``"module:Class"`` of acceleron's pipeline for it, used where transformers has none.
REMOVED_PIPELINES: dict[str, str] = {
    "question-answering": "acceleron.pipelines.question_answering:QuestionAnsweringPipeline",
    "text2text-generation": "acceleron.pipelines.text2text:Text2TextGenerationPipeline",
    "summarization": "acceleron.pipelines.text2text:SummarizationPipeline",
    "translation": "acceleron.pipelines.text2text:TranslationPipeline",
    "image-to-text": "acceleron.pipelines.image_to_text:ImageToTextPipeline",
}


def transformers_has_pipeline(task: str) -> bool:
    """Whether ``transformers.pipeline(task, ...)`` of the installed transformers builds a pipeline for ``task``."""
    from transformers import pipelines

    if task in getattr(pipelines, "REMOVED_TASKS", {}):  # transformers 5 refuses these before any lookup
        return False
    return task in pipelines.SUPPORTED_TASKS


def replacement_pipeline(task: str) -> type[Pipeline] | None:
    """acceleron's pipeline class for ``task`` where the installed transformers lacks the task, else None."""
    target = REMOVED_PIPELINES.get(task)
    if target is None or transformers_has_pipeline(task):
        return None
    module, _, name = target.partition(":")
    cls: type[Pipeline] = getattr(importlib.import_module(module), name)
    return cls
