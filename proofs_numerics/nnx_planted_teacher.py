"""Planted CoLoRA teacher on a small NNX transformer: CoLoRA against tuned baselines, over seeds.

Claim: when users' tasks share their subspaces (task angle 0) and each user has few samples,
CoLoRA (shared U, V plus a personal r x r) reaches a lower per-user held-out loss than one LoRA per
user, one shared LoRA, FedAvg-LoRA with local fine-tuning and the frozen base, and its learned
shared factors recover the planted subspaces (sine of the largest principal angle at most half
that of a random subspace).

Each seed draws a new base transformer, a new teacher ``W_i = W_0 + U* S_i V*^T`` planted in the
targeted layers, new train / validation / test sequences (random tokens, the teacher's logits as
targets, their mean squared error as the loss), new adapter initializations and mini-batches.
Every method is early-stopped on the validation sequences (the starting point competes, so no
adapter ends worse than the frozen base on validation data), with the learning rate registered in
``Config.learning_rate`` for it: chosen on the validation data of the exploration seed
``Config.seed`` at the largest ``n`` among ``Config.lr_candidates`` (the exploration run refits the candidates on that
seed and records its choice beside the registered one). Reported loss is relative: held-out MSE
divided by the frozen base's (1 = no better than base).

Sub-claims (intervals: Student t over seeds of paired differences, ``statistics.mean_interval``):
for every samples per user ``n`` and every baseline, the geometric mean over seeds of
``loss(colora) / loss(baseline)`` (each the mean over users) with its interval lies below 1; at the
largest ``n`` the ratio of the learned shared factors' distance to the planted ones over a random
subspace's distance (largest over layers, U and V apart) lies below ``recovery_ratio``.

Exploration: ``Config.seeds``; ``--confirm``: the registered ``confirmation_seeds`` (the verdict
of record). Fits are appended one by one to ``results/nnx_planted_teacher.jsonl`` (resumable;
``--fresh`` recomputes).

    python -m proofs_numerics.nnx_planted_teacher [--smoke] [--fresh] [--confirm] [--no-progress]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from colora_jax import nnx as cn
from colora_jax import statistics, subspace_distance

from . import _common

NAME = "nnx_planted_teacher"
TRAINED = ("colora", "local", "global", "fedavg-lora")  # fitted by colora_jax.nnx.fit_method, each tuned
BASELINES = ("local", "global", "fedavg-lora", "base")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (the smoke config only shrinks sizes, seeds and steps)."""

    seed: int = 0  # exploration seed: each method's learning rate is chosen on its validation data
    confirmation_seed: int = 5  # the confirmation's first seed (registered before it ran)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # exploration seeds: base, teacher, data, inits, batches
    confirmation_seeds: tuple[int, ...] = (5, 6, 7, 8, 9)  # confirmation seeds, disjoint from seeds
    model: cn.TransformerConfig = cn.TransformerConfig(vocab=32, seq_len=16, width=32, depth=2, heads=2)
    users: int = 16  # k, number of users
    rank: int = 2  # r of the planted perturbation and of every fitted adapter
    targets: tuple[str, ...] = ("up",)  # layers carrying the perturbation (and adapted)
    strength: float = 1.0  # planted S_i size relative to ||W_0||_2
    test_samples: int = 16  # held-out sequences per user (the reported loss)
    val_samples: int = 8  # validation sequences per user (early stopping, learning rates)
    samples_grid: tuple[int, ...] = (2, 16)  # training sequences per user, at task angle 0
    steps: int = 150  # most optimizer steps of every method (early stopping picks the best checkpoint)
    eval_every: int = 15  # steps between validation losses (early stopping)
    batch_size: int = 32  # sequences per mixed-user mini-batch
    lr_candidates: tuple[float, ...] = (1e-2, 3e-2, 1e-1, 3e-1)  # Adam rates tried on the exploration seed, largest n
    # the registered learning rate of each method: the candidate with the lowest validation loss
    # on seed 0 at the largest n (the exploration's tuning, recorded in its JSON's results.tuning)
    learning_rate: tuple[tuple[str, float], ...] = (
        ("colora", 3e-2),
        ("local", 3e-2),
        ("global", 1e-2),
        ("fedavg-lora", 3e-2),
    )
    groups: int = 4  # FedAvg-LoRA: user groups (clients)
    local_steps: int = 10  # FedAvg-LoRA: local steps per round (rounds of all groups: about steps local steps)
    finetune_steps: int = 50  # FedAvg-LoRA: per-user fine-tuning steps after the rounds (early-stopped)
    # recovery: learned distance / a random subspace's <= this (theory: exact recovery gives 0 at
    # loss 0; a random r-subspace lies at ~1, so 0.5 asks for at least half the way)
    recovery_ratio: float = 0.5
    # colora / baseline loss ratio must lie below this: strictly better, by at least 1% (two adapters
    # that early stopping left at the base have the ratio 1 exactly, which must not pass)
    ratio_bound: float = 0.99


SMOKE = Config(
    confirmation_seed=3,
    seeds=(0, 1),
    confirmation_seeds=(3, 4),
    model=cn.TransformerConfig(vocab=16, seq_len=8, width=16, depth=1, heads=2),
    users=4,
    test_samples=4,
    val_samples=4,
    samples_grid=(2,),
    steps=10,
    eval_every=5,
    lr_candidates=(1e-2,),
    learning_rate=(("colora", 1e-2), ("local", 1e-2), ("global", 1e-2), ("fedavg-lora", 1e-2)),
    finetune_steps=5,
    local_steps=5,
    groups=2,
)


def learning_rates(config: Config) -> dict[str, float]:
    return dict(config.learning_rate)


def problem(config: Config, seed: int, samples: int):
    """The base model, the planted teacher and its train / validation / test data of one seed and n."""
    key = jax.random.fold_in(jax.random.key(seed), samples)
    k_base, k_teacher, k_val, k_fit, k_random = jax.random.split(key, 5)
    base = cn.Transformer(config.model, rngs=nnx.Rngs(params=k_base))
    teacher_cfg = cn.TeacherConfig(
        users=config.users,
        rank=config.rank,
        targets=config.targets,
        samples=samples,
        test_samples=config.test_samples,
        task_angle=0.0,
        strength=config.strength,
    )
    planted = cn.planted_teacher(k_teacher, base, teacher_cfg)
    ids = jax.numpy.repeat(jax.numpy.arange(config.users), config.val_samples)
    tokens = jax.random.randint(k_val, (ids.shape[0], config.model.seq_len), 0, config.model.vocab)
    with cn.colora_users(planted.teacher, ids):
        validation = cn.Examples(tokens, planted.teacher(tokens), ids)
    return base, planted, validation, k_fit, k_random


def method_config(config: Config, method: str) -> cn.MethodConfig:
    """Every method gets ``steps`` gradient steps in all (FedAvg: ``steps / groups`` per group)."""
    steps = max(config.local_steps, config.steps // config.groups) if method == "fedavg-lora" else config.steps
    return cn.MethodConfig(
        rank=config.rank,
        targets=config.targets,
        finetune_steps=config.finetune_steps,
        train=cn.TrainConfig(
            steps=steps,
            batch_size=config.batch_size,
            groups=config.groups,
            local_steps=config.local_steps,
            eval_every=config.eval_every,
            progress=False,
        ),
    )


def fit(config: Config, method: str, lr: float, seed: int, samples: int) -> dict:
    """One method at one learning rate on one seed's problem: validation and per-user test losses."""
    base, planted, validation, k_fit, k_random = problem(config, seed, samples)
    test = planted.test
    model, params = cn.train_method(
        method,
        base,
        planted.train,
        cn.logit_mse,
        _common.adam(lr),
        method_config(config, method),
        users=config.users,
        key=k_fit,
        validation=validation,
    )
    out = cn.user_outputs(model, test.inputs, test.user_ids)
    record = {
        "method": method,
        "lr": lr,
        "seed": seed,
        "samples": samples,
        "validation": cn.validation_loss(model, validation, cn.logit_mse),
        "test": np.asarray(cn.per_user_mean(cn.logit_mse(out, test.targets), test.user_ids, config.users)).tolist(),
        "trainable_parameters": params,
        "data_sha256": _common.array_digest((planted.train, validation, test)),
        "code_version": cn.nnx_code_version("proofs_numerics/nnx_planted_teacher.py"),
    }
    if method == "colora":
        record["distance"], record["random_distance"] = {}, {}
        for (name, layer), k in zip(cn.adapted_layers(model), jax.random.split(k_random, 64)):
            ku, kv = jax.random.split(k)
            u, v = planted.shared_u[name], planted.shared_v[name]
            record["distance"][name] = {
                "U": float(subspace_distance(layer.shared_u[...], u)),
                "V": float(subspace_distance(layer.shared_v[...], v)),
            }
            record["random_distance"][name] = {
                "U": float(subspace_distance(jax.random.normal(ku, u.shape), u)),
                "V": float(subspace_distance(jax.random.normal(kv, v.shape), v)),
            }
    return record


class Fits:
    """The fits of this configuration, appended one by one to a JSONL file (resumable)."""

    def __init__(self, config: Config, args):
        folder = os.path.join(args.results, "smoke") if args.smoke else args.results
        self.path = os.path.join(folder, f"{NAME}.jsonl")
        # what a fit depends on: not the seeds, grids, candidates or bounds (each fit's key names its own)
        ignored = ("learning_rate", "lr_candidates", "samples_grid", "recovery_ratio", "ratio_bound")
        shape = {k: v for k, v in dataclasses.asdict(config).items() if "seed" not in k and k not in ignored}
        self.tag = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.config, self.done, self.computed = config, {}, 0
        if os.path.exists(self.path) and not args.fresh:
            with open(self.path) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("tag") == self.tag:
                        self.done[self.key(rec["method"], rec["lr"], rec["seed"], rec["samples"])] = rec

    @staticmethod
    def key(method, lr, seed, samples):
        return (method, float(lr), int(seed), int(samples))

    def get(self, method: str, lr: float, seed: int, samples: int) -> dict:
        k = self.key(method, lr, seed, samples)
        if k not in self.done:
            t = time.time()
            rec = fit(self.config, method, lr, seed, samples)
            rec.update(tag=self.tag, seconds=round(time.time() - t, 1))
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            self.done[k], self.computed = rec, self.computed + 1
            print(
                f"{method:12s} lr={lr:g} seed={seed} n={samples}:"
                f" validation {rec['validation']:.4g} [{rec['seconds']} s]"
            )
        return self.done[k]


def tune(config: Config, fits: Fits) -> dict:
    """Each method's validation loss at every candidate learning rate: exploration seed, largest n."""
    table, chosen = {}, {}
    n = max(config.samples_grid)
    for method in TRAINED:
        score = {lr: fits.get(method, lr, config.seed, n)["validation"] for lr in config.lr_candidates}
        table[method] = {str(lr): s for lr, s in score.items()}
        chosen[method] = min(sorted(score), key=score.get)
    return {"validation": table, "chosen": chosen, "samples": n}


def base_losses(config: Config, seed: int, samples: int) -> np.ndarray:
    """The frozen base's per-user test loss (nothing to fit or tune)."""
    base, planted, _, _, _ = problem(config, seed, samples)
    test = planted.test
    out = base(test.inputs)
    return np.asarray(cn.per_user_mean(cn.logit_mse(out, test.targets), test.user_ids, config.users))


def collect(config: Config, fits: Fits) -> dict:
    """Per n: each method's relative loss per seed (mean over users) and the recovery distances."""
    rates = learning_rates(config)
    out = {}
    for n in config.samples_grid:
        rows = {m: [] for m in (*TRAINED, "base")}
        distance, random = [], []
        for seed in config.seeds:
            base = base_losses(config, seed, n)
            rows["base"].append(1.0)
            for m in TRAINED:
                rec = fits.get(m, rates[m], seed, n)
                rows[m].append(float(np.mean(np.asarray(rec["test"]) / base)))
                if m == "colora":
                    d, rnd = rec["distance"], rec["random_distance"]
                    distance.append({f: max(d[name][f] for name in d) for f in ("U", "V")})
                    random.append({f: min(rnd[name][f] for name in rnd) for f in ("U", "V")})
        out[str(n)] = {"samples": n, "relative_loss": rows, "distance": distance, "random_distance": random}
    return out


def judge(config: Config, cells: dict) -> _common.Claims:
    claims = _common.Claims()
    for cell in cells.values():
        n, rows = cell["samples"], cell["relative_loss"]
        for b in BASELINES:
            diff = np.log10(np.asarray(rows["colora"])) - np.log10(np.asarray(rows[b]))
            mean, lo, hi = statistics.mean_interval(diff)
            cell.setdefault("ratio_to", {})[b] = [10**mean, 10**lo, 10**hi]
            claims.add(
                f"n={n}: colora / {b} loss",
                10**mean,
                10**lo,
                10**hi,
                upper=config.ratio_bound,
                source="geometric mean over seeds, t interval on log ratios",
            )
    last = cells[str(max(config.samples_grid))]
    for f in ("U", "V"):
        ratio = [d[f] / r[f] for d, r in zip(last["distance"], last["random_distance"])]
        mean, lo, hi = statistics.mean_interval(ratio)
        claims.add(
            f"n={last['samples']}: sin(largest angle) of {f} / a random subspace's",
            mean,
            lo,
            hi,
            upper=config.recovery_ratio,
            source="Config.recovery_ratio (random subspace: ~1)",
        )
    return claims


def plot(results: dict, config: dict, path: str) -> None:
    cells = sorted(results["cells"].values(), key=lambda c: c["samples"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    xs = [c["samples"] for c in cells]
    for i, m in enumerate((*TRAINED, "base")):
        stats = [statistics.mean_interval(np.log10(c["relative_loss"][m])) for c in cells]
        mid = np.array([10 ** s[0] for s in stats])
        lo = np.array([10 ** s[1] if np.isfinite(s[1]) else 10 ** s[0] for s in stats])
        hi = np.array([10 ** s[2] if np.isfinite(s[2]) else 10 ** s[0] for s in stats])
        axes[0].errorbar(
            np.array(xs) * (1 + 0.03 * i), mid, yerr=[mid - lo, hi - mid], marker="osd^v"[i], capsize=3, label=m
        )
    axes[0].set(
        xlabel="training sequences per user",
        ylabel="held-out loss / frozen base's\n(geometric mean over seeds, 95% CI)",
        yscale="log",
    )
    axes[0].legend(fontsize=8)
    for i, b in enumerate(BASELINES):
        r = np.array([c["ratio_to"][b] for c in cells])
        axes[1].errorbar(
            np.array(xs) * (1 + 0.03 * i),
            r[:, 0],
            yerr=[r[:, 0] - r[:, 1], r[:, 2] - r[:, 0]],
            fmt="o",
            capsize=3,
            label=f"colora / {b}",
        )
    axes[1].axhline(config["ratio_bound"], color="k", lw=0.8)
    axes[1].set(xlabel="training sequences per user", ylabel="loss ratio, 95% CI over seeds", yscale="log")
    axes[1].legend(fontsize=8)
    for f, style in (("U", "o"), ("V", "s")):
        d = [[x[f] for x in c["distance"]] for c in cells]
        rnd = [[x[f] for x in c["random_distance"]] for c in cells]
        axes[2].plot(
            np.repeat(xs, [len(v) for v in d]), np.concatenate(d), style, alpha=0.6, label=f"learned {f} (each seed)"
        )
        axes[2].plot(
            np.repeat(xs, [len(v) for v in rnd]), np.concatenate(rnd), style, mfc="none", alpha=0.6, label=f"random {f}"
        )
    axes[2].set(
        xlabel="training sequences per user",
        ylabel="sin(largest principal angle) to planted\n(largest over layers)",
        ylim=(0, 1.05),
    )
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    fig.suptitle(f"planted teacher, task angle 0, seeds {config['seeds']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    fits = Fits(config, args)
    tuning = (
        None if args.confirm else tune(config, fits)
    )  # the exploration seed's choice; the confirmation uses the registered
    cells = collect(config, fits)
    claims = judge(config, cells)
    results = {"cells": cells, "learning_rate": learning_rates(config), "tuning": tuning}
    if tuning is not None:
        results["registered_equals_tuned"] = tuning["chosen"] == learning_rates(config)
        if not results["registered_equals_tuned"]:
            print(
                f"note: registered learning rates {learning_rates(config)}"
                f" differ from this exploration's {tuning['chosen']}"
            )
    figure = os.path.join(args.out, f"{NAME}.png")
    os.makedirs(args.out, exist_ok=True)
    plot(results, dataclasses.asdict(config), figure)
    seeds = list(config.seeds)
    claim = (
        f"task angle 0, seeds {seeds}: CoLoRA's held-out loss is below every tuned, early-stopped baseline's"
        f" (ratio interval < {config.ratio_bound}) at n={list(config.samples_grid)}, and its shared U and V lie"
        f" at most {config.recovery_ratio} of a random subspace's distance from the planted ones at the largest n"
    )
    _common.finish(
        NAME,
        args,
        config,
        claim=claim,
        passed=claims.passed,
        measured=claims.summary(),
        results=results,
        started=started,
        figure=figure,
        claims=claims,
        extra={"fits_computed": fits.computed},
    )


if __name__ == "__main__":
    main()
