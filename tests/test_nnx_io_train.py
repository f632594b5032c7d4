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
    assert config["target_modules"] == ["first", "second"]
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


class Nested(nnx.Module):
    """Two blocks with the same leaf names, so that a last-component target would over-match."""

    def __init__(self, rngs):
        self.blocks = nnx.List(
            [nnx.Dict(up=nnx.Linear(4, 6, rngs=rngs), down=nnx.Linear(6, 4, rngs=rngs)) for _ in range(2)]
        )
        self.up = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        for b in self.blocks:
            x = x + b["down"](jnp.tanh(b["up"](x)))
        return self.up(x)


def _peft_forward(model, directory, x):
    r"""PEFT's LoRA forward computed from the saved files alone, in NumPy: per adapted Linear,
    y = x W^T + b + s (x A^T) B^T with s = alpha/r or alpha/sqrt(r) (rsLoRA) and r, alpha from
    rank_pattern / alpha_pattern (key k applies to name n if re.match(rf"(.*\.)?({k})$", n))."""
    import math
    import re

    tensors = load_file(os.path.join(directory, "adapter_model.safetensors"))
    config = json.load(open(os.path.join(directory, "adapter_config.json")))

    def lookup(pattern, name, default):
        for k, v in (pattern or {}).items():
            if re.match(rf"(.*\.)?({k})$", name):
                return v
        return default

    def linear(name, layer):
        def f(h):
            out = h @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])
            if f"base_model.model.{name}.lora_A.weight" in tensors:
                a = tensors[f"base_model.model.{name}.lora_A.weight"]
                b = tensors[f"base_model.model.{name}.lora_B.weight"]
                r, alpha = (
                    lookup(config["rank_pattern"], name, config["r"]),
                    lookup(config["alpha_pattern"], name, config["lora_alpha"]),
                )
                assert a.shape[0] == r
                out = out + (alpha / (math.sqrt(r) if config["use_rslora"] else r)) * (h @ a.T) @ b.T
            return out

        return f

    plain = model
    for i in range(2):
        up = linear(f"blocks.{i}.up", plain.blocks[i]["up"])
        down = linear(f"blocks.{i}.down", plain.blocks[i]["down"])
        x = x + down(np.tanh(up(x)))
    return linear("up", plain.up)(x)


def test_export_names_exactly_the_adapted_modules_and_mixed_ranks_use_patterns(tmp_path):
    model = Nested(nnx.Rngs(0))
    cn.apply_colora(model, users=3, rank=2, targets=[r"blocks\.1\..*"], rngs=nnx.Rngs(1))
    cn.apply_colora(model, users=3, rank=3, targets=[r"blocks\.0\.up"], rngs=nnx.Rngs(2))
    _randomize(model, jax.random.key(3))
    cn.export_peft(model, 1, tmp_path)
    config = json.load(open(os.path.join(tmp_path, "adapter_config.json")))
    assert sorted(config["target_modules"]) == ["blocks.0.up", "blocks.1.down", "blocks.1.up"]  # not "up" or "down"
    assert config["r"] == 2 and config["rank_pattern"] == {r"blocks\.0\.up": 3}
    x = np.asarray(jax.random.normal(jax.random.key(4), (5, 4)))
    plain = Nested(nnx.Rngs(0))
    with cn.colora_users(model, jnp.full((5,), 1)):
        np.testing.assert_allclose(model(jnp.asarray(x)), _peft_forward(plain, tmp_path, x), rtol=1e-5, atol=1e-5)
    imported = cn.import_peft(Nested(nnx.Rngs(0)), tmp_path, users=2)
    assert sorted(n for n, _ in cn.adapted_layers(imported)) == ["blocks.0.up", "blocks.1.down", "blocks.1.up"]
    with cn.colora_users(model, jnp.full((5,), 1)), cn.colora_users(imported, jnp.arange(5) % 2):
        np.testing.assert_allclose(imported(jnp.asarray(x)), model(jnp.asarray(x)), rtol=1e-5, atol=1e-5)


def _randomize(model, key):
    for _, layer in cn.adapted_layers(model):
        for var in (layer.shared_u, layer.personal):
            key, sub = jax.random.split(key)
            var.set_value(jax.random.normal(sub, var[...].shape))
    return model


@pytest.mark.parametrize("rslora", [False, True])
def test_import_honours_rslora_and_rank_and_alpha_patterns(tmp_path, rslora):
    """A PEFT adapter written by hand (as PEFT saves one): per-layer ranks and alphas, rsLoRA scaling."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    ranks = {"blocks.0.up": 2, "blocks.0.down": 3, "blocks.1.up": 2, "up": 1}
    dims = {"blocks.0.up": (4, 6), "blocks.0.down": (6, 4), "blocks.1.up": (4, 6), "up": (4, 4)}
    tensors = {}
    for name, r in ranks.items():
        d_in, d_out = dims[name]
        tensors[f"base_model.model.{name}.lora_A.weight"] = rng.normal(size=(r, d_in)).astype(np.float32)
        tensors[f"base_model.model.{name}.lora_B.weight"] = rng.normal(size=(d_out, r)).astype(np.float32)
    config = {
        "peft_type": "LORA",
        "r": 2,
        "lora_alpha": 8,
        "use_rslora": rslora,
        "rank_pattern": {r"blocks\.0\.down": 3, "^up": 1},
        "alpha_pattern": {r".*\.0\.down": 5, "^up": 3},
        "target_modules": r"(blocks\.\d\.(up|down))|up",
        "bias": "none",
        "use_dora": False,
        "modules_to_save": None,
    }
    save_file(tensors, os.path.join(tmp_path, "adapter_model.safetensors"))
    json.dump(config, open(os.path.join(tmp_path, "adapter_config.json"), "w"))
    imported = cn.import_peft(Nested(nnx.Rngs(0)), tmp_path, users=2)
    assert {n: m.rank for n, m in cn.adapted_layers(imported)} == ranks
    x = np.asarray(jax.random.normal(jax.random.key(4), (3, 4)))
    with cn.colora_users(imported, jnp.array([0, 1, 1])):
        np.testing.assert_allclose(
            imported(jnp.asarray(x)), _peft_forward(Nested(nnx.Rngs(0)), tmp_path, x), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("use_dora", True, "DoRA"),
        ("bias", "lora_only", "lora_only"),
        ("bias", "all", "bias='all'"),
        ("modules_to_save", ["head"], "modules_to_save"),
        ("fan_in_fan_out", True, "fan_in_fan_out"),
        ("r", 3, "rank 3"),
    ],
)
def test_import_rejects_what_it_cannot_represent(tmp_path, field, value, message):
    cn.export_peft(_colora_mlp(), 0, tmp_path)
    path = os.path.join(tmp_path, "adapter_config.json")
    config = json.load(open(path))
    config[field] = value
    json.dump(config, open(path, "w"))
    with pytest.raises(ValueError, match=message):
        cn.import_peft(MLP(nnx.Rngs(0)), tmp_path, users=2)


def test_einsum_and_linear_general_export_import_and_checkpoint(tmp_path):
    cfg = cn.DecoderConfig(vocab=16, seq_len=6, width=8, depth=1, heads=4, kv_heads=2, head_dim=4, mlp_hidden=12)
    model = cn.apply_colora(
        cn.Decoder(cfg, rngs=nnx.Rngs(0)), users=3, rank=2, targets=["query", "key", "out", "up"], rngs=nnx.Rngs(1)
    )
    _randomize(model, jax.random.key(2))
    tokens = jax.random.randint(jax.random.key(3), (3, 6), 0, 16)
    cn.export_peft(model, 2, tmp_path / "peft")
    tensors = load_file(os.path.join(tmp_path / "peft", "adapter_model.safetensors"))
    assert tensors["base_model.model.blocks.0.attn.query.lora_B.weight"].shape == (16, 2)  # N * H outputs
    assert tensors["base_model.model.blocks.0.attn.out.lora_A.weight"].shape == (2, 16)  # N * H inputs
    imported = cn.import_peft(cn.Decoder(cfg, rngs=nnx.Rngs(0)), tmp_path / "peft", users=1)
    with cn.colora_users(model, jnp.full((3,), 2)), cn.colora_users(imported, jnp.zeros((3,), int)):
        np.testing.assert_allclose(imported(tokens), model(tokens), rtol=1e-5, atol=1e-5)
    cn.save_adapter(tmp_path / "ckpt", model)
    restored = cn.apply_colora(
        cn.Decoder(cfg, rngs=nnx.Rngs(0)), users=3, rank=2, targets=["query", "key", "out", "up"], rngs=nnx.Rngs(9)
    )
    cn.restore_adapter(tmp_path / "ckpt", restored)
    ids = jnp.array([0, 2, 1])
    with cn.colora_users(model, ids), cn.colora_users(restored, ids):
        np.testing.assert_array_equal(restored(tokens), model(tokens))


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
        restored,
        data,
        lambda y, t: jnp.mean((y - t) ** 2, axis=-1),
        optax.adam(1e-2),
        _train.TrainConfig(scheme="personal", steps=30, batch_size=8, progress=False),
        jax.random.key(3),
    )
    assert losses[-1] < losses[0]
    jax.tree.map(
        np.testing.assert_array_equal, shared_before, jax.tree.map(np.asarray, nnx.state(restored, cn.SharedParam))
    )
    np.testing.assert_array_equal(restored.first.personal[...][:3], old_bank)
    assert not np.allclose(restored.first.personal[...][3], np.eye(2))


def _changed(before, after):
    return {k: not np.array_equal(before[k], after[k]) for k in before}


def _flat(model):
    return {
        ".".join(map(str, p)): (type(v).__name__, np.asarray(v[...]))
        for p, v in nnx.iter_graph(model)
        if isinstance(v, nnx.Variable) and not isinstance(v, cn.UserIds)
    }


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
        _train.train(
            model,
            _train.Examples(x[rows], data.targets[rows], ids[rows]),
            loss,
            optax.sgd(0.1),
            step,
            jax.random.key(g),
        )
        local.append(model)
    fed = _colora_mlp(users=2)
    cfg = _train.TrainConfig(scheme="federated", steps=1, local_steps=1, groups=2, batch_size=4, progress=False)
    _train.train(fed, data, loss, optax.sgd(0.1), cfg, jax.random.key(9))
    for layer in ("first", "second"):
        get = lambda m, name, layer=layer: np.asarray(getattr(getattr(m, layer), name)[...])
        for name in ("shared_u", "shared_v"):
            np.testing.assert_allclose(
                get(fed, name), 0.75 * get(local[0], name) + 0.25 * get(local[1], name), rtol=1e-5, atol=1e-6
            )
        np.testing.assert_array_equal(get(fed, "personal")[0], get(local[0], "personal")[0])
        np.testing.assert_array_equal(get(fed, "personal")[1], get(local[1], "personal")[1])


def test_method_names_are_the_projects():
    assert cn.METHOD_NAMES == ("colora", "colora-centered", "local", "global", "fedavg-lora", "base")
    with pytest.raises(ValueError, match="choose one of colora, colora-centered, local"):
        cn.train_method(
            "lora_bank", MLP(nnx.Rngs(0)), None, None, None, cn.MethodConfig(), users=2, key=jax.random.key(0)
        )


def test_centred_ridge_nests_global_and_colora():
    """Strength 0 lets the deviations move; a huge strength keeps every user at the centre
    (||U Delta_i V^T|| ~ 0: a shared rank-r LoRA), while the shared part still learns."""
    x = jax.random.normal(jax.random.key(6), (48, 4))
    ids = jnp.arange(48) % 4
    data = _train.Examples(x, jnp.sin(x[:, :3] * (1.0 + ids[:, None])), ids)
    loss = lambda y, t: jnp.mean((y - t) ** 2, axis=-1)
    penalties = {}
    for ridge in (0.0, 1e4):
        model = cn.apply_colora(
            MLP(nnx.Rngs(0)), users=4, rank=2, targets=["first", "second"], rngs=nnx.Rngs(1), centered=True
        )
        cfg = _train.TrainConfig(scheme="joint", steps=40, batch_size=16, ridge=ridge, progress=False)
        losses = _train.train(model, data, loss, optax.adam(1e-2), cfg, jax.random.key(7))
        assert np.mean(losses[-5:]) < np.mean(losses[:5])
        penalties[ridge] = float(cn.ridge_penalty(model))
    assert penalties[1e4] < 1e-3 * penalties[0.0]
    with pytest.raises(ValueError, match="centered=True"):
        _train.train(
            _colora_mlp(),
            data,
            loss,
            optax.adam(1e-2),
            _train.TrainConfig(steps=1, ridge=1.0, progress=False),
            jax.random.key(0),
        )


def test_select_ridge_picks_the_best_validation_loss():
    x = jax.random.normal(jax.random.key(8), (64, 4))
    ids = jnp.arange(64) % 4
    data = _train.Examples(x, jnp.sin(x[:, :3]), ids)
    loss = lambda y, t: jnp.mean((y - t) ** 2, axis=-1)
    cfg = cn.MethodConfig(rank=2, targets=("first",), train=_train.TrainConfig(steps=10, batch_size=16, progress=False))
    train, val = (_train.Examples(*(a[s] for a in data)) for s in (slice(0, 48), slice(48, 64)))
    best, scores, model = cn.select_ridge(
        MLP(nnx.Rngs(0)), train, val, loss, optax.adam(1e-2), cfg, (0.0, 1.0, 100.0), users=4, key=jax.random.key(1)
    )
    assert set(scores) == {0.0, 1.0, 100.0} and scores[best] == min(scores.values())
    assert cn.validation_loss(model, val, loss) == pytest.approx(scores[best], rel=1e-6)


def test_early_stopping_returns_the_best_validation_point():
    """Training far past the optimum on 4 examples per user: the restored adapter's validation loss
    is no worse than at the start, and no worse than where training ended."""
    x = jax.random.normal(jax.random.key(9), (24, 4))
    ids = jnp.arange(24) % 3
    y = jnp.sin(x[:, :3] * 2.0) + 0.5 * jax.random.normal(jax.random.key(10), (24, 3))
    loss = lambda out, t: jnp.mean((out - t) ** 2, axis=-1)
    train_set, val = _train.Examples(x[:12], y[:12], ids[:12]), _train.Examples(x[12:], y[12:], ids[12:])
    cfg = _train.TrainConfig(scheme="personal", steps=60, batch_size=12, eval_every=10, progress=False)
    model = cn.apply_lora_bank(MLP(nnx.Rngs(0)), users=3, rank=2, targets=["first", "second"], rngs=nnx.Rngs(1))
    start = cn.validation_loss(model, val, loss)
    end_model = nnx.clone(model)
    _train.train(end_model, train_set, loss, optax.adam(5e-2), cfg, jax.random.key(2))
    _train.train(model, train_set, loss, optax.adam(5e-2), cfg, jax.random.key(2), validation=val)
    stopped = cn.validation_loss(model, val, loss)
    assert stopped <= start + 1e-6 and stopped <= cn.validation_loss(end_model, val, loss) + 1e-6
