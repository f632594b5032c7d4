"""The NNX path's failure modes (issue 24): each test reproduces a reported case and states what
happens now, a correct result or a ValueError that says what to change, with the model untouched."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adapters import randomize_adapters
from flax import nnx
from safetensors.numpy import load_file, save_file

from colora_jax import nnx as cn

WEIGHTS = "adapter_model.safetensors"


class TwoLayers(nnx.Module):
    def __init__(self, rngs, d_out=3):
        self.first = nnx.Linear(4, 6, rngs=rngs)
        self.second = nnx.Linear(6, d_out, rngs=rngs)

    def __call__(self, x):
        return self.second(jnp.tanh(self.first(x)))


def _exported(tmp_path):
    """Users 1 and 2 of an adapted two-layer model, exported to X and Y."""
    model = cn.apply_colora(TwoLayers(nnx.Rngs(0)), users=3, rank=2, targets=["first", "second"], rngs=nnx.Rngs(1))
    randomize_adapters(model, jax.random.key(2))
    x_dir, y_dir = tmp_path / "X", tmp_path / "Y"
    cn.export_peft(model, 1, x_dir)
    cn.export_peft(model, 2, y_dir)
    return x_dir, y_dir


def _rewrite(directory, change):
    tensors = load_file(directory / WEIGHTS)
    change(tensors)
    save_file(tensors, directory / WEIGHTS)


def _forward(model, x):
    with cn.colora_users(model, jnp.zeros((x.shape[0],), jnp.int32)):
        return model(x)


def test_a_failed_import_leaves_the_model_untouched_and_a_retry_equals_a_fresh_import(tmp_path):
    x_dir, y_dir = _exported(tmp_path)
    # damage the later layer, so that a layer-by-layer import would have wrapped `first` already
    _rewrite(x_dir, lambda t: t.update({"base_model.model.second.lora_A.weight": np.zeros((2, 5), np.float32)}))
    model, x = TwoLayers(nnx.Rngs(0)), jax.random.normal(jax.random.key(3), (5, 4))
    before = model(x)
    with pytest.raises(ValueError, match=r"second.*lora_A \(2, 5\).*d_in=6"):
        cn.import_peft(model, x_dir, users=2)
    assert not cn.adapted_layers(model)
    np.testing.assert_array_equal(model(x), before)
    retried = cn.import_peft(model, y_dir, users=2)
    fresh = cn.import_peft(TwoLayers(nnx.Rngs(0)), y_dir, users=2)
    np.testing.assert_array_equal(_forward(retried, x), _forward(fresh, x))


@pytest.mark.parametrize("wrap", [cn.apply_colora, cn.apply_lora_bank])
def test_a_failed_wrap_leaves_the_model_untouched_and_a_retry_is_clean(wrap):
    """Rank 3 fits `first` (4 -> 6) but not `second` (6 -> 2): nothing may be wrapped."""
    model = TwoLayers(nnx.Rngs(0), d_out=2)
    with pytest.raises(ValueError, match=r"second: rank 3 is not in \[1, .*\] = \[1, 2\] for a Linear\(6 -> 2\)"):
        wrap(model, users=4, rank=3, targets=["first", "second"], rngs=nnx.Rngs(1))
    assert not cn.adapted_layers(model)
    wrap(model, users=5, rank=2, targets=["first", "second"], rngs=nnx.Rngs(1))
    assert [(n, m.rank, m.users) for n, m in cn.adapted_layers(model)] == [("first", 2, 5), ("second", 2, 5)]


class DoubledInput(nnx.Linear):
    """An nnx.Linear whose __call__ feeds it 2 x: its kernel acts as 2 K, not as K."""

    def __call__(self, x):
        return super().__call__(2.0 * x)


class LoggedLinear(nnx.Linear):
    """Overrides __call__ but stays x K + b: adaptable."""

    def __call__(self, x):
        self.calls = getattr(self, "calls", 0) + 1
        return super().__call__(x)


def test_a_linear_subclass_with_its_own_call_is_refused_unless_it_stays_linear_in_its_kernel():
    model = nnx.Dict(up=DoubledInput(4, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"up: DoubledInput: its __call__ does not compute"):
        cn.apply_colora(model, users=2, rank=2, targets=["up"], rngs=nnx.Rngs(1))
    assert not cn.adapted_layers(model)

    model = nnx.Dict(up=LoggedLinear(4, 3, rngs=nnx.Rngs(0)))
    cn.apply_colora(model, users=2, rank=2, targets=["up"], rngs=nnx.Rngs(1))
    assert not hasattr(model["up"].base, "calls")  # the check ran a copy, not the module itself
    randomize_adapters(model, jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (2, 4))
    adapted = model["up"](x, jnp.array([1, 1]))
    np.testing.assert_allclose(cn.merge(model, 1)["up"](x), adapted, atol=1e-5, rtol=1e-5)


class TimeMajor(nnx.Module):
    """Takes (batch, seq, d) and runs its layer on (seq, batch, d), as a scan over time would."""

    def __init__(self, rngs):
        self.up = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return jnp.swapaxes(self.up(jnp.swapaxes(x, 0, 1)), 0, 1)


class DeclaredTimeMajor(TimeMajor):
    colora_example_axis = 1  # the model states its layout; apply_colora reads it


def _one_at_a_time(model, x, ids):
    with cn.colora_users(model, ids):
        mixed = model(x)
    for row, user in enumerate(ids.tolist()):
        with cn.colora_users(model, jnp.array([user])):
            np.testing.assert_allclose(mixed[row : row + 1], model(x[row : row + 1]), atol=1e-5, rtol=1e-5)
    return mixed


@pytest.mark.parametrize("apply", [cn.apply_colora, cn.apply_lora_bank])
def test_time_major_routing_is_explicit_and_ambiguity_is_refused(apply):
    ids = jnp.array([0, 2, 1])
    square = jax.random.normal(jax.random.key(0), (3, 3, 4))  # seq == batch: the shape cannot tell
    wrap = dict(users=3, rank=2, targets=["up"], rngs=nnx.Rngs(1))
    model = randomize_adapters(apply(TimeMajor(nnx.Rngs(0)), **wrap), jax.random.key(2))
    with cn.colora_users(model, ids), pytest.raises(ValueError, match=r"cannot tell.*example_axis=0"):
        model(square)
    with cn.colora_users(model, ids), pytest.raises(ValueError, match=r"axis 1 has length 3.*example_axis=1"):
        model(square[:, :2])  # seq != batch: the leading axis is not the examples', and the message says which is

    explicit = randomize_adapters(apply(TimeMajor(nnx.Rngs(0)), example_axis=1, **wrap), jax.random.key(2))
    declared = randomize_adapters(apply(DeclaredTimeMajor(nnx.Rngs(0)), **wrap), jax.random.key(2))
    assert declared.up.example_axis == 1
    np.testing.assert_array_equal(_one_at_a_time(explicit, square, ids), _one_at_a_time(declared, square, ids))


_UP = dict(users=3, rank=2, targets=["up"], rngs=nnx.Rngs(1))


def test_the_packaged_models_declare_batch_major_so_seq_equal_to_batch_routes_by_example():
    cfg = cn.TransformerConfig(vocab=11, seq_len=3, width=8, depth=1, heads=2)
    model = randomize_adapters(cn.apply_colora(cn.Transformer(cfg, rngs=nnx.Rngs(0)), **_UP), jax.random.key(2))
    tokens = jax.random.randint(jax.random.key(0), (3, 3), 0, 11)
    _one_at_a_time(model, tokens, jnp.array([0, 2, 1]))


class WithConv(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, kernel_size=(3,), rngs=rngs)
        self.up = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.up(self.conv(x))


def test_a_target_that_names_a_module_it_cannot_adapt_is_an_error_naming_path_and_type():
    model = WithConv(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"conv: Conv is not a linear map CoLoRA can adapt"):
        cn.apply_colora(model, users=2, rank=1, targets=["up", "conv"], rngs=nnx.Rngs(1))
    assert not cn.adapted_layers(model)  # `up` was not adapted behind the error
    with pytest.raises(ValueError, match=r"conv: Conv is not a linear map"):
        cn.apply_colora(model, users=2, rank=1, targets=[".*"], rngs=nnx.Rngs(1))  # a regex holding a kernel too


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_import_refuses_non_finite_tensors_naming_them(tmp_path, bad):
    _, y_dir = _exported(tmp_path)

    def poison(tensors):
        tensors["base_model.model.first.lora_B.weight"][2, 1] = bad

    _rewrite(y_dir, poison)
    model = TwoLayers(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'base_model.model.first.lora_B.weight'.*1 NaN or infinite"):
        cn.import_peft(model, y_dir, users=2)
    assert not cn.adapted_layers(model)


def test_merge_without_adapters_and_export_to_a_bad_path_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match=r"merge needs a model with adapted layers"):
        cn.merge(TwoLayers(nnx.Rngs(0)), 0)
    model = cn.apply_colora(TwoLayers(nnx.Rngs(0)), users=2, rank=1, targets=["first"], rngs=nnx.Rngs(1))
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is a file: choose another path"):
        cn.export_peft(model, 0, a_file)
    with pytest.raises(ValueError, match=r"cannot write the adapter to .*choose a writable directory"):
        cn.export_peft(model, 0, a_file / "inside")  # under a file: no directory can be made there
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match=r"cannot write the adapter"):
            cn.export_peft(model, 0, locked)
    with pytest.raises(ValueError, match=r"has no adapter_config.json"):
        cn.import_peft(TwoLayers(nnx.Rngs(0)), tmp_path / "nowhere", users=2)


class Normed(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.up = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.up(self.norm(x))


def test_regexes_pass_over_norms_but_names_do_not_and_nothing_is_adapted_twice():
    model = cn.apply_colora(Normed(nnx.Rngs(0)), users=2, rank=1, targets=[".*"], rngs=nnx.Rngs(1))
    assert [n for n, _ in cn.adapted_layers(model)] == ["up"]
    with pytest.raises(ValueError, match=r"up is already a CoLoRALinear"):
        cn.apply_colora(model, users=2, rank=1, targets=["up"], rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match=r"target norm is a LayerNorm, which CoLoRA cannot adapt"):
        cn.apply_colora(Normed(nnx.Rngs(0)), users=2, rank=1, targets=["norm", "up"], rngs=nnx.Rngs(1))
