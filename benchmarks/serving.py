"""Multi-user throughput of the NNX path: serving forward and train step, CoLoRA against the baselines.

Model: :class:`colora_jax.nnx.Decoder` (grouped-query attention with einsum projections, RMSNorm,
gated MLP), adapted at ``targets`` with rank ``r`` by three methods:

- ``colora``: shared ``U, V`` (computed once per batch) plus a gathered ``r x r`` per example;
- ``local``: one LoRA per user, a gathered ``d_in x r`` and ``d_out x r`` per example;
- ``global``: one shared LoRA (no bank; every example uses it).

Two sweeps, each for the serving forward (``checked=False``, the hot path) and for an Adam train
step on the adapters (mixed users, ids checked under jit as in training):

1. distinct users per batch ``N`` (example ``n`` is user ``n mod N``) at a fixed bank size;
2. bank size (users held) at ``N = batch`` distinct users per batch; configurations whose
   adapter and optimizer state would exceed ``memory_limit_gb`` are skipped and listed with
   what they would need.

Timing: ``jax.jit`` of pure functions of ``nnx.split`` states; compile time (lower + compile)
reported apart; then ``warmup`` untimed calls and the median of ``repeats`` timed calls
(``block_until_ready``), the N values interleaved so that load drifts hit all alike. Memory:
the bytes of the adapter's trainable state and of the Adam state, in total and per user (the
personal part of the bank divided by its size). The same command runs on a GPU or TPU.

    .venv/bin/python benchmarks/serving.py [--smoke] [--out figures]

Prints the JSON record's tables; writes figures/nnx_serving.json and .png.
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
import optax
from flax import nnx

from colora_jax import device_info
from colora_jax import nnx as cn
from colora_jax.nnx import code_version

NAME = "nnx_serving"
METHODS = ("colora", "local", "global")
TRAINABLE = {"colora": nnx.Any(cn.SharedParam, cn.PersonalParam), "local": cn.PersonalParam, "global": cn.SharedParam}


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark sizes."""

    seed: int = 0  # PRNG seed of the model, adapters and tokens
    model: cn.DecoderConfig = cn.DecoderConfig(
        vocab=1024, seq_len=8, width=256, depth=2, heads=8, kv_heads=4, head_dim=32, mlp_hidden=768
    )
    targets: tuple[str, ...] = ("query", "value", "out", "up", "down")  # adapted layers
    rank: int = 8  # adapter rank r
    batch: int = 1024  # sequences per call (>= the largest N)
    users: int = 1024  # bank size of the N sweep
    distinct_users: tuple[int, ...] = (1, 4, 16, 64, 256, 1024)  # N
    bank_sizes: tuple[int, ...] = (1024, 4096, 16_384, 100_000)  # bank sweep, at N = batch
    learning_rate: float = 1e-3  # Adam, train step
    memory_limit_gb: float = 6.0  # skip a configuration whose adapter + Adam state exceeds this
    warmup: int = 1  # untimed calls before measuring
    repeats: int = 3  # timed calls per point; the median is reported


SMOKE = Config(
    model=cn.DecoderConfig(vocab=64, seq_len=4, width=32, depth=1, heads=4, kv_heads=2, head_dim=8, mlp_hidden=64),
    batch=64,
    users=64,
    distinct_users=(1, 64),
    bank_sizes=(64, 256),
    repeats=2,
)


def _adapted(config: Config, method: str, users: int, key) -> nnx.Module:
    k_base, k_adapt, k_values = jax.random.split(key, 3)
    model = cn.Decoder(config.model, rngs=nnx.Rngs(params=k_base))
    rngs = nnx.Rngs(params=k_adapt)
    if method == "local":
        cn.apply_lora_bank(model, users=users, rank=config.rank, targets=config.targets, rngs=rngs)
    else:  # global: one shared LoRA, i.e. CoLoRA with a bank of one identity
        cn.apply_colora(
            model, users=users if method == "colora" else 1, rank=config.rank, targets=config.targets, rngs=rngs
        )
    for _, layer in cn.adapted_layers(model):  # non-zero adapters: nothing trivially zero
        for var in (layer.shared_u, layer.personal) if method != "local" else (layer.lora_b,):
            k_values, sub = jax.random.split(k_values)
            var.set_value(0.01 * jax.random.normal(sub, var[...].shape))
    return model


def _nbytes(tree) -> int:
    return int(sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(tree)))


def _estimate_bytes(config: Config, method: str, users: int) -> int:
    """Adapter + Adam (2 moments) bytes, from shapes alone (float32), without building anything."""
    model = nnx.eval_shape(lambda: _adapted(config, method, users, jax.random.key(0)))
    return 3 * _nbytes(nnx.state(model, TRAINABLE[method]))


def _timed(fn, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return times


class Bench:
    """One method at one bank size: compiled serving and train functions and its memory."""

    def __init__(self, config: Config, method: str, users: int, key):
        self.config, self.method, self.users = config, method, users
        model = _adapted(config, method, users, key)
        self.graphdef, self.trainable, self.frozen = nnx.split(model, TRAINABLE[method], ...)
        self.tx = optax.adam(config.learning_rate)
        self.opt_state = self.tx.init(self.trainable)
        graphdef, tx = self.graphdef, self.tx
        seq = config.model.seq_len

        def serve(trainable, frozen, tokens, ids):
            model = nnx.merge(graphdef, trainable, frozen)
            with cn.colora_users(model, ids, checked=False):
                return model(tokens)[:, -1]  # next-token logits of each sequence

        wrt = TRAINABLE[method]

        def step(trainable, opt_state, frozen, tokens, ids):
            def loss(model):
                with cn.colora_users(model, ids):
                    return jnp.mean(cn.next_token_loss(model(tokens[:, :-1]), tokens[:, 1:]))

            model = nnx.merge(graphdef, trainable, frozen)
            value, grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, wrt))(model)
            updates, opt_state = tx.update(grads, opt_state, trainable)
            return optax.apply_updates(trainable, updates), opt_state, value

        self.tokens = jax.random.randint(key, (config.batch, seq), 0, config.model.vocab)
        ids0 = jnp.zeros((config.batch,), jnp.int32)
        t = time.perf_counter()
        self.serve = jax.jit(serve).lower(self.trainable, self.frozen, self.tokens, ids0).compile()
        self.serve_compile = time.perf_counter() - t
        t = time.perf_counter()
        self.step = (
            jax.jit(step, donate_argnums=(0, 1))
            .lower(self.trainable, self.opt_state, self.frozen, self.tokens, ids0)
            .compile()
        )
        self.step_compile = time.perf_counter() - t
        bank = users if method != "global" else 0
        personal = _nbytes(nnx.state(nnx.merge(self.graphdef, self.trainable, self.frozen), cn.PersonalParam))
        self.memory = {
            "adapter_bytes": _nbytes(self.trainable),
            "optimizer_bytes": _nbytes(self.opt_state),
            "personal_bytes_per_user": personal / bank if bank else 0.0,
            "optimizer_bytes_per_user": 2 * personal / bank if bank else 0.0,  # Adam: two moments per parameter
            "base_bytes": _nbytes(nnx.state(nnx.merge(self.graphdef, self.trainable, self.frozen), nnx.Param))
            - _nbytes(self.trainable),
        }

    def ids(self, distinct: int):
        n = min(distinct, self.users) if self.method != "global" else 1
        return jnp.arange(self.config.batch, dtype=jnp.int32) % n

    def run_serve(self, ids):
        return self.serve(self.trainable, self.frozen, self.tokens, ids)

    def run_step(self, ids):
        self.trainable, self.opt_state, loss = self.step(self.trainable, self.opt_state, self.frozen, self.tokens, ids)
        return loss


def sweep_distinct(config: Config, key) -> dict:
    out = {}
    for method in METHODS:
        bench = Bench(config, method, config.users, key)
        ids = {n: bench.ids(n) for n in config.distinct_users}
        serve_t = {n: [] for n in config.distinct_users}
        step_t = {n: [] for n in config.distinct_users}
        first = {
            "serve": _timed(lambda: bench.run_serve(ids[config.distinct_users[0]]), 1)[0],
            "train": _timed(lambda: bench.run_step(ids[config.distinct_users[0]]), 1)[0],
        }
        for n in config.distinct_users:
            _timed(lambda: bench.run_serve(ids[n]), config.warmup)
            _timed(lambda: bench.run_step(ids[n]), config.warmup)
        for _ in range(config.repeats):
            for n in config.distinct_users:
                serve_t[n] += _timed(lambda: bench.run_serve(ids[n]), 1)
                step_t[n] += _timed(lambda: bench.run_step(ids[n]), 1)
        tokens = config.batch * config.model.seq_len
        out[method] = {
            "compile_seconds": {"serve": bench.serve_compile, "train": bench.step_compile},
            "first_call_seconds": first,
            "serve_tokens_per_second": {str(n): tokens / statistics.median(t) for n, t in serve_t.items()},
            "train_tokens_per_second": {
                str(n): config.batch * (config.model.seq_len - 1) / statistics.median(t) for n, t in step_t.items()
            },
            "memory": bench.memory,
        }
        print(f"{method:7s} N sweep: serve {out[method]['serve_tokens_per_second']}", flush=True)
        print(f"{'':7s}          train {out[method]['train_tokens_per_second']}", flush=True)
        bench = None  # frees the model before the next one is built
    return out


def sweep_bank(config: Config, key) -> dict:
    out = {}
    for method in METHODS:
        out[method] = {}
        for users in config.bank_sizes if method != "global" else config.bank_sizes[:1]:
            need = _estimate_bytes(config, method, users)
            if need > config.memory_limit_gb * 2**30:
                out[method][str(users)] = {
                    "skipped": f"adapter + Adam state needs {need / 2**30:.1f} GiB"
                    f" > memory_limit_gb {config.memory_limit_gb}"
                }
                print(f"{method:7s} bank {users}: skipped ({need / 2**30:.1f} GiB)", flush=True)
                continue
            bench = Bench(config, method, users, key)
            ids = bench.ids(config.batch)
            _timed(lambda: bench.run_serve(ids), config.warmup)
            _timed(lambda: bench.run_step(ids), config.warmup)
            serve = statistics.median(_timed(lambda: bench.run_serve(ids), config.repeats))
            step = statistics.median(_timed(lambda: bench.run_step(ids), config.repeats))
            out[method][str(users)] = {
                "serve_tokens_per_second": config.batch * config.model.seq_len / serve,
                "train_tokens_per_second": config.batch * (config.model.seq_len - 1) / step,
                "compile_seconds": {"serve": bench.serve_compile, "train": bench.step_compile},
                "memory": bench.memory,
            }
            print(
                f"{method:7s} bank {users}: serve {out[method][str(users)]['serve_tokens_per_second']:,.0f}"
                f" train {out[method][str(users)]['train_tokens_per_second']:,.0f} tokens/s;"
                f" adapter+Adam {(bench.memory['adapter_bytes'] + bench.memory['optimizer_bytes']) / 2**20:,.1f} MiB",
                flush=True,
            )
            bench = None  # frees the model before the next one is built
    return out


def checked_overhead(config: Config, key) -> dict:
    """Serving with the run-time user-id check on, against the unchecked hot path (CoLoRA, N = batch)."""
    model = _adapted(config, "colora", config.users, key)
    graphdef, state = nnx.split(model)
    tokens = jax.random.randint(key, (config.batch, config.model.seq_len), 0, config.model.vocab)
    ids = jnp.arange(config.batch, dtype=jnp.int32) % config.users
    out = {}
    for checked in (False, True):

        @jax.jit
        def serve(state, tokens, ids):
            m = nnx.merge(graphdef, state)
            with cn.colora_users(m, ids, checked=checked):
                return m(tokens)[:, -1]

        _timed(lambda: serve(state, tokens, ids), 1 + config.warmup)
        out["checked" if checked else "unchecked"] = (
            config.batch
            * config.model.seq_len
            / statistics.median(_timed(lambda: serve(state, tokens, ids), config.repeats))
        )
    return out


def plot(record: dict, path: str) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    labels = {"colora": "CoLoRA", "local": "one LoRA per user", "global": "one shared LoRA"}
    for i, mode in enumerate(("serve", "train")):
        ax = axes[i]
        for m in METHODS:
            d = record["distinct_users"][m][f"{mode}_tokens_per_second"]
            ax.plot([int(n) for n in d], list(d.values()), "-o", label=labels[m])
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"distinct users per batch (bank {record['config']['users']})")
        ax.set_ylabel(f"{mode} tokens / second")
        ax.set_ylim(0, None)
        ax = axes[2 + i]
        for m in METHODS:
            pts = [
                (int(u), v[f"{mode}_tokens_per_second"])
                for u, v in record["bank_size"][m].items()
                if "skipped" not in v
            ]
            if pts:
                ax.plot(*zip(*pts), "-o", label=labels[m])
            for u, v in record["bank_size"][m].items():
                if "skipped" in v:
                    ax.annotate(
                        f"{labels[m]}: {u} users\n{v['skipped'].split(' >')[0]}",
                        (int(u), 0),
                        fontsize=6,
                        xytext=(0, 20),
                        textcoords="offset points",
                        ha="right",
                    )
        ax.set_xscale("log")
        ax.set_xlabel(f"bank size (users held), {record['config']['batch']} distinct users per batch")
        ax.set_ylabel(f"{mode} tokens / second")
        ax.set_ylim(0, None)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    c = record["config"]["model"]
    fig.suptitle(
        f"Decoder width {c['width']}, depth {c['depth']}, {c['heads']}/{c['kv_heads']} heads, vocab {c['vocab']}"
        f" ({record['model_parameters']:,} parameters); batch {record['config']['batch']} x {c['seq_len']} tokens,"
        f" rank {record['config']['rank']}; {record['device']['backend']} ({record['device']['device_kind']}),"
        f" load {record['load_average']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", default="figures", help="directory for the JSON and PNG")
    args = parser.parse_args()
    config = SMOKE if args.smoke else Config()
    key = jax.random.key(config.seed)
    start = time.time()
    load_before = os.getloadavg()
    record = {
        "config": dataclasses.asdict(config),
        "smoke": args.smoke,
        "seed": config.seed,
        "code_version": code_version("benchmarks/serving.py"),
        "device": device_info(),
        "model_parameters": config.model.parameters(),
        "persistent_compilation_cache": jax.config.jax_compilation_cache_dir,
        "distinct_users": sweep_distinct(config, key),
        "bank_size": sweep_bank(config, key),
        "checked_serving_tokens_per_second": checked_overhead(config, key),
    }
    record["load_average"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    record["seconds"] = round(time.time() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as f:
        json.dump(record, f, indent=1)
    plot(record, os.path.join(args.out, f"{NAME}.png"))
    d = record["distinct_users"]
    lo, hi = str(min(config.distinct_users)), str(max(config.distinct_users))
    ratio = d["colora"]["serve_tokens_per_second"][hi] / d["colora"]["serve_tokens_per_second"][lo]
    print(
        f"CoLoRA serving {hi} vs {lo} distinct users: ratio {ratio:.3f}; checked/unchecked serving"
        f" {record['checked_serving_tokens_per_second']}; load (1, 5, 15 min) before/after {record['load_average']};"
        f" {record['seconds']} s"
    )


if __name__ == "__main__":
    main()
