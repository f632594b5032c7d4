"""Subprocess helper of test_nnx_sharding.py (needs its own XLA_FLAGS): the NNX path on a mesh.

    python tests/_nnx_sharded_worker.py [DEVICES]

On DEVICES (default 8) fake CPU devices, a CoLoRA-adapted decoder (einsum GQA attention,
LinearGeneral output, gated MLP) takes two optax train steps on a mixed-user batch (adapters
only) and one serving forward, under ``jax.jit`` with the model, optimizer state and batch
placed by flax's sharding metadata, for data parallel, tensor parallel and both (with the
personal bank replicated or split over users); each is compared with the single-device run.
Then bf16 compute with float32 adapters and optimizer state, with and without ``nnx.remat``.
Prints one JSON line: the largest differences, the placements and the bytes per device.
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":  # before jax is imported; importing this module changes nothing
    DEVICES = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
    os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from colora_jax import nnx as cn  # noqa: E402

CONFIG = cn.DecoderConfig(vocab=64, seq_len=8, width=32, depth=1, heads=8, kv_heads=4, head_dim=4, mlp_hidden=64)
TARGETS = ("query", "value", "out", "up", "down")  # Einsum, Einsum, LinearGeneral, Linear, Linear
USERS, RANK, BATCH = 16, 2, 16
ADAPTER = nnx.Any(cn.SharedParam, cn.PersonalParam)
P = jax.sharding.PartitionSpec


def build(config: cn.DecoderConfig, users_axis: str | None, mesh=None):
    """The adapted decoder (random non-zero adapters) and an SGD-with-momentum optimizer on its adapters."""
    model = cn.Decoder(config, rngs=nnx.Rngs(0))
    if mesh is not None:
        cn.shard(model, mesh)
    cn.apply_colora(model, users=USERS, rank=RANK, targets=TARGETS, rngs=nnx.Rngs(1), users_axis=users_axis)
    key = jax.random.key(2)
    for _, layer in cn.adapted_layers(model):
        for var in (layer.shared_u, layer.personal):
            key, sub = jax.random.split(key)
            value = 0.3 * jax.random.normal(sub, var[...].shape, var[...].dtype)
            if not isinstance(var[...], jax.core.Tracer):  # keep each placed variable's placement
                value = jax.device_put(value, var[...].sharding)
            var.set_value(value)
    optimizer = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=ADAPTER)
    if mesh is not None:
        cn.shard(model, mesh)  # idempotent for the base; places the adapters by their metadata
        cn.shard(optimizer, mesh)
    return model, optimizer


def batch(mesh=None):
    k1, k2 = jax.random.split(jax.random.key(3))
    tokens = jax.random.randint(k1, (BATCH, CONFIG.seq_len), 0, CONFIG.vocab)
    ids = (jnp.arange(BATCH) * 5) % USERS  # many users in one batch
    targets = jax.random.randint(k2, (BATCH, CONFIG.seq_len), 0, CONFIG.vocab)
    if mesh is not None:
        data = jax.sharding.NamedSharding(mesh, P("data"))
        tokens, ids, targets = (jax.device_put(a, data) for a in (tokens, ids, targets))
    return tokens, targets, ids


@nnx.jit
def train_step(model, optimizer, tokens, targets, ids):
    def objective(model):
        with cn.colora_users(model, ids):
            return jnp.mean(cn.next_token_loss(model(tokens), targets))

    loss, grads = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, ADAPTER))(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def serve(model, tokens, ids):
    with cn.colora_users(model, ids, checked=False):  # the hot serving path
        return model(tokens)


def run(config, users_axis=None, mesh=None, steps=2):
    model, optimizer = build(config, users_axis, mesh)
    tokens, targets, ids = batch(mesh)
    losses = [float(train_step(model, optimizer, tokens, targets, ids)) for _ in range(steps)]
    logits = serve(model, tokens, ids)
    return model, optimizer, losses, logits


def adapter_arrays(model):
    return {
        f"{n}.{k}": np.asarray(getattr(m, k)[...])
        for n, m in cn.adapted_layers(model)
        for k in ("shared_u", "shared_v", "personal")
    }


def per_device_bytes(tree) -> int:
    """Bytes that device 0 holds of every array in ``tree``."""
    dev = jax.devices()[0]
    return int(sum(s.data.nbytes for a in jax.tree.leaves(tree) for s in a.addressable_shards if s.device == dev))


def spec(var) -> list:
    return [None if p is None else str(p) for p in var[...].sharding.spec]


def main():
    n = len(jax.devices())
    auto = (jax.sharding.AxisType.Auto,) * 2
    ref_model, ref_opt, ref_losses, ref_logits = run(CONFIG)
    ref = adapter_arrays(ref_model)
    out = {
        "devices": n,
        "single_bytes": {
            "params": per_device_bytes(nnx.state(ref_model, nnx.Param)),
            "adapter": per_device_bytes(nnx.state(ref_model, ADAPTER)),
            "optimizer": per_device_bytes(nnx.state(ref_opt, nnx.optimizer.OptState)),
        },
        "layouts": {},
    }
    layouts = {
        "data": ((n, 1), None),  # data parallel, bank replicated
        "data_bank_split": ((n, 1), "data"),  # data parallel, bank split over users
        "model": ((1, 4), None),  # tensor parallel over 4 devices
        "data_model": ((n // 4, 4), "data"),  # both, bank split over users
    }
    for name, (shape, users_axis) in layouts.items():
        devices = np.asarray(jax.devices()[: shape[0] * shape[1]]).reshape(shape)
        mesh = jax.sharding.Mesh(devices, ("data", "model"), axis_types=auto)
        model, opt, losses, logits = run(CONFIG, users_axis, mesh)
        got = adapter_arrays(model)
        query, down = model.blocks[0].attn.query, model.blocks[0].mlp.down
        out["layouts"][name] = {
            "mesh": list(shape),
            "loss": max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)),
            "adapters": max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref),
            "logits": float(np.max(np.abs(np.asarray(logits) - np.asarray(ref_logits)))),
            "query_U_spec": spec(query.shared_u),
            "query_kernel_spec": spec(query.base.kernel),
            "down_V_spec": spec(down.shared_v),
            "bank_spec": spec(down.personal),
            "logits_spec": [None if p is None else str(p) for p in logits.sharding.spec],
            "bytes": {
                "params": per_device_bytes(nnx.state(model, nnx.Param)),
                "adapter": per_device_bytes(nnx.state(model, ADAPTER)),
                "optimizer": per_device_bytes(nnx.state(opt, nnx.optimizer.OptState)),
            },
        }
    # flax's documented recipe: build inside nnx.jit under jax.set_mesh, constrain the state to its
    # partition specs (nnx.get_partition_spec), then serve.
    mesh = jax.sharding.Mesh(
        np.asarray(jax.devices()[: (n // 4) * 4]).reshape(n // 4, 4), ("data", "model"), axis_types=auto
    )
    with jax.set_mesh(mesh):

        @nnx.jit
        def create():
            model = build(CONFIG, "data")[0]
            state = nnx.state(model)
            nnx.update(model, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
            return model

        model = create()
        logits = serve(model, *(lambda t, _, i: (t, i))(*batch(mesh)))
    tokens, _, ids = batch()
    untrained = serve(build(CONFIG, None)[0], tokens, ids)  # single device, same init, no steps
    query = model.blocks[0].attn.query
    out["flax_recipe"] = {
        "logits": float(np.max(np.abs(np.asarray(logits) - np.asarray(untrained)))),
        "query_U_spec": spec(query.shared_u),
        "bank_spec": spec(model.blocks[0].mlp.down.personal),
    }
    # Mixed precision on the 2-D mesh: bf16 compute, float32 adapters and optimizer state, remat.
    mesh = jax.sharding.Mesh(
        np.asarray(jax.devices()[: (n // 4) * 4]).reshape(n // 4, 4), ("data", "model"), axis_types=auto
    )
    remat_model, _, remat_losses, remat_logits = run(dataclasses.replace(CONFIG, remat=True), "data", mesh)
    remat = adapter_arrays(remat_model)
    bf16_model, bf16_opt, bf16_losses, bf16_logits = run(
        dataclasses.replace(CONFIG, dtype="bfloat16", remat=True), "data", mesh
    )
    bf16 = adapter_arrays(bf16_model)
    moved = lambda arrays: np.concatenate(
        [(arrays[k] - start[k]).ravel() for k in sorted(arrays) if "shared" in k or "personal" in k]
    )
    start = adapter_arrays(build(CONFIG, None)[0])
    u_ref, u_bf16 = moved(ref), moved(bf16)
    out["remat_f32"] = {
        "loss": max(abs(a - b) / abs(b) for a, b in zip(remat_losses, ref_losses)),
        "adapters": max(float(np.max(np.abs(remat[k] - ref[k]))) for k in ref),
        "logits": float(np.max(np.abs(np.asarray(remat_logits) - np.asarray(ref_logits)))),
    }
    out["bf16_remat"] = {
        "loss": max(abs(a - b) / abs(b) for a, b in zip(bf16_losses, ref_losses)),
        "update_cosine": float(u_ref @ u_bf16 / (np.linalg.norm(u_ref) * np.linalg.norm(u_bf16))),
        "adapter_dtypes": sorted({str(v.dtype) for v in bf16.values()}),
        "optimizer_dtypes": sorted(
            {
                str(a.dtype)
                for a in jax.tree.leaves(nnx.state(bf16_opt, nnx.optimizer.OptState))
                if jnp.issubdtype(a.dtype, jnp.floating)
            }
        ),
        "activation_dtype": str(
            bf16_model.blocks[0].attn.query.base(jnp.ones((1, 2, CONFIG.width), jnp.bfloat16)).dtype
        ),
        "finite": bool(np.all(np.isfinite(bf16_losses))),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    import colora_jax

    colora_jax.enable_compile_cache()  # the suite's cache (the user's cache dir, or $COLORA_JAX_CACHE_DIR)
    main()
