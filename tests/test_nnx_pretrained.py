"""Hugging Face checkpoints into NNX: logits equal transformers' on committed tiny random checkpoints.

tests/data/hf_<family>/ holds what interop/hf_side.py wrote with transformers (config.json,
model.safetensors) and transformers' float32 logits for a fixed token batch
(reference.safetensors): Llama with Llama 3.1 rope scaling, Qwen2 (q/k/v biases, tied
embeddings), Qwen3 (q/k norms), Gemma (offset norms, scaled embeddings, tanh GELU, tied).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from colora_jax import nnx as cn

DATA = Path(__file__).parent / "data"
FAMILIES = ["llama", "qwen2", "qwen3", "gemma"]
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
F32_TOL = 1e-5  # |logits| <= 5: a few float32 ulps accumulated over two blocks (measured 3e-6)


def reference(family: str) -> dict[str, np.ndarray]:
    return load_file(DATA / f"hf_{family}" / "reference.safetensors")


def logits(model, tokens) -> np.ndarray:
    return np.asarray(model(jnp.asarray(tokens)))


def copy_checkpoint(tmp_path: Path, family: str = "llama", **config_changes) -> Path:
    out = tmp_path / family
    shutil.copytree(DATA / f"hf_{family}", out)
    if config_changes:
        config = json.loads((out / "config.json").read_text())
        config.update(config_changes)
        (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(family):
    ref = reference(family)
    model = cn.from_pretrained(DATA / f"hf_{family}")
    out = logits(model, ref["tokens"])
    assert out.shape == ref["logits"].shape == (2, 7, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref["logits"], atol=F32_TOL, rtol=0)


def test_fixture_exercises_llama3_rope_scaling(tmp_path):
    """The same weights with plain rope give other logits: the llama fixture tests the scaling."""
    ref = reference("llama")
    config = json.loads((DATA / "hf_llama" / "config.json").read_text())
    plain = copy_checkpoint(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})
    assert config["rope_parameters"]["rope_type"] == "llama3"
    assert np.abs(logits(cn.from_pretrained(plain), ref["tokens"]) - ref["logits"]).max() > 100 * F32_TOL


def test_pre_transformers_5_rope_fields(tmp_path):
    """Configs written before transformers 5 keep rope_theta and rope_scaling apart: same model."""
    params = json.loads((DATA / "hf_llama" / "config.json").read_text())["rope_parameters"]
    theta = params.pop("rope_theta")
    old = copy_checkpoint(tmp_path, rope_parameters=None, rope_theta=theta, rope_scaling=params)
    ref = reference("llama")
    np.testing.assert_allclose(logits(cn.from_pretrained(old), ref["tokens"]), ref["logits"], atol=F32_TOL, rtol=0)


def test_module_tree_is_the_checkpoints():
    qwen2, llama = cn.from_pretrained(DATA / "hf_qwen2"), cn.from_pretrained(DATA / "hf_llama")
    attn = qwen2.model.layers[1].self_attn
    assert isinstance(attn.q_proj, nnx.Linear) and attn.q_proj.bias is not None and attn.o_proj.bias is None
    assert not hasattr(qwen2, "lm_head") and isinstance(llama.lm_head, nnx.Linear)  # tied / untied
    with safe_open(DATA / "hf_llama" / "model.safetensors", "numpy") as f:
        w = f.get_tensor("model.layers.1.mlp.down_proj.weight")
    np.testing.assert_array_equal(np.asarray(llama.model.layers[1].mlp.down_proj.kernel[...]), w.T)


def perturb(model, seed: int) -> None:
    """Random shared and personal factors in every adapted layer (U = 0 at initialization)."""
    key = jax.random.key(seed)
    for _, layer in cn.adapted_layers(model):
        for var in (layer.shared_u, layer.personal):
            key, sub = jax.random.split(key)
            var.set_value(0.3 * jax.random.normal(sub, var[...].shape))


def test_colora_adapts_every_projection_and_exports_under_checkpoint_names(tmp_path):
    ref = reference("qwen3")
    model = cn.from_pretrained(DATA / "hf_qwen3")
    cn.apply_colora(model, users=3, rank=2, targets=PROJECTIONS, rngs=nnx.Rngs(0))
    names = {n for n, _ in cn.adapted_layers(model)}
    assert names == {f"model.layers.{i}.{'mlp' if p in PROJECTIONS[4:] else 'self_attn'}.{p}"
                     for i in range(2) for p in PROJECTIONS}  # fmt: skip
    with cn.colora_users(model, jnp.array([0, 2])):  # U = 0 at initialization: the base model
        np.testing.assert_allclose(logits(model, ref["tokens"]), ref["logits"], atol=F32_TOL, rtol=0)
    perturb(model, 0)  # a nonzero update for every user
    cn.export_peft(model, 1, tmp_path / "adapter")
    keys = set(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys and len(keys) == 2 * 14
    imported = cn.import_peft(cn.from_pretrained(DATA / "hf_qwen3"), tmp_path / "adapter", users=1)
    with cn.colora_users(model, jnp.array([1, 1])):
        user1 = logits(model, ref["tokens"])
    with cn.colora_users(imported, jnp.array([0, 0])):
        np.testing.assert_allclose(logits(imported, ref["tokens"]), user1, atol=F32_TOL, rtol=0)
    assert np.abs(user1 - ref["logits"]).max() > 0.1  # the adapter changes the logits


def test_mixed_users_equal_one_user_at_a_time_when_seq_equals_batch():
    # The model declares itself batch-major (colora_example_axis = 0), so a (3, 3) batch of tokens
    # routes user ids along the batch axis instead of being refused as ambiguous.
    model = cn.from_pretrained(DATA / "hf_llama")
    cn.apply_colora(model, users=3, rank=2, targets=PROJECTIONS, rngs=nnx.Rngs(1))
    perturb(model, 3)  # a nonzero update for every user
    tokens = jax.random.randint(jax.random.key(4), (3, 3), 0, model.config.vocab_size)
    with cn.colora_users(model, jnp.array([0, 1, 2])):
        mixed = logits(model, tokens)
    for user in range(3):
        with cn.colora_users(model, jnp.full((3,), user)):
            np.testing.assert_allclose(mixed[user], logits(model, tokens)[user], atol=F32_TOL, rtol=0)


def test_sharded_index_checkpoint(tmp_path):
    """model.safetensors split into two files with transformers' index: the same model."""
    src = DATA / "hf_llama"
    out = copy_checkpoint(tmp_path)
    os.remove(out / "model.safetensors")
    tensors = load_file(src / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, out / file, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    ref = reference("llama")
    np.testing.assert_array_equal(logits(cn.from_pretrained(out), ref["tokens"]),
                                  logits(cn.from_pretrained(src), ref["tokens"]))  # fmt: skip
    moved = names[1]  # in the second shard, but the index says the first
    index["weight_map"][moved] = "model-00001-of-00002.safetensors"
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"puts tensor {moved} in model-00001-of-00002.safetensors, which does not"):
        cn.from_pretrained(out)


def test_bfloat16_checkpoint(tmp_path):
    """A checkpoint stored in bf16 (as most are): read exactly, upcast by default or kept in bf16."""
    directory = copy_checkpoint(tmp_path)
    tensors = load_file(directory / "model.safetensors")
    save_file({k: v.astype(jnp.bfloat16) for k, v in tensors.items()}, directory / "model.safetensors")
    stored = tensors["model.layers.0.self_attn.q_proj.weight"].astype(jnp.bfloat16)
    upcast, kept = cn.from_pretrained(directory), cn.from_pretrained(directory, dtype=jnp.bfloat16)
    q_up, q_kept = (
        upcast.model.layers[0].self_attn.q_proj.kernel[...],
        kept.model.layers[0].self_attn.q_proj.kernel[...],
    )
    assert q_up.dtype == jnp.float32 and q_kept.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(q_up), stored.T.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(q_kept), stored.T)
    ref = reference("llama")
    err = np.abs(logits(upcast, ref["tokens"]) - ref["logits"]).max()
    assert 100 * F32_TOL < err < 0.05 * np.abs(ref["logits"]).max()  # the weights' bf16 rounding


def test_bfloat16_weights():
    ref = reference("llama")
    model = cn.from_pretrained(DATA / "hf_llama", dtype=jnp.bfloat16)
    assert {v.dtype for v in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
    err = np.abs(logits(model, ref["tokens"]) - ref["logits"]).max()
    assert 100 * F32_TOL < err < 0.05 * np.abs(ref["logits"]).max()  # bf16 rounding, not float32's


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gpt2"}, "unsupported model_type 'gpt2'"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "unsupported rope type 'yarn'"),
        ({"hidden_act": "relu"}, "unsupported hidden_act 'relu'"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}, "needs .*low_freq_factor"),
        ({"use_sliding_window": True}, "sliding-window"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
        ({"intermediate_size": 40}, r"tensor model.layers.0.mlp.(down|gate|up)_proj.weight .* has shape"),
    ],
)
def test_bad_config_says_what_to_change(tmp_path, change, message):
    directory = copy_checkpoint(tmp_path, **change)
    with pytest.raises(ValueError, match=message):
        cn.from_pretrained(directory)


def test_bad_checkpoint_files_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        cn.from_pretrained(tmp_path)
    directory = copy_checkpoint(tmp_path)
    tensors = load_file(directory / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(ValueError, match=r"lacks 1 tensors .*model.layers.1.self_attn.k_proj.weight"):
        cn.from_pretrained(directory)
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read .* as safetensors"):
        cn.from_pretrained(directory)
    os.remove(directory / "model.safetensors")
    (directory / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="neither model.safetensors nor .* safe_serialization"):
        cn.from_pretrained(directory)
    with pytest.raises(ValueError, match="has tensors .* does not have"):  # a Qwen2 checkpoint called Llama
        cn.from_pretrained(copy_checkpoint(tmp_path, "qwen2", model_type="llama", tie_word_embeddings=True))


def test_token_ids_out_of_range():
    model = cn.from_pretrained(DATA / "hf_qwen2")
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 64\)"):
        model(jnp.array([[1, 64]]))


MESH_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from safetensors.numpy import load_file
    from colora_jax import nnx as cn
    P = jax.sharding.PartitionSpec
    devices = np.array(jax.devices()).reshape(2, 3)
    mesh = jax.sharding.Mesh(devices, ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    out = {}
    for family in ("llama", "qwen2"):
        ref = load_file(f"{sys.argv[1]}/hf_{family}/reference.safetensors")
        model = cn.from_pretrained(f"{sys.argv[1]}/hf_{family}", mesh=mesh)
        layer = model.model.layers[0]
        specs = {n: tuple(v[...].sharding.spec) for n, v in [
            ("q_proj", layer.self_attn.q_proj.kernel), ("gate_proj", layer.mlp.gate_proj.kernel),
            ("down_proj", layer.mlp.down_proj.kernel), ("embed", model.model.embed_tokens.embedding),
            ("norm", model.model.norm.weight)]}
        forward = nnx.jit(lambda m, t: m(t))
        err = float(np.abs(np.asarray(forward(model, jnp.asarray(ref["tokens"]))) - ref["logits"]).max())
        cn.apply_colora(model, users=2, rank=2, targets=["gate_proj"], rngs=nnx.Rngs(0))
        cn.shard(model, mesh)
        gate = model.model.layers[0].mlp.gate_proj
        out[family] = {"specs": specs, "err": err, "devices": len(gate.base.kernel[...].devices()),
                       "u_spec": tuple(gate.shared_u[...].sharding.spec)}
    print(json.dumps(out))
    """
)


def test_mesh_placement_as_it_loads():
    """On 6 fake CPU devices (data 2 x model 3): column/row-parallel kernels split over 'model' where
    3 divides the dimension (gate_proj's 48), replicated where not (hidden 32); same logits."""
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=6")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(Path(__file__).parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run(
        [sys.executable, "-c", MESH_CHILD, str(DATA)], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for family in ("llama", "qwen2"):
        specs = out[family]["specs"]
        assert specs["gate_proj"] == [None, "model"] and specs["down_proj"] == ["model", None]
        assert specs["q_proj"] == [None, None] and specs["norm"] == []  # 32 % 3 != 0: replicated
        assert out[family]["err"] < F32_TOL and out[family]["devices"] == 6
        assert out[family]["u_spec"] == ["model", None]  # the adapter follows its kernel's output split
    assert out["qwen2"]["specs"]["embed"] == [None, None]  # vocab 64 % 3 != 0


def test_mesh_without_model_axis_or_with_explicit_axes():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match="no 'model' axis"):
        cn.from_pretrained(DATA / "hf_llama", mesh=mesh)
    explicit = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,))
    with pytest.raises(ValueError, match="need Auto axes"):
        cn.from_pretrained(DATA / "hf_llama", mesh=explicit)


def test_every_users_adapter_exported_to_its_own_directory(tmp_path):
    model = cn.from_pretrained(DATA / "hf_qwen2")
    cn.apply_colora(model, users=3, rank=2, targets=PROJECTIONS, rngs=nnx.Rngs(2))
    perturb(model, 5)  # a nonzero update for every user
    written = cn.export_peft_users(model, tmp_path / "users")
    assert [os.path.basename(p) for p in written] == ["user_0", "user_1", "user_2"]
    for user, path in enumerate(written):
        cn.export_peft(model, user, tmp_path / f"single_{user}")
        one, many = (
            load_file(os.path.join(d, "adapter_model.safetensors")) for d in (tmp_path / f"single_{user}", path)
        )
        assert one.keys() == many.keys() and all(np.array_equal(one[k], many[k]) for k in one)
    assert not np.array_equal(*(load_file(os.path.join(p, "adapter_model.safetensors"))[
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] for p in written[:2]))  # fmt: skip
    assert cn.export_peft_users(model, tmp_path / "two", users=[2]) == [os.path.join(tmp_path / "two", "user_2")]
    with pytest.raises(ValueError):
        cn.export_peft_users(model, tmp_path / "bad", users=[0, 3])
    assert not (tmp_path / "bad").exists()  # every user checked before anything is written


def test_float32_adapters_on_a_bfloat16_model():
    # DESIGN: compute in bf16 with float32 adapter parameters (and so float32 optimizer moments).
    ref = reference("llama")
    model = cn.from_pretrained(DATA / "hf_llama", dtype=jnp.bfloat16)
    cn.apply_colora(model, users=2, rank=2, targets=PROJECTIONS, rngs=nnx.Rngs(0), param_dtype=jnp.float32)
    for _, layer in cn.adapted_layers(model):
        assert layer.base.kernel[...].dtype == jnp.bfloat16
        assert {v[...].dtype for v in (layer.shared_u, layer.shared_v, layer.personal)} == {jnp.dtype(jnp.float32)}
    plain = cn.from_pretrained(DATA / "hf_llama", dtype=jnp.bfloat16)
    with cn.colora_users(model, jnp.array([0, 1])):  # U = 0 at initialization: the bf16 base model exactly
        np.testing.assert_array_equal(logits(model, ref["tokens"]), logits(plain, ref["tokens"]))
    default = cn.apply_colora(plain, users=2, rank=2, targets=["q_proj"], rngs=nnx.Rngs(0))
    assert all(layer.personal[...].dtype == jnp.bfloat16 for _, layer in cn.adapted_layers(default))
