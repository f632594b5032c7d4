"""The transformers side of the checkpoint checks (runs in interop/.venv-interop: torch, transformers, peft).

    python interop/hf_side.py make OUT [--seed S] [--shard-size SIZE] [--variants]
        one tiny random checkpoint per family in OUT/hf_<family>/ (config.json, model.safetensors or
        shards + model.safetensors.index.json) and reference.safetensors: a fixed token batch
        ("tokens", int32) and transformers' float32 logits for it ("logits").
    python interop/hf_side.py peft CHECKPOINT OUT ADAPTER [ADAPTER ...]
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(CHECKPOINT), ADAPTER) on the
        tokens in CHECKPOINT/reference.safetensors, for each ADAPTER j: OUT/peft.safetensors
        ("logits:j") and OUT/peft.json (per adapter the modules PEFT wrapped and the warnings it
        raised, as [category, message], or logged, as ["log", message]; versions).
    python interop/hf_side.py logits CHECKPOINT OUT [--length N] [--seed S]
        transformers' float32 logits for one random sequence of N tokens (OUT: "tokens", "logits").

Every weight is drawn afresh (norm weights near 1, biases nonzero), not transformers' init, whose
zero biases and unit norms would leave those paths untested. `make` with the defaults writes the
fixtures committed in tests/data (`python interop/hf_side.py make tests/data`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import warnings

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

transformers.utils.logging.disable_progress_bar()  # `make interop` prints its own lines

SIZES = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    rms_norm_eps=1e-5,
)
# each family with the features its real checkpoints use (Llama 3.1's rope scaling with a short
# original context, so all three of its frequency bands occur at head_dim 8)
FAMILIES = {
    "llama": (
        transformers.LlamaConfig,
        dict(
            tie_word_embeddings=False,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10_000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
        ),
    ),
    "qwen2": (transformers.Qwen2Config, dict(tie_word_embeddings=True, rope_parameters=dict(rope_theta=1e6))),
    "qwen3": (transformers.Qwen3Config, dict(tie_word_embeddings=False, rope_parameters=dict(rope_theta=1e6))),
    "gemma": (transformers.GemmaConfig, dict(tie_word_embeddings=True, hidden_act="gelu_pytorch_tanh")),
}
# not committed as fixtures, made for `make interop` with --variants: Llama's optional biases
# (attention_bias on q/k/v/o, mlp_bias on gate/up/down) and linear rope scaling
VARIANTS = {
    "llama_bias_linear": (
        transformers.LlamaConfig,
        dict(
            tie_word_embeddings=False,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters=dict(rope_type="linear", rope_theta=10_000.0, factor=4.0),
        ),
    ),
}
TOKENS_SHAPE = (2, 7)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Matrices N(0, 0.2^2), biases N(0, 0.1^2), norm weights 1 + N(0, 0.1^2) (Gemma's offset form: N(0, 0.1^2))."""
    g = torch.Generator().manual_seed(seed)
    offset = 0.0 if model.config.model_type == "gemma" else 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(offset + 0.1 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def make(out: str, seed: int, shard_size: str | None, variants: bool) -> None:
    tokens = np.random.default_rng(seed).integers(0, SIZES["vocab_size"], TOKENS_SHAPE).astype(np.int32)
    made = {**FAMILIES, **(VARIANTS if variants else {})}
    for i, (family, (config_class, extra)) in enumerate(made.items()):
        config = config_class(**SIZES, **extra)
        torch.manual_seed(seed + i)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        randomize(model, seed + i)
        directory = os.path.join(out, f"hf_{family}")
        kwargs = {"max_shard_size": shard_size} if shard_size else {}
        model.save_pretrained(directory, **kwargs)
        generation = os.path.join(directory, "generation_config.json")
        if os.path.exists(generation):
            os.remove(generation)
        with torch.no_grad():
            logits = model(torch.from_numpy(tokens).long()).logits.float()
        save_file(
            {"tokens": torch.from_numpy(tokens), "logits": logits.contiguous()},
            os.path.join(directory, "reference.safetensors"),
        )
        print(f"{directory}: {sorted(os.listdir(directory))}")


def peft(checkpoint: str, out: str, adapters: list[str]) -> None:
    """Each adapter on a fresh base: logits ``logits:<j>`` for adapter ``j``, and what PEFT did."""
    import peft as peft_lib

    tokens = load_file(os.path.join(checkpoint, "reference.safetensors"))["tokens"].long()
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                records.append(record.getMessage())

    handler = Collect()
    for name in ("peft", "transformers"):
        logging.getLogger(name).addHandler(handler)
    results, tensors = [], {}
    for j, adapter in enumerate(adapters):
        base = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        records.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = peft_lib.PeftModel.from_pretrained(base, adapter).eval()
        wrapped = sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules() if hasattr(m, "lora_A"))
        with torch.no_grad():
            tensors[f"logits:{j}"] = model(tokens).logits.float().contiguous()
        results.append(
            {
                "adapter": adapter,
                "wrapped": wrapped,
                "warnings": [[w.category.__name__, str(w.message)] for w in caught] + [["log", r] for r in records],
            }
        )
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "peft.safetensors"))
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft_lib.__version__}
    with open(os.path.join(out, "peft.json"), "w") as f:
        json.dump({"adapters": results, "versions": versions}, f)


def logits(checkpoint: str, out: str, length: int, seed: int) -> None:
    """transformers' logits for one random sequence of ``length`` tokens: rotary angles up to ``length``."""
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    tokens = np.random.default_rng(seed).integers(0, model.config.vocab_size, (1, length)).astype(np.int32)
    with torch.no_grad():
        result = model(torch.from_numpy(tokens).long()).logits.float()
    save_file({"tokens": torch.from_numpy(tokens), "logits": result.contiguous()}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--shard-size", default=None, help="e.g. 20KB: sharded checkpoints with an index")
    m.add_argument("--variants", action="store_true", help="also the VARIANTS (not committed as fixtures)")
    p = sub.add_parser("peft")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("adapters", nargs="+")
    g = sub.add_parser("logits")
    g.add_argument("checkpoint")
    g.add_argument("out")
    g.add_argument("--length", type=int, default=2048)
    g.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.command == "make":
        make(args.out, args.seed, args.shard_size, args.variants)
    elif args.command == "peft":
        peft(args.checkpoint, args.out, args.adapters)
    else:
        logits(args.checkpoint, args.out, args.length, args.seed)


if __name__ == "__main__":
    main()
