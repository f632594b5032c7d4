"""Claims about the CoLoRA NNX layers and model wrapping (colora_jax.nnx), for every wrapped layer type."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from colora_jax import nnx as cn
from colora_jax.nnx import _layers

TOL = 1e-5  # float32 forward passes of a few small matmuls
KINDS = ["colora", "colora-centered", "local"]


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


def _wrap(model, kind, **kw):
    if kind == "local":
        return cn.apply_lora_bank(model, **kw)
    return cn.apply_colora(model, centered=kind == "colora-centered", **kw)


def _randomize(model, key):
    """Give every adapter parameter a random non-zero value (the init has U = 0, B = 0, Delta = 0)."""
    for _, layer in cn.adapted_layers(model):
        for name in ("shared_u", "shared_v", "personal", "center", "lora_a", "lora_b"):
            if hasattr(layer, name):
                key, sub = jax.random.split(key)
                var = getattr(layer, name)
                var.set_value(jax.random.normal(sub, var[...].shape, var[...].dtype))
    return model


def _decoder(seed=0):
    """Einsum query/key/value, LinearGeneral output, Linear gated MLP and head."""
    cfg = cn.DecoderConfig(vocab=16, seq_len=6, width=8, depth=1, heads=4, kv_heads=2, head_dim=4, mlp_hidden=12)
    return cn.Decoder(cfg, rngs=nnx.Rngs(seed))


def _transformer(seed=0):
    return cn.Transformer(cn.TransformerConfig(vocab=11, seq_len=8, width=8, depth=1, heads=2), rngs=nnx.Rngs(seed))


DECODER_TARGETS = ["query", "value", "out", "up", "down"]  # Einsum, Einsum, LinearGeneral, Linear, Linear


@settings(deadline=None, max_examples=4)
@given(
    users=st.integers(1, 6),
    rank=st.integers(1, 4),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(KINDS),
)
def test_output_equals_base_at_initialization(users, rank, batch, seed, kind):
    model = MLP(4, 6, 5, nnx.Rngs(seed))
    x = jax.random.normal(jax.random.key(seed), (batch, 4))
    expected = model(x)
    _wrap(model, kind, users=users, rank=rank, targets=["first", "second"], rngs=nnx.Rngs(seed + 1))
    ids = jax.random.randint(jax.random.key(seed + 2), (batch,), 0, users)
    with cn.colora_users(model, ids):
        np.testing.assert_array_equal(model(x), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_output_equals_base_at_initialization_for_every_layer_type(kind):
    model = _decoder()
    tokens = jax.random.randint(jax.random.key(0), (3, 6), 0, 16)
    expected = model(tokens)
    _wrap(model, kind, users=4, rank=2, targets=DECODER_TARGETS, rngs=nnx.Rngs(1))
    assert {type(m.base).__name__ for _, m in cn.adapted_layers(model)} == {"Einsum", "LinearGeneral", "Linear"}
    with cn.colora_users(model, jnp.array([3, 0, 2])):
        np.testing.assert_array_equal(model(tokens), expected)


def test_gradient_reaches_shared_factor_at_initialization():
    """No saddle at the start: with V random and S = I, dL/dU != 0 although U = 0."""
    layer = cn.CoLoRALinear(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), users=2, rank=2, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (5, 4))
    ids = jnp.array([0, 1, 0, 1, 1])

    def loss(layer):
        return jnp.sum(layer(x, ids) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, cn.SharedParam))(layer)
    assert float(jnp.abs(grads["shared_u"][...]).max()) > 1e-3


def _reference(kind_of_layer, kernel, bias, x, delta_flat):
    """NumPy: the wrapped layer with its kernel flattened to (d_in, d_out) and ``delta_flat`` added."""
    if kind_of_layer == "linear":  # x (b, d_in), kernel (d_in, d_out)
        return x @ (kernel + delta_flat) + bias
    if kind_of_layer == "einsum":  # 'btd,dnh->btnh': x (b, t, d), kernel (d, n, h)
        d, n, h = kernel.shape
        return (x @ (kernel.reshape(d, n * h) + delta_flat)).reshape(*x.shape[:2], n, h) + bias
    n, h, d = kernel.shape  # LinearGeneral (n, h) -> d over axes (-2, -1): x (b, t, n, h)
    return x.reshape(*x.shape[:2], n * h) @ (kernel.reshape(n * h, d) + delta_flat) + bias


def _layer(kind_of_layer, seed):
    rngs = nnx.Rngs(seed)
    if kind_of_layer == "linear":
        return nnx.Linear(5, 4, rngs=rngs), (7, 5)
    if kind_of_layer == "einsum":
        return nnx.Einsum("btd,dnh->btnh", (5, 3, 2), (3, 2), rngs=rngs), (7, 2, 5)
    return nnx.LinearGeneral((3, 2), 4, axis=(-2, -1), rngs=rngs), (7, 2, 3, 2)


@settings(deadline=None, max_examples=4)
@given(
    users=st.integers(1, 5),
    rank=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    kind_of_layer=st.sampled_from(["linear", "einsum", "linear_general"]),
    centered=st.booleans(),
)
def test_layer_matches_the_equation(users, rank, seed, kind_of_layer, centered):
    """y = x K + b + x V S_i^T U^T (W_i = W_0 + U S_i V^T), computed independently in NumPy on the
    flattened kernel; S_i = S_bar + Delta_i when centred."""
    base, x_shape = _layer(kind_of_layer, seed)
    layer = cn.CoLoRALinear(base, users=users, rank=rank, rngs=nnx.Rngs(seed), centered=centered)
    _randomize(nnx.Dict(layer=layer), jax.random.key(seed))
    x = jax.random.normal(jax.random.key(seed + 1), x_shape)
    ids = np.arange(7) % users
    d_in, d_out = layer.axes.d_in, layer.axes.d_out
    U = np.asarray(layer.shared_u[...]).reshape(d_out, rank)
    V = np.asarray(layer.shared_v[...]).reshape(d_in, rank)
    S = np.asarray(layer.personal[...]) + (np.asarray(layer.center[...]) if centered else 0)
    K, b = np.asarray(base.kernel[...]), np.asarray(base.bias[...])
    expected = np.stack(
        [_reference(kind_of_layer, K, b, np.asarray(x[n : n + 1]), V @ S[i].T @ U.T)[0] for n, i in enumerate(ids)]
    )
    np.testing.assert_allclose(layer(x, jnp.asarray(ids)), expected, rtol=TOL, atol=TOL)


@functools.cache
def _adapted(kind):
    model = _decoder()
    _wrap(model, kind, users=4, rank=2, targets=DECODER_TARGETS, rngs=nnx.Rngs(1))
    return _randomize(model, jax.random.key(2))


@nnx.jit
def _forward(model, tokens, ids):
    with cn.colora_users(model, ids):
        return model(tokens)


@settings(deadline=None, max_examples=8)
@given(ids=st.lists(st.integers(0, 3), min_size=5, max_size=5), kind=st.sampled_from(KINDS))
def test_mixed_user_batch_equals_each_user_separately(ids, kind):
    model = _adapted(kind)
    tokens = jax.random.randint(jax.random.key(3), (len(ids), 6), 0, 16)
    mixed = _forward(model, tokens, jnp.asarray(ids))
    for n, user in enumerate(ids):
        alone = _forward(model, tokens[n : n + 1], jnp.asarray([user]))
        np.testing.assert_allclose(mixed[n : n + 1], alone, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_equals_unmerged_forward_for_every_layer_type(kind):
    model = _adapted(kind)
    tokens = jax.random.randint(jax.random.key(3), (4, 6), 0, 16)
    for user in range(4):
        merged = cn.merge(model, user)
        assert not cn.adapted_layers(merged)  # a plain model
        assert type(merged.blocks[0].attn.query) is nnx.Einsum
        assert type(merged.blocks[0].attn.out) is nnx.LinearGeneral
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


def test_user_id_out_of_range_fails_loudly_eagerly_and_under_jit():
    model = cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=3, rank=1, targets=["first"], rngs=nnx.Rngs(1))
    x = jnp.ones((2, 3))
    for bad in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match=r"out of range.*\[0, 2\]"):
            with cn.colora_users(model, jnp.asarray(bad)):
                model(x)
    # Under jit the ids are tracers: checked at run time, through colora_users and direct calls alike.
    routed = nnx.jit(lambda m, x, ids: _call_with(m, x, ids, True))
    direct = nnx.jit(lambda layer, x, ids: layer(x, ids))
    for bad in ([1, 7], [-2, 0]):
        with pytest.raises(Exception, match=r"out of range under jit.*\[0, 2\]"):
            jax.block_until_ready(routed(model, x, jnp.asarray(bad)))
        with pytest.raises(Exception, match=r"out of range under jit.*\[0, 2\]"):
            jax.block_until_ready(direct(model.first, x, jnp.asarray(bad)))
    # valid ids pass through: the eager logits, up to float32 rounding (jit may fuse differently)
    np.testing.assert_allclose(
        routed(model, x, jnp.array([2, 0])), _call_with(model, x, jnp.array([2, 0]), True), rtol=1e-6, atol=1e-7
    )


def _call_with(model, x, ids, checked):
    with cn.colora_users(model, ids, checked=checked):
        return model(x)


def test_unchecked_serving_path_gives_nan_rows_for_bad_ids_only():
    model = cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=3, rank=1, targets=["first"], rngs=nnx.Rngs(1))
    x = jnp.ones((3, 3))
    routed = nnx.jit(lambda m, x, ids: _call_with(m, x, ids, False))
    direct = nnx.jit(lambda layer, x, ids: layer(x, ids, checked=False))
    for out in (routed(model, x, jnp.array([1, 7, -1])), direct(model.first, x, jnp.array([1, 7, -1]))):
        assert bool(jnp.all(jnp.isfinite(out[0]))) and bool(jnp.all(jnp.isnan(out[1:])))


def test_a_training_step_with_a_bad_id_fails_under_jit():
    import optax

    model = cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=3, rank=1, targets=["first"], rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (4, 3))
    data = cn.Examples(x, jnp.zeros((4, 2)), jnp.array([0, 1, 2, 3]))  # user 3 does not exist
    cfg = cn.TrainConfig(steps=1, batch_size=4, progress=False)
    with pytest.raises(Exception, match="out of range under jit"):
        cn.train(model, data, lambda y, t: jnp.mean((y - t) ** 2, axis=-1), optax.sgd(0.1), cfg, jax.random.key(1))


def test_missing_user_ids_is_a_clear_error():
    model = cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=2, rank=1, targets=["first"], rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="colora_users"):
        model(jnp.ones((2, 3)))


def test_targets_matching_nothing_lists_the_adaptable_layers():
    with pytest.raises(ValueError, match=r"match no nnx.Linear.*first, second"):
        cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=2, rank=1, targets=["q_proj"], rngs=nnx.Rngs(1))


def test_rank_larger_than_layer_is_rejected():
    with pytest.raises(ValueError, match="choose a smaller rank"):
        cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=2, rank=3, targets=["second"], rngs=nnx.Rngs(1))


def test_layers_that_are_not_one_linear_map_are_rejected_with_the_reason():
    rngs = nnx.Rngs(0)
    per_head = nnx.Einsum("bnd,ndh->bnh", (2, 3, 4), rngs=rngs)  # n is in input, kernel and output
    with pytest.raises(ValueError, match=r"\['n'\].*per-head"):
        cn.CoLoRALinear(per_head, users=2, rank=1, rngs=rngs)
    with pytest.raises(ValueError, match="ellipsis"):
        cn.CoLoRALinear(nnx.Einsum("...d,dh->...h", (3, 4), rngs=rngs), users=2, rank=1, rngs=rngs)
    with pytest.raises(ValueError, match="batch_axis"):
        cn.CoLoRALinear(nnx.LinearGeneral(3, 4, batch_axis={0: 2}, rngs=rngs), users=2, rank=1, rngs=rngs)


def test_targets_by_name_and_by_regex():
    names = lambda m: [n for n, _ in cn.adapted_layers(m)]
    by_name = cn.apply_colora(_transformer(), users=2, rank=1, targets=["query", "down"], rngs=nnx.Rngs(0))
    assert names(by_name) == ["blocks.0.attn.query", "blocks.0.mlp.down"]
    by_regex = cn.apply_colora(_transformer(), users=2, rank=1, targets=[r".*attn\.(key|out)"], rngs=nnx.Rngs(0))
    assert names(by_regex) == ["blocks.0.attn.key", "blocks.0.attn.out"]


def test_adapter_sharding_follows_the_wrapped_kernel():
    """U takes the kernel's output-axis specs, V its input-axis specs (a replicated rank axis each);
    the bank is replicated or split over the chosen users axis."""
    model = cn.apply_colora(_decoder(), users=4, rank=2, targets=DECODER_TARGETS, rngs=nnx.Rngs(1), users_axis="data")
    specs = nnx.get_partition_spec(nnx.state(model))
    attn, mlp = specs["blocks"][0]["attn"], specs["blocks"][0]["mlp"]
    P = jax.sharding.PartitionSpec
    assert attn["query"]["shared_v"].get_value() == P(None, None) and attn["query"]["shared_u"].get_value() == P(
        "model", None, None
    )
    assert attn["out"]["shared_v"].get_value() == P("model", None, None) and attn["out"]["shared_u"].get_value() == P(
        None, None
    )
    assert mlp["up"]["shared_u"].get_value() == P("model", None) and mlp["down"]["shared_v"].get_value() == P(
        "model", None
    )
    assert mlp["down"]["personal"].get_value() == P("data", None, None)
    local = cn.apply_lora_bank(_decoder(), users=4, rank=2, targets=["query"], rngs=nnx.Rngs(1))
    lspecs = nnx.get_partition_spec(nnx.state(local))["blocks"][0]["attn"]["query"]
    assert lspecs["lora_a"].get_value() == P(None, None, None) and lspecs["lora_b"].get_value() == P(
        None, "model", None, None
    )


def test_centred_ridge_is_gauge_invariant_and_is_the_deviation_norm_for_orthonormal_factors():
    layer = cn.CoLoRALinear(nnx.Linear(6, 5, rngs=nnx.Rngs(0)), users=3, rank=2, rngs=nnx.Rngs(1), centered=True)
    _randomize(nnx.Dict(layer=layer), jax.random.key(4))
    u, v, d = layer.shared_u[...], layer.shared_v[...], layer.personal[...]
    direct = np.mean([np.sum(np.asarray(u @ d[i] @ v.T) ** 2) for i in range(3)])  # (1/k) sum ||U D_i V^T||_F^2
    np.testing.assert_allclose(_layers.deviation_penalty(layer), direct, rtol=1e-5)
    a = jnp.array([[2.0, 1.0], [0.0, 0.5]])  # gauge U -> U A, Delta -> A^-1 Delta
    layer.shared_u.set_value(u @ a)
    layer.personal.set_value(jnp.einsum("ab,kbc->kac", jnp.linalg.inv(a), d))
    np.testing.assert_allclose(_layers.deviation_penalty(layer), direct, rtol=1e-4)
    qu, _ = jnp.linalg.qr(u)
    qv, _ = jnp.linalg.qr(v)
    layer.shared_u.set_value(qu)
    layer.shared_v.set_value(qv)
    layer.personal.set_value(d)
    np.testing.assert_allclose(
        _layers.deviation_penalty(layer), np.mean(np.sum(np.asarray(d) ** 2, axis=(1, 2))), rtol=1e-5
    )
    with pytest.raises(ValueError, match="centered=True"):
        cn.ridge_penalty(
            cn.apply_colora(MLP(3, 4, 2, nnx.Rngs(0)), users=2, rank=1, targets=["first"], rngs=nnx.Rngs(1))
        )
