"""image-to-text: captions from an image encoder-decoder (VisionEncoderDecoder), the pipeline transformers 5 removed.

Written for acceleron on transformers 5's ``Pipeline``; call forms and results are those of the
transformers 4 class: ``pipe(image)`` gives ``[{"generated_text": ...}]``, ``pipe([image, ...])``
one such list per image. An image is a PIL image, a path or URL (``timeout`` for URLs), or a numpy
array. ``max_new_tokens`` and ``generate_kwargs`` (or any ``generate()`` keyword) set the decoding.
A text ``prompt`` (conditional captioning) is refused for VisionEncoderDecoder models, as it was.
"""

from __future__ import annotations

from typing import Any

from transformers import Pipeline

from acceleron.errors import InvalidInputError


class ImageToTextPipeline(Pipeline):
    """Generate text from an image with an encoder-decoder model (ViT + GPT-2 and the like)."""

    _load_tokenizer = True  # type: ignore[assignment]
    _load_image_processor = True  # type: ignore[assignment]
    _load_processor = False  # type: ignore[assignment]
    _load_video_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _pipeline_calls_generate = True

    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if inputs is None and "images" in kwargs:
            inputs = kwargs.pop("images")
        if inputs is None:
            raise InvalidInputError("ImageToTextPipeline needs an image (a PIL image, a path or URL) or a list of them")
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        max_new_tokens: int | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        prompt: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if prompt is not None:
            raise InvalidInputError(
                f"{getattr(self.model.config, 'model_type', 'this model')} models do not support a text prompt "
                "(conditional captioning); call the pipeline with the image alone."
            )
        preprocess: dict[str, Any] = {}
        if timeout is not None:
            preprocess["timeout"] = timeout
        forward: dict[str, Any] = dict(generate_kwargs or {})
        forward.update(kwargs)
        if max_new_tokens is not None:
            if "max_new_tokens" in forward:
                raise ValueError("max_new_tokens is given both as a parameter and in generate_kwargs; give it once")
            forward["max_new_tokens"] = max_new_tokens
        return preprocess, forward, {}

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        from transformers.image_utils import load_image

        processor: Any = self.image_processor
        inputs = processor(images=load_image(image, timeout=timeout), return_tensors="pt")
        return {name: value.to(self.dtype) if value.is_floating_point() else value for name, value in inputs.items()}

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> Any:  # type: ignore[override]
        model: Any = self.model
        main = model_inputs.pop(model.main_input_name)
        return model.generate(main, **model_inputs, **self._prepare_generate_kwargs(generate_kwargs))

    def postprocess(self, model_outputs: Any) -> list[dict[str, Any]]:  # type: ignore[override]
        tokenizer: Any = self.tokenizer
        return [
            {"generated_text": tokenizer.decode(output_ids, skip_special_tokens=True)} for output_ids in model_outputs
        ]
