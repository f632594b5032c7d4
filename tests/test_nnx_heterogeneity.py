"""nnx_shakespeare's heterogeneity H: about 0 for identical tasks, large for users that share nothing."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from colora_jax import nnx as cn
from proofs_numerics.nnx_shakespeare import heterogeneity, identical_tasks

USERS, WINDOWS, SEQ, VOCAB = 4, 64, 8, 16


def _model():
    cfg = cn.TransformerConfig(vocab=VOCAB, seq_len=SEQ, width=16, depth=1, heads=2)
    return cn.Transformer(cfg, rngs=nnx.Rngs(params=jax.random.key(0)))


def _users(tokens_of_user) -> cn.Examples:
    rng = np.random.default_rng(0)
    windows = [rng.choice(tokens_of_user(u), size=(WINDOWS, SEQ + 1)) for u in range(USERS)]
    tokens = np.concatenate(windows)
    ids = np.repeat(np.arange(USERS), WINDOWS)
    return cn.Examples(jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:]), jnp.asarray(ids, jnp.int32))


def test_heterogeneity_reads_zero_on_identical_tasks_and_high_on_disjoint_ones():
    model, targets = _model(), ("query", "value", "up")
    disjoint = _users(lambda u: np.arange(4 * u, 4 * u + 4))  # each user its own four characters
    h_disjoint = heterogeneity(model, disjoint, USERS, targets, 10**6)
    h_identical = heterogeneity(model, identical_tasks(disjoint, USERS, seed=0), USERS, targets, 10**6)
    assert h_disjoint > 0.5, h_disjoint
    assert abs(h_identical) < 0.15, h_identical
