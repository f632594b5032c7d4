"""A small decoder-only transformer in Flax NNX, built from ``nnx.Linear`` so it can be adapted.

Linear layers and their dotted paths (the names ``targets`` refers to):
``blocks.{l}.attn.query``, ``.key``, ``.value``, ``.out``, ``blocks.{l}.mlp.up``,
``blocks.{l}.mlp.down`` and ``head``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

__all__ = ["TransformerConfig", "Transformer"]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the decoder-only transformer."""

    vocab: int = 32  # number of token ids
    seq_len: int = 32  # maximum context length (learned positional embeddings)
    width: int = 32  # d_model
    depth: int = 2  # number of blocks
    heads: int = 2  # attention heads (width must be divisible by heads)
    mlp_ratio: int = 4  # hidden width of the MLP = mlp_ratio * width

    def validate(self) -> "TransformerConfig":
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        for name in ("vocab", "seq_len", "width", "depth", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self


class _Attention(nnx.Module):
    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        w = cfg.width
        self.heads = cfg.heads
        self.query = nnx.Linear(w, w, rngs=rngs)
        self.key = nnx.Linear(w, w, rngs=rngs)
        self.value = nnx.Linear(w, w, rngs=rngs)
        self.out = nnx.Linear(w, w, rngs=rngs)

    def __call__(self, x: Float[Array, "b t w"]) -> Float[Array, "b t w"]:
        b, t, w = x.shape
        split = lambda y: y.reshape(b, t, self.heads, w // self.heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        mask = jnp.tril(jnp.ones((t, t), bool))
        y = jax.nn.dot_product_attention(q, k, v, mask=mask[None, None])
        return self.out(y.reshape(b, t, w))


class _MLP(nnx.Module):
    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.up = nnx.Linear(cfg.width, cfg.mlp_ratio * cfg.width, rngs=rngs)
        self.down = nnx.Linear(cfg.mlp_ratio * cfg.width, cfg.width, rngs=rngs)

    def __call__(self, x: Float[Array, "b t w"]) -> Float[Array, "b t w"]:
        return self.down(jax.nn.gelu(self.up(x)))


class _Block(nnx.Module):
    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.attn = _Attention(cfg, rngs)
        self.norm2 = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.mlp = _MLP(cfg, rngs)

    def __call__(self, x: Float[Array, "b t w"]) -> Float[Array, "b t w"]:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nnx.Module):
    """Pre-norm causal transformer: ``tokens (b, t) -> next-token logits (b, t, vocab)``."""

    colora_example_axis = 0  # batch-major throughout: adapted layers route user ids along axis 0

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab, cfg.width, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.seq_len, cfg.width)))
        self.blocks = nnx.List([_Block(cfg, rngs) for _ in range(cfg.depth)])
        self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)
        self.head = nnx.Linear(cfg.width, cfg.vocab, rngs=rngs)

    def __call__(self, tokens: Int[Array, "b t"]) -> Float[Array, "b t vocab"]:
        t = tokens.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's seq_len {self.cfg.seq_len}")
        x = self.embed(tokens) + self.position[...][None, :t]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
