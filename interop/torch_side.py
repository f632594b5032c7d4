"""The PyTorch side of `make interop` (runs in interop/.venv-interop: torch + peft, no JAX).

    python interop/torch_side.py load DIR     # PeftModel.from_pretrained(mirror, DIR/jax_export)
    python interop/torch_side.py make DIR     # PEFT creates adapters and saves them in DIR/peft_*

The mirror is the PyTorch twin of interop/roundtrip.py's NNX model, built by hand with the same
module names (``blocks.{l}.attn.query`` is ``nn.Linear(D, N * H)`` for the NNX ``Einsum``
``BTD,DNH->BTNH``, ``blocks.{l}.attn.out`` is ``nn.Linear(N * H, D)`` for the ``LinearGeneral`` over
``(N, H)``, ``blocks.{l}.mlp.up/down`` and ``head`` are ``nn.Linear``). Its base weights come from
DIR/base.safetensors (written by the JAX side), its inputs from DIR/inputs.npy. Nothing is
downloaded.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

torch.set_default_dtype(torch.float32)


class Attention(torch.nn.Module):
    def __init__(self, d, n, h):
        super().__init__()
        self.query = torch.nn.Linear(d, n * h)
        self.out = torch.nn.Linear(n * h, d)

    def forward(self, x):
        return self.out(torch.tanh(self.query(x)))


class MLP(torch.nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.up = torch.nn.Linear(d, f)
        self.down = torch.nn.Linear(f, d)

    def forward(self, x):
        return self.down(torch.tanh(self.up(x)))


class Block(torch.nn.Module):
    def __init__(self, d, n, h, f):
        super().__init__()
        self.attn = Attention(d, n, h)
        self.mlp = MLP(d, f)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class Mirror(torch.nn.Module):
    def __init__(self, sizes):
        super().__init__()
        d, n, h, f, v, depth = (sizes[k] for k in ("width", "heads", "head_dim", "hidden", "out", "depth"))
        self.blocks = torch.nn.ModuleList([Block(d, n, h, f) for _ in range(depth)])
        self.head = torch.nn.Linear(d, v)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def mirror(directory: str) -> tuple[Mirror, torch.Tensor]:
    sizes = json.load(open(os.path.join(directory, "sizes.json")))
    model = Mirror(sizes)
    missing, unexpected = model.load_state_dict(load_file(os.path.join(directory, "base.safetensors")), strict=True)
    assert not missing and not unexpected
    model.eval()
    return model, torch.from_numpy(np.load(os.path.join(directory, "inputs.npy")))


def lora_modules(model) -> list[str]:
    """Names (relative to the wrapped base model) of the modules PEFT turned into LoRA layers."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    return sorted(n.removeprefix("base_model.model.") for n in names)


def load(directory: str) -> None:
    """JAX -> PEFT: load the exported adapter, run it, merge it."""
    model, x = mirror(directory)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, os.path.join(directory, "jax_export"))
    peft_model.eval()
    wrapped = lora_modules(peft_model)
    with torch.no_grad():
        y = peft_model(x).numpy()
        merged = peft_model.merge_and_unload()
        y_merged = merged(x).numpy()
    weights = {k: v.numpy() for k, v in merged.state_dict().items()}
    named_weights = {f"w:{k}": v for k, v in weights.items()}
    np.savez(os.path.join(directory, "torch_load.npz"), y=y, y_merged=y_merged, **named_weights)
    json.dump(
        {"wrapped": wrapped, "warnings": [str(w.message) for w in caught]},
        open(os.path.join(directory, "torch_load.json"), "w"),
    )


CONFIGS = {
    # regex target (blocks 0 and 1, attention query and mlp up; block 1's attention out), rank and
    # alpha patterns, PEFT's default scaling alpha / r
    "peft_patterns": dict(
        r=4,
        lora_alpha=8,
        target_modules=r"blocks\.\d\.(attn\.query|mlp\.up)|blocks\.1\.attn\.out",
        rank_pattern={"blocks.1.attn.out": 2},
        alpha_pattern={r"blocks\.0\.mlp\.up": 3},
        use_rslora=False,
    ),
    # the same with rsLoRA: scaling alpha / sqrt(r), per layer
    "peft_rslora": dict(
        r=4,
        lora_alpha=8,
        target_modules=r"blocks\.\d\.(attn\.query|mlp\.up)|blocks\.1\.attn\.out",
        rank_pattern={"blocks.1.attn.out": 2},
        alpha_pattern={r"blocks\.0\.mlp\.up": 3},
        use_rslora=True,
    ),
    # a list target of last components: every block's mlp.down and the head
    "peft_list": dict(r=3, lora_alpha=5, target_modules=["down", "head"], use_rslora=True),
}


def make(directory: str) -> None:
    """PEFT -> JAX: PEFT creates adapters (lora_B made non-zero), saves them, runs them."""
    out = {}
    for name, kwargs in CONFIGS.items():
        model, x = mirror(directory)
        torch.manual_seed(0)
        peft_model = get_peft_model(model, LoraConfig(**kwargs))
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.3 * torch.randn_like(p))
        peft_model.eval()
        peft_model.save_pretrained(os.path.join(directory, name))
        with torch.no_grad():
            y = peft_model(x).numpy()
        scalings = {
            n.removeprefix("base_model.model."): float(m.scaling["default"])
            for n, m in peft_model.named_modules()
            if isinstance(m, LoraLayer)
        }
        np.save(os.path.join(directory, f"{name}_y.npy"), y)
        out[name] = {"wrapped": lora_modules(peft_model), "scaling": scalings}
    json.dump(out, open(os.path.join(directory, "torch_make.json"), "w"))


if __name__ == "__main__":
    {"load": load, "make": make}[sys.argv[1]](sys.argv[2])
