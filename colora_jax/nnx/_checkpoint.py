"""Orbax checkpoints of the adapter, with the shared and the personal parts kept apart.

Layout: ``<directory>/shared`` holds every :class:`SharedParam` (``U``, ``V`` of each adapted
layer) and ``<directory>/personal`` every :class:`PersonalParam` (the banks), each a flat
mapping ``"blocks.0.mlp.up.shared_u" -> array``. The frozen base is not saved: it is the model
you start from. A typical life cycle::

    save_adapter(path, model)                       # after multi-user training
    restore_adapter(path, fresh_model)              # same base, same apply_colora call
    model, new = add_users(fresh_model, 1)          # a late user: S = I on the frozen U, V
    train(model, new_user_data, ..., scheme="personal")
"""

from __future__ import annotations

import os
import typing as tp

import jax
import orbax.checkpoint as ocp
from flax import nnx

from colora_jax.nnx._layers import PersonalParam, SharedParam
from colora_jax.nnx._wrap import path_name

__all__ = ["save_adapter", "restore_adapter"]

PARTS: dict[str, type[nnx.Variable]] = {"shared": SharedParam, "personal": PersonalParam}


def _variables(model: nnx.Module, kind: type[nnx.Variable]) -> dict[str, nnx.Variable]:
    return {path_name(p): v for p, v in nnx.iter_graph(model) if isinstance(v, kind)}


def save_adapter(
    directory: str | os.PathLike, model: nnx.Module, parts: tp.Sequence[str] = ("shared", "personal")
) -> None:
    """Save the chosen parts (``"shared"``, ``"personal"``) of ``model``'s adapter under ``directory``."""
    directory = os.path.abspath(directory)
    with ocp.StandardCheckpointer() as ckpt:
        for part in parts:
            tree = {k: v[...] for k, v in _variables(model, PARTS[part]).items()}
            if not tree:
                raise ValueError(f"model has no {PARTS[part].__name__} variables to save")
            ckpt.save(os.path.join(directory, part), tree, force=True)
        ckpt.wait_until_finished()


def restore_adapter(
    directory: str | os.PathLike, model: nnx.Module, parts: tp.Sequence[str] = ("shared", "personal")
) -> nnx.Module:
    """Load the chosen parts into ``model`` (in place).

    Its adapted layers must have the same paths and shapes as the saved ones (same base, same
    ``apply_colora`` call).
    """
    directory = os.path.abspath(directory)
    with ocp.StandardCheckpointer() as ckpt:
        for part in parts:
            variables = _variables(model, PARTS[part])
            target = {k: jax.ShapeDtypeStruct(v[...].shape, v[...].dtype) for k, v in variables.items()}
            restored = ckpt.restore(os.path.join(directory, part), target)
            for k, v in variables.items():
                v.set_value(restored[k])
    return model
