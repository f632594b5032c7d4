"""The NNX path on a device mesh (8 fake CPU devices, subprocess): data, tensor and both kinds of
parallelism give the single-device train step and serving forward; adapters follow the kernels'
sharding; bf16 compute keeps float32 adapters and optimizer state, with nnx.remat."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

# one worker runs the whole module: its tests share one expensive session-scoped fixture
pytestmark = pytest.mark.xdist_group("nnx_sharding")

WORKER = pathlib.Path(__file__).with_name("_nnx_sharded_worker.py")
LAYOUTS = ["data", "data_bank_split", "model", "data_model"]


@pytest.fixture(scope="session")  # once per worker: under --dist loadgroup other modules run in between
def result():
    # XLA_FLAGS must be set before jax is imported: a fresh process with 8 fake CPU devices
    out = subprocess.run([sys.executable, str(WORKER), "8"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sharded_step_and_forward_equal_the_single_device_ones(result, layout):
    """Two SGD-momentum steps on a mixed-user batch, then a forward: only summation order differs
    (float32: losses to 1e-6 relative, adapters to 1e-6, logits of size ~1 to 2e-5)."""
    d = result["layouts"][layout]
    assert d["loss"] < 1e-6 and d["adapters"] < 1e-6 and d["logits"] < 2e-5, d


def test_adapters_follow_the_kernel_sharding_and_the_bank_follows_the_users_axis(result):
    for layout in ("model", "data_model"):
        d = result["layouts"][layout]
        assert d["query_kernel_spec"][:2] == [None, "model"]  # einsum kernel (D, N, H) split over heads
        assert d["query_U_spec"] == ["model"]  # U (N, H, r): the same heads split
        assert d["down_V_spec"] == ["model"]  # row-parallel down: V (F, r) split like the kernel's rows
    for layout in ("data_bank_split", "data_model"):
        assert result["layouts"][layout]["bank_spec"] == ["data"]
    for layout in ("data", "data_bank_split", "data_model"):
        assert result["layouts"][layout]["logits_spec"][0] == "data"  # the batch stays split


def test_flax_recipe_jit_creation_with_sharding_constraint(result):
    """Built inside nnx.jit under jax.set_mesh and constrained to nnx.get_partition_spec: the
    adapters come out laid out by their metadata and serve the single-device logits."""
    d = result["flax_recipe"]
    assert d["query_U_spec"] == ["model"] and d["bank_spec"] == ["data"]
    assert d["logits"] < 2e-5


def test_memory_per_device_shrinks_as_laid_out(result):
    single = result["single_bytes"]
    bank = 5 * 16 * 2 * 2 * 4  # 5 adapted layers (one block) x 16 users x r^2 float32
    split = result["layouts"]["data_bank_split"]["bytes"]
    assert split["adapter"] == single["adapter"] - bank + bank // 8  # the bank split 8 ways, the rest replicated
    assert result["layouts"]["data"]["bytes"] == single  # pure data parallelism replicates everything
    assert result["layouts"]["model"]["bytes"]["params"] < single["params"] / 2  # kernels split 4 ways


def test_bf16_compute_with_float32_adapters_and_optimizer_state_under_remat(result):
    d = result["bf16_remat"]
    assert d["activation_dtype"] == "bfloat16" and d["finite"]
    assert d["adapter_dtypes"] == ["float32"] and d["optimizer_dtypes"] == ["float32"]
    assert d["loss"] < 1e-2  # bf16 has 8 bits of mantissa: eps 2^-8 ~ 4e-3 per rounding
    assert d["update_cosine"] > 0.99  # the same descent direction as float32
    remat = result["remat_f32"]  # rematerialization alone changes nothing beyond float32 rounding
    assert remat["loss"] < 1e-6 and remat["adapters"] < 1e-6 and remat["logits"] < 2e-5
