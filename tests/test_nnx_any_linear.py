"""Adapting any NNX module that computes with a kernel: flax's three linear classes and a custom
einsum module written the way tunix writes its ``Einsum``, single- and multi-axis inputs and outputs.

Claims, for CoLoRA and the per-user LoRA bank: the output equals the base's at initialization;
a batch of mixed users equals each user run on its own; ``merge`` equals the adapted forward;
the PEFT export is the flattened ``d_in x d_out`` LoRA of the layer and imports back exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _adapters import randomize_adapters
from flax import nnx
from safetensors.numpy import load_file

from colora_jax import nnx as cn

TOL = 1e-5  # float32, a few small contractions
D, N, H, B, T = 4, 2, 3, 3, 2  # model width, heads, head size, examples, positions


@pytest.fixture(autouse=True)
def _strict():
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


class TunixEinsum(nnx.Module):
    """As tunix writes it: an equation string and a kernel ``w``, applied by ``jnp.einsum``."""

    def __init__(self, einsum_str, shape, *, rngs):
        self.einsum_str = einsum_str
        self.shape = shape
        self.w = nnx.Param(nnx.initializers.normal()(rngs.params(), shape))

    def __call__(self, x):
        return jnp.einsum(self.einsum_str, x, self.w[...])


class DeclaredProjection(nnx.Module):
    """A custom module that states its contraction with ``colora_kernel()`` (and adds a bias)."""

    def __init__(self, *, rngs):
        self.weights = nnx.Param(jax.random.normal(rngs.params(), (N, H, D)))
        self.offset = nnx.Param(jax.random.normal(rngs.params(), (D,)))

    def colora_kernel(self):
        return "weights", "btnh,nhd->btd"

    def __call__(self, x):
        return jnp.einsum("btnh,nhd->btd", x, self.weights[...]) + self.offset[...][None, None]


class PlainKernel(nnx.Module):
    """A hand-written linear layer: a 2-D ``kernel`` applied as ``x @ kernel``, no declaration."""

    def __init__(self, *, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (D, 5)))

    def __call__(self, x):
        return x @ self.kernel[...]


# name -> (layer factory, input shape, kernel input axes and output shape for the PEFT reference)
LAYERS = {
    "linear": (lambda r: nnx.Linear(D, 5, rngs=r), (B, T, D)),
    "general-q": (lambda r: nnx.LinearGeneral(D, (N, H), rngs=r), (B, T, D)),
    "general-o": (lambda r: nnx.LinearGeneral((N, H), D, axis=(-2, -1), rngs=r), (B, T, N, H)),
    "einsum-q": (lambda r: nnx.Einsum("BTD,DNH->BTNH", (D, N, H), (N, H), rngs=r), (B, T, D)),
    "tunix-q": (lambda r: TunixEinsum("BTD,DNH->BTNH", (D, N, H), rngs=r), (B, T, D)),
    "tunix-o": (lambda r: TunixEinsum("BTNH,NHD->BTD", (N, H, D), rngs=r), (B, T, N, H)),
    "declared-o": (lambda r: DeclaredProjection(rngs=r), (B, T, N, H)),
    "plain-kernel": (lambda r: PlainKernel(rngs=r), (B, T, D)),
}


class Net(nnx.Module):
    """One adaptable projection followed by a non-linearity, inside a model of its own."""

    def __init__(self, layer, seed):
        self.proj = LAYERS[layer][0](nnx.Rngs(seed))

    def __call__(self, x):
        return jnp.tanh(self.proj(x))


def _wrap(model, kind, **kw):
    if kind == "local":
        return cn.apply_lora_bank(model, **kw)
    return cn.apply_colora(model, **kw)


def _inputs(layer, seed=0):
    return jax.random.normal(jax.random.key(seed), LAYERS[layer][1])


@pytest.mark.parametrize("kind", ["colora", "local"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_identity_mixed_users_and_merge(layer, kind):
    model, x, users = Net(layer, 0), _inputs(layer), 4
    before = model(x)
    _wrap(model, kind, users=users, rank=2, targets=["proj"], rngs=nnx.Rngs(1))
    ids = jnp.array([3, 0, 2])
    with cn.colora_users(model, ids):
        np.testing.assert_array_equal(model(x), before)  # identity at initialization

    randomize_adapters(model, jax.random.key(2))
    with cn.colora_users(model, ids):
        mixed = model(x)
    assert float(jnp.abs(mixed - before).max()) > 1e-2  # the adapters do move the output
    for row, user in enumerate(ids.tolist()):
        with cn.colora_users(model, jnp.array([user])):
            alone = model(x[row : row + 1])
        np.testing.assert_allclose(mixed[row : row + 1], alone, atol=TOL, rtol=TOL)
        merged = cn.merge(model, user)
        assert type(merged.proj) is type(Net(layer, 0).proj)  # a plain layer of the wrapped type
        np.testing.assert_allclose(merged(x[row : row + 1]), alone, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("layer", list(LAYERS))
def test_peft_export_is_the_flattened_lora_and_imports_back(layer, tmp_path):
    """``lora_A: (r, d_in)``, ``lora_B: (d_out, r)`` over the kernel's input and output axes flattened
    in kernel order: ``y = base(x) + unflatten(flatten(x) A^T B^T)``, as PEFT's ``nn.Linear`` computes."""
    model, x, user = Net(layer, 0), _inputs(layer), 1
    base_out = model.proj(x)
    cn.apply_colora(model, users=3, rank=2, targets=["proj"], rngs=nnx.Rngs(1))
    randomize_adapters(model, jax.random.key(2))
    with cn.colora_users(model, jnp.full((B,), user)):
        adapted = model.proj(x)
    cn.export_peft(model, user, tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    a, b = tensors["base_model.model.proj.lora_A.weight"], tensors["base_model.model.proj.lora_B.weight"]
    axes = cn.layer_axes(Net(layer, 0).proj)
    assert a.shape == (2, axes.d_in) and b.shape == (axes.d_out, 2)
    n_in = len(axes.in_shape)  # every test input keeps the kernel's input axes last, in kernel order
    flat = np.asarray(x).reshape(*x.shape[: x.ndim - n_in], axes.d_in)
    reference = np.asarray(base_out) + (flat @ a.T @ b.T).reshape(base_out.shape)
    np.testing.assert_allclose(adapted, reference, atol=TOL, rtol=TOL)

    imported = cn.import_peft(Net(layer, 0), tmp_path, users=2)
    with cn.colora_users(imported, jnp.zeros((B,), jnp.int32)):
        np.testing.assert_allclose(imported.proj(x), adapted, atol=TOL, rtol=TOL)


def test_custom_module_under_jit_and_training_gradient():
    """The adapted tunix-style module runs under nnx.jit and its shared factor gets a gradient."""
    model, x = Net("tunix-q", 0), _inputs("tunix-q")
    cn.apply_colora(model, users=2, rank=2, targets=["proj"], rngs=nnx.Rngs(1))

    @nnx.jit
    def loss(model, x, ids):
        with cn.colora_users(model, ids):
            return jnp.sum(model(x) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, cn.SharedParam))(model, x, jnp.array([0, 1, 1]))
    assert float(jnp.abs(grads["proj"]["shared_u"][...]).max()) > 1e-3


class BiasedEinsum(TunixEinsum):
    """tunix's ``EinsumBias``: the contraction plus a bias, still linear in ``w``."""

    def __init__(self, *, rngs):
        super().__init__("BTD,DNH->BTNH", (D, N, H), rngs=rngs)
        self.b = nnx.Param(jax.random.normal(rngs.params(), (N, H)))

    def __call__(self, x):
        return super().__call__(x) + self.b[...][None, None]


class ScaledEinsum(TunixEinsum):
    """Declares 'BTD,DNH->BTNH' but scales the result: the adapter would not be what merge gives."""

    def __call__(self, x):
        return 0.5 * super().__call__(x)


class TransposedEinsum(TunixEinsum):
    """Declares 'BTD,DNH->BTNH' but contracts another equation with its kernel."""

    def __call__(self, x):
        return jnp.einsum("BTD,DNH->BTHN", x, self.w[...]).reshape(x.shape[0], x.shape[1], N, H)


class TorchOrientedKernel(nnx.Module):
    """A 2-D ``kernel`` stored (out, in) and applied as ``x @ kernel.T``: not ``x @ kernel``."""

    def __init__(self, *, rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (D, D)))

    def __call__(self, x):
        return x @ self.kernel[...].T


def test_a_custom_module_is_adapted_only_if_it_is_linear_in_its_kernel_as_declared():
    holder = nnx.Dict(proj=TorchOrientedKernel(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"proj: TorchOrientedKernel: its __call__ does not compute 'ca,ab->cb'"):
        cn.apply_colora(holder, users=2, rank=2, targets=["proj"], rngs=nnx.Rngs(1))
    holder = nnx.Dict(proj=BiasedEinsum(rngs=nnx.Rngs(0)))
    cn.apply_colora(holder, users=2, rank=2, targets=["proj"], rngs=nnx.Rngs(1))
    assert isinstance(holder["proj"], cn.CoLoRALinear)
    for cls in (ScaledEinsum, TransposedEinsum):
        holder = nnx.Dict(proj=cls("BTD,DNH->BTNH", (D, N, H), rngs=nnx.Rngs(0)))
        with pytest.raises(ValueError, match=rf"proj: {cls.__name__}: its __call__ does not compute 'BTD,DNH->BTNH'"):
            cn.apply_colora(holder, users=2, rank=2, targets=["proj"], rngs=nnx.Rngs(1))
        assert not cn.adapted_layers(holder)


class TwoKernels(nnx.Module):
    def __init__(self, rngs):
        self.einsum_str = "BD,DO->BO"
        self.w = nnx.Param(jax.random.normal(rngs.params(), (D, 3)))
        self.gate = nnx.Param(jax.random.normal(rngs.params(), (D, 3)))

    def __call__(self, x):
        return jnp.einsum(self.einsum_str, x, self.w[...] * self.gate[...])


def test_unadaptable_matches_and_empty_matches_are_errors():
    holder = nnx.Dict(mix=TwoKernels(nnx.Rngs(0)), proj=Net("tunix-q", 0).proj)
    with pytest.raises(ValueError, match=r"mix: TwoKernels has einsum_str .* 2 nnx.Param arrays.*colora_kernel"):
        cn.apply_colora(holder, users=2, rank=1, targets=["mix", "proj"], rngs=nnx.Rngs(1))
    assert not cn.adapted_layers(holder)  # nothing half-done: proj was not wrapped either
    with pytest.raises(ValueError, match=r"match no nnx.Linear.*Such layers in this model: .*proj"):
        cn.apply_colora(holder, users=2, rank=1, targets=["query"], rngs=nnx.Rngs(1))
    per_head = nnx.Dict(proj=TunixEinsum("BND,NDH->BNH", (N, D, H), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"proj: TunixEinsum 'BND,NDH->BNH'.*not pure input"):
        cn.apply_colora(per_head, users=2, rank=1, targets=["proj"], rngs=nnx.Rngs(1))
