"""`make interop`, checkpoints: transformers' checkpoints into colora_jax, and its adapters back into PEFT.

Runs in the project's environment (JAX) and calls interop/hf_side.py in interop/.venv-interop
(torch, transformers, peft) to make fresh tiny random checkpoints of every family (Llama with
Llama 3.1 rope scaling, Qwen2, Qwen3, Gemma, and Llama with q/k/v/o and MLP biases and linear
rope scaling), once as one ``model.safetensors`` and once sharded
with transformers' own ``model.safetensors.index.json``; nothing is downloaded.

1. ``cn.from_pretrained`` on each: logits compared with transformers' on a (2, 7) batch and on one
   sequence of 2048 tokens, whose rotary angles reach 2047 radians (claims: 1e-5 and 3e-5).
2. CoLoRA on all seven projections (q/k/v/o, gate/up/down) of the loaded model, shared factors and
   personal matrices drawn at random; users 1 and 2 exported with ``cn.export_peft``, each loaded
   with ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(checkpoint), adapter)``:
   PEFT wraps exactly the adapted modules with no warning, and its logits equal colora_jax's
   for a batch that mixes the two users (claim: 1e-5).

    python interop/pretrained_check.py [--torch-python interop/.venv-interop/bin/python] [--out figures]
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
from safetensors.numpy import load_file

from colora_jax import nnx as cn
from colora_jax.nnx import nnx_code_version as code_version

FAMILIES = ["llama", "qwen2", "qwen3", "gemma", "llama_bias_linear"]  # the last: hf_side.py's VARIANTS
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LOGITS_TOL = 1e-5  # the claim: transformers' float32 logits to float32 rounding (|logits| <= 5)
USERS = (1, 2)
LONG = 2048  # tokens of the long sequence: rotation angles up to 2047 radians, where inv_freq's ulps show
# its claim: float32 rounding grows with the 2048-term attention sums (7e-6 at the first 256 positions,
# 1.4e-5 at the last, for the committed llama fixture; sin and cos agree to 1 ulp on both sides)
LONG_TOL = 3e-5
# warnings the libraries raise about each other's APIs, whatever the adapter (peft 0.21.2 calls
# transformers 5's deprecated `is_gradient_checkpointing`): reported, not counted as the adapter's
LIBRARY_NOISE = ("DeprecationWarning", "FutureWarning")
HERE = os.path.dirname(os.path.abspath(__file__))


def hf_side(python: str, *args: str) -> None:
    subprocess.run([python, os.path.join(HERE, "hf_side.py"), *args], check=True, stdout=subprocess.DEVNULL)


def adapted(checkpoint: str, seed: int) -> nnx.Module:
    """The checkpoint with CoLoRA (3 users, rank 2) on every projection, all adapter factors random."""
    model = cn.from_pretrained(checkpoint)
    cn.apply_colora(model, users=3, rank=2, targets=PROJECTIONS, rngs=nnx.Rngs(seed))
    key = jax.random.key(seed)
    for _, layer in cn.adapted_layers(model):
        for var in (layer.shared_u, layer.personal):
            key, sub = jax.random.split(key)
            var.set_value(0.3 * jax.random.normal(sub, var[...].shape))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=os.path.join(HERE, ".venv-interop", "bin", "python"))
    parser.add_argument("--out", default="figures", help="directory for nnx_pretrained.json")
    args = parser.parse_args()
    record: dict = {
        "claims": {"logits": LOGITS_TOL, "long_logits": LONG_TOL},
        "code_version": code_version("interop"),
        "families": {},
    }
    ok = True
    with tempfile.TemporaryDirectory() as d:
        hf_side(args.torch_python, "make", os.path.join(d, "single"), "--seed", "1", "--variants")
        hf_side(
            args.torch_python, "make", os.path.join(d, "sharded"), "--seed", "2", "--shard-size", "30KB", "--variants"
        )
        for i, family in enumerate(FAMILIES):
            res: dict = {}
            for layout in ("single", "sharded"):
                checkpoint = os.path.join(d, layout, f"hf_{family}")
                ref = load_file(os.path.join(checkpoint, "reference.safetensors"))
                out = np.asarray(cn.from_pretrained(checkpoint)(jnp.asarray(ref["tokens"])))
                res[f"{layout}_files"] = sorted(f for f in os.listdir(checkpoint) if f.startswith("model"))
                res[f"{layout}_logits_max_abs"] = float(np.abs(out - ref["logits"]).max())
            res["logits_max_abs_value"] = float(np.abs(ref["logits"]).max())
            long = os.path.join(d, f"{family}_long.safetensors")
            hf_side(args.torch_python, "logits", os.path.join(d, "single", f"hf_{family}"), long, "--length", str(LONG))
            ref = load_file(long)
            out = np.asarray(cn.from_pretrained(os.path.join(d, "single", f"hf_{family}"))(jnp.asarray(ref["tokens"])))
            res["long_logits_max_abs"] = float(np.abs(out - ref["logits"]).max())

            checkpoint = os.path.join(d, "single", f"hf_{family}")
            tokens = load_file(os.path.join(checkpoint, "reference.safetensors"))["tokens"]
            model = adapted(checkpoint, seed=10 + i)
            adapters = [os.path.join(d, f"{family}_user{u}") for u in USERS]
            for user, adapter in zip(USERS, adapters):
                cn.export_peft(model, user, adapter)
            hf_side(args.torch_python, "peft", checkpoint, os.path.join(d, f"{family}_peft"), *adapters)
            peft_logits = load_file(os.path.join(d, family + "_peft", "peft.safetensors"))
            info = json.load(open(os.path.join(d, family + "_peft", "peft.json")))
            record["versions"] = info["versions"]
            ids = np.resize(np.asarray(USERS), tokens.shape[0])  # one batch, the users mixed
            with cn.colora_users(model, jnp.asarray(ids)):
                ours = np.asarray(model(jnp.asarray(tokens)))
            res["peft_logits_max_abs"] = float(
                max(np.abs(ours[b] - peft_logits[f"logits:{USERS.index(u)}"][b]).max() for b, u in enumerate(ids))
            )
            res["adapter_effect_max_abs"] = float(
                np.abs(ours - load_file(os.path.join(checkpoint, "reference.safetensors"))["logits"]).max()
            )
            names = sorted(n for n, _ in cn.adapted_layers(model))
            res["adapted"] = len(names)
            res["peft_wrapped_equal"] = all(a["wrapped"] == names for a in info["adapters"])
            caught = [w for a in info["adapters"] for w in a["warnings"]]
            res["peft_warnings"] = [m for c, m in caught if c not in LIBRARY_NOISE]
            res["library_deprecations"] = sorted({m for c, m in caught if c in LIBRARY_NOISE})
            res["passed"] = bool(
                res["single_logits_max_abs"] <= LOGITS_TOL
                and res["long_logits_max_abs"] <= LONG_TOL
                and res["sharded_logits_max_abs"] <= LOGITS_TOL
                and len(res["sharded_files"]) > 2
                and res["peft_logits_max_abs"] <= LOGITS_TOL
                and res["adapter_effect_max_abs"] > 100 * LOGITS_TOL
                and res["peft_wrapped_equal"]
                and not res["peft_warnings"]
            )
            ok &= res["passed"]
            record["families"][family] = res
            print(
                f"{family} logits vs transformers max |diff| {res['single_logits_max_abs']:.2e}"
                f" (sharded, {len(res['sharded_files']) - 1} shards: {res['sharded_logits_max_abs']:.2e};"
                f" |logits| <= {res['logits_max_abs_value']:.2f};"
                f" {LONG} tokens: {res['long_logits_max_abs']:.2e}, claim {LONG_TOL:g})"
                f"\n       PEFT users {list(USERS)} on {res['adapted']} modules:"
                f" max |diff| {res['peft_logits_max_abs']:.2e}"
                f" (adapter moves logits by {res['adapter_effect_max_abs']:.2f}); wrapped = adapted:"
                f" {res['peft_wrapped_equal']}; warnings: {res['peft_warnings'] or 'none'}"
                f"  {'PASS' if res['passed'] else 'FAIL'}"
            )
    record["passed"] = bool(ok)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "nnx_pretrained.json"), "w") as f:
        json.dump(record, f, indent=1)
    deprecations = sorted({m for r in record["families"].values() for m in r["library_deprecations"]})
    print(f"library deprecation warnings (not the adapter's): {deprecations or 'none'}")
    print(
        f"{'PASS' if ok else 'FAIL'}: from_pretrained and PEFT export against transformers ({record.get('versions')})"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
