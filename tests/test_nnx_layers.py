"""Claims about the CoLoRA NNX layers and model wrapping (colora_jax.nnx)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from colora_jax import nnx as cn

TOL = 1e-5  # float32 forward passes of a few small matmuls


@pytest.fixture(autouse=True)
def _strict():
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


class MLP(nnx.Module):
    """A two-layer model with an unrelated __call__, to show wrapping needs no model edits."""

    def __init__(self, d_in, d_hidden, d_out, rngs):
        self.first = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.second = nnx.Linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return self.second(jnp.tanh(self.first(x)))


def _randomize(model, key):
    """Give every adapter parameter a random non-zero value (the init has U = 0, B = 0)."""
    for _, layer in cn.adapted_layers(model):
        for name in ("shared_u", "shared_v", "personal", "lora_a", "lora_b"):
            if hasattr(layer, name):
                key, sub = jax.random.split(key)
                var = getattr(layer, name)
                var.set_value(jax.random.normal(sub, var[...].shape, var[...].dtype))
    return model


def _transformer(seed=0):
    return cn.Transformer(cn.TransformerConfig(vocab=11, seq_len=8, width=8, depth=1, heads=2), rngs=nnx.Rngs(seed))


@settings(deadline=None, max_examples=6)
@given(
    users=st.integers(1, 6),
    rank=st.integers(1, 4),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["colora", "lora_bank"]),
)
def test_output_equals_base_at_initialization(users, rank, batch, seed, kind):
    model = MLP(4, 6, 5, nnx.Rngs(seed))
    x = jax.random.normal(jax.random.key(seed), (batch, 4))
    expected = model(x)
    wrap = cn.apply_colora if kind == "colora" else cn.apply_lora_bank
    wrap(model, users=users, rank=rank, targets=["first", "second"], rngs=nnx.Rngs(seed + 1))
    ids = jax.random.randint(jax.random.key(seed + 2), (batch,), 0, users)
    with cn.colora_users(model, ids):
        np.testing.assert_array_equal(model(x), expected)


def test_gradient_reaches_shared_factor_at_initialization():
    """No saddle at the start: with V random and S = I, dL/dU != 0 although U = 0."""
    layer = cn.CoLoRALinear(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), users=2, rank=2, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (5, 4))
    ids = jnp.array([0, 1, 0, 1, 1])

    def loss(layer):
        return jnp.sum(layer(x, ids) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, cn.SharedParam))(layer)
    assert float(jnp.abs(grads["shared_u"][...]).max()) > 1e-3


@settings(deadline=None, max_examples=6)
@given(users=st.integers(1, 5), rank=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_layer_matches_the_equation(users, rank, seed):
    """y = x K + b + x V S_i^T U^T, i.e. W_i = W_0 + U S_i V^T, computed independently in NumPy."""
    layer = cn.CoLoRALinear(nnx.Linear(5, 4, rngs=nnx.Rngs(seed)), users=users, rank=rank, rngs=nnx.Rngs(seed))
    keys = jax.random.split(jax.random.key(seed), 3)
    layer.shared_u.set_value(jax.random.normal(keys[0], (4, rank)))
    layer.personal.set_value(jax.random.normal(keys[1], (users, rank, rank)))
    x = jax.random.normal(keys[2], (7, 5))
    ids = np.arange(7) % users
    K, b = np.asarray(layer.base.kernel[...]), np.asarray(layer.base.bias[...])
    U, V, S = (np.asarray(v[...]) for v in (layer.shared_u, layer.shared_v, layer.personal))
    expected = np.stack([(K.T + U @ S[i] @ V.T) @ np.asarray(x[n]) + b for n, i in enumerate(ids)])
    np.testing.assert_allclose(layer(x, jnp.asarray(ids)), expected, rtol=TOL, atol=TOL)


@functools.cache
def _adapted_transformer(kind):
    model = _transformer()
    wrap = cn.apply_colora if kind == "colora" else cn.apply_lora_bank
    wrap(model, users=4, rank=2, targets=["query", "value", "up"], rngs=nnx.Rngs(1))
    return _randomize(model, jax.random.key(2))


@nnx.jit
def _forward(model, tokens, ids):
    with cn.colora_users(model, ids):
        return model(tokens)


@settings(deadline=None, max_examples=10)
@given(
    ids=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    kind=st.sampled_from(["colora", "lora_bank"]),
)
def test_mixed_user_batch_equals_each_user_separately(ids, kind):
    model = _adapted_transformer(kind)
    tokens = jax.random.randint(jax.random.key(3), (len(ids), 8), 0, 11)
    mixed = _forward(model, tokens, jnp.asarray(ids))
    for n, user in enumerate(ids):
        alone = _forward(model, tokens[n : n + 1], jnp.asarray([user]))
        np.testing.assert_allclose(mixed[n : n + 1], alone, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", ["colora", "lora_bank"])
def test_merge_equals_unmerged_forward(kind):
    model = _transformer()
    wrap = cn.apply_colora if kind == "colora" else cn.apply_lora_bank
    wrap(model, users=3, rank=2, targets=[r"blocks\.0\.(attn\.key|mlp\.down)", "head"], rngs=nnx.Rngs(1))
    _randomize(model, jax.random.key(2))
    tokens = jax.random.randint(jax.random.key(3), (4, 8), 0, 11)
    for user in range(3):
        merged = cn.merge(model, user)
        assert not cn.adapted_layers(merged)  # a plain model
        assert isinstance(merged.head, nnx.Linear)
        with cn.colora_users(model, jnp.full((4,), user)):
            np.testing.assert_allclose(merged(tokens), model(tokens), rtol=1e-4, atol=1e-4)


def test_routing_works_under_jit_and_grad_and_leaves_no_ids_behind():
    model = cn.apply_colora(_transformer(), users=3, rank=2, targets=["up"], rngs=nnx.Rngs(1))
    _randomize(model, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(3), (3, 8), 0, 11)
    ids = jnp.array([2, 0, 1])

    @nnx.jit
    def loss(model, tokens, ids):
        with cn.colora_users(model, ids):
            return jnp.mean(model(tokens) ** 2)

    with cn.colora_users(model, ids):
        eager = jnp.mean(model(tokens) ** 2)
    np.testing.assert_allclose(loss(model, tokens, ids), eager, rtol=TOL)
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, cn.PersonalParam))(model, tokens, ids)
    assert float(jnp.abs(grads["blocks"][0]["mlp"]["up"]["personal"][...]).max()) > 0
    assert model.blocks[0].mlp.up.user_ids[...].shape == (0,)


def test_user_id_out_of_range():
    model = cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=3, rank=1, targets=["first"], rngs=nnx.Rngs(1))
    x = jnp.ones((2, 3))
    for bad in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match=r"out of range.*\[0, 2\]"):
            with cn.colora_users(model, jnp.asarray(bad)):
                model(x)
    # Under jit the ids are not visible: the offending example becomes NaN, the others are fine.
    out = nnx.jit(lambda layer, x, ids: layer(x, ids))(model.first, x, jnp.array([1, 7]))
    assert bool(jnp.all(jnp.isfinite(out[0]))) and bool(jnp.all(jnp.isnan(out[1])))


def test_missing_user_ids_is_a_clear_error():
    model = cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=2, rank=1, targets=["first"], rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="colora_users"):
        model(jnp.ones((2, 3)))


def test_targets_matching_nothing_lists_the_linear_layers():
    with pytest.raises(ValueError, match=r"match no nnx.Linear.*first, second"):
        cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=2, rank=1, targets=["q_proj"], rngs=nnx.Rngs(1))


def test_rank_larger_than_layer_is_rejected():
    with pytest.raises(ValueError, match="choose a smaller rank"):
        cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=2, rank=3, targets=["second"], rngs=nnx.Rngs(1))


def test_targets_by_name_and_by_regex():
    names = lambda m: [n for n, _ in cn.adapted_layers(m)]
    by_name = cn.apply_colora(_transformer(), users=2, rank=1, targets=["query", "down"], rngs=nnx.Rngs(0))
    assert names(by_name) == ["blocks.0.attn.query", "blocks.0.mlp.down"]
    by_regex = cn.apply_colora(_transformer(), users=2, rank=1, targets=[r".*attn\.(key|out)"], rngs=nnx.Rngs(0))
    assert names(by_regex) == ["blocks.0.attn.key", "blocks.0.attn.out"]
