"""CoLoRA and per-user LoRA layers that wrap an existing flax linear layer.

Wrapped layer types: ``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Einsum`` (attention
projections with head axes) and any module that computes with a kernel parameter through one
einsum: a module with an ``einsum_str`` attribute and one array ``nnx.Param`` (as tunix and
Gemma write their ``Einsum``), a module with a 2-D ``kernel`` parameter used as ``x @ kernel``,
or one that states its contraction with a ``colora_kernel()`` method returning ``(kernel
attribute name, equation)``, e.g. ``("w", "BTD,DNH->BTNH")``. Each
is a linear map from the kernel's *input* axes (contracted with the example) to its *output*
axes (kept in the result); a kernel axis that is both (a batch-like, per-head weight) cannot
carry a low-rank update and is rejected. The contract such a module keeps is that its output
is ``contraction(x, kernel)`` plus terms that do not depend on the kernel: only then do the
adapted forward, :func:`colora_jax.nnx.merge` and the PEFT export agree. It is checked when
the module is wrapped (see :func:`check_contraction`), for every module but flax's own three
classes used as they are.

Convention. Write ``d_in`` for the product of the input axes and ``d_out`` for the product of
the output axes. A flax kernel computes ``y = x K + b`` (``K`` of shape ``(d_in, d_out)`` once
flattened); in the math's column-vector notation that layer is ``W_0 = K^T`` (d_out x d_in).
CoLoRA adapts it, for user ``i``, to

    W_i = W_0 + U S_i V^T        U: (d_out, r) shared, V: (d_in, r) shared, S_i: (r, r) personal

which in flax's row-vector form reads

    y = x K + b + ((x V) S_i^T) U^T,        i.e. the kernel of user i is K + V S_i^T U^T.

``V`` is stored with the kernel's input axes, ``(*in_shape, r)``, and ``U`` with its output
axes, ``(*out_shape, r)``, so both can be split over a mesh exactly like the kernel they adapt
(see :func:`adapter_sharding`). The shared projection ``x V`` and the output projection
``U^T`` are one contraction for the whole batch; only the ``r x r`` product with ``S_i``
depends on the example's user.

Centred personal parts (``centered=True``): ``S_i = S_bar + Delta_i`` with a shared centre
``S_bar`` (a :class:`SharedParam`, ``I`` at initialization) and personal deviations
``Delta_i`` (the bank, ``0`` at initialization). :func:`deviation_penalty` is the ridge
``(1/k) sum_i ||U Delta_i V^T||_F^2`` that pulls every user towards the centre: a strength
of 0 gives CoLoRA, an infinite one a shared rank-r LoRA ``U S_bar V^T``.

Routing. The user id of an example selects its matrices along the layer input's *example
axis*: ``example_axis`` of the layer (``apply_colora(..., example_axis=1)`` for a layer that
runs time-major inside its model). Left at ``None`` it is the leading axis, and a call whose
input has another free (not contracted) axis of the same length as the ids is refused, since
the shape cannot tell a batch-major input with ``seq == batch`` from a time-major one.

User ids outside ``[0, users)``: concrete ids raise ``ValueError``; traced ids (under ``jit``)
raise at run time through a host callback (:func:`check_user_ids`) unless the call opts out
with ``checked=False`` (the hot serving path); the bank lookup then fills the example's rows
with NaN, never another user's adapter.
"""

from __future__ import annotations

import math
import string
import typing as tp

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

__all__ = [
    "SharedParam",
    "PersonalParam",
    "UserIds",
    "LayerAxes",
    "layer_axes",
    "CoLoRALinear",
    "LoRABankLinear",
    "check_user_ids",
    "adapter_sharding",
    "deviation_penalty",
    "ADAPTABLE",
    "Contraction",
    "check_contraction",
    "is_linear_candidate",
    "kernel_contraction",
]

ADAPTABLE = (nnx.Linear, nnx.LinearGeneral, nnx.Einsum)


class SharedParam(nnx.Param):
    """Marker for the shared adapter factors ``U``, ``V`` (and the centre ``S_bar``): trained on every user's data."""


class PersonalParam(nnx.Param):
    """Marker for per-user parameters: the CoLoRA bank (``S_i`` or ``Delta_i``) and the per-user LoRA bank ``A, B``."""


class UserIds(nnx.Variable):
    """Non-trainable slot holding the user id of each example for the duration of one call.

    It is set by :func:`colora_jax.nnx.colora_users` and is empty (shape ``(0,)``) otherwise.
    """


def _empty_ids() -> Int[Array, "0"]:
    return jnp.zeros((0,), jnp.int32)


# ----------------------------------------------------------------------------- user ids


def _raise_out_of_range(bad: np.ndarray, lowest: np.ndarray, highest: np.ndarray, users: int) -> None:
    if bool(bad):
        raise ValueError(
            f"user id(s) out of range under jit (smallest {int(lowest)}, largest {int(highest)}): this model has a"
            f" bank of {users} users, so ids must lie in [0, {users - 1}]; add users with"
            " colora_jax.nnx.add_users or build the model with a larger `users`"
        )


def check_user_ids(user_ids: Int[Array, "*batch"], users: int, *, checked: bool = True) -> None:
    """Fail loudly on user ids outside ``[0, users)``.

    Concrete ids (eager calls) are checked now: ``ValueError`` with the valid range. Traced ids
    (under ``jit``, ``grad``, ``vmap``) are checked when the computation runs, through a
    ``jax.debug.callback`` that raises the same ``ValueError`` on the host (it surfaces as a
    ``JaxRuntimeError`` quoting it). ``checked=False`` skips the run-time check (one host
    callback per call: the hot serving path may not want it); an out-of-range example then gets
    NaN outputs (see :func:`_gather_rows`).

    Args:
      user_ids: integer ids, any shape.
      users: the bank size ``k``.
      checked: whether traced ids are checked at run time.
    """
    if isinstance(user_ids, jax.core.Tracer):
        if not jnp.issubdtype(user_ids.dtype, jnp.integer):
            raise ValueError(f"user ids must be integers, got dtype {user_ids.dtype}")
        if checked and user_ids.size:
            bad = jnp.any((user_ids < 0) | (user_ids >= users))
            jax.debug.callback(_raise_out_of_range, bad, jnp.min(user_ids), jnp.max(user_ids), users)
        return
    ids = np.asarray(user_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"user ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= users):
        bad = ids[(ids < 0) | (ids >= users)]
        raise ValueError(
            f"user id(s) {sorted(set(bad.tolist()))[:8]} out of range: this model has a bank of"
            f" {users} users, so ids must lie in [0, {users - 1}]; add users with"
            " colora_jax.nnx.add_users or build the model with a larger `users`"
        )


def _gather_rows(bank: Float[Array, "users ..."], user_ids: Int[Array, " batch"]) -> Float[Array, "batch ..."]:
    """``bank[user_ids]``, with NaN rows for ids outside ``[0, users)`` instead of clamping."""
    users = bank.shape[0]
    ids = jnp.where(user_ids < 0, users, user_ids)  # negative ids would otherwise wrap around
    return jnp.take(bank, ids, axis=0, mode="fill", fill_value=jnp.nan)


def _resolve_ids(layer: "CoLoRALinear | LoRABankLinear", user_ids: Array | None, checked: bool) -> Array:
    """The ids of this call: given ones are checked here; routed ones were checked by ``colora_users``."""
    if user_ids is None:
        user_ids = layer.user_ids[...]
        if user_ids.shape == (0,):
            raise ValueError(
                f"{type(layer).__name__} needs one user id per example: call it as"
                " layer(x, user_ids), or call the model inside `with colora_users(model, user_ids):`"
            )
    else:
        user_ids = jnp.asarray(user_ids) if not isinstance(user_ids, jax.core.Tracer) else user_ids
        check_user_ids(user_ids, layer.users, checked=checked)
    if user_ids.ndim != 1:
        raise ValueError(f"expected one user id per example (a 1-D array), got user ids of shape {user_ids.shape}")
    return user_ids


def _example_axis(layer: "CoLoRALinear | LoRABankLinear", x: Array, letters: tuple[str, str, str], n_ids: int) -> int:
    """The axis of ``x`` whose entries are the examples the ids belong to (see the module docstring).

    Only a free axis (kept in the output, not contracted with the kernel) can hold examples. With
    ``example_axis=None`` it is the leading axis, and an input with another free axis of length
    ``n_ids`` is refused as ambiguous (for a single example every axis routes the same way).
    """
    lhs, kernel, out = letters
    free = [p for p, c in enumerate(lhs) if c in out and c not in kernel]
    same = [p for p in free if x.shape[p] == n_ids]
    what = f"{type(layer).__name__} over {type(layer.base).__name__}"
    if layer.example_axis is not None:
        axis = layer.example_axis % x.ndim
        if axis not in free:
            raise ValueError(
                f"{what}: example_axis={layer.example_axis} of an input of shape {x.shape} is contracted with the"
                f" kernel or dropped from the output, so it cannot index examples; free axes: {free}"
            )
        if x.shape[axis] != n_ids:
            raise ValueError(
                f"{what}: expected one user id per example, i.e. shape ({x.shape[axis]},) for inputs of shape"
                f" {x.shape} (example axis {axis}); got user ids of shape ({n_ids},)"
            )
        return axis
    if 0 not in free:
        raise ValueError(
            f"{what}: the leading input axis must be the example axis (kept in the output and not"
            " contracted with the kernel), since each example's user selects its adapter; wrap the layer with"
            f" example_axis= one of the free axes {free}"
        )
    if x.shape[0] != n_ids:
        hint = (
            f"; axis {same[0]} has length {n_ids}: if this layer sees its examples along that axis (a time-major"
            f" model), wrap it with example_axis={same[0]}"
            if same
            else ""
        )
        raise ValueError(
            f"{what}: expected one user id per example, i.e. shape ({x.shape[0]},) for inputs of shape {x.shape}"
            f" (the leading axis is the example axis); got user ids of shape ({n_ids},){hint}"
        )
    if len(same) > 1 and n_ids > 1:
        raise ValueError(
            f"{what}: the input of shape {x.shape} has free axes {same} of length {n_ids}, the number of user"
            " ids, so the shape cannot tell which one holds the examples (a batch-major input with"
            " seq == batch looks like a time-major one). Say it when wrapping: apply_colora(...,"
            " example_axis=0) for examples along the leading axis, or the axis they run along"
        )
    return 0


# ----------------------------------------------------------------------------- layer geometry


class LayerAxes(tp.NamedTuple):
    """Which kernel axes of a wrapped layer are inputs (contracted) and which are outputs."""

    in_dims: tuple[int, ...]  # kernel axes contracted with the example, in kernel order
    out_dims: tuple[int, ...]  # kernel axes that appear in the output, in kernel order
    kernel_shape: tuple[int, ...]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.kernel_shape[a] for a in self.in_dims)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.kernel_shape[a] for a in self.out_dims)

    @property
    def d_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def d_out(self) -> int:
        return math.prod(self.out_shape)


def _parse_einsum(spec: str, owner: str) -> tuple[str, str, str]:
    spec = spec.replace(" ", "")
    if "..." in spec or "->" not in spec or spec.count(",") != 1:
        raise ValueError(
            f"CoLoRA adapts a {owner} with an explicit two-operand equation such as 'BTD,DNH->BTNH';"
            f" got {spec!r} (write the ellipsis out as letters)"
        )
    operands, out = spec.split("->")
    lhs, kernel = operands.split(",")
    return lhs, kernel, out


class Contraction(tp.NamedTuple):
    """How a module computes with its kernel: ``y = einsum(equation, x, kernel) + (terms without it)``.

    ``equation`` is ``None`` for ``nnx.Linear`` and ``nnx.LinearGeneral``, whose equation
    follows the input's rank (the last axis, or the axes ``axis``, contract with the kernel).
    """

    kernel: str  # attribute name of the kernel nnx.Param
    equation: str | None
    verify: bool  # whether the module's __call__ must be checked against the contraction


def _array_params(module: nnx.Module) -> dict[str, nnx.Param]:
    return {
        k: v
        for k, v in vars(module).items()
        if isinstance(v, nnx.Param) and hasattr(v.get_value(), "ndim") and v.get_value().ndim >= 2
    }


def is_linear_candidate(module: nnx.Module) -> bool:
    """Whether ``module`` claims to be a linear map with a kernel.

    A flax linear class, a ``colora_kernel()`` method, an ``einsum_str`` attribute, or a ``kernel``
    parameter.
    """
    return (
        isinstance(module, ADAPTABLE)
        or callable(getattr(type(module), "colora_kernel", None))
        or isinstance(getattr(module, "einsum_str", None), str)
        or isinstance(getattr(module, "kernel", None), nnx.Param)
    )


def kernel_contraction(module: nnx.Module) -> Contraction:
    """The contraction ``module`` computes with its kernel, as declared or as its type implies.

    In order: a ``colora_kernel()`` method returning ``(kernel attribute, equation)``; an
    ``nnx.Linear``, ``nnx.LinearGeneral`` or ``nnx.Einsum`` (a subclass that overrides
    ``__call__`` is marked for verification); a module with a string ``einsum_str`` and one
    array ``nnx.Param`` of the equation's kernel rank (tunix's ``Einsum``); a module with a
    2-D ``kernel`` ``nnx.Param``, taken as ``x @ kernel`` over the last axis of ``x`` as
    ``nnx.Linear`` computes. All but flax's own classes are marked for verification
    (:func:`check_contraction`).

    Raises:
      ValueError: for any other module, or a declaration that names no ``nnx.Param``.
    """
    kind = type(module).__name__
    declare = getattr(type(module), "colora_kernel", None)
    if callable(declare):
        declared = module.colora_kernel()
        if not (isinstance(declared, tuple) and len(declared) == 2 and all(isinstance(d, str) for d in declared)):
            raise ValueError(
                f"{kind}.colora_kernel() must return (kernel attribute name, einsum equation), got {declared!r}"
            )
        name, equation = declared
        if not isinstance(getattr(module, name, None), nnx.Param):
            raise ValueError(f"{kind}.colora_kernel() names {name!r}, which is not an nnx.Param of the module")
        return Contraction(name, equation, True)
    for flax_type in ADAPTABLE:
        if isinstance(module, flax_type):
            equation = module.einsum_str if flax_type is nnx.Einsum else None
            return Contraction("kernel", equation, type(module).__call__ is not flax_type.__call__)
    equation = getattr(module, "einsum_str", None)
    if isinstance(equation, str):
        rank = len(_parse_einsum(equation, kind)[1])
        params = {k: v for k, v in _array_params(module).items() if v.get_value().ndim == rank}
        if len(params) != 1:
            raise ValueError(
                f"{kind} has einsum_str {equation!r} but {len(params)} nnx.Param arrays of the kernel's rank {rank}"
                f" ({sorted(params)}): say which one is the kernel with a colora_kernel() method returning"
                " (attribute name, equation)"
            )
        return Contraction(next(iter(params)), equation, True)
    kernel = getattr(module, "kernel", None)
    if isinstance(kernel, nnx.Param) and getattr(kernel.get_value(), "ndim", 0) == 2:
        return Contraction("kernel", None, True)  # a plain `x @ kernel`, as nnx.Linear: verified
    raise ValueError(
        f"{kind} is not a linear map CoLoRA can adapt: it adapts nnx.Linear, nnx.LinearGeneral, nnx.Einsum, a"
        " module with an einsum_str and one kernel nnx.Param, a module with a 2-D `kernel` used as x @ kernel,"
        " or a module whose colora_kernel() method returns (kernel attribute name, einsum equation)"
    )


def layer_axes(base: nnx.Module) -> LayerAxes:
    """The input and output kernel axes of a linear module (see :func:`kernel_contraction`).

    Raises:
      ValueError: for a module that is not a linear map with a kernel, a ``LinearGeneral`` with
        ``batch_axis``, or an einsum whose kernel has an axis that is neither a pure input nor a
        pure output.
    """
    contraction = kernel_contraction(base)
    kind = type(base).__name__
    shape = tuple(getattr(base, contraction.kernel)[...].shape)
    if contraction.equation is None and not isinstance(base, nnx.LinearGeneral):
        return LayerAxes((0,), (1,), shape)  # x K over the last axis of x (nnx.Linear, a plain `kernel`)
    if contraction.equation is None:
        if base.batch_axis:
            raise ValueError(f"CoLoRA cannot adapt a {kind} with batch_axis (a separate kernel per batch index)")
        n_in = len(base.in_features)
        return LayerAxes(tuple(range(n_in)), tuple(range(n_in, len(shape))), shape)
    lhs, kernel, out = _parse_einsum(contraction.equation, kind)
    if len(kernel) != len(shape):
        raise ValueError(
            f"{kind} {contraction.equation!r}: the kernel operand has {len(kernel)} axes but the kernel"
            f" {contraction.kernel!r} has shape {shape}"
        )
    in_dims = tuple(a for a, c in enumerate(kernel) if c in lhs and c not in out)
    out_dims = tuple(a for a, c in enumerate(kernel) if c in out and c not in lhs)
    other = [c for a, c in enumerate(kernel) if a not in in_dims + out_dims]
    if other or not in_dims or not out_dims:
        raise ValueError(
            f"{kind} {contraction.equation!r}: kernel axes {other} are not pure input (contracted with the"
            " example) or pure output axes, so the kernel is not one linear map that a low-rank update can"
            " adapt; adapt a layer without per-head (batch-like) kernel axes"
        )
    return LayerAxes(in_dims, out_dims, shape)


def _letters(x_ndim: int, base: nnx.Module, axes: LayerAxes, equation: str | None) -> tuple[str, str, str]:
    """Einsum letters ``(x, kernel, y)`` of the wrapped layer applied to an input of rank ``x_ndim``."""
    pool = iter(string.ascii_letters)
    if equation is not None:
        lhs, kernel, out = _parse_einsum(equation, type(base).__name__)
        if len(lhs) != x_ndim:
            raise ValueError(f"{type(base).__name__} {equation!r} expects inputs of rank {len(lhs)}, got rank {x_ndim}")
        return lhs, kernel, out
    kernel_letters = [next(pool) for _ in axes.kernel_shape]
    k_in = [kernel_letters[a] for a in axes.in_dims]
    k_out = [kernel_letters[a] for a in axes.out_dims]
    if isinstance(base, nnx.LinearGeneral):
        contracted = tuple(a % x_ndim for a in base.axis)
    else:
        contracted = (x_ndim - 1,)
    lhs = [next(pool) for _ in range(x_ndim)]
    for pos, letter in zip(contracted, k_in):
        lhs[pos] = letter
    kept = [c for pos, c in enumerate(lhs) if pos not in contracted]
    return "".join(lhs), "".join(kernel_letters), "".join(kept + k_out)


def _fresh(used: str, count: int) -> list[str]:
    return [c for c in string.ascii_letters if c not in used][:count]


def _probe_rank(base: nnx.Module, axes: LayerAxes, equation: str | None) -> int:
    if equation is not None:
        return len(_parse_einsum(equation, type(base).__name__)[0])
    if not isinstance(base, nnx.LinearGeneral):
        return 2
    axis = tuple(base.axis) if isinstance(base.axis, tp.Sequence) else (base.axis,)
    return max([len(axes.in_dims) + 1] + [a + 2 for a in axis if a >= 0])


def _pattern(shape: tuple[int, ...], phase: float) -> np.ndarray:
    """A fixed, full-rank, noise-like array of unit root mean square.

    Uniform on ``[-sqrt(3), sqrt(3))``, a hash of the index: no key needed.
    """
    index = np.arange(math.prod(shape), dtype=np.float64)
    return (((np.sin(index * 12.9898 + phase) * 43758.5453) % 1.0 - 0.5) * math.sqrt(12.0)).reshape(shape)


def check_contraction(base: nnx.Module) -> None:
    """Check that ``base`` computes ``einsum(equation, x, kernel)`` plus terms without the kernel.

    A copy of the module is run on a fixed input ``x`` with its kernel ``K`` and with ``K + P``
    (``P`` a fixed pattern of ``K``'s shape and scale); the difference of its outputs must equal the
    declared contraction of ``x`` with ``P``. That is the property an adapter relies on: adding
    the contraction of ``x`` with ``Delta`` to the module's output equals running the module with
    the merged kernel ``K + Delta``. flax's three linear classes used as they are skip the check,
    and so does a kernel that is being traced (wrapping under ``jit``: the declaration is trusted).

    Raises:
      ValueError: if the module's output moves differently from the contraction, or running it
        on an input of the equation's shape fails.
    """
    contraction = kernel_contraction(base)
    if not contraction.verify:
        return
    kind = type(base).__name__
    axes = layer_axes(base)
    var = getattr(base, contraction.kernel)
    kernel = var.get_value()
    if isinstance(kernel, jax.core.Tracer):
        return
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise ValueError(
            f"{kind}: the kernel {contraction.kernel!r} has dtype {kernel.dtype}; CoLoRA adapts float kernels"
        )
    lhs, kletters, out = _letters(_probe_rank(base, axes, contraction.equation), base, axes, contraction.equation)
    sizes = dict(zip(kletters, kernel.shape))
    x = jnp.asarray(_pattern(tuple(sizes.get(c, 2) for c in lhs), 0.3), jnp.float32)
    scale = float(jnp.sqrt(jnp.mean(jnp.square(kernel.astype(jnp.float32))))) or 1.0
    step = jnp.asarray(_pattern(kernel.shape, 1.1) * scale, kernel.dtype)
    probe = nnx.clone(base)  # run a copy: the module's own state (counters, caches) is not touched
    try:
        before = probe(x)
        getattr(probe, contraction.kernel).set_value(kernel + step)
        after = probe(x)
    except Exception as error:  # noqa: BLE001 - any failure of a foreign module means it cannot be checked
        raise ValueError(
            f"{kind}: could not run it on an input of shape {x.shape} (from its contraction"
            f" {contraction.equation or f'{lhs},{kletters}->{out}'!r}) to check that its output is linear in its"
            f" kernel: {type(error).__name__}: {error}"
        ) from None
    expected = jnp.einsum(f"{lhs},{kletters}->{out}", x, step.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    moved = after.astype(jnp.float32) - before.astype(jnp.float32)
    if moved.shape != expected.shape:
        raise ValueError(
            f"{kind}: its output has shape {before.shape}, but its contraction"
            f" {f'{lhs},{kletters}->{out}'!r} gives {expected.shape}"
        )
    size = float(jnp.linalg.norm(before.astype(jnp.float32)) + jnp.linalg.norm(expected)) or 1.0
    error = float(jnp.linalg.norm(moved - expected)) / size
    tolerance = max(1e-3, 20 * float(jnp.finfo(after.dtype).eps))
    if not error <= tolerance:
        raise ValueError(
            f"{kind}: its __call__ does not compute {f'{lhs},{kletters}->{out}'!r} with its"
            f" {contraction.kernel!r} kernel plus terms without the kernel (changing the kernel moved the output"
            f" {error:.2g} (relative) away from that contraction), so an adapter added to its output would"
            " disagree with merge and the PEFT export. Adapt the linear layers it calls instead, or, if it is"
            " linear in another way, give it a colora_kernel() method returning (kernel attribute, equation)"
        )


# ----------------------------------------------------------------------------- sharding


def _kernel_specs(kernel: nnx.Variable) -> tuple[tp.Any, tp.Any, dict]:
    """The kernel's sharding: logical metadata, physical spec with its mesh, and metadata to copy.

    The logical ``out_sharding`` metadata, the physical ``PartitionSpec`` (when the array is placed
    with a ``NamedSharding``) with its mesh, and the metadata to copy.
    """
    logical = kernel.get_metadata().get("out_sharding", None)
    extra = {k: v for k, v in kernel.get_metadata().items() if k in ("sharding_rules", "mesh") and v is not None}
    value = kernel.get_value()
    physical = None
    if not isinstance(value, jax.core.Tracer):
        sharding = getattr(value, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            spec = tuple(sharding.spec) + (None,) * (value.ndim - len(sharding.spec))
            physical = (spec, sharding.mesh)
    return logical, physical, extra


def adapter_sharding(kernel_spec: tp.Sequence[tp.Any] | None, axes: LayerAxes) -> tuple[tuple, tuple] | None:
    """Specs of ``U`` and ``V`` that follow a kernel's.

    ``V`` takes the input axes' entries and ``U`` the output axes', each with a replicated rank
    axis.

    >>> axes = LayerAxes(in_dims=(0,), out_dims=(1,), kernel_shape=(8, 16))
    >>> adapter_sharding((None, "model"), axes)   # a column-parallel kernel: U split like K's columns
    (('model', None), (None, None))
    """
    if kernel_spec is None:
        return None
    spec = tuple(kernel_spec) + (None,) * (len(axes.kernel_shape) - len(kernel_spec))
    return tuple(spec[a] for a in axes.out_dims) + (None,), tuple(spec[a] for a in axes.in_dims) + (None,)


def _param(kind: type[nnx.Variable], value: Array, logical: tuple | None, physical: tuple | None, extra: dict):
    """A variable holding ``value`` with ``out_sharding`` metadata ``logical`` (if any).

    Placed on the mesh with ``physical = (spec, mesh)`` (if given).
    """
    if physical is not None:
        spec, mesh = physical
        value = jax.device_put(value, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))
    metadata = dict(extra)
    if logical is not None:
        metadata["out_sharding"] = tuple(logical)
    return kind(value, eager_sharding=False, **metadata)


def _bank_specs(users_axis: str | None, tail: tuple, logical: tuple | None, physical: tuple | None):
    """Prefix a users axis (split over mesh axis ``users_axis``, or replicated) to a per-user spec."""
    log = None if logical is None and users_axis is None else (users_axis, *(tail if logical is None else logical))
    phys = None if physical is None else ((users_axis, *physical[0]), physical[1])
    return log, phys


# ----------------------------------------------------------------------------- layers


def _check_rank(axes: LayerAxes, rank: int, name: str) -> None:
    if rank < 1 or rank > min(axes.d_in, axes.d_out):
        raise ValueError(
            f"rank {rank} is not in [1, min(d_in, d_out)] = [1, {min(axes.d_in, axes.d_out)}]"
            f" for a {name}({axes.d_in} -> {axes.d_out}): choose a smaller rank"
        )


def _compute_dtype(base: nnx.Module, dtype: tp.Any) -> tp.Any:
    return dtype if dtype is not None else getattr(base, "dtype", None)


class CoLoRALinear(nnx.Module):
    """A frozen linear layer plus a shared low-rank adapter and a bank of personal ``r x r``.

    For an example of user ``i`` the layer computes

        y = x K + b + ((x V) S_i^T) U^T

    (``K, b`` the wrapped kernel and bias, contractions over the kernel's input axes). ``U``
    starts at zero, ``V`` random and every ``S_i`` at the identity, so the output equals the
    base's at initialization while the gradient in ``U`` is non-zero (no saddle at the start,
    as LoRA's ``B = 0``).

    The wrapped ``base`` keeps its ``nnx.Param`` variables; it is frozen in the sense that
    training targets only :class:`SharedParam` and/or :class:`PersonalParam`
    (``nnx.Optimizer(model, tx, wrt=SharedParam)``).

    Sharding: if the kernel carries ``out_sharding`` metadata (flax's ``nnx.with_partitioning``
    or ``kernel_metadata``), ``U`` and ``V`` get the matching specs (:func:`adapter_sharding`)
    and, when the kernel array is already placed on a mesh, are placed the same way. The bank
    is replicated (``users_axis=None``) or split over users along mesh axis ``users_axis``.

    Args:
      base: a linear module (``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Einsum`` or one that
        :func:`kernel_contraction` accepts, checked by :func:`check_contraction`); its kernel and
        bias are reused, not copied.
      users: size ``k`` of the personal bank.
      rank: ``r``.
      rngs: source of the key for ``V``'s initialization (unused when ``shared_factors`` is given).
      shared_factors: optional initial ``(U, V)`` of shapes ``(*out_shape, r)`` and
        ``(*in_shape, r)`` (for ``nnx.Linear``: ``(d_out, r)``, ``(d_in, r)``), e.g. an imported
        LoRA; the bank still starts at the identity.
      dtype: compute dtype of the adapter path (``None``: the wrapped layer's ``dtype``; if that
        is ``None`` too, promote inputs and parameters).
      param_dtype: storage dtype of the adapter's parameters (``None``: the kernel's), e.g.
        ``jnp.float32`` adapters (and so float32 optimizer moments) on a bfloat16 model.
      centered: ``S_i = S_bar + Delta_i`` with a shared centre (see the module docstring).
      users_axis: mesh axis the bank is split over (``None``: replicated).
      example_axis: the input axis that indexes examples (``None``: the leading one, and an
        input whose other free axes have the ids' length is refused as ambiguous).
    """

    def __init__(
        self,
        base: nnx.Module,
        *,
        users: int,
        rank: int,
        rngs: nnx.Rngs | None = None,
        shared_factors: tuple[Array, Array] | None = None,
        dtype: tp.Any = None,
        centered: bool = False,
        users_axis: str | None = None,
        example_axis: int | None = None,
        param_dtype: tp.Any = None,
    ):
        contraction = kernel_contraction(base)
        axes = layer_axes(base)
        _check_rank(axes, rank, type(base).__name__)
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users}")
        check_contraction(base)
        pdtype = getattr(base, contraction.kernel)[...].dtype if param_dtype is None else jnp.dtype(param_dtype)
        self.base = base
        self.axes = axes
        self.kernel_name = contraction.kernel
        self.equation = contraction.equation
        self.example_axis = example_axis
        self.users = users
        self.rank = rank
        self.dtype = _compute_dtype(base, dtype)
        self.centered = centered
        self.users_axis = users_axis
        u_shape, v_shape = (*axes.out_shape, rank), (*axes.in_shape, rank)
        if shared_factors is None:
            if rngs is None:
                raise ValueError("CoLoRALinear needs rngs (for a random V) or explicit shared_factors")
            u = jnp.zeros(u_shape, pdtype)
            v = jax.random.normal(rngs.params(), v_shape, pdtype) / jnp.sqrt(jnp.asarray(axes.d_in, pdtype))
        else:
            u, v = (jnp.asarray(f, pdtype) for f in shared_factors)
            if u.shape != u_shape or v.shape != v_shape:
                raise ValueError(
                    f"shared_factors must have shapes U {u_shape} and V {v_shape}, got {u.shape} and {v.shape}"
                )
        logical, physical, extra = _kernel_specs(getattr(base, self.kernel_name))
        log_uv = adapter_sharding(logical, axes) or (None, None)
        phys_uv = adapter_sharding(None if physical is None else physical[0], axes)
        phys_u = None if phys_uv is None else (phys_uv[0], physical[1])
        phys_v = None if phys_uv is None else (phys_uv[1], physical[1])
        self.shared_u = _param(SharedParam, u, log_uv[0], phys_u, extra)
        self.shared_v = _param(SharedParam, v, log_uv[1], phys_v, extra)
        mesh_only = None if physical is None else ((None, None), physical[1])
        eye = jnp.eye(rank, dtype=pdtype)
        log_s, phys_s = _bank_specs(users_axis, (None, None), None if logical is None else (None, None), mesh_only)
        if centered:
            self.center = _param(SharedParam, eye, None if logical is None else (None, None), mesh_only, extra)
            bank = jnp.zeros((users, rank, rank), pdtype)
        else:
            bank = jnp.broadcast_to(eye, (users, rank, rank))
        self.personal = _param(PersonalParam, bank, log_s, phys_s, extra)
        self.user_ids = UserIds(_empty_ids())

    def personal_matrices(self) -> Float[Array, "users r r"]:
        """Every user's ``S_i`` (``S_bar + Delta_i`` when centred)."""
        bank = self.personal[...]
        return bank + self.center[...][None] if self.centered else bank

    def delta_kernel(self, user: int | Int[Array, ""]) -> Array:
        """User ``user``'s kernel update ``V S_user^T U^T`` in the wrapped kernel's own shape."""
        s = self.personal[...][user]
        if self.centered:
            s = s + self.center[...]
        v = self.shared_v[...].reshape(self.axes.d_in, self.rank)
        u = self.shared_u[...].reshape(self.axes.d_out, self.rank)
        flat = ((u @ s) @ v.T).T.reshape(*self.axes.in_shape, *self.axes.out_shape)  # as PEFT's B A, B = U S
        order = self.axes.in_dims + self.axes.out_dims  # kernel axis held by each axis of `flat`
        return jnp.transpose(flat, np.argsort(order))

    def __call__(self, x: Array, user_ids: Int[Array, " batch"] | None = None, *, checked: bool = True) -> Array:
        """The adapted layer: ``base(x) + ((x V) S_i^T) U^T`` per example (leading axis of ``x``).

        Args:
          x: inputs, as the wrapped layer takes them; the leading axis indexes examples.
          user_ids: one id per example, or ``None`` to use the ids set by ``colora_users``.
          checked: check given ids at run time under ``jit`` (see :func:`check_user_ids`).
        """
        ids = _resolve_ids(self, user_ids, checked)
        base_out = self.base(x)
        lhs, kernel, out = _letters(x.ndim, self.base, self.axes, self.equation)
        b = lhs[_example_axis(self, x, (lhs, kernel, out), ids.shape[0])]
        v_in = "".join(kernel[a] for a in self.axes.in_dims)
        u_out = "".join(kernel[a] for a in self.axes.out_dims)
        rest = "".join(c for c in lhs if c not in v_in)
        z, w = _fresh(lhs + kernel + out, 2)
        xc, v, s, u = nnx.nn.dtypes.promote_dtype(
            (x, self.shared_v[...], self.personal_matrices(), self.shared_u[...]), dtype=self.dtype
        )
        h = jnp.einsum(f"{lhs},{v_in}{z}->{rest}{z}", xc, v)  # x V: one contraction for the whole batch
        s_b = _gather_rows(s, ids)  # (batch, r, r): the only per-user quantity
        h = jnp.einsum(f"{rest}{z},{b}{w}{z}->{rest}{w}", h, s_b)  # h S_i^T
        delta = jnp.einsum(f"{rest}{w},{u_out}{w}->{out}", h, u)
        return base_out + delta.astype(base_out.dtype)


class LoRABankLinear(nnx.Module):
    """A frozen linear layer plus one independent LoRA per user (the ``local`` baseline).

    For an example of user ``i``: ``y = x K + b + (x A_i) B_i^T`` with ``A_i: (*in_shape, r)``
    random and ``B_i: (*out_shape, r)`` zero at initialization; in the math's notation
    ``W_i = W_0 + B_i A_i^T`` (CoLoRA with a user's own ``U = B_i``, ``V = A_i`` and ``S = I``).
    Both banks are :class:`PersonalParam`: nothing is shared between users.

    Args:
      base: the layer to adapt (as for :class:`CoLoRALinear`).
      users: number of LoRAs in the bank.
      rank: ``r`` of every LoRA.
      rngs: source of the key for ``A``'s initialization (unused when ``initial_factors`` is given).
      initial_factors: optional ``(A, B)`` of shapes ``(*in_shape, r)``, ``(*out_shape, r)`` given
        to every user, e.g. a FedAvg-trained shared LoRA before local fine-tuning.
      dtype: compute dtype of the adapter path (``None``: the wrapped layer's).
      users_axis: mesh axis the banks are split over (``None``: replicated).
      example_axis: the input axis that indexes examples (see :class:`CoLoRALinear`).
      param_dtype: storage dtype of the banks (``None``: the kernel's; see :class:`CoLoRALinear`).
    """

    def __init__(
        self,
        base: nnx.Module,
        *,
        users: int,
        rank: int,
        rngs: nnx.Rngs | None = None,
        initial_factors: tuple[Array, Array] | None = None,
        dtype: tp.Any = None,
        users_axis: str | None = None,
        example_axis: int | None = None,
        param_dtype: tp.Any = None,
    ):
        contraction = kernel_contraction(base)
        axes = layer_axes(base)
        _check_rank(axes, rank, type(base).__name__)
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users}")
        check_contraction(base)
        pdtype = getattr(base, contraction.kernel)[...].dtype if param_dtype is None else jnp.dtype(param_dtype)
        self.base = base
        self.axes = axes
        self.kernel_name = contraction.kernel
        self.equation = contraction.equation
        self.example_axis = example_axis
        self.users = users
        self.rank = rank
        self.dtype = _compute_dtype(base, dtype)
        self.users_axis = users_axis
        a_shape, b_shape = (*axes.in_shape, rank), (*axes.out_shape, rank)
        if initial_factors is None:
            if rngs is None:
                raise ValueError("LoRABankLinear needs rngs (for a random A) or explicit initial_factors")
            a = jax.random.normal(rngs.params(), a_shape, pdtype) / jnp.sqrt(jnp.asarray(axes.d_in, pdtype))
            b = jnp.zeros(b_shape, pdtype)
        else:
            a, b = (jnp.asarray(f, pdtype) for f in initial_factors)
            if a.shape != a_shape or b.shape != b_shape:
                raise ValueError(
                    f"initial_factors must have shapes A {a_shape} and B {b_shape}, got {a.shape} and {b.shape}"
                )
        logical, physical, extra = _kernel_specs(getattr(base, self.kernel_name))
        log_ba = adapter_sharding(logical, axes) or (None, None)
        phys_ba = adapter_sharding(None if physical is None else physical[0], axes)
        mesh = None if physical is None else physical[1]
        log_a, phys_a = _bank_specs(
            users_axis, (None,) * len(a_shape), log_ba[1], None if mesh is None else (phys_ba[1], mesh)
        )
        log_b, phys_b = _bank_specs(
            users_axis, (None,) * len(b_shape), log_ba[0], None if mesh is None else (phys_ba[0], mesh)
        )
        self.lora_a = _param(PersonalParam, jnp.broadcast_to(a, (users, *a_shape)), log_a, phys_a, extra)
        self.lora_b = _param(PersonalParam, jnp.broadcast_to(b, (users, *b_shape)), log_b, phys_b, extra)
        self.user_ids = UserIds(_empty_ids())

    def delta_kernel(self, user: int | Int[Array, ""]) -> Array:
        """User ``user``'s kernel update ``A_user B_user^T`` in the wrapped kernel's own shape."""
        a = self.lora_a[...][user].reshape(self.axes.d_in, self.rank)
        b = self.lora_b[...][user].reshape(self.axes.d_out, self.rank)
        flat = (b @ a.T).T.reshape(*self.axes.in_shape, *self.axes.out_shape)
        return jnp.transpose(flat, np.argsort(self.axes.in_dims + self.axes.out_dims))

    def __call__(self, x: Array, user_ids: Int[Array, " batch"] | None = None, *, checked: bool = True) -> Array:
        """The adapted layer: ``base(x) + (x A_i) B_i^T`` per example (see :class:`CoLoRALinear`)."""
        ids = _resolve_ids(self, user_ids, checked)
        base_out = self.base(x)
        lhs, kernel, out = _letters(x.ndim, self.base, self.axes, self.equation)
        b = lhs[_example_axis(self, x, (lhs, kernel, out), ids.shape[0])]
        a_in = "".join(kernel[a] for a in self.axes.in_dims)
        b_out = "".join(kernel[a] for a in self.axes.out_dims)
        rest = "".join(c for c in lhs if c not in a_in)
        (z,) = _fresh(lhs + kernel + out, 1)
        xc, a, bb = nnx.nn.dtypes.promote_dtype((x, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        h = jnp.einsum(f"{lhs},{b}{a_in}{z}->{rest}{z}", xc, _gather_rows(a, ids))  # an A per example
        delta = jnp.einsum(f"{rest}{z},{b}{b_out}{z}->{out}", h, _gather_rows(bb, ids))
        return base_out + delta.astype(base_out.dtype)


def deviation_penalty(layer: CoLoRALinear) -> Float[Array, ""]:
    """The centred ridge of one layer: ``(1/k) sum_i ||U Delta_i V^T||_F^2``.

    Computed in ``r x r``: ``||U D V^T||_F^2 = tr(D^T (U^T U) D (V^T V))``. It is invariant under
    the gauge ``U -> U A``, ``S -> A^-1 S B^-T``, ``V -> V B`` (it measures the deviation of
    user ``i``'s weight update ``U S_i V^T`` from the centre's ``U S_bar V^T``), and equals
    ``(1/k) sum_i ||Delta_i||_F^2`` when ``U`` and ``V`` have orthonormal columns.
    """
    if not layer.centered:
        raise ValueError("deviation_penalty needs a centred layer: apply_colora(..., centered=True)")
    u = layer.shared_u[...].reshape(layer.axes.d_out, layer.rank)
    v = layer.shared_v[...].reshape(layer.axes.d_in, layer.rank)
    gu, gv = u.T @ u, v.T @ v
    d = layer.personal[...]
    return jnp.mean(jnp.einsum("kab,ac,kcd,db->k", d, gu, d, gv))
