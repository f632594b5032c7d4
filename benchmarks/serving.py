"""Serving throughput of a multi-user batch: CoLoRA against one LoRA per user.

A forward pass of a small decoder-only transformer over one batch of ``batch`` sequences whose
examples belong to ``N`` distinct users (example ``n`` is user ``n mod N``), for N from 1 to
1024. CoLoRA computes the shared projections ``x V`` and ``(.) U^T`` once for the batch and
gathers one ``r x r`` matrix per example; the per-user LoRA bank gathers a ``d_in x r`` and an
``r x d_out`` matrix per example. Timing: ``jax.jit`` of the pure forward (nnx.split/merge),
``block_until_ready``, warm-up calls, then the median of several repetitions.

    .venv/bin/python benchmarks/serving.py [--smoke] [--out figures]

Prints the JSON record and one readable line; writes figures/nnx_serving.json and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from flax import nnx

from colora_jax import nnx as cn
from colora_jax._src.provenance import code_version, device_info

NAME = "nnx_serving"


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark sizes."""

    seed: int = 0  # PRNG seed of the model, adapters and tokens
    model: cn.TransformerConfig = cn.TransformerConfig(vocab=256, seq_len=16, width=128, depth=2, heads=4)
    targets: tuple[str, ...] = ("query", "value", "up", "down")  # adapted layers
    rank: int = 8  # adapter rank r
    users: int = 1024  # size of each personal bank
    batch: int = 1024  # sequences per forward pass (>= the largest N)
    distinct_users: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)  # N
    warmup: int = 2  # untimed calls before measuring
    repeats: int = 15  # timed calls per N, interleaved across N; the median is reported


SMOKE = Config(
    model=cn.TransformerConfig(vocab=32, seq_len=8, width=32, depth=1, heads=2),
    users=64, batch=64, distinct_users=(1, 8, 64), warmup=1, repeats=3,
)


def _adapted(config: Config, kind: str, key) -> nnx.Module:
    k_base, k_adapt, k_values = jax.random.split(key, 3)
    model = cn.Transformer(config.model, rngs=nnx.Rngs(params=k_base))
    wrap = cn.apply_colora if kind == "colora" else cn.apply_lora_bank
    wrap(model, users=config.users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(params=k_adapt))
    # Non-zero adapters, so nothing is trivially zero (U = 0 and B = 0 at initialization).
    for _, layer in cn.adapted_layers(model):
        for var in (layer.shared_u, layer.personal) if kind == "colora" else (layer.lora_b,):
            k_values, sub = jax.random.split(k_values)
            var.set_value(0.01 * jax.random.normal(sub, var[...].shape))
    return model


def throughput(config: Config, kind: str, key) -> dict[int, float]:
    """Tokens per second of the jitted forward for each N in ``config.distinct_users``."""
    model = _adapted(config, kind, key)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens, user_ids):
        model = nnx.merge(graphdef, state)
        with cn.colora_users(model, user_ids):
            return model(tokens)

    tokens = jax.random.randint(key, (config.batch, config.model.seq_len), 0, config.model.vocab)
    ids = {n: jnp.arange(config.batch) % n for n in config.distinct_users}
    for n in config.distinct_users:
        for _ in range(config.warmup):
            forward(state, tokens, ids[n]).block_until_ready()
    # Interleave the N values in every repetition so that load drifts hit all of them alike.
    times: dict[int, list[float]] = {n: [] for n in config.distinct_users}
    for _ in range(config.repeats):
        for n in config.distinct_users:
            t = time.perf_counter()
            forward(state, tokens, ids[n]).block_until_ready()
            times[n].append(time.perf_counter() - t)
    return {n: tokens.size / statistics.median(t) for n, t in times.items()}


def plot(record: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for kind, label in (("colora", "CoLoRA (shared U, V + r x r per user)"), ("lora_bank", "one LoRA per user (bank)")):
        xs = [int(n) for n in record["tokens_per_second"][kind]]
        ax.plot(xs, list(record["tokens_per_second"][kind].values()), "-o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("distinct users in the batch (N)")
    ax.set_ylabel("tokens / second (forward pass)")
    ax.set_ylim(0, None)
    c = record["config"]
    ax.set_title(f"batch {c['batch']} x {c['model']['seq_len']} tokens, width {c['model']['width']}, rank {c['rank']}"
                 f"\n{record['device']['backend']} ({record['device']['device_kind']})", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--out", default="figures", help="directory for the JSON and PNG")
    args = parser.parse_args()
    config = SMOKE if args.smoke else Config()
    key = jax.random.key(config.seed)
    tps = {kind: throughput(config, kind, key) for kind in ("colora", "lora_bank")}
    lo, hi = min(config.distinct_users), max(config.distinct_users)
    ratio = tps["colora"][hi] / tps["colora"][lo]
    record = {
        "config": dataclasses.asdict(config), "smoke": args.smoke, "seed": config.seed,
        "code_version": code_version(), "device": device_info(),
        "tokens_per_second": {k: {str(n): v for n, v in d.items()} for k, d in tps.items()},
        "colora_ratio_max_to_one_user": ratio,
        "colora_within_10_percent": bool(ratio >= 0.9),
        "colora_over_lora_bank_at_max": tps["colora"][hi] / tps["lora_bank"][hi],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as f:
        json.dump(record, f, indent=1)
    plot(record, os.path.join(args.out, f"{NAME}.png"))
    print(json.dumps(record["tokens_per_second"], indent=1))
    print(
        f"{'PASS' if ratio >= 0.9 else 'FAIL'}: CoLoRA {tps['colora'][hi]:,.0f} tokens/s with {hi} distinct users vs"
        f" {tps['colora'][lo]:,.0f} with {lo} (ratio {ratio:.3f}, claim >= 0.9); LoRA bank"
        f" {tps['lora_bank'][hi]:,.0f} vs {tps['lora_bank'][lo]:,.0f}"
    )


if __name__ == "__main__":
    main()
