"""One user's CoLoRA adapter as a standard LoRA in Hugging Face PEFT's on-disk layout.

PEFT's LoRA computes ``y = x W^T + (alpha / r) (x A^T) B^T`` with ``lora_A.weight: (r, d_in)``
and ``lora_B.weight: (d_out, r)`` (PyTorch's ``(out, in)`` orientation). User ``i``'s CoLoRA
update is ``U S_i V^T``, so with ``alpha = r`` (scaling 1):

    lora_A = V^T,        lora_B = U S_i.

Files written: ``adapter_model.safetensors`` with tensors
``base_model.model.<dotted path>.lora_A.weight`` / ``.lora_B.weight`` and ``adapter_config.json``.
The dotted paths are the NNX model's (e.g. ``blocks.0.mlp.up``); a PyTorch model with other
module names needs its keys renamed accordingly.
"""

from __future__ import annotations

import json
import os
import re
import typing as tp

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from colora_jax.nnx._layers import CoLoRALinear, check_user_ids
from colora_jax.nnx._wrap import adapted_layers, replace_layers

__all__ = ["export_peft", "import_peft", "PEFT_WEIGHTS", "PEFT_CONFIG"]

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."
_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


def export_peft(model: nnx.Module, user: int, directory: str | os.PathLike) -> None:
    """Write user ``user``'s adapter as a PEFT LoRA (``lora_A = V^T``, ``lora_B = U S_user``).

    Raises:
      ValueError: if ``model`` has no CoLoRA layer, or ``user`` is out of range.
    """
    layers = [(n, m) for n, m in adapted_layers(model) if isinstance(m, CoLoRALinear)]
    if not layers:
        raise ValueError("model has no CoLoRALinear layers to export: call apply_colora first")
    ranks = {m.rank for _, m in layers}
    if len(ranks) != 1:
        raise ValueError(f"PEFT's adapter_config has one r; this model mixes ranks {sorted(ranks)}")
    check_user_ids(jnp.asarray([user]), layers[0][1].users)
    tensors = {}
    for name, m in layers:
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = np.asarray(m.shared_v[...].T, np.float32)
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = np.asarray(m.shared_u[...] @ m.personal[...][user], np.float32)
    (rank,) = ranks
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": sorted({n.rsplit(".", 1)[-1] for n, _ in layers}),
        "fan_in_fan_out": False,
        "bias": "none",
        "inference_mode": True,
        "modules_to_save": None,
        "init_lora_weights": True,
    }
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, PEFT_WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(directory, PEFT_CONFIG), "w") as f:
        json.dump(config, f, indent=2)


def import_peft(model: nnx.Module, directory: str | os.PathLike, *, users: int) -> nnx.Module:
    """Load a PEFT LoRA as the *shared* CoLoRA adapter of a plain ``model`` (in place).

    Each Linear named in the file is wrapped in a :class:`CoLoRALinear` with
    ``U = (alpha / r) B``, ``V = A^T`` and every ``S_i = I``: all ``users`` start at that LoRA,
    ready for personal fitting. ``import_peft(base, export_peft(colora, i))`` reproduces user
    ``i`` of ``colora`` for every user.
    """
    with open(os.path.join(directory, PEFT_CONFIG)) as f:
        config = json.load(f)
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"expected a LORA adapter, got peft_type {config.get('peft_type')!r}")
    scaling = config["lora_alpha"] / config["r"]
    factors: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(os.path.join(directory, PEFT_WEIGHTS)).items():
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"unexpected tensor {key!r} in {PEFT_WEIGHTS}")
        factors.setdefault(match[1], {})[match[2]] = value

    def build(linear: nnx.Linear, name: str) -> CoLoRALinear:
        a, b = factors[name]["A"], factors[name]["B"]
        return CoLoRALinear(
            linear, users=users, rank=a.shape[0], shared_factors=(scaling * jnp.asarray(b), jnp.asarray(a).T)
        )

    targets: tp.Sequence[str] = [re.escape(n) for n in factors]
    return replace_layers(model, targets, build)
