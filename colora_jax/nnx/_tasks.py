"""Multi-user tasks for the NNX path: a planted CoLoRA teacher, and Shakespeare roles as users.

Planted teacher. Each user ``i`` has a teacher: the base transformer whose targeted layers are
perturbed, ``W_i = W_0 + U_i S_i V_i^T`` with

    U_i = cos(theta) U* + sin(theta) P_i,     V_i = cos(theta) V* + sin(theta) Q_i,

``U*, V*`` orthonormal and shared, ``P_i, Q_i`` orthonormal bases orthogonal to them (the
principal angles between span U_i and span U* all equal ``theta = task_angle``), and
``S_i = strength * ||W_0||_2 * G_i / sqrt(r)`` with ``G_i`` standard Gaussian. Inputs are uniform
random token sequences and the targets are the teacher's logits (a multi-output regression).

Shakespeare. Tiny Shakespeare split by speaking role (the LEAF-style federated benchmark):
every speech is preceded by its speaker's name on a line of its own (``ROMEO:``). Each role
is a user; its text is cut into windows for next-character prediction.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing as tp

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from colora_jax.nnx._train import Examples
from colora_jax.nnx._wrap import adapted_layers, apply_lora_bank, colora_users

__all__ = [
    "TeacherConfig",
    "PlantedTeacher",
    "planted_teacher",
    "SHAKESPEARE_PATH",
    "load_roles",
    "CharVocab",
    "role_windows",
]

SHAKESPEARE_PATH = os.path.join(os.path.dirname(__file__), "data", "tinyshakespeare.txt")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """The planted multi-user teacher."""

    users: int = 16  # k, number of users
    rank: int = 2  # r, rank of the planted perturbation
    targets: tuple[str, ...] = ("up",)  # layers that carry the planted perturbation
    samples: int = 8  # training sequences per user
    test_samples: int = 16  # held-out sequences per user
    task_angle: float = 0.0  # principal angle (radians) between each user's and the shared subspaces
    strength: float = 1.0  # size of S_i relative to ||W_0||_2

    def validate(self) -> "TeacherConfig":
        if not 0.0 <= self.task_angle <= np.pi / 2:
            raise ValueError(f"task_angle must lie in [0, pi/2], got {self.task_angle}")
        for name in ("users", "rank", "samples", "test_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self


class PlantedTeacher(tp.NamedTuple):
    """The teacher (a LoRA bank holding each user's planted update), the truth and the data."""

    teacher: nnx.Module
    shared_u: dict[str, Float[Array, "d_out r"]]  # planted U* per targeted layer (dotted path)
    shared_v: dict[str, Float[Array, "d_in r"]]  # planted V* per targeted layer
    train: Examples
    test: Examples


def _orthonormal(key: Array, d: int, r: int) -> Float[Array, "d r"]:
    q, _ = jnp.linalg.qr(jax.random.normal(key, (d, r)))
    return q


def _tilted(key: Array, center: Float[Array, "d r"], angle: float, users: int) -> Float[Array, "k d r"]:
    """``cos(angle) C + sin(angle) P_i`` with ``P_i`` orthonormal and orthogonal to ``C``."""
    d, r = center.shape
    g = jax.random.normal(key, (users, d, r))
    g = g - center @ (center.T @ g)  # project out span(C)
    p, _ = jnp.linalg.qr(g)
    return jnp.cos(angle) * center + jnp.sin(angle) * p


def planted_teacher(key: Array, base: nnx.Module, config: TeacherConfig) -> PlantedTeacher:
    """Plant per-user CoLoRA perturbations in a clone of ``base`` and draw train/test data."""
    config.validate()
    k_layers, k_data = jax.random.split(key)
    teacher = apply_lora_bank(
        nnx.clone(base), users=config.users, rank=config.rank, targets=config.targets, rngs=nnx.Rngs(k_layers)
    )
    shared_u, shared_v = {}, {}
    r = config.rank
    layers = adapted_layers(teacher)
    for (name, layer), k in zip(layers, jax.random.split(k_layers, len(layers))):
        d_in, d_out = layer.axes.d_in, layer.axes.d_out
        if 2 * r > min(d_in, d_out) and config.task_angle:
            raise ValueError(f"task_angle > 0 needs 2*rank <= min(d_in, d_out) = {min(d_in, d_out)} in {name}")
        ku, kv, kp, kq, ks = jax.random.split(k, 5)
        u, v = _orthonormal(ku, d_out, r), _orthonormal(kv, d_in, r)
        u_i, v_i = _tilted(kp, u, config.task_angle, config.users), _tilted(kq, v, config.task_angle, config.users)
        scale = config.strength * jnp.linalg.norm(layer.base.kernel[...], ord=2) / jnp.sqrt(r)
        s_i = scale * jax.random.normal(ks, (config.users, r, r))
        layer.lora_a.set_value(v_i)  # A_i = V_i
        layer.lora_b.set_value(jnp.einsum("kda,kab->kdb", u_i, s_i))  # B_i = U_i S_i, so B_i A_i^T = U_i S_i V_i^T
        shared_u[name], shared_v[name] = u, v
    vocab, seq_len = base.cfg.vocab, base.cfg.seq_len

    def draw(k, per_user):
        ids = jnp.repeat(jnp.arange(config.users), per_user)
        tokens = jax.random.randint(k, (ids.shape[0], seq_len), 0, vocab)
        with colora_users(teacher, ids):
            return Examples(tokens, teacher(tokens), ids)

    k_train, k_test = jax.random.split(k_data)
    return PlantedTeacher(teacher, shared_u, shared_v, draw(k_train, config.samples), draw(k_test, config.test_samples))


def load_roles(path: str | os.PathLike = SHAKESPEARE_PATH) -> dict[str, str]:
    """Each speaking role's speeches, concatenated in order (``{"ROMEO": "...", ...}``)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    roles: dict[str, list[str]] = {}
    for block in re.split(r"\n\s*\n", text):
        head, _, speech = block.strip("\n").partition("\n")
        if head.endswith(":") and speech:
            roles.setdefault(head[:-1].strip(), []).append(speech + "\n")
    return {role: "".join(speeches) for role, speeches in roles.items()}


class CharVocab(tp.NamedTuple):
    """A character vocabulary: ``chars[i]`` is token ``i``; unknown characters map to ``0``."""

    chars: str

    @classmethod
    def from_texts(cls, texts: tp.Iterable[str]) -> "CharVocab":
        return cls("".join(sorted(set("".join(texts)))))

    def encode(self, text: str) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.chars)}
        return np.array([lookup.get(c, 0) for c in text], np.int32)


def role_windows(tokens: np.ndarray, seq_len: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``seq_len`` inputs and their next-character targets (shifted by one)."""
    stride = stride or seq_len
    starts = np.arange(0, len(tokens) - seq_len, stride)
    inputs = np.stack([tokens[s : s + seq_len] for s in starts])
    targets = np.stack([tokens[s + 1 : s + seq_len + 1] for s in starts])
    return inputs, targets
