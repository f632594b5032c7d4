"""Shakespeare roles as users: do the personal parts pay? CoLoRA against one shared LoRA, over seeds.

Each speaking role of Tiny Shakespeare is a user. A character-level transformer is pretrained
once on the roles that are never users; then, for ``R`` users (the ``R`` largest roles) with ``c``
training characters each, these methods adapt it, each with its own registered learning rate
(chosen on validation data of the exploration seed) and early stopping on every role's
validation text:

- ``base``: the frozen pretrained model;
- ``global``: one shared LoRA for all roles (rank r);
- ``colora``: shared U, V and a personal r x r per role.

(One LoRA per role and the centred CoLoRA are not fitted here, to keep the run within its compute
budget: neither carries a claim; the per-role LoRA lost to the shared one in every cell of the
earlier runs, and the centred family, choosing its ridge between ``colora`` and ``global`` on
validation text, would pass claim (1) trivially wherever it picks the shared LoRA.)

Seeds vary everything but the pretrained base: where each role's text is cut (a seeded rotation
of the role's text; then its first ``test_chars`` are its test text, the next ``val_chars`` its
validation text, the next ``c`` its training text, so within a seed the test text is the same for
every ``c``), the adapter initializations and the mini-batches (shared by the methods of a cell:
paired comparisons). Steps grow with the data: ``passes`` passes over the training windows,
between ``min_steps`` and ``max_steps`` (early stopping on validation picks the best checkpoint).

Heterogeneity of the users, calibrated: at the frozen base, each user's mean gradient ``g_i`` of
the loss with respect to the adapted kernels, from its training windows, and the same from the
two halves of them (``g_i^a``, ``g_i^b``). Sampling noise alone spreads the ``g_i`` by about
``v_i = ||g_i^a - g_i^b||^2 / 4`` each, so
``H = ((1/(R-1)) sum_i ||g_i - g_bar||^2 - mean_i v_i) / mean_i ||g_i||^2`` is about 0 for
identical tasks and about 1 when the users share nothing. It is measured on the roles and on a
split of identical tasks (the same training windows, pooled, shuffled and dealt to ``R``
pseudo-users); no training is involved, so it is defined whatever early stopping did.

Sub-claims (intervals: Student t over seeds of the paired difference of the role-averaged test
losses, ``statistics.mean_interval``; bounds in the Config, written before the confirmation):
(1) scarce data (``c = min chars_grid``): CoLoRA is no worse than the shared LoRA, the interval of
``colora - global`` lies below ``margin``; (2) the personal parts pay at the largest ``c``: the
interval of ``colora - global`` lies below 0; (3) calibration: the heterogeneity of identical
tasks lies within ``+-calibration`` of 0 at the largest ``c``.

Exploration: ``Config.seeds``; ``--confirm``: the registered ``confirmation_seeds`` (the verdict
of record). Fits are appended one by one to ``results/nnx_shakespeare.jsonl`` (resumable;
``--fresh`` recomputes) and the pretrained base is cached in ``results/nnx_shakespeare/`` (``--fresh``
pretrains it again in the exploration; the confirmation reuses it).

    python -m proofs_numerics.nnx_shakespeare [--smoke] [--fresh] [--confirm] [--no-progress]

Data: the whole Tiny Shakespeare corpus, shipped in colora_jax/nnx/data (9 roles hold 22,500+
characters, enough for the 20,000-character cells); a cell that needs more text per role than a
role holds is an error of the Config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from colora_jax import nnx as cn
from colora_jax import statistics
from colora_jax.nnx import SHAKESPEARE_PATH

from . import _common

NAME = "nnx_shakespeare"
METHODS = ("base", "global", "colora")
TUNED = ("global", "colora")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (the smoke config only shrinks sizes, seeds and steps)."""

    seed: int = 0  # exploration seed: the learning rates are chosen on its validation text
    confirmation_seed: int = 5  # the confirmation's first seed (registered before it ran)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # exploration seeds: text cuts, adapter inits, mini-batches
    confirmation_seeds: tuple[int, ...] = (5, 6, 7, 8, 9)  # confirmation seeds, disjoint from seeds
    base_seed: int = 0  # seed of the base model's init and pretraining (one base for every cell)
    seq_len: int = 32  # characters per window (model context)
    width: int = 64  # transformer width d_model
    depth: int = 2  # transformer blocks
    heads: int = 4  # attention heads
    pretrain_steps: int = 1500  # full-parameter pretraining steps on the roles that are never users
    pretrain_lr: float = 3e-3  # Adam learning rate for pretraining
    pretrain_batch: int = 32  # windows per pretraining mini-batch
    roles: int = 8  # R: number of users (the R largest roles)
    chars_grid: tuple[int, ...] = (500, 20000)  # c: training characters per role (scarce, largest)
    test_chars: int = 1500  # each role's (rotated) first characters: its test text
    val_chars: int = 1000  # the next ones: its validation text (early stopping, learning rates)
    train_stride: int = 16  # stride of the training windows (overlapping windows)
    rank: int = 4  # r of every adapter
    targets: tuple[str, ...] = ("query", "value", "up")  # adapted layers
    batch_size: int = 128  # windows per mixed-user mini-batch
    passes: float = 2.0  # steps = passes over the training windows ...
    min_steps: int = 50  # ... at least this many ...
    max_steps: int = 150  # ... at most this many (compute budget: 1.9 passes at c = 20,000)
    eval_every: int = 25  # steps between validation losses (early stopping, every method)
    lr_candidates: tuple[float, ...] = (1e-3, 3e-3, 1e-2)  # tried on the exploration seed at the largest c
    # registered learning rates: the candidate with the lowest validation loss on seed 0 at the
    # largest c (exploration run, recorded in the JSON's results.tuning)
    learning_rate: tuple[tuple[str, float], ...] = (("global", 3e-3), ("colora", 3e-3))
    margin: float = 0.01  # claim (1): "no worse" means the interval of colora - global lies below this (nats)
    calibration: float = 0.1  # claim (3): identical tasks' heterogeneity within +-this of 0
    heterogeneity_windows: int = 512  # H from at most this many training windows per user (cost)


SMOKE = Config(
    confirmation_seed=3,
    seeds=(0, 1),
    confirmation_seeds=(3, 4),
    seq_len=16,
    width=16,
    depth=1,
    heads=2,
    pretrain_steps=10,
    roles=3,
    chars_grid=(200, 400),
    test_chars=200,
    val_chars=150,
    batch_size=32,
    min_steps=5,
    max_steps=10,
    eval_every=5,
    lr_candidates=(1e-2,),
    learning_rate=(("global", 1e-2), ("colora", 1e-2)),
)


def build_roles(config: Config, text_path: str = SHAKESPEARE_PATH):
    """The vocabulary, the pretraining windows and the ranked candidate users' texts."""
    roles = cn.load_roles(text_path)
    ranked = sorted(roles, key=lambda r: (-len(roles[r]), r))
    vocab = cn.CharVocab.from_texts(roles.values())
    users = ranked[: config.roles]
    pre = [r for r in ranked if r not in users]
    windows = [
        cn.role_windows(vocab.encode(roles[r]), config.seq_len, config.seq_len // 2)
        for r in pre
        if len(roles[r]) > config.seq_len + 1
    ]
    pretrain = (
        jnp.asarray(np.concatenate([w[0] for w in windows])),
        jnp.asarray(np.concatenate([w[1] for w in windows])),
    )
    need = config.test_chars + config.val_chars + max(config.chars_grid)
    short = [r for r in users if len(roles[r]) < need]
    if short:
        raise ValueError(f"roles {short} hold fewer than {need} characters: lower Config.chars_grid or roles")
    return vocab, {r: roles[r] for r in users}, users, pretrain, sum(len(roles[r]) for r in pre)


def split(config: Config, vocab, texts: dict[str, str], users: list[str], chars: int, seed: int):
    """Train / validation / test examples: each role's text rotated by a seeded offset, then cut
    into test, validation and training text in this order."""
    rng = np.random.default_rng(seed)
    rotated = {}
    for r in users:
        o = int(rng.integers(len(texts[r])))
        rotated[r] = texts[r][o:] + texts[r][:o]

    def examples(start, stop, stride):
        parts = [cn.role_windows(vocab.encode(rotated[r][start:stop]), config.seq_len, stride) for r in users]
        ids = np.concatenate([np.full(len(p[0]), u) for u, p in enumerate(parts)])
        return cn.Examples(
            jnp.asarray(np.concatenate([p[0] for p in parts])),
            jnp.asarray(np.concatenate([p[1] for p in parts])),
            jnp.asarray(ids, jnp.int32),
        )

    t, v = config.test_chars, config.val_chars
    return (
        examples(t + v, t + v + chars, config.train_stride),
        examples(t, t + v, config.seq_len),
        examples(0, t, config.seq_len),
    )


def pretrained_base(config: Config, vocab, pretrain, cache: str, progress: bool) -> nnx.Module:
    """The base model, pretrained once and cached (keyed by every field that shapes it)."""
    fields = {
        k: getattr(config, k)
        for k in (
            "base_seed",
            "seq_len",
            "width",
            "depth",
            "heads",
            "pretrain_steps",
            "pretrain_lr",
            "pretrain_batch",
            "roles",
        )
    }
    key = hashlib.sha256(
        json.dumps({**fields, "vocab": vocab.chars, "n": int(pretrain[0].shape[0])}, sort_keys=True).encode()
    ).hexdigest()[:16]
    cfg = cn.TransformerConfig(
        vocab=len(vocab.chars), seq_len=config.seq_len, width=config.width, depth=config.depth, heads=config.heads
    )
    k_init, k_pre = jax.random.split(jax.random.key(config.base_seed))
    base = cn.Transformer(cfg, rngs=nnx.Rngs(params=k_init))
    path = os.path.join(cache, f"base-{key}.npz")
    leaves, treedef = jax.tree.flatten(nnx.state(base))
    if os.path.exists(path):
        saved = np.load(path)
        nnx.update(base, jax.tree.unflatten(treedef, [jnp.asarray(saved[f"a{i}"]) for i in range(len(leaves))]))
        print(f"base: restored {path}", flush=True)
        return base
    losses = cn.pretrain(
        base,
        *pretrain,
        cn.next_token_loss,
        _common.adam(config.pretrain_lr),
        steps=config.pretrain_steps,
        batch_size=config.pretrain_batch,
        key=k_pre,
        progress=progress,
    )
    print(f"base: pretrained {config.pretrain_steps} steps, last-100 loss {np.mean(losses[-100:]):.3f}", flush=True)
    os.makedirs(cache, exist_ok=True)
    np.savez(path, **{f"a{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(nnx.state(base)))})
    return base


def steps_for(config: Config, windows: int) -> int:
    """``passes`` passes over ``windows`` training windows, clipped to ``[min_steps, max_steps]``."""
    return int(np.clip(math.ceil(config.passes * windows / config.batch_size), config.min_steps, config.max_steps))


@nnx.jit
def _mean_loss_gradient(model, inputs, targets):
    return nnx.grad(lambda m: jnp.mean(cn.next_token_loss(m(inputs), targets)))(model)


def _kernel_gradient(base: nnx.Module, inputs, targets, names: tuple[str, ...]) -> np.ndarray:
    """The mean loss's gradient at the frozen base with respect to the adapted kernels, flattened."""
    leaves = jax.tree_util.tree_leaves_with_path(_mean_loss_gradient(base, inputs, targets))
    picked = [
        np.asarray(v).ravel()
        for path, v in leaves
        if "kernel" in jax.tree_util.keystr(path) and any(t in jax.tree_util.keystr(path) for t in names)
    ]
    return np.concatenate(picked)


def heterogeneity(base: nnx.Module, data: cn.Examples, users: int, names: tuple[str, ...], most: int) -> float:
    """``H = (D - mean_i v_i) / mean_i ||g_i||^2`` (module docstring): between-user spread of the
    per-user mean gradients at the base beyond what sampling noise gives (halves of each user's
    windows, first and second; at most ``most`` windows of each user)."""
    ids = np.asarray(data.user_ids)
    g, noise = [], []
    for u in range(users):
        rows = np.nonzero(ids == u)[0][:most]
        half = len(rows) // 2
        if half == 0:
            raise ValueError(f"user {u} has {len(rows)} training windows: H needs at least 2 (more text per user)")
        a = _kernel_gradient(base, data.inputs[rows[:half]], data.targets[rows[:half]], names)
        b = _kernel_gradient(base, data.inputs[rows[half : 2 * half]], data.targets[rows[half : 2 * half]], names)
        g.append((a + b) / 2)
        noise.append(np.sum((a - b) ** 2) / 4)
    g = np.stack(g)
    spread = np.sum((g - g.mean(axis=0)) ** 2) / (users - 1)
    energy = np.mean(np.sum(g**2, axis=1))
    if not energy > 0:  # a base that fits every window exactly: no direction to adapt, nothing differs
        return 0.0
    return float((spread - np.mean(noise)) / energy)


def identical_tasks(data: cn.Examples, users: int, seed: int) -> cn.Examples:
    """The same windows, pooled, shuffled and dealt to ``users`` pseudo-users of equal size."""
    order = np.random.default_rng(seed).permutation(data.inputs.shape[0])
    ids = np.arange(order.size) % users
    return cn.Examples(data.inputs[order], data.targets[order], jnp.asarray(ids, jnp.int32))


class Cell:
    """One (seed, c): its data and the fits on it, cached in a JSONL file (resumable)."""

    def __init__(self, study: "Study", seed: int, chars: int):
        self.study, self.seed, self.chars = study, seed, chars
        c = study.config
        self.users = study.ranked[: c.roles]
        self.train, self.val, self.test = split(c, study.vocab, study.texts, self.users, chars, seed)
        self.key = jax.random.fold_in(jax.random.key(seed), chars)  # the same for every method
        self.steps = steps_for(c, int(self.train.inputs.shape[0]))

    def method_config(self) -> cn.MethodConfig:
        c = self.study.config
        train = cn.TrainConfig(steps=self.steps, batch_size=c.batch_size, eval_every=c.eval_every, progress=False)
        return cn.MethodConfig(rank=c.rank, targets=c.targets, train=train)

    def fit(self, method: str, lr: float) -> dict:
        """One method's validation loss and per-role test loss (cached)."""

        def compute():
            model, params = cn.train_method(
                method,
                self.study.base,
                self.train,
                cn.next_token_loss,
                _common.adam(lr),
                self.method_config(),
                users=self.study.config.roles,
                key=self.key,
                validation=self.val,
            )
            outputs = cn.user_outputs(model, self.test.inputs, self.test.user_ids)
            per_example = cn.next_token_loss(outputs, self.test.targets)
            return {
                "validation": cn.validation_loss(model, self.val, cn.next_token_loss),
                "test": np.asarray(cn.per_user_mean(per_example, self.test.user_ids, self.study.config.roles)).tolist(),
                "trainable_parameters": params,
                "steps": self.steps,
                "data_sha256": _common.array_digest((self.train, self.val, self.test)),
                "code_version": cn.nnx_code_version("proofs_numerics/nnx_shakespeare.py"),
            }

        return self.study.cached({"method": method, "lr": lr, "seed": self.seed, "chars": self.chars}, compute)

    def heterogeneity(self) -> dict:
        def compute():
            c, roles = self.study.config, self.study.config.roles
            return {
                "roles": heterogeneity(self.study.base, self.train, roles, c.targets, c.heterogeneity_windows),
                "identical": heterogeneity(
                    self.study.base,
                    identical_tasks(self.train, roles, self.seed),
                    roles,
                    c.targets,
                    c.heterogeneity_windows,
                ),
            }

        return self.study.cached({"method": "heterogeneity", "seed": self.seed, "chars": self.chars}, compute)


class Study:
    """The corpus, the pretrained base and the resumable fit cache of one configuration."""

    def __init__(self, config: Config, args):
        self.config = config
        self.vocab, self.texts, self.ranked, pretrain, self.pre_chars = build_roles(config)
        folder = os.path.join(args.results, "smoke") if args.smoke else args.results
        self.path = os.path.join(folder, f"{NAME}.jsonl")
        cache = os.path.join(folder, NAME)
        if args.fresh and not args.confirm:  # the confirmation reuses the base its exploration pretrained
            for f in os.listdir(cache) if os.path.isdir(cache) else []:
                if f.startswith("base-"):
                    os.remove(os.path.join(cache, f))
        self.base = pretrained_base(config, self.vocab, pretrain, cache, not args.no_progress)
        # what a fit depends on: not the seeds, grids, candidates or bounds (each fit's key names its own)
        ignored = ("learning_rate", "lr_candidates", "chars_grid", "margin", "calibration")
        shape = {k: v for k, v in dataclasses.asdict(config).items() if "seed" not in k and k not in ignored}
        self.tag = hashlib.sha256(
            json.dumps({**shape, "base_seed": config.base_seed}, sort_keys=True).encode()
        ).hexdigest()[:16]
        self.done, self.computed = {}, 0
        if os.path.exists(self.path) and not args.fresh:
            with open(self.path) as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("tag") == self.tag:
                        self.done[json.dumps(rec["key"], sort_keys=True)] = rec["value"]

    def cached(self, key: dict, compute) -> dict:
        k = json.dumps(key, sort_keys=True)
        if k not in self.done:
            t = time.time()
            value = compute()
            value["seconds"] = round(time.time() - t, 1)
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"tag": self.tag, "key": key, "value": value}) + "\n")
            self.done[k], self.computed = value, self.computed + 1
            print(f"{k}: {value.get('validation', value.get('roles'))} [{value['seconds']} s]", flush=True)
        return self.done[k]


def tune(config: Config, study: Study) -> dict:
    """Each tuned method's validation loss at every candidate learning rate: exploration seed, largest c."""
    cell = Cell(study, config.seed, max(config.chars_grid))
    table = {m: {str(lr): cell.fit(m, lr)["validation"] for lr in config.lr_candidates} for m in TUNED}
    chosen = {m: float(min(table[m], key=lambda lr: (table[m][lr], float(lr)))) for m in TUNED}
    return {"validation": table, "chosen": chosen}


def run_cell(config: Config, study: Study, seed: int, chars: int) -> dict:
    """Every method on one (seed, c): role-averaged test losses and the heterogeneity H."""
    cell = Cell(study, seed, chars)
    rates = dict(config.learning_rate)
    fits = {m: cell.fit(m, rates[m]) for m in TUNED}
    fits["base"] = cell.fit("base", 0.0)
    return {
        "seed": seed,
        "chars": chars,
        "users": cell.users,
        "steps": cell.steps,
        "loss": {m: float(np.mean(f["test"])) for m, f in fits.items()},
        "per_role_loss": {m: f["test"] for m, f in fits.items()},
        "heterogeneity": cell.heterogeneity(),
        "windows": {"train": int(cell.train.inputs.shape[0]), "val": int(cell.val.inputs.shape[0])},
    }


def summarize(config: Config, cells: list[dict]) -> dict:
    """Per c: mean loss of every method, paired intervals against global, heterogeneity intervals."""
    out = {}
    for chars in config.chars_grid:
        group = [c for c in cells if c["chars"] == chars]
        diff = {
            m: statistics.mean_interval([c["loss"][m] - c["loss"]["global"] for c in group])
            for m in METHODS
            if m != "global"
        }
        out[str(chars)] = {
            "chars": chars,
            "steps": group[0]["steps"],
            "seeds": [c["seed"] for c in group],
            "mean_loss": {m: float(np.mean([c["loss"][m] for c in group])) for m in METHODS},
            "diff_to_global": diff,
            "heterogeneity": {
                k: statistics.mean_interval([c["heterogeneity"][k] for c in group]) for k in ("roles", "identical")
            },
        }
    return out


def judge(config: Config, summary: dict) -> _common.Claims:
    claims = _common.Claims()
    scarce, largest = summary[str(min(config.chars_grid))], summary[str(max(config.chars_grid))]
    claims.add(
        f"(1) c={scarce['chars']}: colora - global (nats)",
        *scarce["diff_to_global"]["colora"],
        upper=config.margin,
        source="Config.margin",
    )
    claims.add(
        f"(2) c={largest['chars']}: colora - global (nats)",
        *largest["diff_to_global"]["colora"],
        upper=0.0,
        source="the personal parts pay: below 0",
    )
    claims.add(
        f"(3) c={largest['chars']}: heterogeneity of identical tasks",
        *largest["heterogeneity"]["identical"],
        lower=-config.calibration,
        upper=config.calibration,
        source="Config.calibration (theory: 0)",
    )
    return claims


def plot(results: dict, config: dict, path: str) -> None:
    summary = sorted(results["summary"].values(), key=lambda s: s["chars"])
    xs = np.array([s["chars"] for s in summary], float)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    styles = {"base": "k:", "global": "C0-", "colora": "C2-"}
    for m in METHODS:
        axes[0].plot(xs, [s["mean_loss"][m] for s in summary], styles[m], marker="o", ms=4, label=m)
    for i, m in enumerate(("colora", "base")):
        d = np.array([s["diff_to_global"][m] for s in summary], float)
        d = np.where(np.isfinite(d), d, d[:, :1])
        axes[1].errorbar(
            xs * (1 + 0.05 * i),
            d[:, 0],
            yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]],
            fmt=styles[m][:2] + "o",
            capsize=3,
            label=f"{m} - global",
        )
    for i, k in enumerate(("roles", "identical")):
        h = np.array([s["heterogeneity"][k] for s in summary], float)
        h = np.where(np.isfinite(h), h, h[:, :1])
        axes[2].errorbar(
            xs * (1 + 0.05 * i), h[:, 0], yerr=[h[:, 0] - h[:, 1], h[:, 2] - h[:, 0]], fmt="os"[i], capsize=3, label=k
        )
    axes[0].set(
        xscale="log",
        xlabel="training characters per role (c)",
        ylabel="held-out loss (nats), mean over roles and seeds",
    )
    axes[0].legend(fontsize=7)
    axes[1].axhline(0, color="C0", lw=1)
    axes[1].axhline(config["margin"], color="k", lw=0.8, ls=":")
    axes[1].set(
        xscale="log",
        xlabel="training characters per role (c)",
        ylabel="paired difference to global (nats), 95% CI over seeds",
    )
    axes[1].legend(fontsize=7)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set(
        xscale="log",
        xlabel="training characters per role (c)",
        ylabel="heterogeneity H at the base, 95% CI\n(identical tasks: about 0)",
    )
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Shakespeare roles as users (R={config['roles']}, rank {config['rank']}, seeds {config['seeds']})", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = _common.arguments(__doc__)
    config = _common.configure(SMOKE if args.smoke else Config(), args)
    started = time.time()
    study = Study(config, args)
    tuning = None if args.confirm else tune(config, study)  # the confirmation uses the registered rates
    cells = []
    for chars in config.chars_grid:
        for seed in config.seeds:
            cells.append(run_cell(config, study, seed, chars))
            c = cells[-1]
            print(
                f"c={chars} seed={seed}: "
                + "  ".join(f"{m} {c['loss'][m]:.4f}" for m in METHODS)
                + f"  H={c['heterogeneity']['roles']:.3f}"
                f" (identical {c['heterogeneity']['identical']:.3f})",
                flush=True,
            )
    summary = summarize(config, cells)
    claims = judge(config, summary)
    results = {"summary": summary, "cells": cells, "learning_rate": dict(config.learning_rate), "tuning": tuning}
    if tuning is not None:
        results["registered_equals_tuned"] = tuning["chosen"] == dict(config.learning_rate)
        if not results["registered_equals_tuned"]:
            print(
                f"note: registered learning rates {dict(config.learning_rate)}"
                f" differ from this exploration's {tuning['chosen']}"
            )
    figure = os.path.join(args.out, f"{NAME}.png")
    os.makedirs(args.out, exist_ok=True)
    plot(results, dataclasses.asdict(config), figure)
    claim = (
        f"{config.roles} Shakespeare roles as users, seeds {list(config.seeds)}: CoLoRA is no worse than one shared"
        f" LoRA with scarce data (c={min(config.chars_grid)}, interval < {config.margin} nats) and better at"
        f" c={max(config.chars_grid)} (interval < 0); the heterogeneity of identical tasks is within"
        f" +-{config.calibration} of 0"
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
        extra={"fits_computed": study.computed, "pretrain_characters": study.pre_chars},
    )


if __name__ == "__main__":
    main()
