"""Planted heterogeneous linear regression: ground truth, measurement models, generator.

User ``i = 1..k`` has the task ``W_i* = U_i* S_i* V_i*^T + D_i`` with

* shared orthonormal ``U*`` (d_out x r) and ``V*`` (d_in x r);
* ``U_i* = U* cos(theta) + E_i sin(theta)`` with ``E_i`` orthonormal and orthogonal to ``U*``,
  so every principal angle between span(U_i*) and span(U*) equals ``theta = task_angle``
  exactly (likewise for V);
* a personal ``S_i*`` (r x r, or diagonal) with singular values geometric in [1/c, 1];
* an optional full-rank ``D_i`` with ``||D_i||_F = deviation * ||U_i* S_i* V_i*^T||_F``.

Two measurement models (``Observations.model``):

* ``regression``: ``x ~ N(0, I_{d_in})``, ``y = W_i x + e`` in R^{d_out};
  arrays ``X: (k, n, d_in)``, ``Y: (k, n, d_out)``.
* ``sensing``: ``X`` with i.i.d. N(0, 1) entries in R^{d_out x d_in}, ``y = <X, W_i> + e``;
  arrays ``X: (k, n, d_out, d_in)``, ``Y: (k, n)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src.config import ProblemConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Observations:
    """Measurements of k users; ``model`` is static metadata, ``X`` and ``Y`` are arrays."""

    X: Float[Array, "k n ..."]
    Y: Float[Array, "k n ..."]
    model: str = dataclasses.field(default="sensing", metadata=dict(static=True))

    @property
    def users(self) -> int:
        return self.X.shape[0]

    @property
    def samples(self) -> int:
        return self.X.shape[1]

    @property
    def dims(self) -> tuple[int, int]:
        """(d_out, d_in) of the users' matrices W_i."""
        if self.model == "sensing":
            return self.X.shape[2], self.X.shape[3]
        return self.Y.shape[2], self.X.shape[2]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """The planted parameters. ``W[i] = U_users[i] @ S[i] @ V_users[i].T + D[i]``."""

    U: Float[Array, "d_out r"]  # shared output-side factor U*
    V: Float[Array, "d_in r"]  # shared input-side factor V*
    S: Float[Array, "k r r"]  # personal S_i*
    U_users: Float[Array, "k d_out r"]  # U_i*, tilted by task_angle from U*
    V_users: Float[Array, "k d_in r"]  # V_i*, tilted by task_angle from V*
    W: Float[Array, "k d_out d_in"]  # the users' full matrices W_i*


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Problem:
    """A generated problem: the truth, training and held-out observations."""

    truth: GroundTruth
    train: Observations
    test: Observations


def predict(W: Float[Array, "d_out d_in"], X: Float[Array, "n ..."], model: str) -> Float[Array, "n ..."]:
    """Noiseless measurements of one user: ``X W^T`` (regression) or ``<X_j, W>`` (sensing)."""
    if model == "sensing":
        return jnp.einsum("noi,oi->n", X, W)
    return X @ W.T


def _orthonormal(key: PRNGKeyArray, rows: int, cols: int, dtype) -> Float[Array, "rows cols"]:
    """A Haar-distributed orthonormal basis (QR of a Gaussian with the sign of diag(R) fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (rows, cols), dtype))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def tilt(key: PRNGKeyArray, base: Float[Array, "d r"], angle) -> Float[Array, "d r"]:
    """An orthonormal basis whose principal angles to span(base) all equal ``angle``.

    ``base cos(angle) + E sin(angle)`` with ``E`` a random orthonormal basis of a subspace of
    the orthogonal complement of span(base) (needs ``d >= 2 r``). ``base`` must be orthonormal.
    """
    d, r = base.shape
    if 2 * r > d:
        # angle is 0 (validated by ProblemConfig), so the complement is never needed
        return base
    g = jax.random.normal(key, (d, r), base.dtype)
    g = g - base @ (base.T @ g)
    g = g - base @ (base.T @ g)  # second projection: orthogonality to working precision
    e, _ = jnp.linalg.qr(g)
    return base * jnp.cos(angle) + e * jnp.sin(angle)


def personal_matrices(key: PRNGKeyArray, config: ProblemConfig) -> Float[Array, "k r r"]:
    """The personal S_i*: singular values ``geomspace(1, 1/condition, r)``.

    ``full``: ``A_i diag(sigma) B_i^T`` with Haar ``A_i, B_i``; ``diag``: ``diag(sigma)`` with
    random signs and a random order. With ``personal_mean="zero"`` the bank is re-centred so
    that ``sum_i S_i* = 0`` (the case where a plain average of the users' tasks is useless).
    """
    k, r, dtype = config.users, config.rank, config.dtype
    sigma = jnp.geomspace(1.0, 1.0 / config.condition, r).astype(dtype)
    ka, kb = jax.random.split(key)
    if config.personal == "full":
        a = jax.vmap(lambda kk: _orthonormal(kk, r, r, dtype))(jax.random.split(ka, k))
        b = jax.vmap(lambda kk: _orthonormal(kk, r, r, dtype))(jax.random.split(kb, k))
        s = jnp.einsum("kab,b,kcb->kac", a, sigma, b)
    else:
        signs = jax.random.rademacher(ka, (k, r), dtype=dtype)
        perm = jax.vmap(lambda kk: jax.random.permutation(kk, sigma))(jax.random.split(kb, k))
        s = jax.vmap(jnp.diag)(signs * perm)
    if config.personal_mean == "zero":
        s = s - jnp.mean(s, axis=0, keepdims=True)
    return s


def generate_truth(key: PRNGKeyArray, config: ProblemConfig) -> GroundTruth:
    """Draw the planted shared factors, per-user tilts, personal parts and deviations."""
    config.validate()
    k, dtype = config.users, config.dtype
    ku, kv, ks, ktu, ktv, kd = jax.random.split(key, 6)
    U = _orthonormal(ku, config.d_out, config.rank, dtype)
    V = _orthonormal(kv, config.d_in, config.rank, dtype)
    S = personal_matrices(ks, config)
    U_users = jax.vmap(lambda kk: tilt(kk, U, config.task_angle))(jax.random.split(ktu, k))
    V_users = jax.vmap(lambda kk: tilt(kk, V, config.task_angle))(jax.random.split(ktv, k))
    W = jnp.einsum("kor,krs,kis->koi", U_users, S, V_users)
    if config.deviation > 0:
        D = jax.random.normal(kd, W.shape, dtype)
        scale = jnp.linalg.norm(W, axis=(1, 2)) / jnp.linalg.norm(D, axis=(1, 2))
        W = W + config.deviation * scale[:, None, None] * D
    return GroundTruth(U=U, V=V, S=S, U_users=U_users, V_users=V_users, W=W)


def measure(key: PRNGKeyArray, W: Float[Array, "k d_out d_in"], samples: int, noise: float, model: str) -> Observations:
    """Draw ``samples`` Gaussian measurements of each user's ``W_i`` with noise std ``noise``."""
    k, d_out, d_in = W.shape
    kx, ke = jax.random.split(key)
    x_shape = (k, samples, d_out, d_in) if model == "sensing" else (k, samples, d_in)
    X = jax.random.normal(kx, x_shape, W.dtype)
    clean = jax.vmap(predict, in_axes=(0, 0, None))(W, X, model)
    Y = clean + noise * jax.random.normal(ke, clean.shape, W.dtype)
    return Observations(X=X, Y=Y, model=model)


def generate(key: PRNGKeyArray, config: ProblemConfig) -> Problem:
    """Generate a planted problem deterministically from ``key``.

    Args:
      key: a JAX PRNG key; the same key and config give the same problem.
      config: the problem's static description (validated here, at trace time).

    Returns:
      ``Problem(truth, train, test)``; ``test`` has ``config.test_samples`` per user.
    """
    config.validate()
    kt, ktr, kte = jax.random.split(key, 3)
    truth = generate_truth(kt, config)
    train = measure(ktr, truth.W, config.samples, config.noise, config.model)
    test = measure(kte, truth.W, config.test_samples, config.noise, config.model)
    return Problem(truth=truth, train=train, test=test)
