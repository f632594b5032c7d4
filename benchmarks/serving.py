"""Multi-user throughput of the NNX path: serving forward and train step, CoLoRA against the baselines.

Model: :class:`colora_jax.nnx.Decoder` (grouped-query attention with einsum projections, RMSNorm,
gated MLP), adapted at ``targets`` with rank ``r``. Variants:

- ``base``: the frozen model, no adapters (its "train step" trains only the RMSNorm scales: the
  full activation backward through every block, with no adapter weights; the floor of any
  adapter's step);
- ``global``: one shared LoRA (CoLoRA's layer with a bank of one: every example gathers the same
  ``r x r``);
- ``colora``: shared ``U, V`` plus a gathered ``r x r`` per example;
- ``local``: one LoRA per user, a gathered ``d_in x r`` and ``d_out x r`` per example.

Sections (serving: ``checked=False``, the hot path; train: one Adam step on the adapters with ids
checked under jit, as in training):

1. ``widths``: base, shared LoRA and CoLoRA (and, at the first width, one LoRA per user) at
   model widths 256, 1024 and 2048, every example a different user; CoLoRA's overhead over the
   shared LoRA and over the base, as ratios of paired calls;
2. ``distinct_users``: at the first width and a bank of ``users``, ``N`` distinct users per batch
   (example ``n`` is user ``n mod N``), and serving with the ids checked;
3. ``bank_size``: CoLoRA holding ``users`` and ``bank_sizes`` users, ``N = batch``; a bank whose
   adapter and Adam state would exceed ``memory_limit_gb`` is skipped and listed with its need.

Every call at one width is one interleaved group (sections 2 and 3 are part of the first
width's group), so that each section's variants share the same rounds.

Timing: ``jax.jit`` of pure functions of ``nnx.split`` states; compile (lower + compile) reported
apart, and the first call. Then ``warmup`` untimed calls of everything, then ``repeats`` rounds;
in each round every variant of a section is called once (serve, then train), in an order that
rotates from round to round, so load drifts hit all alike. Each call is timed in process CPU
time (``time.process_time``: what other jobs on the core take does not count) and wall time.
Reported: tokens/s from the median CPU time with the range over the rounds, and each ratio as
the median (and range) of the per-round ratios of paired calls. Run it pinned to one core
(``taskset -c 1``: XLA's thread pool then has one core, CPU time equals busy time); the JSON
records the cores, the load average before and after, and whether the persistent compilation
cache was on. Memory: the bytes of the adapter's trainable state and of the Adam state.

    taskset -c 1 .venv/bin/python benchmarks/serving.py [--smoke] [--out figures]

Prints one line per measurement; writes figures/nnx_serving.json and .png.
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
from colora_jax.nnx import nnx_code_version as code_version

NAME = "nnx_serving"
METHODS = ("base", "global", "colora", "local")
TRAINABLE = {
    "base": nnx.All(nnx.Param, nnx.PathContains("scale")),  # the RMSNorm scales
    "colora": nnx.Any(cn.SharedParam, cn.PersonalParam),
    "local": cn.PersonalParam,
    "global": cn.SharedParam,
}
LABELS = {"base": "frozen base", "global": "one shared LoRA", "colora": "CoLoRA", "local": "one LoRA per user"}


def model_config(width: int, vocab: int = 1024, seq_len: int = 8) -> cn.DecoderConfig:
    """The benchmark decoder at a width: 2 blocks, ``min(width / 32, 16)`` heads (at least 2), MLP ``3 width``."""
    heads = max(2, min(width // 32, 16))
    return cn.DecoderConfig(
        vocab=vocab,
        seq_len=seq_len,
        width=width,
        depth=2,
        heads=heads,
        kv_heads=heads // 2,
        head_dim=width // heads,
        mlp_hidden=3 * width,
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """Benchmark sizes."""

    seed: int = 0  # PRNG seed of the model, adapters and tokens
    vocab: int = 1024
    seq_len: int = 8  # tokens per sequence
    targets: tuple[str, ...] = ("query", "value", "out", "up", "down")  # adapted layers
    rank: int = 8  # adapter rank r
    widths: tuple[int, ...] = (256, 1024, 2048)  # section 1
    width_batches: tuple[int, ...] = (256, 64, 16)  # sequences per call at each width (= users held, but the first)
    users: int = 1024  # bank size at the first width (sections 2 and 3)
    distinct_users: tuple[int, ...] = (1, 16)  # N below the batch, section 2
    bank_sizes: tuple[int, ...] = (100_000,)  # CoLoRA banks beyond ``users``, section 3
    learning_rate: float = 1e-3  # Adam, train step
    memory_limit_gb: float = 4.0  # skip a bank whose adapter + Adam state exceeds this
    warmup: int = 1  # untimed calls of every variant before the rounds
    repeats: int = 5  # timed rounds
    clock: str = "cpu"  # what rates and ratios are computed from: "cpu" (process CPU time) or "wall" (accelerators)


SMOKE = Config(
    vocab=64,
    seq_len=4,
    widths=(32, 64),
    width_batches=(16, 8),
    users=32,
    distinct_users=(1, 4),
    bank_sizes=(128,),
    repeats=2,
)


def _adapted(model_cfg: cn.DecoderConfig, config: Config, method: str, users: int, key) -> nnx.Module:
    k_base, k_adapt, k_values = jax.random.split(key, 3)
    model = cn.Decoder(model_cfg, rngs=nnx.Rngs(params=k_base))
    rngs = nnx.Rngs(params=k_adapt)
    if method == "base":
        return model
    if method == "local":
        cn.apply_lora_bank(model, users=users, rank=config.rank, targets=config.targets, rngs=rngs)
    else:  # global: one shared LoRA, i.e. CoLoRA with a bank of one
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


def _estimate_bytes(model_cfg: cn.DecoderConfig, config: Config, method: str, users: int) -> int:
    """Adapter + Adam (2 moments) bytes, from shapes alone (float32), without building anything."""
    model = nnx.eval_shape(lambda: _adapted(model_cfg, config, method, users, jax.random.key(0)))
    return 3 * _nbytes(nnx.state(model, TRAINABLE[method]))


def _timed(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call, until its result is ready."""
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.process_time() - cpu, time.perf_counter() - wall


class Bench:
    """One variant at one width and bank size: compiled serving and train functions, its memory,
    and the CPU and wall seconds of its timed calls."""

    def __init__(
        self, model_cfg: cn.DecoderConfig, config: Config, method: str, users: int, batch: int, key, checked=False
    ):
        self.method, self.users, self.batch, self.seq = method, users, batch, model_cfg.seq_len
        model = _adapted(model_cfg, config, method, users, key)
        wrt = TRAINABLE[method]
        self.graphdef, self.trainable, self.frozen = nnx.split(model, wrt, ...)
        self.tx = optax.adam(config.learning_rate)
        self.opt_state = self.tx.init(self.trainable)
        graphdef, tx, adapted = self.graphdef, self.tx, method != "base"

        def serve(trainable, frozen, tokens, ids, checked=False):
            model = nnx.merge(graphdef, trainable, frozen)
            if not adapted:
                return model(tokens)[:, -1]
            with cn.colora_users(model, ids, checked=checked):
                return model(tokens)[:, -1]  # next-token logits of each sequence

        def step(trainable, opt_state, frozen, tokens, ids):
            def loss(model):
                if not adapted:
                    return jnp.mean(cn.next_token_loss(model(tokens[:, :-1]), tokens[:, 1:]))
                with cn.colora_users(model, ids):
                    return jnp.mean(cn.next_token_loss(model(tokens[:, :-1]), tokens[:, 1:]))

            model = nnx.merge(graphdef, trainable, frozen)
            value, grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, wrt))(model)
            updates, opt_state = tx.update(grads, opt_state, trainable)
            return optax.apply_updates(trainable, updates), opt_state, value

        self.tokens = jax.random.randint(key, (batch, self.seq), 0, model_cfg.vocab)
        ids0 = jnp.zeros((batch,), jnp.int32)
        t = time.perf_counter()
        self.serve = jax.jit(serve).lower(self.trainable, self.frozen, self.tokens, ids0).compile()
        self.serve_compile = time.perf_counter() - t
        if checked:  # serving with the run-time id check (one host callback per call)
            self.serve_checked = (
                jax.jit(lambda *a: serve(*a, checked=True))
                .lower(self.trainable, self.frozen, self.tokens, ids0)
                .compile()
            )
        t = time.perf_counter()
        self.step = (
            jax.jit(step, donate_argnums=(0, 1))
            .lower(self.trainable, self.opt_state, self.frozen, self.tokens, ids0)
            .compile()
        )
        self.step_compile = time.perf_counter() - t
        bank = users if method in ("colora", "local") else 0
        merged = nnx.merge(self.graphdef, self.trainable, self.frozen)
        personal = _nbytes(nnx.state(merged, cn.PersonalParam))
        adapter = _nbytes(nnx.state(merged, nnx.Any(cn.SharedParam, cn.PersonalParam)))
        self.memory = {
            "adapter_bytes": adapter,
            "optimizer_bytes": _nbytes(self.opt_state) if adapted else 0,
            "personal_bytes_per_user": personal / bank if bank else 0.0,
            "optimizer_bytes_per_user": 2 * personal / bank if bank else 0.0,  # Adam: two moments per parameter
            "base_bytes": _nbytes(nnx.state(merged, nnx.Param)) - adapter,
        }
        self.times: dict[str, list[tuple[float, float]]] = {}
        self.first = {}

    def ids(self, distinct: int):
        n = min(distinct, self.users) if self.method in ("colora", "local") else 1
        return jnp.arange(self.batch, dtype=jnp.int32) % n

    def call(self, mode: str, ids, label: str | None = None) -> None:
        """One serve or train call; timed under ``label`` (untimed without one)."""
        if mode in ("serve", "checked"):
            serve = self.serve if mode == "serve" else self.serve_checked
            fn = lambda: serve(self.trainable, self.frozen, self.tokens, ids)  # noqa: E731
        else:

            def fn():
                self.trainable, self.opt_state, loss = self.step(
                    self.trainable, self.opt_state, self.frozen, self.tokens, ids
                )
                return loss

        if label is None:
            jax.block_until_ready(fn())
            return
        self.times.setdefault(f"{mode}:{label}", []).append(_timed(fn))

    def tokens_per_call(self, mode: str) -> int:
        return self.batch * (self.seq - 1 if mode == "train" else self.seq)

    def compile_record(self) -> dict:
        return {"compile_seconds": {"serve": self.serve_compile, "train": self.step_compile}, "memory": self.memory}


CLOCKS = {"cpu": 0, "wall": 1}  # index into the (CPU seconds, wall seconds) of a timed call


def _rate(tokens: int, times: list[tuple[float, float]], clock: str = "cpu") -> dict:
    """Tokens/s from the median time on ``clock``, its range over the rounds, and the median wall rate."""
    t = [x[CLOCKS[clock]] for x in times]
    return {
        "tokens_per_second": tokens / statistics.median(t),
        "range": [tokens / max(t), tokens / min(t)],
        "clock": clock,
        "wall_tokens_per_second": tokens / statistics.median(w for _, w in times),
        "cpu_seconds": [c for c, _ in times],
        "wall_seconds": [w for _, w in times],
    }


def _ratio(num: list[tuple[float, float]], den: list[tuple[float, float]], clock: str = "cpu") -> dict:
    """Time ratio num / den of the paired (same-round) calls on ``clock``: median and range."""
    i = CLOCKS[clock]
    r = [a[i] / b[i] for a, b in zip(num, den)]
    return {"median": statistics.median(r), "range": [min(r), max(r)], "rounds": r}


def _rounds(config: Config, calls: list) -> None:
    """Warm-up, then ``repeats`` rounds of every call, the order rotated by one each round."""
    for bench, mode, ids, _ in calls:
        for _ in range(config.warmup):
            bench.call(mode, ids)
    for i in range(config.repeats):
        shift = i % len(calls)
        for bench, mode, ids, label in calls[shift:] + calls[:shift]:
            bench.call(mode, ids, label)


def _first_calls(bench: Bench, ids) -> None:
    for mode in ("serve", "train"):
        t = time.perf_counter()
        bench.call(mode, ids)
        bench.first[mode] = time.perf_counter() - t


def _rates(benches: dict, mode: str, label: str, clock: str) -> dict:
    return {m: _rate(b.tokens_per_call(mode), b.times[f"{mode}:{label}"], clock) for m, b in benches.items()}


def _print_width(width: int, batch: int, row: dict) -> None:
    for mode in ("serve", "train"):
        r = row[mode]
        clock = r["colora"]["clock"]
        print(
            f"width {width:5d} {mode:5s} (batch {batch}, every example its own user):"
            + "".join(
                f" {m} {r[m]['tokens_per_second']:,.0f} [{r[m]['range'][0]:,.0f}, {r[m]['range'][1]:,.0f}];"
                for m in METHODS
                if m in r
            )
            + f" time colora/global {_fmt(r['colora_over_global'])}, colora/base {_fmt(r['colora_over_base'])}"
            f" (tokens per {clock} second, median [min, max] of rounds)",
            flush=True,
        )


def sweep(config: Config, key) -> dict:
    """Every section. One interleaved group per width; the first width's group also holds the
    distinct-users calls, one LoRA per user, the checked serving call and the larger CoLoRA banks."""
    out = {"widths": {}}
    for i, (width, batch) in enumerate(zip(config.widths, config.width_batches)):
        first = i == 0
        model_cfg = model_config(width, config.vocab, config.seq_len)
        users = config.users if first else batch
        methods = METHODS if first else ("base", "global", "colora")
        benches = {m: Bench(model_cfg, config, m, users, batch, key, checked=first and m == "colora") for m in methods}
        calls = []
        for b in benches.values():
            _first_calls(b, b.ids(batch))
            calls += [(b, mode, b.ids(batch), "N") for mode in ("serve", "train")]
        banks = {}
        if first:
            for b in benches.values():
                calls += [(b, mode, b.ids(n), str(n)) for n in config.distinct_users for mode in ("serve", "train")]
            calls.append((benches["colora"], "checked", benches["colora"].ids(batch), "checked"))
            banks, skipped = _banks(model_cfg, config, batch, key)
            calls += [(b, mode, b.ids(batch), "N") for b in banks.values() for mode in ("serve", "train")]
        _rounds(config, calls)
        row = {"model": dataclasses.asdict(model_cfg), "parameters": model_cfg.parameters(), "batch": batch}
        row["users"] = users
        for mode in ("serve", "train"):
            row[mode] = _rates(benches, mode, "N", config.clock)
            c = benches["colora"].times[f"{mode}:N"]
            row[mode]["colora_over_global"] = _ratio(c, benches["global"].times[f"{mode}:N"], config.clock)
            row[mode]["colora_over_base"] = _ratio(c, benches["base"].times[f"{mode}:N"], config.clock)
            if "local" in benches:
                row[mode]["local_over_colora"] = _ratio(benches["local"].times[f"{mode}:N"], c, config.clock)
        row["compile"] = {m: b.compile_record() | {"first_call_seconds": b.first} for m, b in benches.items()}
        out["widths"][str(width)] = row
        _print_width(width, batch, row)
        if first:
            out["distinct_users"] = _distinct(config, benches, batch)
            out["bank_size"] = {str(users): _bank_row(benches["colora"], "N", config.clock)} | skipped
            out["bank_size"] |= {str(u): _bank_row(b, "N", config.clock) for u, b in banks.items()}
            for u, r in out["bank_size"].items():
                if "skipped" not in r:
                    print(
                        f"CoLoRA bank {int(u):,} (width {width}, {batch} distinct users per batch): serve"
                        f" {r['serve']['tokens_per_second']:,.0f} train {r['train']['tokens_per_second']:,.0f}"
                        f" tokens/s; adapter + Adam {r['adapter_and_adam_bytes'] / 2**20:,.1f} MiB",
                        flush=True,
                    )
        benches = banks = None  # frees the models before the next width
    return out


def _fmt(ratio: dict) -> str:
    return f"{ratio['median']:.3f} [{ratio['range'][0]:.3f}, {ratio['range'][1]:.3f}]"


def _banks(model_cfg: cn.DecoderConfig, config: Config, batch: int, key) -> tuple[dict, dict]:
    benches, skipped = {}, {}
    for users in config.bank_sizes:
        need = _estimate_bytes(model_cfg, config, "colora", users)
        if need > config.memory_limit_gb * 2**30:
            skipped[str(users)] = {
                "skipped": f"adapter + Adam state needs {need / 2**30:.1f} GiB"
                f" > memory_limit_gb {config.memory_limit_gb}"
            }
        else:
            benches[users] = Bench(model_cfg, config, "colora", users, batch, key)
    return benches, skipped


def _bank_row(b: Bench, label: str, clock: str) -> dict:
    return {mode: _rate(b.tokens_per_call(mode), b.times[f"{mode}:{label}"], clock) for mode in ("serve", "train")} | {
        "memory": b.memory,
        "adapter_and_adam_bytes": b.memory["adapter_bytes"] + b.memory["optimizer_bytes"],
        "compile_seconds": {"serve": b.serve_compile, "train": b.step_compile},
    }


def _distinct(config: Config, benches: dict, batch: int) -> dict:
    ns = (*config.distinct_users, batch)
    label = {n: str(n) for n in config.distinct_users} | {batch: "N"}
    out = {"batch": batch, "users": benches["colora"].users}
    for m, b in benches.items():
        out[m] = {
            mode: {str(n): _rate(b.tokens_per_call(mode), b.times[f"{mode}:{label[n]}"], config.clock) for n in ns}
            for mode in ("serve", "train")
        }
    c = benches["colora"].times
    out["colora"]["checked_serve"] = _rate(
        benches["colora"].tokens_per_call("serve"), c["checked:checked"], config.clock
    )
    out["colora_checked_over_unchecked"] = _ratio(c["checked:checked"], c["serve:N"], config.clock)
    lo = str(min(ns))
    for mode in ("serve", "train"):
        out[f"colora_{mode}_{batch}_over_{lo}"] = _ratio(c[f"{mode}:N"], c[f"{mode}:{label[min(ns)]}"], config.clock)
        print(
            f"bank {out['users']}, {mode}:"
            + "".join(
                f" {m} " + ", ".join(f"N={n} {v['tokens_per_second']:,.0f}" for n, v in out[m][mode].items()) + ";"
                for m in benches
            )
            + f" CoLoRA time N={batch} / N={lo}: {_fmt(out[f'colora_{mode}_{batch}_over_{lo}'])}",
            flush=True,
        )
    print(f"CoLoRA serving time, ids checked / unchecked (N={batch}): {_fmt(out['colora_checked_over_unchecked'])}")
    return out


def plot(record: dict, path: str) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    widths = record["widths"]
    w = [int(x) for x in widths]
    ax = axes[0]
    for mode, style in (("serve", "-o"), ("train", "--s")):
        for ratio, label in (("colora_over_global", "CoLoRA / shared LoRA"), ("colora_over_base", "CoLoRA / base")):
            r = [widths[x][mode][ratio] for x in widths]
            med = [v["median"] for v in r]
            err = [[m - v["range"][0] for m, v in zip(med, r)], [v["range"][1] - m for m, v in zip(med, r)]]
            ax.errorbar(w, med, yerr=err, fmt=style, capsize=3, label=f"{mode}: {label}")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("model width (every example its own user)")
    clock = record["config"]["clock"]
    ax.set_ylabel(f"{clock}-time ratio, median and range of rounds")
    d = record["distinct_users"]
    for i, mode in enumerate(("serve", "train")):
        ax = axes[1 + i]
        for m in METHODS:
            pts = d[m][mode]
            n = [int(k) for k in pts]
            med = [v["tokens_per_second"] for v in pts.values()]
            err = [
                [x - v["range"][0] for x, v in zip(med, pts.values())],
                [v["range"][1] - x for x, v in zip(med, pts.values())],
            ]
            ax.errorbar(n, med, yerr=err, fmt="-o", capsize=3, label=LABELS[m])
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"distinct users per batch (width {record['config']['widths'][0]}, bank {d['users']})")
        ax.set_ylabel(f"{mode} tokens / {clock} second")
        ax.set_ylim(0, None)
    ax = axes[3]
    bank = {int(u): v for u, v in record["bank_size"].items() if "skipped" not in v}
    for mode in ("serve", "train"):
        med = [v[mode]["tokens_per_second"] for v in bank.values()]
        err = [
            [x - v[mode]["range"][0] for x, v in zip(med, bank.values())],
            [v[mode]["range"][1] - x for x, v in zip(med, bank.values())],
        ]
        ax.errorbar(list(bank), med, yerr=err, fmt="-o", capsize=3, label=f"CoLoRA {mode}")
    ax.set_xscale("log")
    ax.set_xlabel(f"CoLoRA bank size (users held), {d['batch']} distinct per batch")
    ax.set_ylabel(f"tokens / {clock} second")
    ax.set_ylim(0, None)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Decoder depth 2, vocab {record['config']['vocab']}, {record['config']['seq_len']} tokens per sequence,"
        f" rank {record['config']['rank']} on {', '.join(record['config']['targets'])};"
        f" {record['device']['backend']} ({record['device']['device_kind']}), cores {record['cores']},"
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
    record = run(config, smoke=args.smoke)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as f:
        json.dump(record, f, indent=1)
    plot(record, os.path.join(args.out, f"{NAME}.png"))
    print(f"cores {record['cores']}; load (1, 5, 15 min) before/after {record['load_average']}; {record['seconds']} s")


def run(config: Config, *, smoke: bool = False) -> dict:
    """Every section, with the provenance of the run (the JSON record)."""
    key = jax.random.key(config.seed)
    start = time.time()
    load_before = os.getloadavg()
    record = {
        "config": dataclasses.asdict(config),
        "smoke": smoke,
        "seed": config.seed,
        "code_version": code_version("benchmarks/serving.py"),
        "device": device_info(),
        "cores": sorted(os.sched_getaffinity(0)),
        "persistent_compilation_cache": jax.config.jax_compilation_cache_dir,
        "timing": f"rates and ratios from {config.clock} time per call (cpu: time.process_time), rounds interleaved;"
        " both clocks recorded",
    }
    record |= sweep(config, key)
    record["load_average"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    record["seconds"] = round(time.time() - start, 1)
    return record


if __name__ == "__main__":
    main()
