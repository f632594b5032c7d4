"""Claims about PEFT export, orbax checkpoints and multi-user training (colora_jax.nnx)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from safetensors.numpy import load_file

from colora_jax import nnx as cn
from colora_jax.nnx import _train


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(4, 6, rngs=rngs)
        self.second = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        return self.second(jnp.tanh(self.first(x)))


def _colora_mlp(users=3, rank=2, seed=0):
    model = cn.apply_colora(MLP(nnx.Rngs(seed)), users=users, rank=rank, targets=["first", "second"], rngs=nnx.Rngs(1))
    key = jax.random.key(seed + 7)
    for _, layer in cn.adapted_layers(model):
        for var in (layer.shared_u, layer.personal):
            key, sub = jax.random.split(key)
            var.set_value(jax.random.normal(sub, var[...].shape))
    return model


def test_peft_export_reproduces_the_adapter_in_numpy(tmp_path):
    """From the saved files alone: y = x W^T + b + (alpha/r) (x A^T) B^T per layer, PEFT's formula."""
    model = _colora_mlp()
    user = 2
    cn.export_peft(model, user, tmp_path)
    tensors = load_file(os.path.join(tmp_path, "adapter_model.safetensors"))
    config = json.load(open(os.path.join(tmp_path, "adapter_config.json")))
    assert config["peft_type"] == "LORA" and config["r"] == 2
    assert sorted(config["target_modules"]) == ["first", "second"]
    scaling = config["lora_alpha"] / config["r"]

    def peft_linear(name, linear, x):
        a = tensors[f"base_model.model.{name}.lora_A.weight"]  # (r, d_in)
        b = tensors[f"base_model.model.{name}.lora_B.weight"]  # (d_out, r)
        w = np.asarray(linear.base.kernel[...]).T  # PyTorch orientation (d_out, d_in)
        return x @ w.T + np.asarray(linear.base.bias[...]) + scaling * (x @ a.T) @ b.T

    x = np.asarray(jax.random.normal(jax.random.key(0), (5, 4)))
    expected = peft_linear("second", model.second, np.tanh(peft_linear("first", model.first, x)))
    with cn.colora_users(model, jnp.full((5,), user)):
        np.testing.assert_allclose(model(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)


def test_peft_import_makes_every_user_start_at_the_exported_one(tmp_path):
    model = _colora_mlp(seed=3)
    cn.export_peft(model, 1, tmp_path)
    imported = cn.import_peft(MLP(nnx.Rngs(3)), tmp_path, users=4)
    x = jax.random.normal(jax.random.key(1), (4, 4))
    with cn.colora_users(model, jnp.full((4,), 1)), cn.colora_users(imported, jnp.arange(4)):
        np.testing.assert_allclose(imported(x), model(x), rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip_and_a_late_user(tmp_path):
    model = _colora_mlp()
    cn.save_adapter(tmp_path / "adapter", model)
    restored = cn.apply_colora(MLP(nnx.Rngs(0)), users=3, rank=2, targets=["first", "second"], rngs=nnx.Rngs(9))
    cn.restore_adapter(tmp_path / "adapter", restored, parts=("shared",))
    assert not np.allclose(restored.first.personal[...], model.first.personal[...])  # parts are separate
    cn.restore_adapter(tmp_path / "adapter", restored, parts=("personal",))
    for (_, a), (_, b) in zip(cn.adapted_layers(model), cn.adapted_layers(restored)):
        for name in ("shared_u", "shared_v", "personal"):
            np.testing.assert_array_equal(getattr(a, name)[...], getattr(b, name)[...])

    # A late user: fit only its r x r matrix against the frozen shared adapter.
    shared_before = jax.tree.map(np.asarray, nnx.state(restored, cn.SharedParam))
    old_bank = np.asarray(restored.first.personal[...])
    restored, new = cn.add_users(restored, 1)
    x = jax.random.normal(jax.random.key(2), (16, 4))
    data = _train.Examples(x, jnp.sin(x[:, :3]), jnp.full((16,), int(new[0])))
    losses = _train.train(
        restored, data, lambda y, t: jnp.mean((y - t) ** 2, axis=-1), optax.adam(1e-2),
        _train.TrainConfig(scheme="personal", steps=30, batch_size=8, progress=False), jax.random.key(3),
    )
    assert losses[-1] < losses[0]
    jax.tree.map(np.testing.assert_array_equal, shared_before, jax.tree.map(np.asarray, nnx.state(restored, cn.SharedParam)))
    np.testing.assert_array_equal(restored.first.personal[...][:3], old_bank)
    assert not np.allclose(restored.first.personal[...][3], np.eye(2))


def _changed(before, after):
    return {k: not np.array_equal(before[k], after[k]) for k in before}


def _flat(model):
    return {".".join(map(str, p)): (type(v).__name__, np.asarray(v[...])) for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable) and not isinstance(v, cn.UserIds)}


@pytest.mark.parametrize(
    "scheme, moved",
    [("joint", {"SharedParam", "PersonalParam"}), ("shared", {"SharedParam"}), ("personal", {"PersonalParam"})],
)
def test_a_training_step_changes_only_the_targeted_parameter_types(scheme, moved):
    model = _colora_mlp()
    before = _flat(model)
    x = jax.random.normal(jax.random.key(4), (12, 4))
    data = _train.Examples(x, jnp.cos(x[:, :3]), jnp.arange(12) % 3)
    cfg = _train.TrainConfig(scheme=scheme, steps=1, batch_size=12, progress=False)
    _train.train(model, data, lambda y, t: jnp.mean((y - t) ** 2, axis=-1), optax.sgd(0.1), cfg, jax.random.key(5))
    after = _flat(model)
    for name, (kind, value) in before.items():
        assert (not np.array_equal(value, after[name][1])) == (kind in moved), (name, kind)


def test_alternating_and_federated_schemes_decrease_the_loss():
    x = jax.random.normal(jax.random.key(6), (48, 4))
    ids = jnp.arange(48) % 4
    data = _train.Examples(x, jnp.sin(x[:, :3] * (1.0 + ids[:, None])), ids)
    loss = lambda y, t: jnp.mean((y - t) ** 2, axis=-1)
    for scheme in ("alternating", "federated"):
        model = _colora_mlp(users=4)
        initial = float(jnp.mean(loss(_train.predict(model, x, ids), data.targets)))
        cfg = _train.TrainConfig(scheme=scheme, steps=60, batch_size=16, groups=2, local_steps=10, progress=False)
        _train.train(model, data, loss, optax.adam(1e-2), cfg, jax.random.key(7))
        final = float(jnp.mean(loss(_train.predict(model, x, ids), data.targets)))
        assert final < 0.8 * initial, (scheme, initial, final)


def test_federated_round_averages_shared_and_keeps_each_groups_personal_rows():
    """One round, two groups, one SGD step each: the new shared factors are the example-weighted
    mean of the groups' local ones, and user u's S_u is the one its own group computed. Each user's
    rows are copies of one example, so every mini-batch has the same gradient (deterministic)."""
    a, b = jax.random.normal(jax.random.key(8), (2, 1, 4))
    x = jnp.concatenate([jnp.repeat(a, 6, axis=0), jnp.repeat(b, 2, axis=0)])
    ids = jnp.array([0, 0, 0, 0, 0, 0, 1, 1])  # group 0 owns user 0 (6 examples), group 1 user 1 (2)
    data = _train.Examples(x, jnp.sin(x[:, :3]), ids)
    loss = lambda y, t: jnp.mean((y - t) ** 2, axis=-1)
    step = _train.TrainConfig(scheme="joint", steps=1, batch_size=4, progress=False)
    local = []
    for g in (0, 1):
        model = _colora_mlp(users=2)
        rows = np.flatnonzero(np.asarray(ids) == g)
        _train.train(model, _train.Examples(x[rows], data.targets[rows], ids[rows]), loss, optax.sgd(0.1), step, jax.random.key(g))
        local.append(model)
    fed = _colora_mlp(users=2)
    cfg = _train.TrainConfig(scheme="federated", steps=1, local_steps=1, groups=2, batch_size=4, progress=False)
    _train.train(fed, data, loss, optax.sgd(0.1), cfg, jax.random.key(9))
    for layer in ("first", "second"):
        get = lambda m, name: np.asarray(getattr(getattr(m, layer), name)[...])
        for name in ("shared_u", "shared_v"):
            np.testing.assert_allclose(get(fed, name), 0.75 * get(local[0], name) + 0.25 * get(local[1], name), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(get(fed, "personal")[0], get(local[0], "personal")[0])
        np.testing.assert_array_equal(get(fed, "personal")[1], get(local[1], "personal")[1])
