r"""One user's CoLoRA adapter as a standard LoRA in Hugging Face PEFT's on-disk layout, and back.

PEFT's LoRA computes ``y = x W^T + s (x A^T) B^T`` with ``lora_A.weight: (r, d_in)`` and
``lora_B.weight: (d_out, r)`` (PyTorch's ``(out, in)`` orientation) and the scaling
``s = alpha / r``, or ``s = alpha / sqrt(r)`` with rsLoRA (``use_rslora``); ``r`` and ``alpha``
may differ per layer (``rank_pattern``, ``alpha_pattern``: a key ``k`` applies to a module
whose dotted name matches ``(.*\.)?(k)$``). User ``i``'s CoLoRA update is ``U S_i V^T``, so
it is exported with ``s = 1`` (``alpha = r`` for each layer) as

    lora_A = V^T,        lora_B = U S_i.

For an ``nnx.Einsum``, an ``nnx.LinearGeneral`` or a custom einsum module (tunix's ``Einsum``),
``d_in`` and ``d_out`` are the products of the kernel's input and output axes, flattened
row-major in kernel order: the PyTorch counterpart of
a query projection ``BTD,DNH->BTNH`` is ``nn.Linear(D, N * H)`` whose output is viewed as
``(N, H)``, and of an output projection over ``(N, H)`` it is ``nn.Linear(N * H, D)``.

Files: ``adapter_model.safetensors`` with tensors ``base_model.model.<dotted path>.lora_A.weight``
/ ``.lora_B.weight``, and ``adapter_config.json`` whose ``target_modules`` lists exactly the
adapted modules' dotted paths (the NNX model's, e.g. ``blocks.0.mlp.up``; a PyTorch model with
other module names needs its keys renamed accordingly).
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import typing as tp

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from colora_jax.nnx._layers import CoLoRALinear, check_user_ids, layer_axes
from colora_jax.nnx._wrap import adapted_layers, build_replacements, declared_example_axes, path_name, set_child

__all__ = ["export_peft", "import_peft", "pattern_key", "PEFT_WEIGHTS", "PEFT_CONFIG"]

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."
_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


def pattern_key(keys: tp.Iterable[str], name: str) -> str | None:
    r"""The first key of a PEFT ``rank_pattern`` / ``alpha_pattern`` that applies to module ``name``.

    PEFT's rule: ``re.match(rf"(.*\.)?({key})$", name)``; ``None`` when no key applies.
    """
    for key in keys:
        if re.match(rf"(.*\.)?({key})$", name):
            return key
    return None


def export_peft(model: nnx.Module, user: int, directory: str | os.PathLike) -> None:
    """Write user ``user``'s adapter as a PEFT LoRA (``lora_A = V^T``, ``lora_B = U S_user``, scaling 1).

    Layers of different ranks are written with PEFT's ``rank_pattern`` and ``alpha_pattern``
    (one exact key per layer whose rank differs from the most common one).

    Raises:
      ValueError: if ``model`` has no CoLoRA layer, ``user`` is out of range, or ``directory``
        is a file or cannot be created or written.
    """
    layers = [(n, m) for n, m in adapted_layers(model) if isinstance(m, CoLoRALinear)]
    if not layers:
        raise ValueError("model has no CoLoRALinear layers to export: call apply_colora first")
    check_user_ids(jnp.asarray([user]), min(m.users for _, m in layers))
    tensors = {}
    for name, m in layers:
        v = m.shared_v[...].reshape(m.axes.d_in, m.rank)
        u = m.shared_u[...].reshape(m.axes.d_out, m.rank)
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = np.asarray(v.T, np.float32)
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = np.asarray(u @ m.personal_matrices()[user], np.float32)
    rank = collections.Counter(m.rank for _, m in layers).most_common(1)[0][0]
    other = {re.escape(n): m.rank for n, m in layers if m.rank != rank}
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": other,
        "alpha_pattern": dict(other),
        "use_rslora": False,
        "lora_dropout": 0.0,
        "target_modules": [n for n, _ in layers],
        "fan_in_fan_out": False,
        "bias": "none",
        "use_dora": False,
        "inference_mode": True,
        "modules_to_save": None,
        "init_lora_weights": True,
    }
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"export_peft writes a directory, but {os.fspath(directory)!r} is a file: choose another path")
    try:
        os.makedirs(directory, exist_ok=True)
        save_file(tensors, os.path.join(directory, PEFT_WEIGHTS), metadata={"format": "pt"})
        with open(os.path.join(directory, PEFT_CONFIG), "w") as f:
            json.dump(config, f, indent=2)
    except OSError as error:
        raise ValueError(
            f"cannot write the adapter to {os.fspath(directory)!r} ({error.strerror or error}): choose a writable"
            " directory"
        ) from None


def export_peft_users(
    model: nnx.Module, directory: str | os.PathLike, users: tp.Iterable[int] | None = None
) -> list[str]:
    """Write each user's adapter as its own PEFT adapter directory, ``directory/user_<i>``.

    The layout every server that loads PEFT adapters by directory takes (one adapter per user,
    loaded by name: ``PeftModel.load_adapter(path, adapter_name)``, vLLM's LoRA modules, ...).
    Each directory is exactly what ``export_peft(model, i, directory/user_<i>)`` writes.

    Args:
      model: a model with CoLoRA layers (``apply_colora``).
      directory: the parent directory (created if needed).
      users: the user indices to write (default: every user of the bank).

    Returns:
      The written directories, in the order of ``users``.

    Raises:
      ValueError: as ``export_peft``, for every user before anything is written.
    """
    layers = [m for _, m in adapted_layers(model) if isinstance(m, CoLoRALinear)]
    if not layers:
        raise ValueError("model has no CoLoRALinear layers to export: call apply_colora first")
    bank = min(m.users for m in layers)
    chosen = list(range(bank)) if users is None else [int(u) for u in users]
    check_user_ids(jnp.asarray(chosen, jnp.int32), bank)
    out = []
    for user in chosen:
        path = os.path.join(os.fspath(directory), f"user_{user}")
        export_peft(model, user, path)
        out.append(path)
    return out


# Config fields whose non-default values change what the adapter computes and that this
# import does not implement: each is rejected with the reason.
_UNSUPPORTED: dict[str, tuple[tp.Callable[[tp.Any], bool], str]] = {
    "use_dora": (bool, "DoRA (use_dora=True) rescales the weight's column norms; it is not a low-rank update"),
    "bias": (
        lambda b: b not in (None, "none"),
        "bias='{}' trains biases too; only bias='none' is a pure low-rank update",
    ),
    "modules_to_save": (bool, "modules_to_save {} carries full trained modules, which CoLoRA does not hold"),
    "fan_in_fan_out": (
        bool,
        "fan_in_fan_out=True (GPT-2 Conv1D weights) stores the factors transposed; re-save with nn.Linear",
    ),
    "layer_replication": (bool, "layer_replication {} duplicates layers of the base model"),
    "lora_bias": (bool, "lora_bias=True adds a trained bias to lora_B"),
    "target_parameters": (bool, "target_parameters {} adapts raw parameters, not modules"),
    "trainable_token_indices": (bool, "trainable_token_indices {} trains embedding rows"),
}


def _check_config(config: dict) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"expected a LORA adapter, got peft_type {config.get('peft_type')!r}")
    for field, (bad, why) in _UNSUPPORTED.items():
        value = config.get(field)
        if value is not None and bad(value):
            raise ValueError(f"cannot import this PEFT adapter: {why.format(value)}")


def _scaling(config: dict, name: str, rank: int) -> float:
    """PEFT's scaling of module ``name``: ``alpha / r`` or ``alpha / sqrt(r)`` (rsLoRA).

    With the layer's own ``r`` and ``alpha`` from ``rank_pattern`` / ``alpha_pattern``.
    """
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    r_key, a_key = pattern_key(rank_pattern, name), pattern_key(alpha_pattern, name)
    expected = rank_pattern[r_key] if r_key is not None else config["r"]
    if expected != rank:
        raise ValueError(
            f"module {name}: adapter_config.json gives rank {expected}"
            f" ({'rank_pattern key ' + repr(r_key) if r_key else 'r'}), but its lora_A has {rank} rows"
        )
    alpha = alpha_pattern[a_key] if a_key is not None else config["lora_alpha"]
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def import_peft(model: nnx.Module, directory: str | os.PathLike, *, users: int) -> nnx.Module:
    """Load a PEFT LoRA as the *shared* CoLoRA adapter of a plain ``model`` (in place).

    Each module named in the file is wrapped in a :class:`CoLoRALinear` of that module's rank
    with ``U = s B``, ``V = A^T`` (reshaped to the kernel's output and input axes) and every
    ``S_i = I``, where ``s`` is PEFT's scaling of that module (``alpha / r``, ``alpha / sqrt(r)``
    with rsLoRA, per-layer ``r`` and ``alpha`` from ``rank_pattern`` / ``alpha_pattern``): all
    ``users`` start at that LoRA, ready for personal fitting. ``import_peft(base,
    export_peft(colora, i))`` reproduces user ``i`` of ``colora`` for every user.

    All or nothing: every layer is built and checked before the first is put in, so a failed
    import leaves ``model`` as it was and a retry starts from the same model.

    Raises:
      ValueError: for a missing file, a non-LoRA adapter or a feature that is not a pure
        low-rank update (DoRA, trained biases, ``modules_to_save``, ...), a rank that contradicts
        the config, a tensor with NaN or infinite entries, factor shapes that do not fit the
        model's layer, or a module the model does not have.
    """
    paths = {name: os.path.join(directory, name) for name in (PEFT_CONFIG, PEFT_WEIGHTS)}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise ValueError(f"{os.fspath(directory)!r} is not a PEFT adapter directory: it has no {name}")
    with open(paths[PEFT_CONFIG]) as f:
        config = json.load(f)
    _check_config(config)
    factors: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(paths[PEFT_WEIGHTS]).items():
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError(
                f"unexpected tensor {key!r} in {PEFT_WEIGHTS}: only lora_A / lora_B weights can be imported"
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"tensor {key!r} in {PEFT_WEIGHTS} has {int(np.sum(~np.isfinite(value)))} NaN or infinite"
                " entries: the adapter is damaged (re-export it)"
            )
        factors.setdefault(match[1], {})[match[2]] = value
    for name, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"module {name} has lora_{''.join(pair)} but not both lora_A and lora_B")

    def build(layer: nnx.Module, name: str) -> CoLoRALinear:
        a, b = factors[name]["A"], factors[name]["B"]
        axes = layer_axes(layer)
        rank = a.shape[0]
        if a.shape != (rank, axes.d_in) or b.shape != (axes.d_out, rank):
            raise ValueError(
                f"module {name}: lora_A {a.shape} and lora_B {b.shape} do not fit a layer with d_in={axes.d_in},"
                f" d_out={axes.d_out} (expected ({rank}, {axes.d_in}) and ({axes.d_out}, {rank}))"
            )
        s = _scaling(config, name, rank)
        u = (s * jnp.asarray(b)).reshape(*axes.out_shape, rank)
        v = jnp.asarray(a).T.reshape(*axes.in_shape, rank)
        return CoLoRALinear(layer, users=users, rank=rank, shared_factors=(u, v), example_axis=declared[name])

    declared = declared_example_axes(model)
    # exact dotted paths only: a group never equals a bare last path component such as "up"
    built = build_replacements(model, [f"(?:{re.escape(n)})" for n in factors], build)
    missing = set(factors) - {path_name(p) for p, _ in built}
    if missing:
        raise ValueError(
            f"the adapter has factors for {sorted(missing)}, which this model does not have (or are not linear)"
        )
    for path, layer in built:
        set_child(model, path, layer)
    return model
