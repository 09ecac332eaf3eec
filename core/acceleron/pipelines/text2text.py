"""text2text-generation, summarization and translation: the encoder-decoder text pipelines transformers 5 removed.

Written for acceleron on transformers 5's ``Pipeline`` (which prepares the ``generate()`` arguments:
the call's parameters on top of those given at construction). Call forms and results are those of
the transformers 4 classes:

* ``pipe("text")`` gives ``[{"generated_text": ...}]`` (one dict per returned sequence;
  ``summary_text`` for summarization, ``translation_text`` for translation);
* ``pipe(["a", "b"])`` gives one dict per input when each input has one sequence, else a list per input;
* ``return_tensors=True`` gives ``..._token_ids`` instead of text; ``clean_up_tokenization_spaces``,
  ``truncation`` (default: none) and ``stop_sequence`` (its first token ends generation) as before;
  every other keyword goes to ``generate()`` (``max_new_tokens``, ``num_beams``, ``do_sample``, ...).

The model config's ``task_specific_params`` for the pipeline's task (T5's ``"summarize: "`` prefix
and beam settings, say) apply as in transformers 4: ``prefix`` is prepended to each input and the
rest are generation defaults that the caller's parameters override. Translation reads its languages
from a task named ``translation_xx_to_yy`` or from ``src_lang``/``tgt_lang``; tokenizers of
multilingual models that build translation inputs themselves (``_build_translation_inputs``) get them.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import Pipeline

from acceleron.errors import InvalidInputError
from acceleron.tasks import translation_languages

logger = logging.getLogger(__name__)

TEXT, TENSORS = "text", "tensors"


class Text2TextGenerationPipeline(Pipeline):
    """Text in, generated text out, with an encoder-decoder model (T5, BART, Marian, ...)."""

    # transformers declares these None on Pipeline; subclasses set them (True: needed, False: unused).
    _load_tokenizer = True  # type: ignore[assignment]
    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_video_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _pipeline_calls_generate = True
    #: The key prefix of each result: ``generated_text`` / ``generated_token_ids``.
    return_name = "generated"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._apply_task_params()

    def _apply_task_params(self) -> None:
        """The config's ``task_specific_params`` for this task: the prefix, and generation defaults."""
        params = getattr(self.model.config, "task_specific_params", None) or {}
        own = params.get(self.task) if isinstance(params, dict) else None
        if not isinstance(own, dict):
            return
        own = dict(own)
        if "prefix" in own:
            self.prefix = own.pop("prefix")
        for key, value in own.items():
            self._generate_kwargs.setdefault(key, value)  # what the caller passed at construction wins

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Generate for one text or a list of texts (see the module docstring for the results)."""
        if not args and "text_inputs" in kwargs:
            args = (kwargs.pop("text_inputs"),)
        if not args:
            raise InvalidInputError(f"{type(self).__name__} needs a text or a list of texts")
        texts = args[0]
        if isinstance(texts, list):
            if not texts:
                return []
            bad = [type(text).__name__ for text in texts if not isinstance(text, str)]
            if bad:
                raise TypeError(f"{type(self).__name__} takes strings; the list holds {', '.join(sorted(set(bad)))}")
        elif not isinstance(texts, str):
            raise TypeError(f"{type(self).__name__} takes a string or a list of strings, got {type(texts).__name__}")
        result = super().__call__(*args, **kwargs)
        if isinstance(texts, list) and all(len(records) == 1 for records in result):
            return [records[0] for records in result]
        return result

    def _sanitize_parameters(
        self,
        return_tensors: bool | None = None,
        return_text: bool | None = None,
        return_type: str | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        truncation: Any = None,
        stop_sequence: str | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess: dict[str, Any] = {}
        if truncation is not None:
            preprocess["truncation"] = truncation
        forward = dict(generate_kwargs)
        if stop_sequence is not None:
            tokenizer: Any = self.tokenizer
            stop_ids = tokenizer.encode(stop_sequence, add_special_tokens=False)
            if len(stop_ids) > 1:
                logger.warning(
                    "acceleron: stop_sequence %r is several tokens; only its first ends generation", stop_sequence
                )
            forward["eos_token_id"] = stop_ids[0]
        postprocess: dict[str, Any] = {}
        if return_tensors is not None and return_type is None:
            return_type = TENSORS if return_tensors else TEXT
        if return_type is not None:
            if return_type not in (TEXT, TENSORS):
                raise ValueError(f"return_type must be {TEXT!r} or {TENSORS!r}, got {return_type!r}")
            postprocess["return_type"] = return_type
        if clean_up_tokenization_spaces is not None:
            postprocess["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess, forward, postprocess

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> bool:
        """Warn about lengths that cannot give a sensible result (the subclasses' rules)."""
        return True

    def _parse_and_tokenize(self, text: str, truncation: Any) -> dict[str, Any]:
        prefix = self.prefix if isinstance(getattr(self, "prefix", None), str) else ""
        tokenizer: Any = self.tokenizer
        inputs = tokenizer(str(prefix) + text, padding=False, truncation=truncation, return_tensors="pt")
        inputs.pop("token_type_ids", None)  # the encoder graph takes ids and mask
        return dict(inputs)

    def preprocess(self, inputs: Any, truncation: Any = False, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(inputs, str):
            raise TypeError(f"{type(self).__name__} takes strings, got {type(inputs).__name__}")
        return self._parse_and_tokenize(inputs, truncation=truncation, **kwargs)

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        batch, input_length = model_inputs["input_ids"].shape
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        config = self.model.generation_config
        self.check_inputs(
            input_length,
            generate_kwargs.get("min_length", getattr(config, "min_length", 0) or 0),
            generate_kwargs.get("max_length", getattr(config, "max_length", 20) or 20),
        )
        model: Any = self.model
        output_ids = model.generate(**model_inputs, **generate_kwargs)
        returned = output_ids.shape[0]
        return {"output_ids": output_ids.reshape(batch, returned // batch, *output_ids.shape[1:])}

    def postprocess(  # type: ignore[override]
        self, model_outputs: dict[str, Any], return_type: str = TEXT, clean_up_tokenization_spaces: bool = False
    ) -> list[dict[str, Any]]:
        tokenizer: Any = self.tokenizer
        records: list[dict[str, Any]] = []
        for output_ids in model_outputs["output_ids"][0]:
            if return_type == TENSORS:
                records.append({f"{self.return_name}_token_ids": output_ids})
            else:
                text = tokenizer.decode(
                    output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
                )
                records.append({f"{self.return_name}_text": text})
        return records


class SummarizationPipeline(Text2TextGenerationPipeline):
    """Summaries (``summary_text``) of documents, with an encoder-decoder model (BART, T5, ...)."""

    return_name = "summary"

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> bool:
        if max_length < min_length:
            logger.warning("acceleron: min_length=%s is larger than max_length=%s", min_length, max_length)
        if input_length < max_length:
            logger.warning(
                "acceleron: max_length is %s but the input is %s tokens; a summary is usually shorter than its input "
                "(pass max_length= or max_new_tokens= smaller than that)",
                max_length,
                input_length,
            )
        return True


class TranslationPipeline(Text2TextGenerationPipeline):
    """Translations (``translation_text``), with an encoder-decoder model (Marian, T5, mBART, ...)."""

    return_name = "translation"

    def _sanitize_parameters(  # type: ignore[override]
        self, src_lang: str | None = None, tgt_lang: str | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        languages = translation_languages(self.task or "")
        if languages is not None:
            src_lang = src_lang or languages[0]
            tgt_lang = tgt_lang or languages[1]
        if src_lang is not None:
            preprocess["src_lang"] = src_lang
        if tgt_lang is not None:
            preprocess["tgt_lang"] = tgt_lang
        return preprocess, forward, postprocess

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> bool:
        if input_length > 0.9 * max_length:
            logger.warning(
                "acceleron: the input is %s tokens and max_length %s: the translation may be cut short "
                "(pass max_length= or max_new_tokens=)",
                input_length,
                max_length,
            )
        return True

    def preprocess(  # type: ignore[override]
        self, inputs: Any, truncation: Any = False, src_lang: str | None = None, tgt_lang: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(inputs, str):
            raise TypeError(f"{type(self).__name__} takes strings, got {type(inputs).__name__}")
        build = getattr(self.tokenizer, "_build_translation_inputs", None)
        if build is not None:  # multilingual tokenizers (mBART, M2M100, NLLB) mark the languages themselves
            return dict(build(inputs, return_tensors="pt", truncation=truncation, src_lang=src_lang, tgt_lang=tgt_lang))
        return self._parse_and_tokenize(inputs, truncation=truncation)
