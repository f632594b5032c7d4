"""Shakespeare roles as users: when do personal parts pay? A sweep over data per role and roles.

Each speaking role of Tiny Shakespeare is a user. A character-level transformer is pretrained
once on the roles that are never users; then, for ``R`` users (the ``R`` largest roles) with ``c``
training characters each, five methods adapt it, all trained with the same steps, mini-batches
and early stopping on each role's validation text:

- ``base``: the frozen pretrained model;
- ``global``: one shared LoRA for all roles (rank r);
- ``local``: one LoRA per role (rank r);
- ``colora``: shared U, V and a personal r x r per role;
- ``colora-centered``: ``S_i = S_bar + Delta_i`` with the ridge ``lambda (1/k) sum_i ||U Delta_i V^T||^2``,
  ``lambda`` chosen on the validation text among ``0`` (the ``colora`` fit), ``ridges`` and
  ``infinity`` (the ``global`` fit): the family nests both.

Each role's text is cut once: characters ``[0, test)`` are its test text, the next ``val`` its
validation text, and its training text is the next ``c`` characters, so the test text is the
same for every ``c`` (paired comparisons along the sweep). Reported per cell (R, c) and seed:
each role's held-out next-character loss for every method; across seeds, the role-averaged
loss of each method and paired 95% confidence intervals (Student t over seeds) of its
difference to ``global``; and the heterogeneity of the roles, measured by how far each role's own
LoRA update lies from the shared one (relative Frobenius distance of the weight updates,
summed over adapted layers), and by the between-role share of the per-role updates' variance.

Claims, fixed before running (margin in nats, see Config):
(1) scarce data (c <= scarce_chars): CoLoRA and the centred CoLoRA are no worse than the shared
    LoRA: mean paired difference < margin in every such cell;
(2) the personal parts pay where data grows: at the largest c of each R, CoLoRA or the centred
    CoLoRA beats the shared LoRA (upper end of the 95% interval of the difference < 0).

Results are appended cell by cell to ``results/nnx_shakespeare/cells.jsonl`` (resumable: finished
cells are read back; ``--fresh`` recomputes) and the pretrained base is cached there.

    python -m proofs_numerics.nnx_shakespeare [--smoke] [--fresh] [--no-progress] [--text PATH]

Data: the whole Tiny Shakespeare corpus, shipped in colora_jax/nnx/data (9 roles hold 22,500+
characters, enough for the 20,000-character cells); cells that need more text per role than a
text holds are skipped and listed. ``--text`` points at another copy.
"""

from __future__ import annotations

import argparse
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
import optax
from flax import nnx

from colora_jax import device_info, statistics
from colora_jax import nnx as cn
from colora_jax.nnx import SHAKESPEARE_PATH, code_version

NAME = "nnx_shakespeare"
METHODS = ("base", "global", "local", "colora", "colora-centered")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (the smoke config only shrinks sizes and steps)."""

    seeds: tuple[int, ...] = (0, 1, 2)  # adaptation seeds: adapter init and mini-batches (paired across methods)
    base_seed: int = 0  # seed of the base model's init and pretraining (one base for every cell)
    seq_len: int = 32  # characters per window (model context)
    width: int = 64  # transformer width d_model
    depth: int = 2  # transformer blocks
    heads: int = 4  # attention heads
    pretrain_steps: int = 1500  # full-parameter pretraining steps on the roles that are never users
    pretrain_lr: float = 3e-3  # Adam learning rate for pretraining
    roles_grid: tuple[int, ...] = (8, 24)  # R: number of users (the R largest roles)
    chars_grid: tuple[int, ...] = (500, 2000, 5000, 20000)  # c: training characters per role
    test_chars: int = 1500  # each role's first characters: its test text
    val_chars: int = 1000  # the next ones: its validation text (early stopping, choice of lambda)
    train_stride: int = 16  # stride of the training windows (overlapping windows)
    rank: int = 4  # r of every adapter
    targets: tuple[str, ...] = ("query", "value", "up")  # adapted layers
    steps: int = 300  # adapter optimizer steps of every method
    eval_every: int = 50  # steps between validation losses (early stopping, every method)
    batch_size: int = 32  # windows per mixed-user mini-batch
    learning_rate: float = 3e-3  # Adam learning rate of every adapter method
    ridges: tuple[float, ...] = (0.01, 0.1)  # centred ridge strengths fitted (0 and infinity come from colora, global)
    margin: float = 0.01  # claim (1): "no worse" means a mean paired difference below this (nats)
    scarce_chars: int = 2000  # claim (1) concerns the cells with c <= this


SMOKE = Config(
    seeds=(0, 1),
    seq_len=16,
    width=16,
    depth=1,
    heads=2,
    pretrain_steps=20,
    roles_grid=(3,),
    chars_grid=(200, 400),
    test_chars=200,
    val_chars=150,
    steps=20,
    eval_every=10,
    ridges=(0.1,),
)


def build_roles(config: Config, text_path: str):
    """The vocabulary, the pretraining windows and the ranked candidate users' texts."""
    roles = cn.load_roles(text_path)
    ranked = sorted(roles, key=lambda r: (-len(roles[r]), r))
    vocab = cn.CharVocab.from_texts(roles.values())
    users = ranked[: max(config.roles_grid)]
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
    return vocab, {r: roles[r] for r in users}, users, pretrain, sum(len(roles[r]) for r in pre)


def split(config: Config, vocab, texts: dict[str, str], users: list[str], chars: int):
    """Train / validation / test examples of ``users``: test first, then validation, then training text."""

    def examples(start, stop, stride):
        parts = [cn.role_windows(vocab.encode(texts[r][start:stop]), config.seq_len, stride) for r in users]
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
            "batch_size",
            "roles_grid",
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
    state = nnx.state(base)
    leaves, treedef = jax.tree.flatten(state)
    if os.path.exists(path):
        saved = np.load(path)
        nnx.update(base, jax.tree.unflatten(treedef, [jnp.asarray(saved[f"a{i}"]) for i in range(len(leaves))]))
        print(f"base: restored {path}", flush=True)
        return base
    losses = cn.pretrain(
        base,
        *pretrain,
        cn.next_token_loss,
        optax.adam(config.pretrain_lr),
        steps=config.pretrain_steps,
        batch_size=config.batch_size,
        key=k_pre,
        progress=progress,
    )
    print(f"base: pretrained {config.pretrain_steps} steps, last-100 loss {np.mean(losses[-100:]):.3f}", flush=True)
    os.makedirs(cache, exist_ok=True)
    np.savez(path, **{f"a{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(nnx.state(base)))})
    return base


def _flat_updates(model) -> dict[str, np.ndarray]:
    """Each adapted layer's weight updates of every user, ``(users, d_in * d_out)``."""
    out = {}
    for name, layer in cn.adapted_layers(model):
        out[name] = np.stack([np.asarray(layer.delta_kernel(u)).ravel() for u in range(layer.users)])
    return out


def heterogeneity(local, shared) -> dict[str, float]:
    """How far each role's own LoRA lies from the shared one, and the between-role variance share.

    ``distance``: mean over roles of ``||dW_i(local) - dW(global)||_F / ||dW(global)||_F`` (all
    adapted layers stacked); ``dispersion``: ``mean_i ||dW_i - mean_j dW_j||^2 / mean_i ||dW_i||^2``
    over the per-role LoRA updates (0: all roles alike, 1: no common part).
    """
    lo, gl = _flat_updates(local), _flat_updates(shared)
    dw = np.concatenate([lo[n] for n in sorted(lo)], axis=1)  # (users, everything)
    g = np.concatenate([gl[n][0] for n in sorted(gl)])
    distance = np.linalg.norm(dw - g[None], axis=1) / np.linalg.norm(g)
    centred = dw - dw.mean(axis=0, keepdims=True)
    total = np.mean(np.sum(dw**2, axis=1))  # 0 when early stopping kept every role's LoRA at its start
    dispersion = np.mean(np.sum(centred**2, axis=1)) / total if total > 0 else float("nan")
    return {"distance": float(np.mean(distance)), "dispersion": float(dispersion)}


def run_cell(config: Config, base, vocab, texts, ranked, roles: int, chars: int, seed: int, progress: bool) -> dict:
    users = ranked[:roles]
    train, val, test = split(config, vocab, texts, users, chars)
    key = jax.random.fold_in(jax.random.key(seed), roles * 1_000_003 + chars)  # the same for every method
    method_cfg = cn.MethodConfig(
        rank=config.rank,
        targets=config.targets,
        train=cn.TrainConfig(
            steps=config.steps, batch_size=config.batch_size, eval_every=config.eval_every, progress=progress
        ),
    )
    tx = optax.adam(config.learning_rate)
    fit = lambda m: cn.fit_method(
        m, base, train, cn.next_token_loss, tx, method_cfg, users=roles, key=key, validation=val
    )
    models, params = {}, {}
    for method in ("base", "global", "local", "colora"):
        models[method], params[method] = fit(method)
    val_scores = {
        0.0: cn.validation_loss(models["colora"], val, cn.next_token_loss),
        math.inf: cn.validation_loss(models["global"], val, cn.next_token_loss),
    }
    _, ridge_scores, ridge_model = cn.select_ridge(
        base, train, val, cn.next_token_loss, tx, method_cfg, config.ridges, users=roles, key=key
    )
    val_scores.update(ridge_scores)
    chosen = min(sorted(val_scores), key=lambda lam: val_scores[lam])
    models["colora-centered"] = {0.0: models["colora"], math.inf: models["global"]}.get(chosen, ridge_model)
    params["colora-centered"] = cn.count_parameters(
        models["colora-centered"], nnx.Any(cn.SharedParam, cn.PersonalParam)
    )
    loss = {}
    for method, model in models.items():
        per_example = cn.next_token_loss(cn.predict(model, test.inputs, test.user_ids), test.targets)
        loss[method] = np.asarray(cn.per_user_mean(per_example, test.user_ids, roles)).tolist()
    return {
        "roles": roles,
        "chars": chars,
        "seed": seed,
        "users": users,
        "loss": loss,
        "trainable_parameters": params,
        "validation": {str(k): v for k, v in val_scores.items()},
        "chosen_ridge": str(chosen),
        "heterogeneity": heterogeneity(models["local"], models["global"]),
        "windows": {
            "train": int(train.inputs.shape[0]),
            "val": int(val.inputs.shape[0]),
            "test": int(test.inputs.shape[0]),
        },
    }


def paired_ci(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of paired differences (one per seed)."""
    d = np.asarray(diffs, float)
    if d.size < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = statistics.student_t_quantile(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def summarize(config: Config, cells: list[dict]) -> dict:
    """Per (R, c): role-averaged loss per method (mean over seeds), paired CIs against global."""
    out = {}
    for roles in config.roles_grid:
        for chars in config.chars_grid:
            group = [c for c in cells if c["roles"] == roles and c["chars"] == chars]
            if not group:
                continue
            mean = {m: float(np.mean([np.mean(c["loss"][m]) for c in group])) for m in METHODS}
            diff = {
                m: paired_ci([np.mean(c["loss"][m]) - np.mean(c["loss"]["global"]) for c in group])
                for m in METHODS
                if m != "global"
            }
            roles_better = {
                m: int(sum(np.sum(np.asarray(c["loss"][m]) < np.asarray(c["loss"]["global"])) for c in group))
                for m in ("colora", "colora-centered", "local")
            }
            out[f"{roles}x{chars}"] = {
                "roles": roles,
                "chars": chars,
                "seeds": len(group),
                "mean_loss": mean,
                "diff_to_global": diff,
                "roles_better_than_global": roles_better,
                "role_seed_pairs": roles * len(group),
                "heterogeneity": {
                    k: float(np.mean([c["heterogeneity"][k] for c in group])) for k in ("distance", "dispersion")
                },
                "chosen_ridges": [c["chosen_ridge"] for c in group],
            }
    return out


def claims(config: Config, summary: dict) -> tuple[bool, list[str]]:
    lines, ok = [], True
    for s in summary.values():
        if s["chars"] <= config.scarce_chars:
            for m in ("colora", "colora-centered"):
                mean, lo, hi = s["diff_to_global"][m]
                good = mean < config.margin
                ok &= good
                lines.append(
                    f"{'PASS' if good else 'FAIL'} (1) R={s['roles']} c={s['chars']}: {m} - global = {mean:+.4f}"
                    f" [{lo:+.4f}, {hi:+.4f}] nats (claim: mean < {config.margin})"
                )
    for roles in config.roles_grid:
        done = [s for s in summary.values() if s["roles"] == roles]
        if not done:
            continue
        s = max(done, key=lambda s: s["chars"])
        his = {m: s["diff_to_global"][m] for m in ("colora", "colora-centered")}
        good = any(hi < 0 for _, _, hi in his.values())
        ok &= good
        text = ", ".join(f"{m} {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]" for m, d in his.items())
        lines.append(
            f"{'PASS' if good else 'FAIL'} (2) R={roles} c={s['chars']} (largest c): {text} nats vs global"
            " (claim: one interval entirely below 0)"
        )
    return ok, lines


def plot(record: dict, path: str) -> None:
    summary = record["summary"]
    grid = record["config"]["roles_grid"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    styles = {"base": "k:", "global": "C0-", "local": "C1-", "colora": "C2-", "colora-centered": "C3--"}
    for j, roles in enumerate(grid):
        cells = sorted((s for s in summary.values() if s["roles"] == roles), key=lambda s: s["chars"])
        if not cells:
            continue
        xs = [s["chars"] for s in cells]
        marker = "o" if j == 0 else "s"
        for m in METHODS:
            axes[0].plot(
                xs, [s["mean_loss"][m] for s in cells], styles[m], marker=marker, ms=4, label=f"{m}, R={roles}"
            )
        for m in ("local", "colora", "colora-centered"):
            d = np.array([s["diff_to_global"][m] for s in cells])
            axes[1].errorbar(
                np.array(xs) * (1 + 0.04 * (METHODS.index(m) - 3)),
                d[:, 0],
                yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]],
                fmt=styles[m][:2] + marker,
                capsize=3,
                ms=4,
                label=f"{m} - global, R={roles}",
            )
        for s in cells:
            d = s["diff_to_global"]["colora"]
            axes[2].errorbar(
                s["heterogeneity"]["distance"], -d[0], yerr=[[d[2] - d[0]], [d[0] - d[1]]], fmt="C2" + marker, capsize=3
            )
            axes[2].annotate(
                f"c={s['chars']}",
                (s["heterogeneity"]["distance"], -d[0]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    axes[0].set_xscale("log")
    axes[0].set_ylim(0, None)
    axes[0].set_xlabel("training characters per role (c)")
    axes[0].set_ylabel("held-out loss (nats), mean over roles and seeds")
    axes[0].legend(fontsize=6, ncol=2, loc="lower left")
    axes[1].axhline(0, color="C0", lw=1)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("training characters per role (c)")
    axes[1].set_ylabel("paired difference to global (nats), 95% CI over seeds")
    axes[1].legend(fontsize=6)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_xlabel("heterogeneity: mean ||dW_i(local) - dW(global)|| / ||dW(global)||")
    axes[2].set_ylabel("CoLoRA gain over global (nats), 95% CI")
    axes[2].set_title("o: R={}   s: R={}".format(*grid[:2]) if len(grid) > 1 else "", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Shakespeare roles as users ({record['text']}; rank {record['config']['rank']},"
        f" {len(record['config']['seeds'])} seeds)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the whole pipeline in seconds")
    parser.add_argument("--fresh", action="store_true", help="recompute every cell (and the base)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--text",
        default=SHAKESPEARE_PATH,
        help="Tiny Shakespeare text (default: the corpus shipped in colora_jax/nnx/data)",
    )
    parser.add_argument(
        "--results", default=os.path.join("results", NAME), help="resumable cell results and base cache"
    )
    parser.add_argument("--out", default="figures", help="directory for the PNG and JSON")
    args = parser.parse_args()
    config = SMOKE if args.smoke else Config()
    version = code_version("proofs_numerics/nnx_shakespeare.py")  # the code this run started with
    progress = not args.no_progress
    start = time.time()
    results = args.results + ("-smoke" if args.smoke else "")
    vocab, texts, ranked, pretrain, pre_chars = build_roles(config, args.text)
    need = config.test_chars + config.val_chars
    plan, skipped = [], []
    for roles in config.roles_grid:
        for chars in config.chars_grid:
            short = [r for r in ranked[:roles] if len(texts[r]) < need + chars]
            (skipped if short else plan).append((roles, chars))
    print(
        f"{len(ranked)} candidate users; pretraining on the other roles ({pre_chars:,} characters);"
        f" {len(plan)} cells x {len(config.seeds)} seeds; skipped for lack of text: {skipped}",
        flush=True,
    )
    path = os.path.join(results, "cells.jsonl")
    if args.fresh and os.path.exists(path):
        os.remove(path)
    tag = hashlib.sha256(
        json.dumps(
            {**dataclasses.asdict(config), "text": os.path.abspath(args.text)}, sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    done = {}
    if os.path.exists(path):
        for line in open(path):
            rec = json.loads(line)
            if rec.get("tag") == tag:
                done[(rec["roles"], rec["chars"], rec["seed"])] = rec
    if args.fresh:
        for f in os.listdir(results) if os.path.isdir(results) else []:
            if f.startswith("base-"):
                os.remove(os.path.join(results, f))
    base = pretrained_base(config, vocab, pretrain, results, progress)
    cells = []
    for roles, chars in plan:
        for seed in config.seeds:
            if (roles, chars, seed) in done:
                cells.append(done[(roles, chars, seed)])
                continue
            t = time.time()
            rec = run_cell(config, base, vocab, texts, ranked, roles, chars, seed, progress)
            rec.update(tag=tag, seconds=round(time.time() - t, 1), code_version=version)
            os.makedirs(results, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            cells.append(rec)
            means = "  ".join(f"{m} {np.mean(rec['loss'][m]):.4f}" for m in METHODS)
            print(
                f"R={roles:3d} c={chars:6d} seed={seed}: {means}  lambda*={rec['chosen_ridge']}"
                f"  heterogeneity {rec['heterogeneity']['distance']:.2f}  [{rec['seconds']} s]",
                flush=True,
            )
    summary = summarize(config, cells)
    passed, lines = claims(config, summary)
    record = {
        "passed": passed,
        "claims": lines,
        "config": dataclasses.asdict(config),
        "smoke": args.smoke,
        "code_version": version,
        "device": device_info(),
        "text": os.path.basename(args.text),
        "skipped_cells": skipped,
        "pretrain_characters": pre_chars,
        "summary": summary,
        "cells": cells,
        "seconds": round(time.time() - start, 1),
        "cells_code_versions": sorted({c.get("code_version", "?") for c in cells}),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as f:
        json.dump(record, f, indent=1)
    plot(record, os.path.join(args.out, f"{NAME}.png"))
    for line in lines:
        print(line)
    print(
        f"{'PASS' if passed else 'FAIL'}: personal parts no worse when data is scarce, and paying at the largest c"
        f"  [{record['seconds']} s]"
    )


if __name__ == "__main__":
    main()
