"""`make interop`: CoLoRA adapters through the real PEFT library, both ways, with the differences printed.

Runs in the project's environment (JAX) and calls interop/torch_side.py in interop/.venv-interop
(torch + peft) on the same files. The model has nested modules (``blocks.{l}.attn.query`` an
``nnx.Einsum`` with head axes, ``blocks.{l}.attn.out`` an ``nnx.LinearGeneral`` over them,
``blocks.{l}.mlp.up/down`` and ``head`` ``nnx.Linear``) and a hand-built PyTorch twin with the
same module names and weights.

1. JAX -> PEFT: CoLoRA on ``query`` (by name) and ``blocks\\.1\\.mlp\\..*`` (regex) at rank 4 and
   ``blocks\\.0\\.attn\\.out`` at rank 2 (a rank pattern); user 2 exported with ``export_peft``,
   loaded with ``PeftModel.from_pretrained``; outputs compared (claim: 4e-6), the modules PEFT
   wrapped compared with the adapted ones (claim: equal, and no warning), and
   ``merge_and_unload`` compared with ``colora_jax.nnx.merge`` (claim: weights to 1e-7).
2. PEFT -> JAX: PEFT creates LoRA adapters (a regex target, rank and alpha patterns, with and
   without rsLoRA; a list target with rsLoRA), saves them; ``import_peft`` loads each into the
   JAX model; outputs compared for every user (claim: 4e-6).

    python interop/roundtrip.py [--torch-python interop/.venv-interop/bin/python] [--out figures]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from colora_jax import nnx as cn
from colora_jax.nnx import nnx_code_version as code_version

SIZES = {"width": 16, "heads": 4, "head_dim": 3, "hidden": 24, "out": 10, "depth": 2}
OUTPUT_TOL, MERGE_TOL = 4e-6, 1e-7  # the claims
HERE = os.path.dirname(os.path.abspath(__file__))


class Attention(nnx.Module):
    def __init__(self, rngs):
        d, n, h = SIZES["width"], SIZES["heads"], SIZES["head_dim"]
        self.query = nnx.Einsum("btd,dnh->btnh", (d, n, h), (n, h), rngs=rngs)
        self.out = nnx.LinearGeneral((n, h), d, axis=(-2, -1), rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.query(x)))


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.up = nnx.Linear(SIZES["width"], SIZES["hidden"], rngs=rngs)
        self.down = nnx.Linear(SIZES["hidden"], SIZES["width"], rngs=rngs)

    def __call__(self, x):
        return self.down(jnp.tanh(self.up(x)))


class Block(nnx.Module):
    def __init__(self, rngs):
        self.attn = Attention(rngs)
        self.mlp = MLP(rngs)

    def __call__(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class Net(nnx.Module):
    def __init__(self, rngs):
        self.blocks = nnx.List([Block(rngs) for _ in range(SIZES["depth"])])
        self.head = nnx.Linear(SIZES["width"], SIZES["out"], rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def base() -> Net:
    model = Net(nnx.Rngs(0))
    key = jax.random.key(7)
    for _, layer in nnx.iter_graph(model):  # non-zero biases, so that a mix-up would show
        if isinstance(layer, (nnx.Linear, nnx.LinearGeneral, nnx.Einsum)):
            key, sub = jax.random.split(key)
            layer.bias.set_value(0.1 * jax.random.normal(sub, layer.bias.shape))
    return model


def torch_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every linear layer's kernel and bias in PyTorch's layout (weight ``(d_out, d_in)``, inputs
    and outputs flattened row-major in kernel order)."""
    out = {}
    for path, layer in nnx.iter_graph(model):
        if isinstance(layer, (nnx.Linear, nnx.LinearGeneral, nnx.Einsum)):
            axes = cn.layer_axes(layer)
            name = ".".join(map(str, path))
            kernel = np.asarray(layer.kernel[...]).transpose(axes.in_dims + axes.out_dims)
            out[f"{name}.weight"] = np.ascontiguousarray(kernel.reshape(axes.d_in, axes.d_out).T)
            out[f"{name}.bias"] = np.asarray(layer.bias[...]).reshape(axes.d_out)
    return out


def run_torch(python: str, command: str, directory: str) -> None:
    subprocess.run([python, os.path.join(HERE, "torch_side.py"), command, directory], check=True)


def forward(model, x, user):
    with cn.colora_users(model, jnp.full((x.shape[0],), user)):
        return np.asarray(model(jnp.asarray(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=os.path.join(HERE, ".venv-interop", "bin", "python"))
    parser.add_argument("--out", default="figures", help="directory for nnx_interop.json")
    args = parser.parse_args()
    record: dict = {
        "sizes": SIZES,
        "claims": {"outputs": OUTPUT_TOL, "merged_weights": MERGE_TOL},
        "code_version": code_version("interop"),
    }
    versions = subprocess.run(
        [args.torch_python, "-c", "import torch, peft; print(torch.__version__, peft.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    record["torch"], record["peft"] = versions
    ok = True
    with tempfile.TemporaryDirectory() as d:
        x = np.asarray(jax.random.normal(jax.random.key(5), (3, 4, SIZES["width"])), np.float32)
        np.save(os.path.join(d, "inputs.npy"), x)
        json.dump(SIZES, open(os.path.join(d, "sizes.json"), "w"))
        save_file(torch_weights(base()), os.path.join(d, "base.safetensors"))

        # 1. JAX -> PEFT
        model = base()
        cn.apply_colora(model, users=4, rank=4, targets=["query", r"blocks\.1\.mlp\..*"], rngs=nnx.Rngs(1))
        cn.apply_colora(model, users=4, rank=2, targets=[r"blocks\.0\.attn\.out"], rngs=nnx.Rngs(2))
        key = jax.random.key(3)
        for _, layer in cn.adapted_layers(model):
            for var in (layer.shared_u, layer.personal):
                key, sub = jax.random.split(key)
                var.set_value(0.3 * jax.random.normal(sub, var[...].shape))
        user = 2
        cn.export_peft(model, user, os.path.join(d, "jax_export"))
        run_torch(args.torch_python, "load", d)
        torch_out = np.load(os.path.join(d, "torch_load.npz"))
        info = json.load(open(os.path.join(d, "torch_load.json")))
        merged = torch_weights(cn.merge(model, user))
        adapted = sorted(n for n, _ in cn.adapted_layers(model))
        one = {
            "adapted": adapted,
            "target_modules": json.load(open(os.path.join(d, "jax_export", "adapter_config.json")))["target_modules"],
            "peft_wrapped": info["wrapped"],
            "peft_warnings": info["warnings"],
            "outputs_max_abs": float(np.max(np.abs(torch_out["y"] - forward(model, x, user)))),
            "merged_weights_max_abs": float(max(np.max(np.abs(torch_out[f"w:{k}"] - v)) for k, v in merged.items())),
            "merged_outputs_max_abs": float(np.max(np.abs(torch_out["y_merged"] - forward(model, x, user)))),
        }
        one["passed"] = bool(
            one["peft_wrapped"] == adapted
            and not one["peft_warnings"]
            and one["outputs_max_abs"] <= OUTPUT_TOL
            and one["merged_weights_max_abs"] <= MERGE_TOL
        )
        record["jax_to_peft"] = one
        ok &= one["passed"]
        print(f"JAX -> PEFT  adapted {adapted}")
        print(f"             PEFT wrapped {info['wrapped']}  warnings: {info['warnings'] or 'none'}")
        print(
            f"             outputs max |diff| {one['outputs_max_abs']:.2e} (claim {OUTPUT_TOL:g});"
            f" merge_and_unload vs merge: weights {one['merged_weights_max_abs']:.2e} (claim {MERGE_TOL:g}),"
            f" outputs {one['merged_outputs_max_abs']:.2e}  {'PASS' if one['passed'] else 'FAIL'}"
        )

        # 2. PEFT -> JAX
        run_torch(args.torch_python, "make", d)
        made = json.load(open(os.path.join(d, "torch_make.json")))
        record["peft_to_jax"] = {}
        for name, info in made.items():
            imported = cn.import_peft(base(), os.path.join(d, name), users=3)
            config = json.load(open(os.path.join(d, name, "adapter_config.json")))
            y = np.load(os.path.join(d, f"{name}_y.npy"))
            diff = max(float(np.max(np.abs(forward(imported, x, u) - y))) for u in range(3))
            ranks = {n: m.rank for n, m in cn.adapted_layers(imported)}
            res = {
                "use_rslora": config.get("use_rslora"),
                "rank_pattern": config.get("rank_pattern"),
                "alpha_pattern": config.get("alpha_pattern"),
                "target_modules": config.get("target_modules"),
                "peft_scaling": info["scaling"],
                "imported_ranks": ranks,
                "outputs_max_abs": diff,
            }
            res["passed"] = bool(sorted(ranks) == info["wrapped"] and diff <= OUTPUT_TOL)
            record["peft_to_jax"][name] = res
            ok &= res["passed"]
            print(
                f"PEFT -> JAX  {name}: rslora={res['use_rslora']} ranks {ranks}"
                f"\n             PEFT scalings {info['scaling']}"
                f"\n             outputs max |diff| over 3 users {diff:.2e} (claim {OUTPUT_TOL:g})"
                f"  {'PASS' if res['passed'] else 'FAIL'}"
            )
    record["passed"] = bool(ok)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "nnx_interop.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"{'PASS' if ok else 'FAIL'}: PEFT round trip both ways (torch {record['torch']}, peft {record['peft']})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
