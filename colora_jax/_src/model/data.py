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

Random streams (``counter_rng``): sample j of user i is drawn from a counter-based generator
keyed by ``(key, i, j)``, and each user's planted parts by ``(key, i)``, so samples are
nested (the first n samples never depend on how many are drawn) and users are too (except
``personal_mean="zero"``, which re-centres over the users present). The truth, the training
data and the optional test data come from independent ``fold_in`` streams of the problem key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from colora_jax._src.model import counter_rng
from colora_jax._src.model.config import ProblemConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Observations:
    """Measurements of k users: ``X``, ``Y`` arrays, ``model`` static, optional per-user ``counts``.

    ``counts[i]`` (traced, optional) says how many of user i's stored samples are used: rows
    ``j >= counts[i]`` are ignored by every estimator and metric, exactly as if they were absent
    (estimators zero them: ``masked``; a zero row drops out of every least squares). With the nested sample
    stream this makes a sweep over samples per user one compiled program: store the largest
    ``n`` and set ``counts``. ``None`` uses every stored sample.
    """

    X: Float[Array, "k n ..."]
    Y: Float[Array, "k n ..."]
    model: str = dataclasses.field(default="sensing", metadata=dict(static=True))
    counts: Int[Array, " k"] | None = None

    @property
    def users(self) -> int:
        """The number of users ``k``."""
        return self.X.shape[0]

    @property
    def samples(self) -> int:
        """Stored samples per user (an upper bound of ``counts``)."""
        return self.X.shape[1]

    @property
    def dims(self) -> tuple[int, int]:
        """(d_out, d_in) of the users' matrices W_i."""
        if self.model == "sensing":
            return self.X.shape[2], self.X.shape[3]
        return self.Y.shape[2], self.X.shape[2]

    def sample_counts(self) -> Int[Array, " k"]:
        """Samples used per user: ``counts``, or the stored number."""
        if self.counts is None:
            return jnp.full((self.users,), self.samples, jnp.int32)
        return self.counts

    def with_counts(self, counts) -> "Observations":
        """Use only the first ``counts`` samples of each user (a scalar or one count per user).

        ``counts`` must be integers: a float such as 10.5 would be cut to 10 here while a mask
        compared with it keeps 11 rows, so it is refused (ValueError) rather than rounded.
        """
        counts = jnp.asarray(counts)
        if not jnp.issubdtype(counts.dtype, jnp.integer):
            raise ValueError(
                f"counts must be whole numbers of samples, got {counts.dtype} values: pass integers"
                " (e.g. jnp.asarray(counts, jnp.int32))"
            )
        counts = jnp.broadcast_to(counts.astype(jnp.int32), (self.users,))
        return Observations(X=self.X, Y=self.Y, model=self.model, counts=counts)

    def masked(self) -> "Observations":
        """These observations with every unused row (index ``>= counts``) set to zero.

        Estimators call this first: a zero row adds nothing to any normal equation or sum of
        squares, so fitting the masked arrays is fitting the used samples alone.
        """
        if self.counts is None:
            return self
        keep = jnp.arange(self.samples, dtype=self.counts.dtype)[None, :] < self.counts[:, None]
        X = jnp.where(_expand(keep, self.X), self.X, 0)  # where, not a product: a NaN in an unused row is dropped
        Y = jnp.where(_expand(keep, self.Y), self.Y, 0)
        return Observations(X=X, Y=Y, model=self.model, counts=self.counts)


def _expand(keep, like):
    return keep.reshape(keep.shape + (1,) * (like.ndim - 2))


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
    noise: Float[Array, ""]  # standard deviation of the measurement noise (for the population risk)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Problem:
    """A generated problem: the truth, training and (optional, empirical) held-out observations.

    ``test`` has ``ProblemConfig.test_samples`` samples per user; with 0 (the default) the
    held-out error is the exact population risk of the Gaussian design (``trials.evaluate``).
    """

    truth: GroundTruth
    train: Observations
    test: Observations


def predict(W: Float[Array, "d_out d_in"], X: Float[Array, "n ..."], model: str) -> Float[Array, "n ..."]:
    """Noiseless measurements of one user: ``X W^T`` (regression) or ``<X_j, W>`` (sensing)."""
    if model == "sensing":
        return jnp.einsum("noi,oi->n", X, W)
    return X @ W.T


def orthonormal(G: Float[Array, "... d r"]) -> Float[Array, "... d r"]:
    """The Q factor of ``G = Q R`` with ``diag(R) > 0``: Haar-distributed when ``G`` is Gaussian."""
    q, r = jnp.linalg.qr(G)
    return q * jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(G.dtype)[..., None, :]


def tilt(base: Float[Array, "d r"], gaussian: Float[Array, "d r"], angle) -> Float[Array, "d r"]:
    """An orthonormal basis whose principal angles to span(base) all equal ``angle``.

    ``base cos(angle) + E sin(angle)`` with ``E`` the orthonormalized projection of
    ``gaussian`` onto the orthogonal complement of span(base) (needs ``d >= 2 r``; ``base``
    orthonormal).
    """
    g = gaussian - base @ (base.T @ gaussian)
    g = g - base @ (base.T @ g)  # second projection: orthogonality to working precision
    return base * jnp.cos(angle) + orthonormal(g) * jnp.sin(angle)


# Stream tags: each part of a problem is drawn from its own fold_in(key, tag) stream, so that
# turning one knob (a tilt, a deviation, a test set) never changes the draws of another.
TRUTH_STREAM, TRAIN_STREAM, TEST_STREAM = 0, 1, 2  # fold_in tags of a problem key
# The layout of every random stream above (what a seed means): part of every sweep cell's key,
# so that results drawn with another layout are never reused. Change it with the layout.
STREAM_VERSION = "counter-threefry-boxmuller/user-sample/v1"
_SHARED, _PERSONAL, _TILT, _DEVIATION = 0, 1, 2, 3


def _user_normals(key, tag: int, users: int, shape: tuple[int, ...], dtype, first_user=0):
    """Normals of shape ``(users,) + shape``, user i's entries a function of (key, tag, first_user + i)."""
    width = 1
    for s in shape:
        width *= s
    z = counter_rng.normals(jax.random.fold_in(key, tag), users, 1, width, dtype, first_user)
    return z.reshape((users,) + shape)


def personal_matrices(key: PRNGKeyArray, config: ProblemConfig, first_user=0) -> Float[Array, "k r r"]:
    """The personal S_i*: singular values ``geomspace(1, 1/condition, r)``.

    ``full``: ``A_i diag(sigma) B_i^T`` with Haar ``A_i, B_i``; ``diag``: ``diag(sigma)`` with
    random signs and a random order. User i's ``S_i*`` depends on ``(key, i)`` only (users
    ``first_user .. first_user + config.users - 1`` are drawn); with ``personal_groups = g`` the
    users share only ``g`` distinct matrices (user i has group ``i mod g``'s), which lowers the
    diversity of the tasks (the smallest eigenvalue of the users' second moment). With
    ``personal_mean="zero"`` the bank is re-centred so that ``sum_i S_i* = 0`` (the case where
    a plain average of the users' tasks is useless).
    """
    k, r, dtype = config.users, config.rank, config.dtype
    sigma = jnp.geomspace(1.0, 1.0 / config.condition, r).astype(dtype)
    if config.personal_groups:  # task diversity: user i draws the S* of group i mod g
        g = config.personal_groups
        z = _user_normals(key, _PERSONAL, g, (2, r, r), dtype)[(jnp.arange(k) + first_user) % g]
    else:
        z = _user_normals(key, _PERSONAL, k, (2, r, r), dtype, first_user)
    if config.personal == "full":
        ab = orthonormal(z.reshape(2 * k, r, r)).reshape(k, 2, r, r)
        s = jnp.einsum("kab,b,kcb->kac", ab[:, 0], sigma, ab[:, 1])
    else:  # random signs (from the first row), random order (argsort of the second row)
        order = jnp.argsort(z[:, 1, 0], axis=-1)
        s = jax.vmap(jnp.diag)(jnp.sign(z[:, 0, 0]) * sigma[order])
    if config.personal_mean == "zero":
        s = s - jnp.mean(s, axis=0, keepdims=True)
    return s


def shared_factors(key: PRNGKeyArray, config: ProblemConfig) -> tuple[Float[Array, "d_out r"], Float[Array, "d_in r"]]:
    """The planted shared ``U*``, ``V*`` (Haar orthonormal) of the truth drawn from ``key``."""
    r, d_out = config.rank, config.d_out
    g = _user_normals(key, _SHARED, 1, (d_out + config.d_in, r), config.dtype)[0]
    return orthonormal(g[:d_out]), orthonormal(g[d_out:])


@functools.partial(jax.jit, static_argnums=1)
def generate_truth(key: PRNGKeyArray, config: ProblemConfig, noise=None, first_user=0) -> GroundTruth:
    """Draw the planted shared factors, per-user tilts, personal parts and deviations.

    Args:
      key: the truth's PRNG key.
      config: the problem (``config.users`` users are drawn).
      noise: recorded in the truth for the population risk (default ``config.noise``; may be
        traced).
      first_user: draw users ``first_user .. first_user + config.users - 1`` of the stream
        (one chunk of a larger problem; may be traced). Every per-user part of user i depends
        on ``(key, i)`` alone, except the re-centring of ``personal_mean="zero"``.
    """
    config.validate()
    k, r, dtype = config.users, config.rank, config.dtype
    d_out, d_in = config.d_out, config.d_in
    U, V = shared_factors(key, config)
    S = personal_matrices(key, config, first_user)
    if config.task_angle == 0.0:  # static: no factorization for untilted users
        U_users, V_users = jnp.broadcast_to(U, (k, d_out, r)), jnp.broadcast_to(V, (k, d_in, r))
    else:
        e = _user_normals(key, _TILT, k, (d_out + d_in, r), dtype, first_user)
        U_users = jax.vmap(tilt, (None, 0, None))(U, e[:, :d_out], config.task_angle)
        V_users = jax.vmap(tilt, (None, 0, None))(V, e[:, d_out:], config.task_angle)
    W = jnp.einsum("kor,krs,kis->koi", U_users, S, V_users)
    if config.deviation > 0:
        D = _user_normals(key, _DEVIATION, k, (d_out, d_in), dtype, first_user)
        scale = jnp.linalg.norm(W, axis=(1, 2)) / jnp.linalg.norm(D, axis=(1, 2))
        W = W + config.deviation * scale[:, None, None] * D
    noise = jnp.asarray(config.noise if noise is None else noise, dtype)
    return GroundTruth(U=U, V=V, S=S, U_users=U_users, V_users=V_users, W=W, noise=noise)


@functools.partial(jax.jit, static_argnums=(2, 4))
def measure(
    key: PRNGKeyArray, W: Float[Array, "k d_out d_in"], samples: int, noise, model: str, first_user=0
) -> Observations:
    """Draw ``samples`` Gaussian measurements of each user's ``W_i`` with noise std ``noise``.

    Sample j of user i (its design and its noise) is a function of ``(key, i, j)`` alone:
    ``measure(key, W, n, ...)`` holds the first ``n`` samples of ``measure(key, W, N, ...)``
    for ``n <= N``, and user i's samples do not depend on the number of users (``W`` holds
    users ``first_user, first_user + 1, ...`` of the stream). ``noise`` may be traced.
    """
    k, d_out, d_in = W.shape
    x_shape = (d_out, d_in) if model == "sensing" else (d_in,)
    e_width = 1 if model == "sensing" else d_out
    x_width = d_out * d_in if model == "sensing" else d_in
    z = counter_rng.normals(key, k, samples, x_width + e_width, W.dtype, first_user)
    X = z[..., :x_width].reshape((k, samples) + x_shape)
    e = z[..., x_width:] if model == "regression" else z[..., x_width]
    clean = jax.vmap(predict, in_axes=(0, 0, None))(W, X, model)
    return Observations(X=X, Y=clean + jnp.asarray(noise, W.dtype) * e, model=model)


@functools.partial(jax.jit, static_argnums=1)
def generate(key: PRNGKeyArray, config: ProblemConfig, *, noise=None, first_user=0) -> Problem:
    """Generate a planted problem deterministically from ``key``.

    Args:
      key: a JAX PRNG key (threefry); the same key and config give the same problem, and the
        first ``n`` training samples of every user are the same for every ``samples >= n``.
      config: the problem's static description (validated here, at trace time).
      noise: override of ``config.noise`` that may be traced (one compiled program serves a
        sweep over noise levels).
      first_user: generate users ``first_user .. first_user + config.users - 1`` of the
        problem's users (one chunk; ``chunks.generate_chunks``); may be traced.

    One compiled program per configuration (``jax.jit``; traced into the caller's program when
    called inside a transformation).

    Returns:
      ``Problem(truth, train, test)``; ``test`` has ``config.test_samples`` per user.
    """
    config.validate()
    noise = config.noise if noise is None else noise
    truth = generate_truth(jax.random.fold_in(key, TRUTH_STREAM), config, noise, first_user)
    train = measure(jax.random.fold_in(key, TRAIN_STREAM), truth.W, config.samples, noise, config.model, first_user)
    test = measure(jax.random.fold_in(key, TEST_STREAM), truth.W, config.test_samples, noise, config.model, first_user)
    return Problem(truth=truth, train=train, test=test)
