"""``dtype="int8"`` and ``dtype="int4"``: quantisation of an exported float32 model.

Weights are quantised to int8 once, per output channel; activations are quantised at run time
(no calibration data). Only ``MatMul`` nodes (and fused ``Attention``) are quantised: embeddings,
convolutions, LayerNorms and the ``Gemm`` pooler and classifier stay in float32. The recipe was
chosen on the MiniLM sentiment classifier (1024 held-out sentences, agreement with float32 labels;
the plugin README has the whole table): the quantizer's defaults agree on 96.1% in the length-sorted
batches acceleron's pipeline runs, per-channel weights on 98.1%, per-channel MatMul-only on 98.9%
with accuracy 88.5% against float32's 88.6%.

Decoders (plans whose task kind generates) get weight-only int8 instead (``weight_only=True``): a
decoder's first token carries huge activations, and one dynamic per-tensor scale for a whole
prefill then crushes every other token (SmolLM2-135M: prefill argmax agreement with PyTorch 42%).

``dtype="int4"`` is weight-only for every task: 4-bit ``MatMulNBits`` blocks (:data:`WEIGHT_ONLY`).
There is no dynamic int4 recipe to choose instead, and the weight-only one runs any graph whose
matrix multiplications have constant weights (the rest stays float32).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from acceleron.errors import ExportError
from acceleron_ort.artifacts import external_data_files

#: What is quantised. Quantising the embeddings (Gather) too agreed 0.9 points less in the pipeline's
#: batches, for a 2.5x smaller file.
QUANTIZED_OP_TYPES = ("MatMul", "Attention")


class _DropPreprocessingAdvice(logging.Filter):
    """The quantizer advises (on the root logger) a pre-processing step that static quantisation needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet() -> Iterator[None]:
    quiet = _DropPreprocessingAdvice()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def quantize(source: Path, target: Path, *, dtype: str, weight_only: bool) -> Path:
    """Write the ``dtype`` (int8 or int4) version of the float32 ONNX model ``source`` to ``target``.

    ``weight_only`` (always, for int4): every constant-weight ``MatMul`` as blockwise ``MatMulNBits``
    (:data:`WEIGHT_ONLY`), weights in ``<target>.data``; otherwise dynamic int8 (the recipe above).
    """
    weight_only = weight_only or dtype != "int8"
    kind = f"weight-only {dtype}" if weight_only else dtype
    try:
        with _quiet():
            if weight_only:
                _quantize_weights(source, target, WEIGHT_ONLY[dtype])
            else:
                quantize_dynamic(
                    str(source),
                    str(target),
                    per_channel=True,
                    reduce_range=False,  # only for CPUs without VNNI; it cost 3 points of agreement here
                    op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                    weight_type=QuantType.QInt8,
                    use_external_data_format=bool(external_data_files(source)),
                )
    except Exception as error:
        raise ExportError(f"{kind} quantisation of {source.name} failed: {type(error).__name__}: {error}") from error
    return target


@dataclass(frozen=True)
class WeightOnlyRecipe:
    """``MatMulNBits`` weights: ``bits`` per weight, one scale (and, asymmetric, a zero point) per
    ``block_size`` weights along the input axis. Accuracy level 4 lets the kernel quantise the
    activations to int8 per block too, at run time (the fast integer path)."""

    bits: int
    block_size: int
    symmetric: bool
    accuracy_level: int = 4


#: The weight-only recipes per dtype. int8, measured on SmolLM2-135M-Instruct, one thread, decode
#: ms/token: float32 64.0, dynamic int8 40.9, blocks of 128 34.4, the same with float32 compute 643;
#: argmax agreement with PyTorch on the validation prefill 92% (dynamic int8: 42%) and 100% on the
#: decode step.
#:
#: Block sizes and symmetry, SmolLM2-135M-Instruct, one thread, a loaded 2-core Xeon (AVX-512 VNNI),
#: 2026-12-06 (``benchmarks/quantized_decode.py``): process CPU ms per decoded token; top-1 agreement
#: with PyTorch float32 on 8 chat prompts x 64 greedy tokens, each position fed PyTorch's own tokens
#: (float32 export: 99.4%); the answer to "What is the capital of France?".
#:
#: ======================  ======  =========  ======
#: recipe                  CPU ms  agreement  Paris
#: ======================  ======  =========  ======
#: float32                 51.3    99.4%      yes
#: int8 sym, 128 (chosen)  26.7    93.4%      yes
#: int8 sym, 32            30.3    94.3%      no
#: int8 asym, 32           28.4    95.7%      no
#: int4 sym, 32 (chosen)   23.3    70.3%      yes
#: int4 asym, 32           22.2    68.0%      yes
#: int4 sym, 64            21.5    65.8%      yes
#: int4 asym, 64           21.4    66.0%      yes
#: int4 sym, 128           23.7    59.0%      no
#: int4 asym, 128          23.5    63.9%      no
#: ======================  ======  =========  ======
#:
#: int8 keeps blocks of 128: blocks of 32 agree 1-2 points more but are no faster, and their first
#: token of the France answer flips ("L'Étoile, ..."; a near tie). int4 takes the most accurate recipe,
#: symmetric blocks of 32: blocks of 64 are 8% cheaper and 4.5 points less faithful.
WEIGHT_ONLY: dict[str, WeightOnlyRecipe] = {
    "int8": WeightOnlyRecipe(bits=8, block_size=128, symmetric=True),
    "int4": WeightOnlyRecipe(bits=4, block_size=32, symmetric=True),
}


def _quantize_weights(source: Path, target: Path, recipe: WeightOnlyRecipe) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    chatty = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(source)),
            bits=recipe.bits,
            block_size=recipe.block_size,
            is_symmetric=recipe.symmetric,
            accuracy_level=recipe.accuracy_level,
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=True)
    finally:
        chatty.setLevel(level)
