"""A decoder written the way NNX LLM implementations (Gemma, Llama style) are, with sharding metadata.

Per block: RMSNorm, grouped-query attention with rotary embeddings whose projections are
``nnx.Einsum`` (queries ``BTD,DNH->BTNH``, keys and values ``BTD,DKH->BTKH``, ``K`` kv heads
shared by ``N / K`` query heads each) and whose output projection is an ``nnx.LinearGeneral``
over the head axes, then RMSNorm and a gated MLP (``down(silu(gate(x)) * up(x))``, three
``nnx.Linear``). Dotted paths, the names ``targets`` refers to: ``blocks.{l}.attn.query``,
``.key``, ``.value``, ``.out``, ``blocks.{l}.mlp.gate``, ``.up``, ``.down``, and ``head``.

Sharding (Megatron-style tensor parallelism over mesh axis ``model``, as MaxText and Tunix lay
out NNX models): query/key/value kernels split over heads, the output projection over its
input heads, gate/up over the hidden width (column-parallel) and down over it (row-parallel),
the embedding over the vocabulary and the head over its output. The annotations are flax's
``out_sharding`` variable metadata, read by ``nnx.get_partition_spec``; under
``jax.set_mesh(mesh)`` flax places each kernel at creation (eager sharding), otherwise
:func:`shard` places a built model. Batches are split over mesh axis ``data``.

Mixed precision: ``dtype`` is the compute dtype (e.g. ``"bfloat16"``), ``param_dtype`` the
storage dtype (``"float32"``); ``remat=True`` rematerializes every block (``nnx.remat``).
"""

from __future__ import annotations

import dataclasses
import typing as tp

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

__all__ = ["DecoderConfig", "Decoder", "shard", "DATA", "MODEL"]

DATA = "data"  # mesh axis of the batch (data parallelism)
MODEL = "model"  # mesh axis of the kernels (tensor parallelism)


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Sizes, precision and rematerialization of the decoder."""

    vocab: int = 256  # token ids (a multiple of the 'model' mesh axis, which splits the embedding)
    seq_len: int = 64  # maximum context (rotary embeddings, no learned positions)
    width: int = 128  # d_model, D
    depth: int = 2  # blocks
    heads: int = 4  # query heads N
    kv_heads: int = 2  # key/value heads K (grouped-query attention: N divisible by K)
    head_dim: int = 32  # H
    mlp_hidden: int = 384  # hidden width F of the gated MLP
    rope_base: float = 10_000.0  # rotary embedding base
    dtype: str | None = None  # compute dtype, e.g. "bfloat16" (None: float32 throughout)
    param_dtype: str = "float32"  # storage dtype of every parameter
    remat: bool = False  # nnx.remat around every block

    def validate(self) -> "DecoderConfig":
        for name in ("vocab", "seq_len", "width", "depth", "heads", "kv_heads", "head_dim", "mlp_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"heads {self.heads} must be divisible by kv_heads {self.kv_heads} (grouped-query attention)"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (rotary embeddings rotate pairs)")
        return self

    def parameters(self) -> int:
        """Number of parameters (embedding, blocks, final norm, head)."""
        d, f, h = self.width, self.mlp_hidden, self.head_dim
        attn = d * (self.heads + 2 * self.kv_heads) * h + self.heads * h * d + d
        block = attn + 3 * d * f + 2 * d
        return 2 * self.vocab * d + self.depth * block + d + self.vocab


def _eager() -> bool:
    """Eager sharding needs a mesh in context; without one, annotate only (place with :func:`shard`)."""
    return not jax.sharding.get_abstract_mesh().empty


def _meta(*spec: str | None) -> dict:
    return {"out_sharding": spec, "eager_sharding": _eager()}


def _rope(x: Float[Array, "b t n h"], base: float) -> Float[Array, "b t n h"]:
    """Rotary position embedding (pairs ``(x_j, x_{j + h/2})`` rotated by ``t * base^(-2j/h)``)."""
    t, h = x.shape[1], x.shape[-1]
    freq = base ** (-jnp.arange(0, h // 2, dtype=jnp.float32) * 2 / h)
    angle = jnp.arange(t, dtype=jnp.float32)[:, None] * freq[None, :]
    sin, cos = jnp.sin(angle)[None, :, None, :], jnp.cos(angle)[None, :, None, :]
    first, second = x[..., : h // 2].astype(jnp.float32), x[..., h // 2 :].astype(jnp.float32)
    out = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
    return out.astype(x.dtype)


class _Attention(nnx.Module):
    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        d, n, k, h = cfg.width, cfg.heads, cfg.kv_heads, cfg.head_dim
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.query = nnx.Einsum("BTD,DNH->BTNH", (d, n, h), kernel_metadata=_meta(None, MODEL, None), **kw)
        self.key = nnx.Einsum("BTD,DKH->BTKH", (d, k, h), kernel_metadata=_meta(None, MODEL, None), **kw)
        self.value = nnx.Einsum("BTD,DKH->BTKH", (d, k, h), kernel_metadata=_meta(None, MODEL, None), **kw)
        self.out = nnx.LinearGeneral(
            (n, h), d, axis=(-2, -1), use_bias=False, kernel_metadata=_meta(MODEL, None, None), **kw
        )
        self.rope_base = cfg.rope_base

    def __call__(self, x: Float[Array, "b t d"]) -> Float[Array, "b t d"]:
        q = _rope(self.query(x), self.rope_base)
        k = _rope(self.key(x), self.rope_base)
        v = self.value(x)
        y = jax.nn.dot_product_attention(
            q, k, v.astype(q.dtype), is_causal=True
        )  # grouped-query: N/K heads per kv head
        return self.out(y)


class _MLP(nnx.Module):
    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        kw = dict(use_bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.gate = nnx.Linear(cfg.width, cfg.mlp_hidden, kernel_metadata=_meta(None, MODEL), **kw)
        self.up = nnx.Linear(cfg.width, cfg.mlp_hidden, kernel_metadata=_meta(None, MODEL), **kw)
        self.down = nnx.Linear(cfg.mlp_hidden, cfg.width, kernel_metadata=_meta(MODEL, None), **kw)

    def __call__(self, x: Float[Array, "b t d"]) -> Float[Array, "b t d"]:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class _Block(nnx.Module):
    def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.attn_norm = nnx.RMSNorm(cfg.width, **kw)
        self.attn = _Attention(cfg, rngs)
        self.mlp_norm = nnx.RMSNorm(cfg.width, **kw)
        self.mlp = _MLP(cfg, rngs)

    def __call__(self, x: Float[Array, "b t d"]) -> Float[Array, "b t d"]:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


def _run_block(block: _Block, x: Array) -> Array:
    return block(x)


class Decoder(nnx.Module):
    """Causal decoder: ``tokens (b, t) -> next-token logits (b, t, vocab)`` (float32 logits)."""

    colora_example_axis = 0  # batch-major throughout: adapted layers route user ids along axis 0

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.embed = nnx.Embed(cfg.vocab, cfg.width, embedding_metadata=_meta(MODEL, None), **kw)
        self.blocks = nnx.List([_Block(cfg, rngs) for _ in range(cfg.depth)])
        self.norm = nnx.RMSNorm(cfg.width, **kw)
        self.head = nnx.Linear(cfg.width, cfg.vocab, use_bias=False, kernel_metadata=_meta(None, MODEL), **kw)

    def __call__(self, tokens: Int[Array, "b t"]) -> Float[Array, "b t vocab"]:
        if tokens.shape[1] > self.cfg.seq_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds the model's seq_len {self.cfg.seq_len}")
        x = self.embed(tokens)
        run = nnx.remat(_run_block) if self.cfg.remat else _run_block
        for block in self.blocks:
            x = run(block, x)
        return self.head(self.norm(x)).astype(jnp.float32)


M = tp.TypeVar("M", bound=nnx.Module)


def shard(model: M, mesh: jax.sharding.Mesh) -> M:
    """Place every variable of ``model`` on ``mesh`` as its ``out_sharding`` metadata says, in place.

    Uses ``nnx.get_named_sharding``; unannotated variables are replicated.

    Adapters follow: after :func:`colora_jax.nnx.apply_colora`, ``U`` and ``V`` carry the specs of
    the kernel they wrap and the bank its users axis, so calling ``shard`` again places them too.
    """
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
    return model
