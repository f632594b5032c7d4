"""Hugging Face causal LMs (Llama, Qwen2, Qwen3, Gemma) loaded from their safetensors into NNX.

:func:`from_pretrained` reads a transformers checkpoint directory (``config.json`` and
``model.safetensors``, or shards listed in ``model.safetensors.index.json``) into a
:class:`CausalLM` whose ``model(tokens)`` returns the logits transformers computes, to the
rounding of the dtype in use. The module tree repeats the checkpoint's own: ``model.embed_tokens``,
``model.layers.{l}.self_attn.{q,k,v,o}_proj``, ``model.layers.{l}.mlp.{gate,up,down}_proj``,
``model.layers.{l}.{input,post_attention}_layernorm``, ``model.norm``, ``lm_head``; every
projection is an ``nnx.Linear`` (kernel ``W^T`` of the checkpoint's ``(out, in)`` weight). So
``apply_colora(model, targets=["q_proj", "v_proj"], ...)`` adapts the same modules PEFT's
``target_modules`` would, and :func:`colora_jax.nnx.export_peft` names the adapters
``base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight``, as PEFT does.

One block, in the checkpoint's order of operations (``RMSNorm(x) = w * x / rms(x)``; Gemma:
``(1 + w) * x / rms(x)``, computed in float32)::

    h = x + o_proj(attention(rope(q_norm?(q_proj(n1(x)))), rope(k_norm?(k_proj(n1(x)))), v_proj(n1(x))))
    y = h + down_proj(act(gate_proj(n2(h))) * up_proj(n2(h)))

with grouped-query causal attention (``num_key_value_heads`` key/value heads, each shared by
``num_attention_heads / num_key_value_heads`` query heads, scores scaled by ``head_dim^-1/2``
and normalized in float32), rotary embeddings on the pairs ``(x_j, x_{j + head_dim/2})`` with the
checkpoint's inverse frequencies (``rope_theta``; ``linear`` or ``llama3`` scaling), and
Qwen3's ``q_norm`` / ``k_norm`` (RMSNorm over ``head_dim``). Gemma multiplies the embedding by
``sqrt(hidden_size)``. The head is ``lm_head``, or the embedding's transpose with
``tie_word_embeddings``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing as tp

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int
from safetensors import safe_open

__all__ = ["ArchConfig", "CausalLM", "from_pretrained", "MODEL_TYPES"]

MODEL = "model"  # mesh axis the kernels are split over (tensor parallelism)
_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_ACTIVATIONS: dict[str, tp.Callable[[Array], Array]] = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
}


def _llama(c: dict) -> dict:
    bias = bool(c.get("attention_bias", False))
    return dict(qkv_bias=bias, o_bias=bias, mlp_bias=bool(c.get("mlp_bias", False)))


def _qwen2(c: dict) -> dict:
    return dict(qkv_bias=True)


def _qwen3(c: dict) -> dict:
    bias = bool(c.get("attention_bias", False))
    return dict(qkv_bias=bias, o_bias=bias, qk_norm=True)


def _gemma(c: dict) -> dict:
    return dict(_llama(c), norm_offset=True, embed_scale=True, default_tie=True)


# model_type -> the architecture fields its config implies (the rest is shared)
MODEL_TYPES: dict[str, tp.Callable[[dict], dict]] = {"llama": _llama, "qwen2": _qwen2, "qwen3": _qwen3, "gemma": _gemma}


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """The architecture of one checkpoint, read from its ``config.json`` by :meth:`from_hf`."""

    model_type: str  # "llama", "qwen2", "qwen3" or "gemma"
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # width of the gated MLP
    num_hidden_layers: int
    num_attention_heads: int  # query heads
    num_key_value_heads: int  # key/value heads (grouped-query attention)
    head_dim: int
    rms_norm_eps: float
    inv_freq: tuple[float, ...]  # rotary inverse frequencies, head_dim / 2 of them (float32 values)
    hidden_act: str  # a key of _ACTIVATIONS
    tie_word_embeddings: bool  # head = embedding^T, no lm_head module
    qkv_bias: bool = False  # q_proj, k_proj, v_proj have biases
    o_bias: bool = False  # o_proj has a bias
    mlp_bias: bool = False  # gate_proj, up_proj, down_proj have biases
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on queries and keys
    norm_offset: bool = False  # Gemma: RMSNorm scales by 1 + weight
    embed_scale: bool = False  # Gemma: embeddings times sqrt(hidden_size)

    @classmethod
    def from_hf(cls, config: dict) -> "ArchConfig":
        """Parse a transformers ``config.json`` (as a dict).

        Raises:
          ValueError: for a model type outside :data:`MODEL_TYPES`, a missing size, an activation,
            rope scaling or attention pattern (sliding window, bidirectional) this module does
            not implement, or heads that do not divide.
        """
        model_type = config.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {model_type!r} in {_CONFIG}: from_pretrained loads {sorted(MODEL_TYPES)}"
            )
        family = MODEL_TYPES[model_type](config)
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if config.get(k) is None]
        if missing:
            raise ValueError(f"{_CONFIG} of this {model_type} checkpoint lacks {missing}")
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        if heads % kv_heads:
            raise ValueError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        # transformers 5 reads hidden_act alone; 4.x's Gemma preferred hidden_activation, and Gemma 1
        # configs on the Hub carry both ("gelu" and "gelu_pytorch_tanh"): this follows transformers 5
        act = config.get("hidden_act") or config.get("hidden_activation") or "silu"
        if act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {act!r}: from_pretrained implements {sorted(_ACTIVATIONS)}")
        if config.get("use_sliding_window") or any(t != "full_attention" for t in config.get("layer_types") or ()):
            raise ValueError(
                "sliding-window attention (use_sliding_window / layer_types) is not implemented: only full causal"
                " attention"
            )
        if config.get("use_bidirectional_attention"):
            raise ValueError("use_bidirectional_attention=True is not implemented: only causal attention")
        tie = config.get("tie_word_embeddings")
        default_tie = family.pop("default_tie", False)
        return cls(
            model_type=model_type,
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            inv_freq=tuple(float(f) for f in rope_inv_freq(config, head_dim)),
            hidden_act=act,
            tie_word_embeddings=bool(default_tie if tie is None else tie),
            **family,
        )


def rope_inv_freq(config: dict, head_dim: int) -> np.ndarray:
    """Rotary inverse frequencies ``theta^(-2j / head_dim)``, ``j < head_dim / 2``.

    In float32 as transformers computes them, with ``linear`` (divide by ``factor``) or ``llama3``
    scaling (long wavelengths divided by ``factor``, a smooth blend between ``high_freq_factor`` and
    ``low_freq_factor``; Llama 3.1's rule).

    Reads ``rope_parameters`` (transformers >= 5) or ``rope_theta`` + ``rope_scaling`` (older).

    Raises:
      ValueError: for another rope type (dynamic, yarn, longrope, ...) or a partial rotary factor.
    """
    params = config.get("rope_parameters")
    if params is None:
        params = {"rope_theta": config.get("rope_theta", 10_000.0), **(config.get("rope_scaling") or {})}
    if "rope_theta" not in params:
        raise ValueError(
            f"rope_parameters {params} has no rope_theta (per-layer-type rope parameters are not implemented)"
        )
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not implemented: rotary embeddings over the whole head_dim")
    if head_dim % 2:
        raise ValueError(f"head_dim {head_dim} must be even (rotary embeddings rotate pairs)")
    needs = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor")}
    absent = [k for k in needs.get(kind, ()) if k not in params]
    if absent:
        raise ValueError(f"rope type {kind!r} needs {absent} in rope_parameters / rope_scaling, got {params}")
    f32 = np.float32
    # transformers' rounding: float32 exponents, the power rounded to float32 from float64 (torch's
    # float32 pow on the CPU), a float32 reciprocal; a rotation angle p * inv_freq carries an
    # inv_freq error times p, so ulps matter at long positions
    exponent = np.arange(0, head_dim, 2).astype(f32) / f32(head_dim)
    inv = f32(1.0) / (np.float64(params["rope_theta"]) ** exponent.astype(np.float64)).astype(f32)
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / f32(params["factor"])
    if kind == "llama3":
        factor, low, high = (f32(params[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
        # transformers' fallback: the model's own context when the original one is not given
        context = f32(params.get("original_max_position_embeddings", config.get("max_position_embeddings")))
        low_wavelen, high_wavelen = context / low, context / high
        wavelen = f32(2 * math.pi) / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (context / wavelen - low) / (high - low)
        blended = (f32(1) - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, blended, scaled).astype(f32)
    raise ValueError(
        f"unsupported rope type {kind!r} (rope_parameters / rope_scaling): from_pretrained implements"
        " 'default', 'linear' and 'llama3'"
    )


def _spec(shape: tuple[int, ...], spec: tuple[str | None, ...], model_axis: int) -> tuple[str | None, ...]:
    """``spec`` with the 'model' axis dropped from every dimension it does not divide."""
    return tuple(a if a is None or n % model_axis == 0 else None for n, a in zip(shape, spec))


class _Placement:
    """Sharding annotations (flax's ``out_sharding`` metadata) for a mesh 'model' axis of a given size."""

    def __init__(self, model_axis: int):
        self.model_axis = model_axis

    def __call__(self, shape: tuple[int, ...], *spec: str | None) -> dict:
        return {"out_sharding": _spec(shape, spec, self.model_axis), "eager_sharding": False}

    def linear(self, d_in: int, d_out: int, *, bias: bool, column: bool, dtype: tp.Any) -> nnx.Linear:
        """Column-parallel (output split) or row-parallel (input split) ``nnx.Linear``."""
        kernel = (None, MODEL) if column else (MODEL, None)
        return nnx.Linear(
            d_in,
            d_out,
            use_bias=bias,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
            kernel_metadata=self((d_in, d_out), *kernel),
            bias_metadata=self((d_out,), MODEL if column else None),
        )


class RMSNorm(nnx.Module):
    """RMS normalization: ``weight * x / sqrt(mean(x^2) + eps)``.

    Normalized in float32, scaled in the input's dtype, as Llama/Qwen; with ``offset``, ``((1 +
    weight) * x / rms(x))`` all in float32 (Gemma).
    """

    def __init__(self, dim: int, eps: float, *, offset: bool, dtype: tp.Any):
        self.weight = nnx.Param(jnp.zeros((dim,), dtype) if offset else jnp.ones((dim,), dtype))
        self.eps = eps
        self.offset = offset

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        if self.offset:
            return (h * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)
        return self.weight[...] * h.astype(x.dtype)


def _rope(x: Float[Array, "b t n h"], cos: Float[Array, "t h"], sin: Float[Array, "t h"]) -> Float[Array, "b t n h"]:
    """``x cos + rotate_half(x) sin`` with ``rotate_half(x) = (-x_2, x_1)`` (transformers' form)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :].astype(x.dtype) + rotated * sin[:, None, :].astype(x.dtype)


class Attention(nnx.Module):
    """Grouped-query causal self-attention with rotary embeddings (and Qwen3's q/k norms)."""

    def __init__(self, cfg: ArchConfig, place: _Placement, dtype: tp.Any):
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = place.linear(d, n * h, bias=cfg.qkv_bias, column=True, dtype=dtype)
        self.k_proj = place.linear(d, k * h, bias=cfg.qkv_bias, column=True, dtype=dtype)
        self.v_proj = place.linear(d, k * h, bias=cfg.qkv_bias, column=True, dtype=dtype)
        self.o_proj = place.linear(n * h, d, bias=cfg.o_bias, column=False, dtype=dtype)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(h, cfg.rms_norm_eps, offset=cfg.norm_offset, dtype=dtype)
            self.k_norm = RMSNorm(h, cfg.rms_norm_eps, offset=cfg.norm_offset, dtype=dtype)
        self.heads, self.kv_heads, self.head_dim, self.qk_norm = n, k, h, cfg.qk_norm

    def __call__(self, x: Float[Array, "b t d"], cos: Array, sin: Array) -> Float[Array, "b t d"]:
        b, t, _ = x.shape
        n, k, h = self.heads, self.kv_heads, self.head_dim
        q = self.q_proj(x).reshape(b, t, n, h)
        key = self.k_proj(x).reshape(b, t, k, h)
        v = self.v_proj(x).reshape(b, t, k, h)
        if self.qk_norm:
            q, key = self.q_norm(q), self.k_norm(key)
        q, key = _rope(q, cos, sin), _rope(key, cos, sin)
        q = q.reshape(b, t, k, n // k, h)  # query heads grouped by the kv head they share
        scores = jnp.einsum("btkgh,bskh->bkgts", q, key, preferred_element_type=jnp.float32) * h**-0.5
        causal = jnp.tril(jnp.ones((t, t), bool))
        scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        y = jnp.einsum("bkgts,bskh->btkgh", probs, v).reshape(b, t, n * h)
        return self.o_proj(y)


class MLP(nnx.Module):
    """``down_proj(act(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, cfg: ArchConfig, place: _Placement, dtype: tp.Any):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = place.linear(d, f, bias=cfg.mlp_bias, column=True, dtype=dtype)
        self.up_proj = place.linear(d, f, bias=cfg.mlp_bias, column=True, dtype=dtype)
        self.down_proj = place.linear(f, d, bias=cfg.mlp_bias, column=False, dtype=dtype)
        self.hidden_act = cfg.hidden_act

    def __call__(self, x: Float[Array, "b t d"]) -> Float[Array, "b t d"]:
        return self.down_proj(_ACTIVATIONS[self.hidden_act](self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    """Pre-norm block: ``x + self_attn(input_layernorm(x))``, then ``+ mlp(post_attention_layernorm(.))``."""

    def __init__(self, cfg: ArchConfig, place: _Placement, dtype: tp.Any):
        self.self_attn = Attention(cfg, place, dtype)
        self.mlp = MLP(cfg, place, dtype)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, offset=cfg.norm_offset, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, offset=cfg.norm_offset, dtype=dtype)

    def __call__(self, x: Float[Array, "b t d"], cos: Array, sin: Array) -> Float[Array, "b t d"]:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nnx.Module):
    """``embed_tokens``, the ``layers`` and the final ``norm`` (transformers' ``model.model``)."""

    def __init__(self, cfg: ArchConfig, place: _Placement, dtype: tp.Any):
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
            embedding_metadata=place((cfg.vocab_size, cfg.hidden_size), MODEL, None),
        )
        self.layers = nnx.List([DecoderLayer(cfg, place, dtype) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, offset=cfg.norm_offset, dtype=dtype)


class CausalLM(nnx.Module):
    """A decoder-only LM with transformers' module names.

    ``tokens (b, t) -> logits (b, t, vocab)`` (float32 logits; positions ``0 .. t-1``, causal mask,
    no padding mask).

    Built directly it holds placeholder weights (fixed keys); :func:`from_pretrained` builds it
    abstract and assigns the checkpoint's.
    """

    colora_example_axis = 0  # batch-major throughout: adapted layers route user ids along axis 0

    def __init__(self, cfg: ArchConfig, *, dtype: tp.Any = jnp.float32, model_axis: int = 1):
        place = _Placement(model_axis)
        self.config = cfg
        self.model = Backbone(cfg, place, dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = place.linear(cfg.hidden_size, cfg.vocab_size, bias=False, column=True, dtype=dtype)

    def __call__(self, tokens: Int[Array, "b t"]) -> Float[Array, "b t vocab"]:
        cfg = self.config
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (batch, time) integer ids, got shape {tokens.shape}")
        if (
            not isinstance(tokens, jax.core.Tracer)
            and tokens.size
            and not 0 <= int(tokens.min()) <= int(tokens.max()) < cfg.vocab_size
        ):
            raise ValueError(
                f"token ids must lie in [0, {cfg.vocab_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        x = self.model.embed_tokens(tokens)
        if cfg.embed_scale:
            x = x * jnp.asarray(cfg.hidden_size**0.5, jnp.float32).astype(x.dtype)
        angle = jnp.arange(tokens.shape[1], dtype=jnp.float32)[:, None] * jnp.asarray(cfg.inv_freq, jnp.float32)
        angle = jnp.concatenate([angle, angle], axis=-1)
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        x = self.model.norm(x)
        logits = self.model.embed_tokens.attend(x) if cfg.tie_word_embeddings else self.lm_head(x)
        return logits.astype(jnp.float32)


def _open(file: str) -> tp.Any:
    """``safe_open`` in JAX's framework (bf16 included), with a file it cannot parse as a ValueError."""
    try:
        return safe_open(file, "flax")
    except Exception as e:  # safetensors raises its own error type (a Rust exception) for a bad header
        raise ValueError(f"cannot read {file} as safetensors: {e}") from e


def _checkpoint_tensors(directory: str) -> dict[str, str]:
    """Tensor name -> safetensors file holding it (``model.safetensors`` or the index's shards)."""
    single, index = os.path.join(directory, _WEIGHTS), os.path.join(directory, _INDEX)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map' object (tensor name -> shard file)")
        absent = sorted({s for s in weight_map.values() if not os.path.exists(os.path.join(directory, s))})
        if absent:
            raise ValueError(f"{index} lists shard files that are not in {directory}: {absent}")
        return {k: os.path.join(directory, s) for k, s in weight_map.items()}
    if os.path.exists(single):
        with _open(single) as f:
            return {k: single for k in f.keys()}
    hint = ""
    if any(n.endswith((".bin", ".pt", ".pth")) for n in os.listdir(directory)):
        hint = " (PyTorch pickles are not read: re-save with save_pretrained(dir, safe_serialization=True))"
    raise ValueError(f"{directory} has neither {_WEIGHTS} nor {_INDEX}{hint}")


# checkpoint tensors that carry no weights of this model: rotary caches of old Llama checkpoints
_IGNORED = ("rotary_emb.inv_freq",)


def _targets(model: CausalLM) -> dict[str, tuple[nnx.Variable, bool]]:
    """Checkpoint tensor name -> (the model's variable, whether the tensor is stored transposed)."""
    out = {}
    for path, var in nnx.iter_graph(model):
        if not isinstance(var, nnx.Variable):
            continue
        *module, attr = (str(p) for p in path)
        name = ".".join(module)
        key = {"kernel": "weight", "embedding": "weight"}.get(attr, attr)
        out[f"{name}.{key}"] = (var, attr == "kernel")
    return out


def from_pretrained(
    directory: str | os.PathLike, *, dtype: tp.Any = None, mesh: jax.sharding.Mesh | None = None
) -> CausalLM:
    """Load a transformers Llama / Qwen2 / Qwen3 / Gemma checkpoint directory into a :class:`CausalLM`.

    The model is built abstract (``nnx.eval_shape``: no weights allocated) and each tensor is read
    from safetensors on its own (on the CPU), transposed where PyTorch stores ``(out, in)``, cast,
    placed and assigned: loading holds the model plus one tensor in flight (and its transposed,
    cast copy), never a second copy of the model.

    Args:
      directory: holds ``config.json`` and ``model.safetensors`` (or ``model.safetensors.index.json``
        and its shards), as ``save_pretrained`` writes them.
      dtype: storage (and compute) dtype of every weight, e.g. ``jnp.bfloat16``; ``None``: float32,
        whatever the checkpoint stores (bf16 checkpoints are upcast), the precision in which the
        logits equal transformers' float32 ones to rounding.
      mesh: a mesh with a ``'model'`` axis: each tensor is placed as it loads, split over that axis
        (q/k/v/gate/up and ``lm_head`` by output, o/down by input, the embedding by vocabulary;
        norms replicated; a dimension the axis does not divide is replicated). The annotations are
        flax's ``out_sharding`` metadata, so adapters added later follow their kernel
        (:func:`colora_jax.nnx.shard`). Its axes must be ``AxisType.Auto``.

    Returns:
      The model; ``model(tokens)`` gives float32 logits ``(batch, time, vocab)``.

    Raises:
      ValueError: for a missing ``config.json`` or weights file, an unsupported model type or
        architecture feature (see :meth:`ArchConfig.from_hf`), a tensor the model needs that the
        checkpoint lacks, a tensor it does not know, a tensor whose shape differs from the
        config's, or a mesh without a ``'model'`` axis or with Explicit axes.
    """
    directory = os.fspath(directory)
    config_path = os.path.join(directory, _CONFIG)
    if not os.path.exists(config_path):
        raise ValueError(f"{directory} has no {_CONFIG}: pass a directory written by transformers' save_pretrained")
    with open(config_path) as f:
        cfg = ArchConfig.from_hf(json.load(f))
    if mesh is not None and MODEL not in mesh.axis_names:
        raise ValueError(f"mesh axes {mesh.axis_names} have no {MODEL!r} axis to split the weights over")
    if mesh is not None and any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
        raise ValueError(
            f"mesh axes {mesh.axis_names} are {mesh.axis_types}: the model's gathers and contractions need"
            " Auto axes; build the mesh with axis_types=(jax.sharding.AxisType.Auto,) * len(axis_names)"
            " (jax.make_mesh makes Explicit axes by default)"
        )
    dtype = jnp.dtype(jnp.float32 if dtype is None else dtype)
    model_axis = mesh.shape[MODEL] if mesh is not None else 1
    model = nnx.eval_shape(lambda: CausalLM(cfg, dtype=dtype, model_axis=model_axis))
    targets = _targets(model)
    files = _checkpoint_tensors(directory)
    missing = sorted(set(targets) - set(files))
    if missing:
        raise ValueError(
            f"the checkpoint in {directory} lacks {len(missing)} tensors this {cfg.model_type} needs: {missing[:8]}"
        )
    known = set(targets) | ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    unknown = sorted(k for k in files if k not in known and not k.endswith(_IGNORED))
    if unknown:
        raise ValueError(
            f"the checkpoint in {directory} has tensors a {cfg.model_type} with this {_CONFIG} does not have:"
            f" {unknown[:8]} (is model_type right?)"
        )
    cpu = jax.devices("cpu")[0]
    for file in sorted(set(files[k] for k in targets)):
        with _open(file) as f, jax.default_device(cpu):
            held = set(f.keys())
            for key in sorted(k for k in targets if files[k] == file):
                if key not in held:
                    raise ValueError(f"{_INDEX} puts tensor {key} in {os.path.basename(file)}, which does not hold it")
                var, transposed = targets[key]
                abstract = var.get_raw_value()
                shape = tuple(f.get_slice(key).get_shape())
                expected = abstract.shape[::-1] if transposed else abstract.shape
                if shape != tuple(expected):
                    raise ValueError(
                        f"tensor {key} in {os.path.basename(file)} has shape {shape}, but {_CONFIG}"
                        f" implies {tuple(expected)}"
                    )
                tensor = f.get_tensor(key)
                value = (tensor.T if transposed else tensor).astype(dtype)
                if mesh is not None:
                    spec = jax.sharding.PartitionSpec(*(var.get_metadata().get("out_sharding") or ()))
                    value = jax.device_put(value, jax.sharding.NamedSharding(mesh, spec))
                else:
                    value = jax.device_put(value, jax.devices()[0])
                var.set_value(value)
                del tensor, value
    return model
