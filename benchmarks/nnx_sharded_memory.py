"""Memory per device of a sharded CoLoRA train step (fake CPU devices; placement and XLA's plan, no timing).

The benchmark decoder of benchmarks/serving.py with CoLoRA on every projection, laid out on a
mesh of ``DEVICES`` fake CPU devices as data parallel, tensor parallel and both, the personal
bank replicated or split over users. For each layout: the bytes that device 0 holds of the base
parameters, the adapter, the bank and the Adam state, and XLA's memory plan of the compiled
train step (arguments, outputs, temporaries per device, ``compiled.memory_analysis()``).

    .venv/bin/python benchmarks/nnx_sharded_memory.py [--devices 8] [--users 16384] [--out figures]

Writes figures/nnx_sharded_memory.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":  # before jax is imported
    _n = sys.argv[sys.argv.index("--devices") + 1] if "--devices" in sys.argv else "8"
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={_n}"
    os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from colora_jax import device_info  # noqa: E402
from colora_jax import nnx as cn  # noqa: E402
from colora_jax.nnx import nnx_code_version as code_version  # noqa: E402

MODEL = cn.DecoderConfig(vocab=1024, seq_len=8, width=256, depth=2, heads=8, kv_heads=4, head_dim=32, mlp_hidden=768)
TARGETS = ("query", "key", "value", "out", "gate", "up", "down")
ADAPTER = nnx.Any(cn.SharedParam, cn.PersonalParam)


def on_device0(tree) -> int:
    dev = jax.devices()[0]
    return int(sum(s.data.nbytes for a in jax.tree.leaves(tree) for s in a.addressable_shards if s.device == dev))


def layout(mesh_shape, users_axis, users, rank, batch):
    n = mesh_shape[0] * mesh_shape[1]
    mesh = jax.sharding.Mesh(
        np.asarray(jax.devices()[:n]).reshape(mesh_shape),
        ("data", "model"),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
    )
    model = cn.shard(cn.Decoder(MODEL, rngs=nnx.Rngs(0)), mesh)
    cn.apply_colora(model, users=users, rank=rank, targets=TARGETS, rngs=nnx.Rngs(1), users_axis=users_axis)
    cn.shard(model, mesh)
    optimizer = cn.shard(nnx.Optimizer(model, optax.adam(1e-3), wrt=ADAPTER), mesh)
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    tokens = jax.device_put(jnp.zeros((batch, MODEL.seq_len), jnp.int32), data)
    ids = jax.device_put(jnp.arange(batch, dtype=jnp.int32) % users, data)

    @nnx.jit
    def step(model, optimizer, tokens, ids):
        def objective(model):
            with cn.colora_users(model, ids):
                return jnp.mean(cn.next_token_loss(model(tokens[:, :-1]), tokens[:, 1:]))

        loss, grads = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, ADAPTER))(model)
        optimizer.update(model, grads)
        return loss

    plan = step.lower(model, optimizer, tokens, ids).compile().memory_analysis()
    params = nnx.state(model, nnx.Param)
    return {
        "mesh": list(mesh_shape),
        "bank": users_axis or "replicated",
        "base_params": on_device0(params) - on_device0(nnx.state(model, ADAPTER)),
        "shared_factors": on_device0(nnx.state(model, cn.SharedParam)),
        "personal_bank": on_device0(nnx.state(model, cn.PersonalParam)),
        "adam_state": on_device0(nnx.state(optimizer, nnx.optimizer.OptState)),
        "step_plan": {
            k: int(getattr(plan, k))
            for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
        }
        if plan
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--users", type=int, default=16_384, help="bank size")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="sequences per step")
    parser.add_argument("--out", default="figures")
    args = parser.parse_args()
    n = len(jax.devices())
    layouts = [
        ((1, 1), None),
        ((n, 1), None),
        ((n, 1), "data"),
        ((1, 4), None),
        ((n // 4, 4), None),
        ((n // 4, 4), "data"),
    ]
    rows = [layout(shape, axis, args.users, args.rank, args.batch) for shape, axis in layouts]
    record = {
        "model": dataclasses.asdict(MODEL),
        "model_parameters": MODEL.parameters(),
        "targets": TARGETS,
        "users": args.users,
        "rank": args.rank,
        "batch": args.batch,
        "devices": n,
        "layouts": rows,
        "code_version": code_version("benchmarks/nnx_sharded_memory.py"),
        "device": device_info(),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "nnx_sharded_memory.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(
        f"{'mesh (data, model)':20s} {'bank':11s} {'base MiB':>9s} {'U,V KiB':>8s} {'bank MiB':>9s} {'Adam MiB':>9s}"
        f" {'step temp MiB':>13s}"
    )
    for r in rows:
        temp = r["step_plan"]["temp_size_in_bytes"] / 2**20 if r["step_plan"] else float("nan")
        print(
            f"{str(tuple(r['mesh'])):20s} {r['bank']:11s} {r['base_params'] / 2**20:9.2f}"
            f" {r['shared_factors'] / 2**10:8.1f}"
            f" {r['personal_bank'] / 2**20:9.2f} {r['adam_state'] / 2**20:9.2f} {temp:13.2f}"
        )


if __name__ == "__main__":
    main()
