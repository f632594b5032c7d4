"""Shakespeare roles as users: personalizing a character-level transformer with CoLoRA.

Claim: after pretraining on the pooled text of some roles, personalizing for roles held out from
pretraining, each with little text, CoLoRA reaches a lower mean per-role held-out next-character
loss than one LoRA per role, one shared LoRA, FedAvg-LoRA with local fine-tuning and the frozen
base. Per-role loss and accuracy are written for every method.

Data: the Tiny Shakespeare subset shipped in colora_jax/nnx/data (``--text`` to use another copy,
e.g. ../shared/data/tinyshakespeare/input.txt). Roles are ranked by amount of text; the
largest ``pretrain_roles`` are pooled for pretraining, the next ``users`` roles (with at least
``train_chars + test_chars`` characters) become the users.

    python -m proofs_numerics.nnx_shakespeare [--smoke] [--no-progress] [--text PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from colora_jax import nnx as cn
from colora_jax._src.provenance import code_version, device_info
from colora_jax.nnx._tasks import SHAKESPEARE_PATH

NAME = "nnx_shakespeare"


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (the smoke config only shrinks sizes and steps)."""

    seed: int = 0  # master PRNG seed: base init, pretraining and adapter mini-batches, adapters
    seq_len: int = 64  # characters per window (model context)
    width: int = 64  # transformer width d_model
    depth: int = 2  # transformer blocks
    heads: int = 4  # attention heads
    pretrain_roles: int = 12  # the largest roles, pooled for pretraining the base
    pretrain_steps: int = 800  # full-parameter pretraining steps
    pretrain_lr: float = 3e-3  # Adam learning rate for pretraining
    users: int = 16  # held-out roles personalized (the users)
    train_chars: int = 1500  # characters of each user's text for training (little text)
    test_chars: int = 1000  # following characters of each user's text, held out
    train_stride: int = 16  # stride of the training windows (overlapping windows)
    rank: int = 4  # r of every adapter
    targets: tuple[str, ...] = ("query", "value", "up")  # adapted layers
    steps: int = 300  # adapter optimizer steps of every method (FedAvg: local steps of one group)
    batch_size: int = 32  # windows per mixed-user mini-batch
    learning_rate: float = 3e-3  # Adam learning rate of every adapter method
    groups: int = 4  # FedAvg-LoRA: user groups (clients)
    local_steps: int = 10  # FedAvg-LoRA: local steps per round
    finetune_steps: int = 100  # FedAvg-LoRA: per-user fine-tuning steps after the rounds


SMOKE = Config(
    seq_len=16, width=16, depth=1, heads=2, pretrain_roles=4, pretrain_steps=20, users=4,
    train_chars=300, test_chars=200, steps=20, local_steps=5, groups=2, finetune_steps=10,
)


def build_data(config: Config, text_path: str):
    """Vocabulary, pretraining windows, and the users' train/test windows."""
    roles = cn.load_roles(text_path)
    ranked = sorted(roles, key=lambda r: len(roles[r]), reverse=True)
    vocab = cn.CharVocab.from_texts(roles.values())
    pre = ranked[: config.pretrain_roles]
    need = config.train_chars + config.test_chars
    users = [r for r in ranked[config.pretrain_roles :] if len(roles[r]) >= need][: config.users]
    if len(users) < config.users:
        raise ValueError(f"only {len(users)} held-out roles have >= {need} characters; lower users or chars")
    pre_in, pre_out = zip(*(cn.role_windows(vocab.encode(roles[r]), config.seq_len, config.seq_len // 2) for r in pre))

    def split(start, stop, stride):
        parts = [cn.role_windows(vocab.encode(roles[r][start:stop]), config.seq_len, stride) for r in users]
        ids = np.concatenate([np.full(len(p[0]), u) for u, p in enumerate(parts)])
        return cn.Examples(
            jnp.asarray(np.concatenate([p[0] for p in parts])), jnp.asarray(np.concatenate([p[1] for p in parts])),
            jnp.asarray(ids),
        )

    train = split(0, config.train_chars, config.train_stride)
    test = split(config.train_chars, need, config.seq_len)
    pretrain = (jnp.asarray(np.concatenate(pre_in)), jnp.asarray(np.concatenate(pre_out)))
    return vocab, pre, users, pretrain, train, test


def plot(record: dict, path: str) -> None:
    res = record["results"]
    users = res["users"]
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [3, 1.3]})
    ax = axes[0]
    width = 0.8 / len(cn.METHODS)
    x = np.arange(len(users))
    for i, m in enumerate(cn.METHODS):
        ax.bar(x + i * width, res["loss"][m], width, label=f"{m} ({res['trainable_parameters'][m]} params)")
    ax.set_xticks(x + 0.4 - width / 2, users, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("held-out next-character loss (nats)")
    low = min(min(v) for v in res["loss"].values())
    ax.set_ylim(0.9 * low, None)
    ax.set_title("per role (roles held out from pretraining)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    ax = axes[1]
    means = [np.mean(res["accuracy"][m]) for m in cn.METHODS]
    ax.bar(cn.METHODS, means, color=[f"C{i}" for i in range(len(cn.METHODS))])
    for i, v in enumerate(means):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0.9 * min(means), 1.03 * max(means))
    ax.set_ylabel("held-out next-character accuracy (mean over roles)")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("mean over roles")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the whole pipeline in seconds")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--text", default=SHAKESPEARE_PATH, help="Tiny Shakespeare text (default: the repo's subset)")
    parser.add_argument("--out", default="figures", help="directory for the PNG and JSON")
    args = parser.parse_args()
    config = SMOKE if args.smoke else Config()
    progress = not args.no_progress
    start = time.time()
    vocab, pre_roles, users, (pre_in, pre_out), train, test = build_data(config, args.text)
    k_base, k_pre, k_fit = jax.random.split(jax.random.key(config.seed), 3)
    model_cfg = cn.TransformerConfig(
        vocab=len(vocab.chars), seq_len=config.seq_len, width=config.width, depth=config.depth, heads=config.heads
    )
    base = cn.Transformer(model_cfg, rngs=nnx.Rngs(params=k_base))
    print(f"pretraining on {len(pre_roles)} roles ({pre_in.shape[0]} windows); users: {len(users)} held-out roles", flush=True)
    pre_losses = cn.pretrain(
        base, pre_in, pre_out, cn.next_token_loss, optax.adam(config.pretrain_lr),
        steps=config.pretrain_steps, batch_size=config.batch_size, key=k_pre, progress=progress,
    )
    method_cfg = cn.MethodConfig(
        rank=config.rank, targets=config.targets, finetune_steps=config.finetune_steps,
        train=cn.TrainConfig(steps=config.steps, batch_size=config.batch_size, groups=config.groups,
                             local_steps=config.local_steps, progress=progress),
    )
    loss, accuracy, params = {}, {}, {}
    for method in cn.METHODS:
        model, params[method] = cn.fit_method(
            method, base, train, cn.next_token_loss, optax.adam(config.learning_rate), method_cfg,
            users=len(users), key=k_fit,
        )
        logits = cn.predict(model, test.inputs, test.user_ids)
        per_ex_loss = cn.next_token_loss(logits, test.targets)
        per_ex_acc = jnp.mean(jnp.argmax(logits, -1) == test.targets, axis=-1).astype(jnp.float32)
        loss[method] = np.asarray(cn.per_user_mean(per_ex_loss, test.user_ids, len(users))).tolist()
        accuracy[method] = np.asarray(cn.per_user_mean(per_ex_acc, test.user_ids, len(users))).tolist()
        print(f"{method:12s} params={params[method]:7d}  loss={np.mean(loss[method]):.4f}"
              f"  accuracy={np.mean(accuracy[method]):.4f}", flush=True)
    mean_loss = {m: float(np.mean(v)) for m, v in loss.items()}
    best = min(mean_loss, key=mean_loss.get)
    wins = int(sum(np.argmin([loss[m][u] for m in cn.METHODS]) == 0 for u in range(len(users))))
    passed = best == "colora"
    claim = (
        f"CoLoRA has the lowest mean per-role held-out loss over {len(users)} held-out roles"
        f" (colora {mean_loss['colora']:.4f}; best baseline "
        f"{min((m for m in cn.METHODS if m != 'colora'), key=mean_loss.get)}"
        f" {min(v for m, v in mean_loss.items() if m != 'colora'):.4f}); CoLoRA best on {wins}/{len(users)} roles"
    )
    record = {
        "claim": claim, "passed": passed, "config": dataclasses.asdict(config), "smoke": args.smoke,
        "seed": config.seed, "code_version": code_version(), "device": device_info(),
        "text": os.path.relpath(args.text), "seconds": None,
        "results": {
            "users": users, "pretrain_roles": pre_roles, "vocab": vocab.chars,
            "train_windows": int(train.inputs.shape[0]), "test_windows": int(test.inputs.shape[0]),
            "pretrain_loss_last100": float(np.mean(pre_losses[-100:])), "loss": loss, "accuracy": accuracy,
            "mean_loss": mean_loss, "mean_accuracy": {m: float(np.mean(v)) for m, v in accuracy.items()},
            "trainable_parameters": params,
        },
    }
    record["seconds"] = round(time.time() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as f:
        json.dump(record, f, indent=1)
    plot(record, os.path.join(args.out, f"{NAME}.png"))
    print(f"{'PASS' if passed else 'FAIL'}: {claim}  [{record['seconds']} s]")


if __name__ == "__main__":
    main()
