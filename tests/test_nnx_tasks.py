"""Claims about the NNX path's tasks: the planted teacher's geometry, the shipped Shakespeare roles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from colora_jax import nnx as cn
from colora_jax.nnx._tasks import _tilted


@pytest.mark.parametrize("angle", [0.0, 0.3, 1.2])
def test_tilted_subspaces_sit_at_the_chosen_principal_angle(angle):
    from colora_jax import subspace_distance

    center, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (12, 3)))
    for u_i in _tilted(jax.random.key(1), center, angle, users=4):
        np.testing.assert_allclose(u_i.T @ u_i, np.eye(3), atol=1e-5)  # still orthonormal
        np.testing.assert_allclose(subspace_distance(u_i, center), np.sin(angle), atol=1e-5)


def test_planted_teacher_targets_are_the_teachers_and_differ_from_the_base():
    base = cn.Transformer(cn.TransformerConfig(vocab=8, seq_len=4, width=8, depth=1, heads=2), rngs=nnx.Rngs(0))
    planted = cn.planted_teacher(jax.random.key(1), base, cn.TeacherConfig(users=3, samples=2, test_samples=1))
    assert planted.train.inputs.shape == (6, 4) and planted.train.targets.shape == (6, 4, 8)
    np.testing.assert_array_equal(planted.train.user_ids, [0, 0, 1, 1, 2, 2])
    base_out = base(planted.train.inputs)
    assert float(jnp.mean((planted.train.targets - base_out) ** 2)) > 1e-3
    assert set(planted.shared_u) == {"blocks.0.mlp.up"}


def test_shipped_shakespeare_splits_into_roles():
    roles = cn.load_roles()
    assert len([r for r, text in roles.items() if len(text) >= 2500]) >= 30
    assert "MENENIUS" in roles and roles["MENENIUS"].startswith("What work's, my countrymen")
    vocab = cn.CharVocab.from_texts(roles.values())
    tokens = vocab.encode(roles["MENENIUS"][:200])
    inputs, targets = cn.role_windows(tokens, seq_len=16, stride=8)
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])  # targets are inputs shifted by one
    assert "".join(vocab.chars[t] for t in inputs[0]) == roles["MENENIUS"][:16]
