"""A Llama-3.2-1B-shaped model with CoLoRA for 10^4 users on a CPU: load, serve, train, layouts, PEFT.

The checkpoint: transformers' layout (``config.json``, one safetensors shard per decoder layer and
an index), random bf16 weights of Llama-3.2-1B's shapes (hidden 2048, 16 layers, 32 query / 8
key-value heads of 64, MLP 8192, vocabulary 128,256, tied embeddings, rope_theta 500,000 with
llama3 scaling), written shard by shard and cached in ``--dir``. Sections:

1. ``single``: ``cn.from_pretrained(dir, dtype=bfloat16)``, CoLoRA of rank ``r`` on all seven
   projections with a bank of ``users`` (in bf16: ``apply_colora`` gives the adapters the wrapped
   kernel's dtype), a mixed-user serving forward (every example its own user) and one Adam step on
   the adapters only; seconds of each stage (compile
   apart), tokens per CPU second (median and range of ``repeats`` calls), the resident set size
   after each stage and the process's peak.
2. ``layouts``: in a child process with 8 fake CPU devices, the (data, model) meshes 8x1, 4x2,
   2x4, 1x8 (and 8x1 with the bank split over 'data'), placed as ``from_pretrained(mesh=...)``
   places them (its ``CausalLM(model_axis=...)`` annotations; adapters follow their kernel):
   bytes per device of the base, the adapters, the bank and Adam's moments, exact from the
   shardings (no weights allocated: 8 fake devices share this host's memory), and XLA's memory
   plan of the sharded serving forward; the 1x8 layout is then loaded for real through
   ``from_pretrained(dir, mesh=...)`` and device 0's bytes compared with the count.
3. ``peft``: against PEFT's mixed-adapter batch inference (``adapter_names=`` in the forward, the
   interop environment's torch on one thread) on the same transformers checkpoint, tokens/s of
   both on the same batch, interleaved in one run (one long-lived torch process answering each
   call), at 1, 16 and 256 distinct users per batch, both in float32, last-position logits only.
   At the 1B shape PEFT's 256 adapters on seven projections (5.6 M parameters each) would take
   5.8 GB and its forward minutes per call on this CPU, so this section uses a smaller Llama
   (``PEFT_SHAPE``) and says so in the JSON.

Timing in process CPU time (``time.process_time``), wall alongside; run pinned to one core:

    taskset -c 1 .venv/bin/python benchmarks/llama1b.py [--smoke] [--sections single,layouts,peft]

Writes figures/nnx_llama1b.json (``--smoke``: figures/nnx_llama1b_smoke.json) and prints one line
per section.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
from flax import nnx

from colora_jax import device_info
from colora_jax import nnx as cn
from colora_jax.nnx import nnx_code_version as code_version

NAME = "nnx_llama1b"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER = nnx.Any(cn.SharedParam, cn.PersonalParam)
INTEROP_PYTHON = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop/.venv-interop/bin/python"
)

LLAMA_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128_256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 500_000.0,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "max_position_embeddings": 131_072,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "bos_token_id": 128_000,
    "eos_token_id": 128_001,
}
# the PEFT comparison's Llama: small enough for 256 PEFT adapters and minutes of torch on one core
PEFT_SHAPE = LLAMA_1B | {
    "vocab_size": 8192,
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "rope_scaling": None,
    "max_position_embeddings": 2048,
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": 2,
}
SMOKE_SHAPE = PEFT_SHAPE | {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
SMOKE_SHAPE |= {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}


def rss_bytes() -> int:
    """This process's resident set size now (``VmRSS``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_checkpoint(directory: str, config: dict, dtype: str, seed: int = 0) -> float:
    """Random weights of ``config``'s shapes in transformers' sharded safetensors layout, one shard
    per decoder layer (the host holds one layer at a time); reused when ``config.json`` matches.
    Returns the seconds spent (0 when reused)."""
    from safetensors.numpy import save_file

    path = os.path.join(directory, "config.json")
    if os.path.exists(path) and os.path.exists(os.path.join(directory, "model.safetensors.index.json")):
        with open(path) as f:
            if json.load(f) == config:
                return 0.0
    t = time.perf_counter()
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    np_dtype = {"bfloat16": ml_dtypes.bfloat16, "float32": np.float32}[dtype]
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    n, k, h = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]

    def weight(*shape, scale=0.02):
        return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(np_dtype)

    def shards():  # drawn one at a time: the host holds one shard
        yield "model-embed.safetensors", {"model.embed_tokens.weight": weight(v, d), "model.norm.weight": weight(d)}
        for layer in range(config["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            yield (
                f"model-layer{layer:03d}.safetensors",
                {
                    p + "self_attn.q_proj.weight": weight(n * h, d),
                    p + "self_attn.k_proj.weight": weight(k * h, d),
                    p + "self_attn.v_proj.weight": weight(k * h, d),
                    p + "self_attn.o_proj.weight": weight(d, n * h),
                    p + "mlp.gate_proj.weight": weight(f, d),
                    p + "mlp.up_proj.weight": weight(f, d),
                    p + "mlp.down_proj.weight": weight(d, f),
                    p + "input_layernorm.weight": (1 + weight(d, scale=0.1)).astype(np_dtype),
                    p + "post_attention_layernorm.weight": (1 + weight(d, scale=0.1)).astype(np_dtype),
                },
            )

    weight_map = {}
    for name, tensors in shards():
        save_file(tensors, os.path.join(directory, name), metadata={"format": "pt"})
        weight_map |= {key: name for key in tensors}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {}, "weight_map": weight_map}, fh)
    with open(path, "w") as fh:
        json.dump(config, fh)
    return time.perf_counter() - t


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.process_time() - cpu, time.perf_counter() - wall


def _rate(tokens: int, times: list[tuple[float, float]]) -> dict:
    cpu = [c for c, _ in times]
    return {
        "tokens_per_second": tokens / statistics.median(cpu),
        "range": [tokens / max(cpu), tokens / min(cpu)],
        "wall_tokens_per_second": tokens / statistics.median(w for _, w in times),
        "cpu_seconds": cpu,
        "wall_seconds": [w for _, w in times],
    }


def _nbytes(tree) -> int:
    return int(sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(tree)))


def _adapt(model, users: int, rank: int, seed: int, users_axis=None):
    """CoLoRA on the seven projections, with non-zero ``U`` and bank (nothing trivially zero)."""
    cn.apply_colora(model, users=users, rank=rank, targets=TARGETS, rngs=nnx.Rngs(seed), users_axis=users_axis)
    key = jax.random.key(seed + 1)
    for _, layer in cn.adapted_layers(model):
        for var in (layer.shared_u, layer.personal):
            key, sub = jax.random.split(key)
            var.set_value((0.01 * jax.random.normal(sub, var[...].shape)).astype(var[...].dtype))
    return model


def _functions(graphdef, learning_rate=1e-4):
    tx = optax.adam(learning_rate)

    def serve(adapter, frozen, tokens, ids):
        model = nnx.merge(graphdef, adapter, frozen)
        with cn.colora_users(model, ids, checked=False):
            return model(tokens)[:, -1]

    def step(adapter, opt_state, frozen, tokens, ids):
        def loss(model):
            with cn.colora_users(model, ids, checked=False):
                return jnp.mean(cn.next_token_loss(model(tokens[:, :-1]), tokens[:, 1:]))

        model = nnx.merge(graphdef, adapter, frozen)
        value, grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, ADAPTER))(model)
        updates, opt_state = tx.update(grads, opt_state, adapter)
        return optax.apply_updates(adapter, updates), opt_state, value

    return tx, serve, step


def single(directory: str, args) -> dict:
    """Load, adapt, serve and train on one device (section 1)."""
    out = {"rss_bytes": {"start": rss_bytes()}, "seconds": {}}
    t = time.perf_counter()
    model = cn.from_pretrained(directory, dtype=jnp.bfloat16)
    out["seconds"]["load"] = time.perf_counter() - t
    out["rss_bytes"]["loaded"] = rss_bytes()
    t = time.perf_counter()
    _adapt(model, args.users, args.rank, args.seed)
    out["seconds"]["apply_colora"] = time.perf_counter() - t
    out["rss_bytes"]["adapted"] = rss_bytes()
    graphdef, adapter, frozen = nnx.split(model, ADAPTER, ...)
    del model
    tx, serve, step = _functions(graphdef)
    opt_state = tx.init(adapter)
    out["bytes"] = {
        "base": _nbytes(frozen),
        "adapter": _nbytes(adapter),
        "personal_bank": _nbytes(nnx.state(nnx.merge(graphdef, adapter, frozen), cn.PersonalParam)),
        "adam": _nbytes(opt_state),
    }
    b, s = args.batch, args.seq
    tokens = jax.random.randint(jax.random.key(args.seed), (b, s), 0, args.vocab)
    ids = (jnp.arange(b, dtype=jnp.int32) * 7919) % args.users  # every example its own user
    t = time.perf_counter()
    serve_c = jax.jit(serve).lower(adapter, frozen, tokens, ids).compile()
    out["seconds"]["serve_compile"] = time.perf_counter() - t
    t = time.perf_counter()
    step_c = jax.jit(step, donate_argnums=(0, 1)).lower(adapter, opt_state, frozen, tokens, ids).compile()
    out["seconds"]["train_compile"] = time.perf_counter() - t
    state = {"adapter": adapter, "opt": opt_state}

    def train():
        state["adapter"], state["opt"], loss = step_c(state["adapter"], state["opt"], frozen, tokens, ids)
        return loss

    serve_t, train_t = [], []
    out["seconds"]["serve_first_call"] = _timed(lambda: serve_c(state["adapter"], frozen, tokens, ids))[1]
    out["rss_bytes"]["served"] = rss_bytes()
    out["seconds"]["train_first_call"] = _timed(train)[1]
    out["rss_bytes"]["trained"] = rss_bytes()
    for _ in range(args.repeats):
        serve_t.append(_timed(lambda: serve_c(state["adapter"], frozen, tokens, ids)))
        train_t.append(_timed(train))
    out["serve"] = _rate(b * s, serve_t)
    out["train"] = _rate(b * (s - 1), train_t)
    out["loss_after"] = float(train())
    out["rss_bytes"]["peak"] = peak_rss_bytes()
    out["batch"], out["seq"] = b, s
    gib = 2**30
    print(
        f"single device: load {out['seconds']['load']:.1f} s, apply_colora ({args.users:,} users)"
        f" {out['seconds']['apply_colora']:.1f} s; serve {out['serve']['tokens_per_second']:.1f}"
        f" [{out['serve']['range'][0]:.1f}, {out['serve']['range'][1]:.1f}] tokens/s (compile"
        f" {out['seconds']['serve_compile']:.1f} s); train {out['train']['tokens_per_second']:.1f}"
        f" [{out['train']['range'][0]:.1f}, {out['train']['range'][1]:.1f}] tokens/s (compile"
        f" {out['seconds']['train_compile']:.1f} s); batch {b} x {s}; base {out['bytes']['base'] / gib:.2f} GiB,"
        f" adapter {out['bytes']['adapter'] / gib:.3f} GiB, Adam {out['bytes']['adam'] / gib:.3f} GiB;"
        f" RSS loaded {out['rss_bytes']['loaded'] / gib:.2f}, peak {out['rss_bytes']['peak'] / gib:.2f} GiB",
        flush=True,
    )
    return out


LAYOUTS = ((8, 1, None), (8, 1, "data"), (4, 2, None), (2, 4, None), (1, 8, None))


def _per_device(abstract_state, shardings) -> int:
    """Bytes device 0 holds of a state placed with ``shardings`` (even splits: every device alike)."""
    leaves = jax.tree.leaves(abstract_state)
    specs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    return int(sum(np.prod(s.shard_shape(a.shape)) * a.dtype.itemsize for a, s in zip(leaves, specs)))


def _placed(state, shardings):
    """Abstract arrays of ``state`` carrying ``shardings``."""
    return jax.tree.map(lambda a, where: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=where), state, shardings)


def layouts_child(directory: str, args) -> dict:
    """Section 2, in a process started with 8 fake CPU devices."""
    from colora_jax.nnx._pretrained import ArchConfig, CausalLM

    with open(os.path.join(directory, "config.json")) as f:
        cfg = ArchConfig.from_hf(json.load(f))
    rows = []
    for data, model_axis, bank_axis in LAYOUTS:
        mesh = jax.sharding.Mesh(
            np.asarray(jax.devices()[: data * model_axis]).reshape(data, model_axis),
            ("data", "model"),
            axis_types=(jax.sharding.AxisType.Auto,) * 2,
        )

        def build(model_axis=model_axis, bank_axis=bank_axis):
            model = CausalLM(cfg, dtype=jnp.bfloat16, model_axis=model_axis)
            return _adapt(model, args.users, args.rank, args.seed, users_axis=bank_axis)

        t = time.perf_counter()
        abstract = nnx.eval_shape(build)
        graphdef, adapter, frozen = nnx.split(abstract, ADAPTER, ...)
        sh = {name: nnx.get_named_sharding(s, mesh) for name, s in (("adapter", adapter), ("frozen", frozen))}
        personal = nnx.state(abstract, cn.PersonalParam)
        row = {
            "mesh": [data, model_axis],
            "bank": bank_axis or "replicated",
            "bytes_per_device": {
                "base": _per_device(frozen, sh["frozen"]),
                "adapter": _per_device(adapter, sh["adapter"]),
                "personal_bank": _per_device(personal, nnx.get_named_sharding(personal, mesh)),
            },
        }
        row["bytes_per_device"]["adam"] = 2 * row["bytes_per_device"]["adapter"]  # two moments per parameter
        _, serve, _ = _functions(graphdef)
        batch = max(args.batch, data)
        spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        tokens = jax.ShapeDtypeStruct((batch, args.seq), jnp.int32, sharding=spec)
        ids = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=spec)

        plan = (
            jax.jit(serve)
            .lower(_placed(adapter, sh["adapter"]), _placed(frozen, sh["frozen"]), tokens, ids)
            .compile()
            .memory_analysis()
        )
        row["serve_batch"] = [batch, args.seq]
        row["serve_plan_bytes"] = (
            {k: int(getattr(plan, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")}
            if plan
            else None
        )
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        print(json.dumps({"progress": row}), file=sys.stderr, flush=True)
    out = {"layouts": rows}
    if args.verify_load:  # the real placement of from_pretrained on the 1x8 mesh
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]).reshape(1, 8), ("data", "model"))
        t = time.perf_counter()
        model = cn.from_pretrained(directory, dtype=jnp.bfloat16, mesh=mesh)
        dev = jax.devices()[0]
        held = sum(
            s.data.nbytes for a in jax.tree.leaves(nnx.state(model)) for s in a.addressable_shards if s.device == dev
        )
        out["verify_1x8"] = {
            "device0_base_bytes_loaded": int(held),
            "device0_base_bytes_counted": rows[-1]["bytes_per_device"]["base"],
            "load_seconds": time.perf_counter() - t,
            "peak_rss_bytes": peak_rss_bytes(),
        }
    return out


def layouts(directory: str, args) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, os.path.abspath(__file__), "--layouts-child", "--dir", directory]
    cmd += ["--users", str(args.users), "--rank", str(args.rank), "--batch", str(args.batch), "--seq", str(args.seq)]
    cmd += ["--verify-load"] if args.verify_load else []
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"layouts child failed: {res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    mib = 2**20
    for r in out["layouts"]:
        b = r["bytes_per_device"]
        temp = r["serve_plan_bytes"]["temp_size_in_bytes"] / mib if r["serve_plan_bytes"] else float("nan")
        print(
            f"mesh data x model {r['mesh'][0]}x{r['mesh'][1]}, bank {r['bank']}: per device base"
            f" {b['base'] / mib:,.0f} MiB, adapter {b['adapter'] / mib:,.1f} MiB"
            f" (bank {b['personal_bank'] / mib:,.1f}),"
            f" Adam {b['adam'] / mib:,.1f} MiB; serving plan temp {temp:,.1f} MiB",
            flush=True,
        )
    if "verify_1x8" in out:
        v = out["verify_1x8"]
        print(
            f"from_pretrained(mesh 1x8): device 0 holds {v['device0_base_bytes_loaded'] / mib:,.1f} MiB, counted"
            f" {v['device0_base_bytes_counted'] / mib:,.1f} MiB; load {v['load_seconds']:.1f} s",
            flush=True,
        )
    return out


def peft(directory: str, args) -> dict:
    """Section 3: CoLoRA (JAX) against PEFT's ``adapter_names`` (torch), interleaved, one core."""
    if not os.path.exists(args.interop_python):
        return {"skipped": f"no interop interpreter at {args.interop_python} (make interop builds it)"}
    users = max(args.peft_distinct)
    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(0, args.peft_vocab, (args.peft_batch, args.peft_seq)).astype(np.int64)
    tokens_path = os.path.join(directory, "tokens.npy")
    np.save(tokens_path, tokens)
    worker_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_peft_worker.py")
    worker = subprocess.Popen(
        [args.interop_python, worker_path, directory, str(users), str(args.rank), tokens_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        ready = json.loads(worker.stdout.readline())
        model = _adapt(cn.from_pretrained(directory), users, args.rank, args.seed)
        graphdef, adapter, frozen = nnx.split(model, ADAPTER, ...)
        _, serve, _ = _functions(graphdef)
        tok = jnp.asarray(tokens, jnp.int32)
        ids0 = jnp.zeros((args.peft_batch,), jnp.int32)
        t = time.perf_counter()
        serve_c = jax.jit(serve).lower(adapter, frozen, tok, ids0).compile()
        compile_s = time.perf_counter() - t

        def torch_call(n):
            worker.stdin.write(f"{n}\n")
            worker.stdin.flush()
            r = json.loads(worker.stdout.readline())
            return r["cpu"], r["wall"]

        ids = {n: jnp.arange(args.peft_batch, dtype=jnp.int32) % n for n in args.peft_distinct}
        for n in args.peft_distinct:  # warm-up
            _timed(lambda n=n: serve_c(adapter, frozen, tok, ids[n]))
            torch_call(n)
        times = {n: {"colora": [], "peft": []} for n in args.peft_distinct}
        ns = list(args.peft_distinct)
        for i in range(args.repeats):
            for n in ns[i % len(ns) :] + ns[: i % len(ns)]:
                pair = [
                    ("colora", lambda n=n: _timed(lambda: serve_c(adapter, frozen, tok, ids[n]))),
                    ("peft", lambda n=n: torch_call(n)),
                ]
                for name, fn in pair if i % 2 == 0 else pair[::-1]:
                    times[n][name].append(fn())
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    tokens_per_call = args.peft_batch * args.peft_seq
    out = {
        "shape": {
            k: args.peft_shape[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")
        },
        "why_smaller": "256 PEFT adapters on seven projections of the 1B shape: 5.8 GB, and minutes per forward",
        "batch": [args.peft_batch, args.peft_seq],
        "rank": args.rank,
        "users_held": users,
        "colora_compile_seconds": compile_s,
        "peft_setup": ready,
        "distinct": {},
    }
    for n, t in times.items():
        r = [p[0] / c[0] for p, c in zip(t["peft"], t["colora"])]
        out["distinct"][str(n)] = {
            "colora": _rate(tokens_per_call, t["colora"]),
            "peft": _rate(tokens_per_call, t["peft"]),
            "colora_over_peft_tokens_per_second": {
                "median": statistics.median(r),
                "range": [min(r), max(r)],
                "rounds": r,
            },
        }
        d = out["distinct"][str(n)]
        print(
            f"PEFT comparison ({args.peft_shape['hidden_size']} wide, {args.peft_shape['num_hidden_layers']} layers),"
            f" {n} distinct"
            f" users in {args.peft_batch} x {args.peft_seq}: CoLoRA {d['colora']['tokens_per_second']:,.0f}, PEFT"
            f" {d['peft']['tokens_per_second']:,.0f} tokens per CPU second; CoLoRA / PEFT"
            f" {statistics.median(r):.2f} [{min(r):.2f}, {max(r):.2f}]",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny Llama instead of the 1B shape, seconds")
    parser.add_argument("--sections", default="single,layouts,peft")
    parser.add_argument("--dir", default=None, help="checkpoint cache (default /tmp/colora_llama1b[_smoke])")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify-load", action="store_true", help="also load the 1x8 layout for real")
    parser.add_argument("--peft-batch", type=int, default=256)
    parser.add_argument("--peft-seq", type=int, default=4)
    parser.add_argument("--peft-distinct", default="1,16,256")
    parser.add_argument("--interop-python", default=INTEROP_PYTHON)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--layouts-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = SMOKE_SHAPE if args.smoke else LLAMA_1B
    args.dir = args.dir or ("/tmp/colora_llama1b_smoke" if args.smoke else "/tmp/colora_llama1b")
    args.vocab = shape["vocab_size"]
    args.peft_distinct = tuple(int(x) for x in args.peft_distinct.split(","))
    if args.layouts_child:
        print(json.dumps(layouts_child(args.dir, args)))
        return
    sections = [s for s in args.sections.split(",") if s]
    start, load_before = time.time(), os.getloadavg()
    record = {
        "shape": shape,
        "smoke": args.smoke,
        "users": args.users,
        "rank": args.rank,
        "targets": TARGETS,
        "seed": args.seed,
        "code_version": code_version("benchmarks/llama1b.py"),
        "device": device_info(),
        "cores": sorted(os.sched_getaffinity(0)),
        "timing": "process CPU time per call (time.process_time), wall alongside",
    }
    dtype = "float32" if args.smoke else "bfloat16"
    if "single" in sections or args.verify_load:
        record["checkpoint_write_seconds"] = write_checkpoint(
            args.dir, shape | {"torch_dtype": dtype}, dtype, args.seed
        )
    elif "layouts" in sections:  # the layouts are counted from config.json alone
        args.dir = args.dir + "_config"
        os.makedirs(args.dir, exist_ok=True)
        with open(os.path.join(args.dir, "config.json"), "w") as f:
            json.dump(shape | {"torch_dtype": dtype}, f)
    if "single" in sections:
        record["single"] = single(args.dir, args)
    if "layouts" in sections:
        record["layouts"] = layouts(args.dir, args)
    if "peft" in sections:
        small = (SMOKE_SHAPE if args.smoke else PEFT_SHAPE) | {"torch_dtype": "float32"}
        peft_dir = args.dir + "_peft"
        record["peft_checkpoint_write_seconds"] = write_checkpoint(peft_dir, small, "float32", args.seed)
        args.peft_vocab, args.peft_shape = small["vocab_size"], small
        record["peft"] = peft(peft_dir, args)
        if "skipped" in record["peft"]:
            print(f"PEFT comparison skipped: {record['peft']['skipped']}")
    record["load_average"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    record["seconds"] = round(time.time() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{NAME}{'_smoke' if args.smoke else ''}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"cores {record['cores']}; load before/after {record['load_average']}; {record['seconds']} s; wrote {path}")


if __name__ == "__main__":
    main()
