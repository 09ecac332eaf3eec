"""``decoder="fused"``: a Llama-family decoder written straight from its weights as ONNX Runtime's fused ops.

The traced export of a decoder step is about 2,900 small nodes on SmolLM2-135M (every RMSNorm,
rotary embedding and attention spelled out in elementwise ops), and at batch 1 their per-node cost
is as large as the weights' matmuls. This module writes the same step with onnxruntime's contrib
ops instead, about 15 nodes a layer:

* ``SimplifiedLayerNormalization`` / ``SkipSimplifiedLayerNormalization`` for RMSNorm and the
  residual adds;
* one ``MatMul`` for the packed q/k/v projections and one for the packed gate/up projections (the
  int8/int4 pass turns each into one ``MatMulNBits``);
* ``RotaryEmbedding`` on q and k, with the model's own cos/sin tables (rope scaling included) and
  the step's ``position_ids``;
* ``GroupQueryAttention`` over past and new keys and values, the causal mask in the kernel and the
  padding mask as an attention bias;
* the LM head on the last ``logits_to_keep`` positions only (an input beyond the flat protocol: 0
  keeps all; the session feeds it, the core never sees it).

The graph keeps the flat protocol of :mod:`acceleron.kv_cache` exactly (the same inputs, outputs
and cache layout as the traced export), so the core validates it against PyTorch like any other
export and every decode state runs it unchanged. Architectures it does not know, and configurations
it cannot express (biased MLPs, partial or dynamic rotary, sliding windows, activations other than
SiLU), are reported by :func:`unsupported_reason`, and the export falls back to tracing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from acceleron_ort.artifacts import KEEP_INPUT

logger = logging.getLogger(__name__)

#: transformers ``model_type`` values whose decoder layer is the Llama layer (RMSNorm, rotary
#: attention with grouped keys and values, a SiLU-gated MLP); Qwen2 adds q/k/v biases.
ARCHITECTURES = ("llama", "mistral", "qwen2")
OPSET = 17
MS_DOMAIN = "com.microsoft"
#: The attention bias on masked (padding) keys: the most negative float32, so the sum with the
#: kernel's own causal mask is still a finite or -inf number, never a NaN.
MASKED = float(np.finfo(np.float32).min)


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot be written as a fused decoder graph, or None when it can."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        return f"model type {model_type!r} is not one of {', '.join(ARCHITECTURES)}"
    body = getattr(model, "model", None)
    if body is None or not hasattr(body, "layers") or not hasattr(model, "lm_head"):
        return "the model has no .model.layers / .lm_head"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act {getattr(config, 'hidden_act', None)!r} (only silu)"
    if getattr(config, "mlp_bias", False):
        return "a biased MLP"
    if float(getattr(config, "partial_rotary_factor", 1.0) or 1.0) != 1.0:
        return "partial rotary embeddings"
    rope = getattr(getattr(body, "rotary_emb", None), "rope_type", None)
    if rope is None:
        return "no rotary embedding module"
    if rope == "dynamic" or "dynamic" in str(rope):
        return f"rope type {rope!r} (its tables depend on the sequence length)"
    window = getattr(config, "sliding_window", None) or 0
    sliding = bool(window) and getattr(config, "use_sliding_window", True)
    if sliding and int(window) < int(getattr(config, "max_position_embeddings", 0) or 0):
        return f"a sliding attention window of {window}"
    layer = body.layers[0]
    if getattr(layer.self_attn.o_proj, "bias", None) is not None:
        return "a biased attention output projection"
    for name in ("q_norm", "k_norm"):
        if getattr(layer.self_attn, name, None) is not None:
            return f"per-head {name}"
    return None


class _Graph:
    """Nodes and initializers of the graph being written, with generated names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def weight(self, name: str, array: np.ndarray) -> str:
        # np.require, not np.ascontiguousarray: that one turns a scalar into shape (1,)
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).cpu().numpy()


def _rotary_tables(model: Any, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the model's own rotary embedding at positions ``0..length-1``, ``(length, head_dim / 2)``."""
    rotary = model.model.rotary_emb
    probe = torch.zeros(1, dtype=torch.float32)
    positions = torch.arange(length, dtype=torch.long)[None]
    with torch.no_grad():
        cos, sin = rotary(probe, positions)  # (1, length, head_dim): the halves repeated (rotate_half)
    half = cos.shape[-1] // 2
    return _array(cos[0, :, :half]), _array(sin[0, :, :half])


def _rms_norm(g: _Graph, source: str, weight: str, target: str, eps: float) -> None:
    """RMSNorm in standard ops: onnxruntime fuses it at load, and ``onnx.checker`` knows every op
    (``SimplifiedLayerNormalization`` is onnxruntime's, registered in the ONNX domain)."""
    g.weight(target + ".eps", np.array(eps, dtype=np.float32))
    g.node("Mul", [source, source], [target + ".square"], target + ".square")
    g.node("ReduceMean", [target + ".square"], [target + ".mean"], target + ".mean", axes=[-1], keepdims=1)
    g.node("Add", [target + ".mean", target + ".eps"], [target + ".var"], target + ".var")
    g.node("Sqrt", [target + ".var"], [target + ".std"], target + ".std")
    g.node("Div", [source, target + ".std"], [target + ".normed"], target + ".normed")
    g.node("Mul", [target + ".normed", weight], [target], target + ".scale")


def _step_lengths(g: _Graph) -> None:
    """``seqlens_k``, ``total_sequence_length`` and ``attention_bias`` from the step's mask and ids.

    Every row spans the whole mask (the flat protocol left-pads), so ``seqlens_k`` is total - 1 for each
    row, and padding is an additive bias over keys, ``(batch, 1, new, total)``: 0 where a key is visible,
    :data:`MASKED` where it is padding.
    """
    g.weight("axis0", np.array([0], dtype=np.int64))
    g.weight("axis1", np.array([1], dtype=np.int64))
    g.weight("one_i64", np.array([1], dtype=np.int64))
    g.node("Shape", ["attention_mask"], ["mask_shape"], "mask_shape")
    g.node("Gather", ["mask_shape", "axis0"], ["batch_1d"], "batch", axis=0)
    g.node("Gather", ["mask_shape", "axis1"], ["total_1d"], "total", axis=0)
    g.node("Cast", ["total_1d"], ["total_i32_1d"], "total_i32", to=TensorProto.INT32)
    g.node("Squeeze", ["total_i32_1d"], ["total_sequence_length"], "total_scalar")
    g.node("Sub", ["total_1d", "one_i64"], ["last_1d"], "last")
    g.node("Expand", ["last_1d", "batch_1d"], ["seqlens_i64"], "seqlens_expand")
    g.node("Cast", ["seqlens_i64"], ["seqlens_k"], "seqlens_k", to=TensorProto.INT32)
    g.node("Shape", ["input_ids"], ["ids_shape"], "ids_shape")
    g.node("Gather", ["ids_shape", "axis1"], ["new_1d"], "new")
    g.node("Concat", ["batch_1d", "one_i64", "new_1d", "total_1d"], ["bias_shape"], "bias_shape", axis=0)
    g.node("Cast", ["attention_mask"], ["mask_f"], "mask_f", to=TensorProto.FLOAT)
    g.weight("one_f", np.array(1.0, dtype=np.float32))
    g.weight("masked_f", np.array(MASKED, dtype=np.float32))
    g.node("Sub", ["one_f", "mask_f"], ["unmasked"], "unmasked")
    g.node("Mul", ["unmasked", "masked_f"], ["bias_2d"], "bias_2d")
    g.weight("bias_axes", np.array([1, 2], dtype=np.int64))
    g.node("Unsqueeze", ["bias_2d", "bias_axes"], ["bias_4d"], "bias_4d")
    g.node("Expand", ["bias_4d", "bias_shape"], ["attention_bias"], "attention_bias")


def _attention(g: _Graph, i: int, attn: Any, x: str, heads: int, kv_heads: int, head_dim: int) -> str:
    """Layer ``i``'s attention on the normed stream ``x``; returns its output projection's name."""
    p = f"layers.{i}."
    qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).T
    g.node("MatMul", [x, g.weight(p + "qkv_proj", _array(qkv))], [p + "qkv"], p + "qkv_proj")
    packed = p + "qkv"
    if attn.q_proj.bias is not None:
        bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        g.node("Add", [packed, g.weight(p + "qkv_bias", _array(bias))], [p + "qkv_b"], p + "qkv_bias")
        packed = p + "qkv_b"
    sizes = np.array([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dtype=np.int64)
    g.node("Split", [packed, g.weight(p + "qkv_sizes", sizes)], [p + "q", p + "k", p + "v"], p + "qkv_split", axis=-1)
    for name, count in (("q", heads), ("k", kv_heads)):
        g.node(
            "RotaryEmbedding",
            [p + name, "position_ids", "cos_cache", "sin_cache"],
            [p + name + "_rot"],
            p + name + "_rotary",
            domain=MS_DOMAIN,
            num_heads=count,
            rotary_embedding_dim=head_dim,
            interleaved=0,
        )
    past, present = f"past_key_values.{i}.", f"present.{i}."
    g.node(
        "GroupQueryAttention",
        [
            *(p + "q_rot", p + "k_rot", p + "v", past + "key", past + "value"),
            *("seqlens_k", "total_sequence_length"),
            *("", "", ""),  # cos/sin caches, position_ids: rotary is applied above, with the step's own positions
            "attention_bias",
        ],
        [p + "attn", present + "key", present + "value"],
        p + "attention",
        domain=MS_DOMAIN,
        num_heads=heads,
        kv_num_heads=kv_heads,
        scale=float(getattr(attn, "scaling", head_dim**-0.5)),
    )
    g.node("MatMul", [p + "attn", g.weight(p + "o_proj", _array(attn.o_proj.weight.T))], [p + "o"], p + "o_proj")
    return p + "o"


def _mlp(g: _Graph, i: int, mlp: Any, h: str) -> str:
    """Layer ``i``'s SiLU-gated MLP on the normed stream ``h``; returns its down projection's name."""
    p = f"layers.{i}."
    gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).T
    halves = g.weight(p + "gate_up_sizes", np.array([gate_up.shape[1] // 2] * 2, dtype=np.int64))
    g.node("MatMul", [h, g.weight(p + "gate_up_proj", _array(gate_up))], [p + "gate_up"], p + "gate_up_proj")
    g.node("Split", [p + "gate_up", halves], [p + "gate", p + "up"], p + "gate_up_split", axis=-1)
    g.node("Sigmoid", [p + "gate"], [p + "gate_sigmoid"], p + "sigmoid")
    g.node("Mul", [p + "gate", p + "gate_sigmoid"], [p + "gate_silu"], p + "silu")
    g.node("Mul", [p + "gate_silu", p + "up"], [p + "gated"], p + "gated")
    down = g.weight(p + "down_proj", _array(mlp.down_proj.weight.T))
    g.node("MatMul", [p + "gated", down], [p + "down"], p + "down_proj")
    return p + "down"


def _keep_last(g: _Graph, source: str, target: str) -> None:
    """``target``: the last :data:`KEEP_INPUT` positions of ``source`` (all of them when it is 0).

    ``logits_to_keep`` is an int64 scalar input beyond the flat protocol. The session feeds 0 on the
    flat path (validation, ``_forward``) and hides it from the core; a generation's state feeds the
    positions ``generate()`` keeps (1), so the LM head runs on the last position only.
    """
    g.weight("zero_i64", np.array(0, dtype=np.int64))
    g.weight("keep_end", np.array([np.iinfo(np.int64).max], dtype=np.int64))
    g.node("Greater", [KEEP_INPUT, "zero_i64"], ["keep_some"], "keep_some")
    g.node("Squeeze", ["new_1d"], ["new_scalar"], "new_scalar")
    g.node("Where", ["keep_some", KEEP_INPUT, "new_scalar"], ["kept"], "kept")
    g.node("Neg", ["kept"], ["kept_neg"], "kept_neg")
    g.node("Unsqueeze", ["kept_neg", "axis0"], ["keep_start"], "keep_start")
    g.node("Slice", [source, "keep_start", "keep_end", "axis1"], [target], "keep_last")


def _skip_norm(g: _Graph, source: str, residual: str, weight: str, target: str, sum_name: str, eps: float) -> None:
    """``target`` = RMSNorm(``source`` + ``residual``) * ``weight``; the sum is kept as ``sum_name``."""
    g.node(
        "SkipSimplifiedLayerNormalization",
        [source, residual, weight],
        [target, "", "", sum_name],
        target + ".norm",
        domain=MS_DOMAIN,
        epsilon=eps,
    )


def build(model: Any, path: Path) -> Path:
    """Write ``model`` (a supported Llama-family causal LM, float32) as the flat decoder step at ``path``.

    The weights go to one external ``<name>.data`` file beside it.
    """
    reason = unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"cannot write a fused decoder graph: {reason}")
    from acceleron.kv_cache import CacheLayout

    config = model.config
    layout = CacheLayout.from_config(config)
    heads, kv_heads, head_dim = int(config.num_attention_heads), layout.num_kv_heads, layout.head_dim
    eps = float(config.rms_norm_eps)
    body = model.model
    g = _Graph()
    _step_lengths(g)
    cos, sin = _rotary_tables(model, int(getattr(config, "max_position_embeddings", 0) or 0) or 4096)
    g.weight("cos_cache", cos)
    g.weight("sin_cache", sin)
    g.node("Gather", [g.weight("embed_tokens", _array(body.embed_tokens.weight)), "input_ids"], ["embeds"], "embed")

    stream, residual = "embeds", "embeds"
    for i, layer in enumerate(body.layers):
        p = f"layers.{i}."
        norm1 = g.weight(p + "input_layernorm", _array(layer.input_layernorm.weight))
        if i == 0:
            _rms_norm(g, stream, norm1, p + "x", eps)
        else:
            _skip_norm(g, stream, residual, norm1, p + "x", p + "residual1", eps)
            residual = p + "residual1"
        attention = _attention(g, i, layer.self_attn, p + "x", heads, kv_heads, head_dim)
        norm2 = g.weight(p + "post_attention_layernorm", _array(layer.post_attention_layernorm.weight))
        _skip_norm(g, attention, residual, norm2, p + "h", p + "residual2", eps)
        residual = p + "residual2"
        stream = _mlp(g, i, layer.mlp, p + "h")
    _skip_norm(g, stream, residual, g.weight("norm", _array(body.norm.weight)), "final", "", eps)
    _keep_last(g, "final", "final_kept")
    g.node("MatMul", ["final_kept", g.weight("lm_head", _array(model.lm_head.weight.T))], ["logits"], "lm_head")

    batch, new, total, past = "batch", "sequence", "total_sequence", "past_sequence"
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, new]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, total]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [batch, new]),
        *(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, kv_heads, past, head_dim])
            for name in layout.past_names
        ),
        helper.make_tensor_value_info(KEEP_INPUT, TensorProto.INT64, []),
    ]
    # The presents' length is their own symbol: with past and present bound to one buffer it is the buffer's.
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, "kept", int(config.vocab_size)]),
        *(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, kv_heads, "present_sequence", head_dim])
            for name in layout.present_names
        ),
    ]
    graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, initializer=g.initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="acceleron-ort")
    proto.ir_version = 8
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=1024,
    )
    return path
