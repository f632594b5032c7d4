"""Wrapping any NNX model: layer replacement by path, user-id routing, merging, adding users.

User-id mechanism. Every adapted layer owns a non-trainable :class:`UserIds` variable. The
context manager :func:`colora_users` writes the batch's ids into all of them, runs the body,
and restores the previous (empty) value on exit::

    with colora_users(model, user_ids):
        logits = model(tokens)          # the model's own __call__, unchanged

Because the ids live in an ``nnx.Variable`` (model state, not a Python attribute), this works
inside ``nnx.jit`` / ``nnx.grad`` / ``nnx.value_and_grad`` when the model is passed to the
transformed function as an argument (the usual NNX rule for mutating state); the context must
be entered inside the transformed function, as in :func:`colora_jax.nnx.train`.
"""

from __future__ import annotations

import contextlib
import re
import typing as tp

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from colora_jax.nnx._layers import (
    CoLoRALinear,
    LoRABankLinear,
    check_user_ids,
    deviation_penalty,
    is_linear_candidate,
)

__all__ = [
    "colora_users",
    "adapted_layers",
    "apply_colora",
    "apply_lora_bank",
    "merge",
    "add_users",
    "path_name",
    "replace_layers",
    "build_replacements",
    "declared_example_axes",
    "set_child",
    "ridge_penalty",
]

Adapted = (CoLoRALinear, LoRABankLinear)
M = tp.TypeVar("M", bound=nnx.Module)


def path_name(path: tuple[tp.Any, ...]) -> str:
    """A module path as a dotted name, e.g. ``("blocks", 0, "mlp", "up") -> "blocks.0.mlp.up"``."""
    return ".".join(str(p) for p in path)


def adapted_layers(model: nnx.Module) -> list[tuple[str, CoLoRALinear | LoRABankLinear]]:
    """All adapted layers of ``model`` as ``(dotted path, layer)``, in graph order."""
    return [(path_name(p), m) for p, m in nnx.iter_graph(model) if isinstance(m, Adapted)]


def _below(path: tuple[tp.Any, ...], tops: tp.Iterable[tuple[tp.Any, ...]]) -> bool:
    return any(len(path) > len(q) and path[: len(q)] == q for q in tops)


def _modules(model: nnx.Module) -> list[tuple[tuple[tp.Any, ...], nnx.Module]]:
    """Every sub-module of ``model`` (not the model itself) in graph order.

    Except the ones inside an adapted layer (its wrapped ``base``).
    """
    found = [(p, m) for p, m in nnx.iter_graph(model) if p and isinstance(m, nnx.Module)]
    adapted = [p for p, m in found if isinstance(m, Adapted)]
    return [(p, m) for p, m in found if not _below(p, adapted)]


def declared_example_axes(model: nnx.Module) -> dict[str, int | None]:
    """Dotted path -> the example axis its inputs have, as the nearest enclosing module declares it.

    A model states its layout with a ``colora_example_axis`` attribute (``0`` for batch-major,
    ``1`` for a model that runs time-major inside); a sub-module's own declaration overrides its
    parent's. ``None`` where nothing is declared.
    """
    found = sorted(((p, m) for p, m in nnx.iter_graph(model) if isinstance(m, nnx.Module)), key=lambda pm: len(pm[0]))
    axes: dict[str, int | None] = {}
    for p, m in found:
        own = getattr(m, "colora_example_axis", None)
        axes[path_name(p)] = own if own is not None else (axes.get(path_name(p[:-1])) if p else None)
    return axes


def _linear_paths(model: nnx.Module) -> list[tuple[tuple[tp.Any, ...], nnx.Module]]:
    """Paths of the modules that look like linear maps with a kernel, not inside an adapted layer."""
    return [(p, m) for p, m in _modules(model) if is_linear_candidate(m)]


def set_child(model: nnx.Module, path: tuple[tp.Any, ...], new: nnx.Module) -> None:
    """Put ``new`` at ``path`` inside ``model``, in place (the module graph's own edit).

    ``path`` is a tuple of attribute names and list indices, as ``nnx.iter_graph`` yields it,
    e.g. ``("blocks", 0, "mlp", "up")`` sets ``model.blocks[0].mlp.up = new``.
    """
    parent = model
    for p in path[:-1]:
        parent = parent[p] if isinstance(p, int) else getattr(parent, p)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)


def build_replacements(
    model: nnx.Module, targets: tp.Sequence[str] | str, build: tp.Callable[[nnx.Module, str], nnx.Module]
) -> list[tuple[tuple[tp.Any, ...], nnx.Module]]:
    """``(path, build(module, dotted_path))`` for each module matching ``targets``; ``model`` is not changed.

    Matching (PEFT's ``target_modules``): a target equal to the last path component names a
    module, a target that ``re.fullmatch``es the dotted path selects it. A selected module must
    be a linear map with a kernel (:func:`colora_jax.nnx._layers.kernel_contraction`); a regex
    passes over modules without a ``kernel`` that are not linear (containers, norms,
    activations), since a regex over a subtree covers them naturally. Modules inside a selected
    one are left to it.

    Raises:
      ValueError: if no module matches; if a target names (or a regex selects a ``kernel``
        holding) module that cannot be adapted, or one that is already adapted; if ``build``
        fails for a module. Each message names the module's path and type.
    """
    if isinstance(targets, str):
        targets = (targets,)
    selected = []  # (path, module, named by its last component)
    for p, m in _modules(model):
        name = path_name(p)
        named = name.rsplit(".", 1)[-1] in targets
        if named or any(re.fullmatch(t, name) for t in targets):
            selected.append((p, m, named))
    outer = [p for p, m, _ in selected if is_linear_candidate(m)]
    chosen = []
    for p, m, named in selected:
        if _below(p, outer):
            continue
        name = path_name(p)
        if isinstance(m, Adapted):
            if named:
                raise ValueError(f"{name} is already a {type(m).__name__}; adapt a model once (or merge it first)")
        elif is_linear_candidate(m):
            chosen.append((p, m))
        elif named or isinstance(getattr(m, "kernel", None), nnx.Variable):
            raise ValueError(
                f"target {name} is a {type(m).__name__}, which CoLoRA cannot adapt: it adapts nnx.Linear,"
                " nnx.LinearGeneral, nnx.Einsum and modules with an einsum_str or a colora_kernel() method"
                " (see colora_jax.nnx._layers); drop it from targets"
            )
    if not chosen:
        names = ", ".join(path_name(p) for p, _ in _linear_paths(model)) or "(none)"
        raise ValueError(
            f"targets {list(targets)} match no nnx.Linear, nnx.LinearGeneral, nnx.Einsum or other linear layer."
            f" Such layers in this model: {names}. Use a last"
            " path component (e.g. 'up') or a regex over the dotted path (e.g. r'blocks\\.0\\..*')"
        )
    built = []
    for p, m in chosen:
        try:
            built.append((p, build(m, path_name(p))))
        except ValueError as error:
            raise ValueError(f"{path_name(p)}: {error}") from None
    return built


def replace_layers(model: M, targets: tp.Sequence[str] | str, build: tp.Callable[[nnx.Module, str], nnx.Module]) -> M:
    """Replace, in place, each linear layer whose path matches ``targets`` by ``build(layer, dotted_path)``.

    All-or-nothing: every replacement is built (and checked) before the first is put in, so a
    failure leaves ``model`` as it was. Matching and errors as :func:`build_replacements`.
    """
    for p, new in build_replacements(model, targets, build):
        set_child(model, p, new)
    return model


def apply_colora(
    model: M,
    *,
    users: int,
    rank: int,
    targets: tp.Sequence[str] | str,
    rngs: nnx.Rngs,
    centered: bool = False,
    users_axis: str | None = None,
    dtype: tp.Any = None,
    example_axis: int | None = None,
    param_dtype: tp.Any = None,
) -> M:
    """Wrap every layer matching ``targets`` in a :class:`CoLoRALinear` (in place, all or nothing).

    Adaptable layers: ``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Einsum`` and any module that
    computes with a kernel parameter through one einsum (an ``einsum_str`` attribute, as tunix's
    ``Einsum``, or a ``colora_kernel()`` method; see :mod:`colora_jax.nnx._layers`). Every
    layer is built and checked before the first is put in, so an error leaves ``model`` as it
    was. The output of the wrapped model equals the original's for every user at initialization:

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from colora_jax import nnx as cn
    >>> class Net(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.up = nnx.Linear(4, 8, rngs=rngs)
    ...         self.down = nnx.Linear(8, 2, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.down(jnp.tanh(self.up(x)))
    >>> net = Net(nnx.Rngs(0))
    >>> x = jnp.ones((3, 4))
    >>> before = net(x)
    >>> net = cn.apply_colora(net, users=5, rank=2, targets=["up"], rngs=nnx.Rngs(1))
    >>> [name for name, _ in cn.adapted_layers(net)]
    ['up']
    >>> net.up.personal.shape               # one r x r matrix per user
    (5, 2, 2)
    >>> with cn.colora_users(net, jnp.array([0, 3, 4])):   # one user id per example
    ...     after = net(x)
    >>> bool(jnp.array_equal(before, after))
    True

    Args:
      model: any NNX module; its ``__call__`` is not touched (route ids with :func:`colora_users`).
      users: size of each layer's personal bank.
      rank: shared rank ``r``.
      targets: names of the last path component, or regexes over the dotted path.
      rngs: keys for the random ``V`` of each layer.
      centered: personal parts centred on a shared one, ``S_i = S_bar + Delta_i`` (train with a
        ridge on the deviations: ``TrainConfig(ridge=...)``).
      users_axis: mesh axis to split the personal banks over (``None``: replicated).
      dtype: compute dtype of the adapters (``None``: each wrapped layer's own ``dtype``).
      example_axis: the axis of each wrapped layer's input that indexes examples, e.g. ``1`` for
        layers of a model that runs time-major inside. ``None``: as the model declares it
        (a ``colora_example_axis`` attribute on the model or an enclosing module, see
        :func:`declared_example_axes`); where nothing is declared, the leading axis, and a call
        whose input has another free axis as long as the ids is refused as ambiguous.
      param_dtype: storage dtype of the adapter parameters (``None``: each kernel's), e.g.
        ``jnp.float32`` adapters on a bfloat16 model, so the optimizer's moments are float32 too.

    Returns:
      ``model`` (mutated), whose output equals the original's for every user at initialization.

    Raises:
      ValueError: if a target matches nothing, names a module that cannot be adapted (its path
        and type are in the message), or a layer cannot take the rank.
    """
    declared = declared_example_axes(model)
    return replace_layers(
        model,
        targets,
        lambda lin, name: CoLoRALinear(
            lin,
            users=users,
            rank=rank,
            rngs=rngs,
            centered=centered,
            users_axis=users_axis,
            dtype=dtype,
            example_axis=declared[name] if example_axis is None else example_axis,
            param_dtype=param_dtype,
        ),
    )


def apply_lora_bank(
    model: M,
    *,
    users: int,
    rank: int,
    targets: tp.Sequence[str] | str,
    rngs: nnx.Rngs,
    users_axis: str | None = None,
    dtype: tp.Any = None,
    example_axis: int | None = None,
    param_dtype: tp.Any = None,
) -> M:
    """Wrap every matching layer in a :class:`LoRABankLinear` (one LoRA per user, the ``local`` baseline).

    Layers, targets, arguments, atomicity and errors as :func:`apply_colora`.
    """
    declared = declared_example_axes(model)
    return replace_layers(
        model,
        targets,
        lambda lin, name: LoRABankLinear(
            lin,
            users=users,
            rank=rank,
            rngs=rngs,
            users_axis=users_axis,
            dtype=dtype,
            example_axis=declared[name] if example_axis is None else example_axis,
            param_dtype=param_dtype,
        ),
    )


@contextlib.contextmanager
def colora_users(model: nnx.Module, user_ids: Int[Array, " batch"], *, checked: bool = True) -> tp.Iterator[nnx.Module]:
    """Route ``user_ids`` (one per example) to every adapted layer of ``model`` inside the block.

    Ids are checked once against the smallest bank: concrete ids raise ``ValueError`` now;
    traced ids (under ``jit``) raise when the computation runs (:func:`check_user_ids`), unless
    ``checked=False``, the hot serving path's opt-out, where an out-of-range id yields NaN
    outputs for its example.
    """
    layers = [m for _, m in adapted_layers(model)]
    if not layers:
        raise ValueError("model has no CoLoRA / LoRA-bank layers: call apply_colora first")
    if not isinstance(user_ids, jax.core.Tracer):
        user_ids = jnp.asarray(user_ids)
    check_user_ids(user_ids, min(m.users for m in layers), checked=checked)
    previous = [m.user_ids[...] for m in layers]
    for m in layers:
        m.user_ids.set_value(user_ids)
    try:
        yield model
    finally:
        for m, old in zip(layers, previous):
            m.user_ids.set_value(old)


def merge(model: M, user: int) -> M:
    """A plain copy of ``model`` for one user, its adapter folded into the kernels.

    Each adapted layer becomes its wrapped layer whose kernel is ``K + V S_user^T U^T`` (CoLoRA) or
    ``K + A_user B_user^T`` (LoRA bank), i.e. ``W_0 + U S_user V^T`` in the math's orientation.
    ``model`` itself is not modified.

    Raises:
      ValueError: if ``model`` has no adapted layer, or ``user`` is out of range.
    """
    layers = adapted_layers(model)
    if not layers:
        raise ValueError("merge needs a model with adapted layers (apply_colora, apply_lora_bank or import_peft)")
    check_user_ids(jnp.asarray([user]), min(m.users for _, m in layers))
    merged = nnx.clone(model)
    for path, layer in [(p, m) for p, m in nnx.iter_graph(merged) if isinstance(m, Adapted)]:
        plain = nnx.clone(layer.base)
        kernel = getattr(plain, layer.kernel_name)
        kernel[...] = kernel[...] + layer.delta_kernel(user).astype(kernel[...].dtype)
        set_child(merged, path, plain)
    return merged


def add_users(model: M, count: int) -> tuple[M, Int[Array, " count"]]:
    """Grow every personal bank by ``count`` users, in place; returns the model and the new ids.

    New CoLoRA users start at ``S = I`` (the shared adapter as is; centred layers: ``Delta = 0``,
    at the centre); new LoRA-bank users start at ``A`` of user 0 and ``B = 0`` (the base). Fit
    them with ``wrt=PersonalParam`` and only their data: the shared factors and the other users'
    rows receive zero gradient.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    layers = [m for _, m in adapted_layers(model)]
    if not layers:
        raise ValueError("model has no adapted layers: call apply_colora first")
    old = layers[0].users
    for m in layers:
        if isinstance(m, CoLoRALinear):
            bank = m.personal[...]
            start = jnp.zeros((m.rank, m.rank), bank.dtype) if m.centered else jnp.eye(m.rank, dtype=bank.dtype)
            m.personal.set_value(jnp.concatenate([bank, jnp.broadcast_to(start, (count, m.rank, m.rank))]))
        else:
            a, b = m.lora_a[...], m.lora_b[...]
            m.lora_a.set_value(jnp.concatenate([a, jnp.broadcast_to(a[:1], (count, *a.shape[1:]))]))
            m.lora_b.set_value(jnp.concatenate([b, jnp.zeros((count, *b.shape[1:]), b.dtype)]))
        m.users = m.users + count
    return model, jnp.arange(old, old + count)


def ridge_penalty(model: nnx.Module) -> Float[Array, ""]:
    """The centred ridge summed over the centred CoLoRA layers of ``model``.

    ``sum_layers (1/k) sum_i ||U Delta_i V^T||_F^2`` (see :func:`deviation_penalty`).

    Raises:
      ValueError: if ``model`` has no centred layer.
    """
    layers = [m for _, m in adapted_layers(model) if isinstance(m, CoLoRALinear) and m.centered]
    if not layers:
        raise ValueError("ridge_penalty needs centred CoLoRA layers: apply_colora(..., centered=True)")
    return sum(deviation_penalty(m) for m in layers)
