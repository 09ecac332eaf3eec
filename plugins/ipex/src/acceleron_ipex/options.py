"""The ``ipex`` backend's options: ``engine`` and ``compile`` on top of the core's device, dtype and threads.

Importing this module imports neither torch nor IPEX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from acceleron.backend import Options
from acceleron.errors import InvalidOptionError
from acceleron_ipex import engine

if TYPE_CHECKING:
    from acceleron.tasks import GraphPlan

#: Inductor modes ``compile`` accepts (True means "default").
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")

#: Why dynamic int8 is refused for a graph that carries a KV cache (measured on SmolLM2-135M-Instruct).
CACHE_INT8_REFUSED = (
    "the ipex backend does not offer dtype='int8' for generating tasks (a decoder with a KV cache): "
    "its int8 is PyTorch's dynamic quantisation, one activation scale per tensor, and a decoder's "
    "first token carries activations so large that the rest of a prompt loses its precision "
    "(SmolLM2-135M: the prefill's next-token argmax agreed with float32 on 25% of positions; leaving "
    "down_proj and lm_head in float32 still only 58%). Use dtype='float32' or 'bfloat16' here, or "
    "weight-only int8 with accelerator='ov' or 'ort'."
)

#: Why dtype="int4" is refused. torch 2.13's CPU kernels exist but lose to float32 at batch 1: SmolLM2-135M's
#: shapes, one thread, CPU time per call on the 2-core Xeon (AVX-512 VNNI), 2026-12-06: 1536x576 float32
#: ``linear`` 171 us, ``aten._weight_int8pack_mm`` 1379 us, ``aten._weight_int4pack_mm_for_cpu`` (groups
#: of 32) 2119 us; the 49152x576 LM head 10.2, 39.8 and 77.9 ms.
INT4_REFUSED = (
    "the ipex backend does not offer dtype='int4': it has no weight-only int4 path (PyTorch's CPU kernel "
    "torch.ops.aten._weight_int4pack_mm_for_cpu exists, but this backend does not rewrite models to use it). "
    "Weight-only int4 runs on accelerator='ort' (ONNX Runtime MatMulNBits) and accelerator='ov' (OpenVINO, "
    "NNCF weight compression: pip install 'acceleron-openvino[int8]'); here use dtype='float32', 'bfloat16' "
    "or 'int8'."
)


@dataclass(frozen=True)
class IpexOptions(Options):
    """``engine``: ``auto`` (IPEX where it matches torch), ``torch`` or ``ipex``; ``compile``: False, True
    or an inductor mode (``torch.compile`` at load time, torch engine only). Both shape the artifact."""

    engine: str = "auto"
    compile: bool | str = False

    artifact_fields: ClassVar[frozenset[str]] = Options.artifact_fields | {"engine", "compile"}

    def __post_init__(self) -> None:
        if self.device.split(":")[0] != "cpu":
            raise InvalidOptionError(
                f"the ipex backend runs on the CPU only, got device={self.device!r}; pass device='cpu' "
                "(Intel GPUs need IPEX's XPU build, which acceleron-ipex does not support)."
            )
        object.__setattr__(self, "compile", _compile_mode(self.compile))
        if self.compile and self.engine == "ipex":
            raise InvalidOptionError("compile runs on the torch engine only; pass engine='torch' or leave it 'auto'.")
        if self.compile and self.dtype == "int8":
            raise InvalidOptionError("compile does not support dtype='int8'; pass compile=False or another dtype.")
        engine.resolve_engine(self.engine, engine.choose_engine())  # raises if 'ipex' cannot run here

    def engine_to_run(self) -> str:
        """The engine that runs for these options here: ``torch`` or ``ipex``."""
        return "torch" if self.compile else engine.resolve_engine(self.engine, engine.choose_engine())

    def check_graph(self, graph: GraphPlan) -> None:
        """Refuse what a graph carrying a KV cache (it takes past inputs) cannot run with: dynamic int8
        (per-tensor activation scales wreck a decoder's prefill) and ``compile``."""
        # The causal step's past (past_key_values.*) and an encoder-decoder step's (past.*): see acceleron.seq2seq.
        if not any(name.startswith(("past_key_values.", "past.")) for name in graph.input_names):
            return
        if self.compute_dtype == "int8":
            raise InvalidOptionError(CACHE_INT8_REFUSED)
        if self.compile:
            raise InvalidOptionError(
                "compile is not supported for generating tasks on the ipex backend; pass compile=False."
            )


def _compile_mode(value: object) -> str | bool:
    """False, or the inductor mode for the ``compile`` option (True means ``default``)."""
    if value is None or value is False:
        return False
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise InvalidOptionError(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}; got {value!r}.")
