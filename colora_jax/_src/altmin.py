"""CoLoRA estimators: exact alternating minimization, its gradient variant, joint training.

``fit`` is written for one problem (all its users); vmap it over trials and jit it at the
call site (``colora_jax.run_trials`` does both). One iteration of each algorithm:

* ``altmin``: personal step (exact, per user) -> output step (exact, pooled) -> QR of U ->
  input step (exact, pooled) -> QR of V. The triangular factors of the QRs are absorbed into
  every ``S_i`` (``U S V^T = Q_U (R_U S R_V^T) Q_V^T``), so no step changes any ``W_i`` except
  by minimizing; the objective never increases. With a diagonal personal part the gauge is
  diagonal, so columns are normalized instead of QR'd (``S_i`` stays diagonal).
* ``altgd``: exact personal step, then one gradient step on U and one on V (FedRep's
  scheme, Collins et al. 2021), step ``step_size / L`` with the isotropic-design Lipschitz
  bounds ``L_U = n lambda_max(sum_i S_i S_i^T)``, ``L_V = n lambda_max(sum_i S_i^T S_i)``.
  No pooled ``(d r) x (d r)`` system is formed: it scales to large d.
* ``adam`` (joint): one optax step on all of U, V, S at once (any optax optimizer).

The trace records, at index 0 the initialization and at index t the end of iteration t:
the objective ``f / (k n)`` (mean squared residual per sample), and when ``truth`` is given
the subspace distances of U, V to the truth and the relative error of all users' W stacked.
Entries past ``iterations`` are NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from colora_jax._src import blocks
from colora_jax._src.config import FitConfig, min_samples
from colora_jax._src.data import GroundTruth, Observations
from colora_jax._src.linalg import qr_positive
from colora_jax._src.metrics import subspace_distance


class Estimate(NamedTuple):
    """Fitted factors: user i's matrix is ``U @ S[i] @ V.T``."""

    U: Float[Array, "d_out r"]  # shared output-side factor
    V: Float[Array, "d_in r"]  # shared input-side factor
    S: Float[Array, "k r r"]  # personal matrices (diagonal when fitted as "diag")

    @property
    def W(self) -> Float[Array, "k d_out d_in"]:
        return jnp.einsum("or,krs,is->koi", self.U, self.S, self.V)


class Trace(NamedTuple):
    """Per-iteration record of a fit (index 0 = initialization)."""

    objective: Float[Array, "T"]  # mean squared residual per sample
    subspace_distance_U: Float[Array, "T"]  # sin of the largest angle to truth.U (NaN w/o truth)
    subspace_distance_V: Float[Array, "T"]
    rel_error: Float[Array, "T"]  # ||W_hat - W*||_F / ||W*||_F over all users (NaN w/o truth)
    iterations: Int[Array, ""]  # iterations run
    converged: Bool[Array, ""]  # stopped by tolerance (not by the budget)
    finite_input: Bool[Array, ""]  # False if the observations held NaN or inf


# ----------------------------------------------------------------------------- validation


def check_observations(obs: Observations, rank: int, personal: str) -> None:
    """Static checks (shapes, rank, samples); raises ValueError saying what to change."""
    if obs.model not in ("regression", "sensing"):
        raise ValueError(f"unknown model {obs.model!r}: choose 'regression' or 'sensing'")
    X, Y = obs.X, obs.Y
    want_x = 4 if obs.model == "sensing" else 3
    want_y = 2 if obs.model == "sensing" else 3
    if X.ndim != want_x or Y.ndim != want_y:
        layout = "X (k, n, d_out, d_in), Y (k, n)" if obs.model == "sensing" else "X (k, n, d_in), Y (k, n, d_out)"
        raise ValueError(f"{obs.model} observations must be {layout}; got X {X.shape}, Y {Y.shape}")
    if X.shape[:2] != Y.shape[:2]:
        raise ValueError(f"X and Y disagree on (users, samples): {X.shape[:2]} vs {Y.shape[:2]}")
    d_out, d_in = obs.dims
    if rank > min(d_out, d_in):
        raise ValueError(f"rank {rank} exceeds min(d_out, d_in) = {min(d_out, d_in)}: lower the rank")
    need = min_samples(obs.model, rank, personal)
    if obs.samples < need:
        raise ValueError(
            f"{obs.samples} samples per user cannot determine a {personal} rank-{rank} personal"
            f" part in the {obs.model} model: use at least {need} samples per user"
        )


def check_finite(obs: Observations) -> None:
    """Eager check for NaN/inf in concrete observations (skipped for traced arrays)."""
    for name, a in (("X", obs.X), ("Y", obs.Y)):
        if not isinstance(a, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(f"observations {name} contain NaN or inf: clean or drop those samples")


# ----------------------------------------------------------------------------- one iteration


def _normalize_U(U, S, diag):
    if diag:
        n = jnp.linalg.norm(U, axis=0)
        return U / n[None, :], S * n[None, :, None]
    Q, R = qr_positive(U)
    return Q, jnp.einsum("ab,kbc->kac", R, S)


def _normalize_V(V, S, diag):
    if diag:
        n = jnp.linalg.norm(V, axis=0)
        return V / n[None, :], S * n[None, None, :]
    Q, R = qr_positive(V)
    return Q, jnp.einsum("kab,cb->kac", S, R)


def _altmin_step(d, params, aux, diag, axis_name):
    U, V, _ = params
    # the S and U steps share one pass over the data (V^T C V and Bt V, or X V)
    S, (G, H) = blocks.personal_and_output_normal(d, U, V, diag)
    U = blocks.solve_factor(blocks.pool(G, axis_name), blocks.pool(H, axis_name), S.shape[1])
    U, S = _normalize_U(U, S, diag)
    if d.model == "regression":
        V, S = _normalize_V(blocks.input_step(d, U, S, axis_name), S, diag)
        return Estimate(U, V, S), aux, blocks.sum_squares(d, U, V, S, axis_name)
    # sensing: the second pass, X^T U, serves both the V step and the objective
    XtU = d.Xt @ U
    V, S = _normalize_V(blocks.pooled_factor(XtU, d.Y, jnp.swapaxes(S, 1, 2), axis_name), S, diag)
    pred = jnp.einsum("knsr,krs->kn", blocks.sensing_core(XtU, V), S)  # <V^T X^T U, S^T>
    return Estimate(U, V, S), aux, blocks.pool(jnp.sum(jnp.square(d.Y - pred)), axis_name)


def _lambda_max(M):
    return jnp.linalg.eigvalsh(M)[-1]


def _altgd_step(d, params, aux, diag, axis_name, step_size):
    U, V, _ = params
    n = d.X.shape[1]
    S = blocks.personal_step(d, U, V, diag)
    half_sse = lambda U_, V_: 0.5 * blocks.sum_squares(d, U_, V_, S, axis_name)
    L_U = n * _lambda_max(blocks.pool(jnp.einsum("krs,kts->rt", S, S), axis_name))
    U = U - (step_size / L_U) * jax.grad(half_sse, 0)(U, V)
    U, S = _normalize_U(U, S, diag)
    L_V = n * _lambda_max(blocks.pool(jnp.einsum("ksr,kst->rt", S, S), axis_name))
    V = V - (step_size / L_V) * jax.grad(half_sse, 1)(U, V)
    V, S = _normalize_V(V, S, diag)
    return Estimate(U, V, S), aux, blocks.sum_squares(d, U, V, S, axis_name)


def _joint_step(d, params, opt_state, optimizer, count, diag, axis_name):
    mask = jnp.eye(params.S.shape[-1], dtype=params.S.dtype)[None] if diag else 1.0

    def loss(p):
        return blocks.sum_squares(d, p.U, p.V, p.S * mask, axis_name) / count

    grads = jax.grad(loss)(params)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes its int step count with floats
        updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    params = params._replace(S=params.S * mask)
    return params, opt_state, blocks.sum_squares(d, params.U, params.V, params.S, axis_name)


# ----------------------------------------------------------------------------- the driver


def stopping_floor(mean_square_measurement):
    """Objective below which iterating is pointless: ``(10 eps)^2`` times the mean ``||y||^2``."""
    return (10 * jnp.finfo(mean_square_measurement.dtype).eps) ** 2 * mean_square_measurement


def iterate(advance, state, metrics0, iters: int, tol: float, floor, monotone: bool = True):
    """The iteration loop shared by every estimator, inside ``lax.while_loop``.

    Args:
      advance: ``state -> (state, metrics)``: one iteration, then the metrics of the new
        iterate, a tuple whose first entry is the objective.
      state: the initial state (any pytree).
      metrics0: the metrics of the initial state (recorded at index 0).
      iters: iteration budget.
      tol: stop once the objective's relative decrease ``(f_prev - f) / f_prev <= tol``
        (only when ``monotone``; an optimizer that may increase f stops by budget or floor).
      floor: stop once the objective is ``<= floor``.

    Returns:
      ``(state, buffers, iterations, converged)``: ``buffers`` holds one ``(iters + 1,)`` array
      per metric (index t = after iteration t, NaN past ``iterations``); ``converged`` is True
      when the loop stopped by tolerance or floor rather than by the budget.
    """
    dtype = metrics0[0].dtype
    buffers = tuple(jnp.full((iters + 1,), jnp.nan, dtype).at[0].set(m) for m in metrics0)

    def cond(carry):
        it, _, _, done = carry
        return (it < iters) & ~done

    def body(carry):
        it, st, bufs, _ = carry
        st, m = advance(st)
        bufs = tuple(b.at[it + 1].set(v) for b, v in zip(bufs, m))
        f_prev, f = bufs[0][it], m[0]
        done = f <= floor
        if monotone:
            done = done | (f_prev - f <= tol * f_prev)
        return it + 1, st, bufs, done

    it, state, buffers, done = jax.lax.while_loop(cond, body, (jnp.asarray(0), state, buffers, buffers[0][0] <= floor))
    return state, buffers, it, done


def initialize(d: blocks.Design, config: FitConfig, key: PRNGKeyArray | None, axis_name=None):
    """Initial shared factors: spectral (second moments across users) or random orthonormal."""
    if config.init == "spectral":
        return blocks.spectral_init(d, config.rank, axis_name)
    if key is None:
        raise ValueError("init='random' needs a PRNG key: pass key=jax.random.key(seed) to fit")
    d_out = d.X.shape[2] if d.model == "sensing" else d.Y.shape[2]
    d_in = d.X.shape[-1]
    ku, kv = jax.random.split(key)
    U = jnp.linalg.qr(jax.random.normal(ku, (d_out, config.rank), d.X.dtype))[0]
    V = jnp.linalg.qr(jax.random.normal(kv, (d_in, config.rank), d.X.dtype))[0]
    return U, V


def fit(
    observations: Observations,
    config: FitConfig = FitConfig(),
    *,
    key: PRNGKeyArray | None = None,
    truth: GroundTruth | None = None,
    optimizer: optax.GradientTransformation | None = None,
    axis_name: str | None = None,
) -> tuple[Estimate, Trace]:
    """Fit the shared factors and personal matrices of all users.

    Args:
      observations: the users' training data (``Observations``).
      config: static settings (algorithm, rank, personal part, iterations, tolerance).
      key: PRNG key, needed only for ``init="random"``.
      truth: optional ground truth; when given, the trace records distances to it.
      optimizer: for ``algorithm="adam"``: any optax transformation (default
        ``optax.adam(config.learning_rate)``); it minimizes the mean squared residual.
      axis_name: mesh axis over which users are sharded (inside ``shard_map``); the pooled
        sums become ``psum``s over it. ``None`` for a single device.

    Returns:
      ``(Estimate, Trace)``. Iteration stops after ``config.iters`` iterations, or (altmin,
      altgd) once the objective's relative decrease is below ``config.tol``, or when the
      objective reaches ``(10 eps)^2`` times the mean squared measurement.
    """
    config.validate()
    check_observations(observations, config.rank, config.personal)
    check_finite(observations)
    diag = config.personal == "diag"
    d = blocks.design(observations)
    count = blocks.pool(jnp.asarray(observations.Y.size, d.X.dtype), axis_name)
    count = count / (observations.dims[0] if observations.model == "regression" else 1)
    floor = stopping_floor(blocks.pool(jnp.sum(jnp.square(d.Y)), axis_name) / count)

    U, V = initialize(d, config, key, axis_name)
    params = Estimate(U, V, blocks.personal_step(d, U, V, diag))

    if config.algorithm == "altmin":
        step = lambda p, a: _altmin_step(d, p, a, diag, axis_name)
        aux = ()
    elif config.algorithm == "altgd":
        step = lambda p, a: _altgd_step(d, p, a, diag, axis_name, config.step_size)
        aux = ()
    else:
        opt = optax.adam(config.learning_rate) if optimizer is None else optimizer
        step = lambda p, a: _joint_step(d, p, a, opt, count, diag, axis_name)
        aux = opt.init(params)

    def metrics(p, sse):
        f = sse / count
        if truth is None:
            nan = jnp.full((), jnp.nan, f.dtype)
            return f, nan, nan, nan
        err2 = blocks.pool(jnp.sum(jnp.square(p.W - truth.W)), axis_name)
        ref2 = blocks.pool(jnp.sum(jnp.square(truth.W)), axis_name)
        return f, subspace_distance(p.U, truth.U), subspace_distance(p.V, truth.V), jnp.sqrt(err2 / ref2)

    sse0 = blocks.sum_squares(d, params.U, params.V, params.S, axis_name)

    def advance(state):
        p, a, sse = step(*state)
        return (p, a), metrics(p, sse)

    (params, _), buffers, iterations, done = iterate(
        advance, (params, aux), metrics(params, sse0), config.iters, config.tol, floor,
        monotone=config.algorithm != "adam",
    )
    finite = jnp.all(jnp.isfinite(observations.X)) & jnp.all(jnp.isfinite(observations.Y))
    finite = blocks.pool((~finite).astype(jnp.int32), axis_name) == 0  # every shard's data finite
    trace = Trace(*buffers, iterations=iterations, converged=done, finite_input=finite)
    return params, trace
