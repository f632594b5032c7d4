"""Centred CoLoRA: personal parts pulled towards a shared centre (``algorithm="centered"``).

When the personal signal is weak, CoLoRA's ``r^2`` numbers per user can overfit. The natural
extension writes ``S_i = S_bar + Delta_i`` with a shared centre ``S_bar`` and penalizes the
deviations, in weight space so that the gauge does not matter::

    f_lambda(U, V, S, S_bar) = sum_ij ||y_ij - A_ij(U S_i V^T)||^2 + lambda sum_i n_i ||U (S_i - S_bar) V^T||_F^2.

It nests the two extremes: ``lambda = 0`` is CoLoRA (the centre drops out) and ``lambda -> inf``
is one shared rank-r adapter ``U S_bar V^T`` for everybody (the ``global`` baseline). The
penalty is the one of the NNX path (``colora_jax.nnx``, ``TrainConfig.ridge``): per sample,
``lambda`` times the mean over users of ``||U Delta_i V^T||_F^2``.

Exact alternating minimization, every block a closed form (so ``f_lambda`` never increases);
``U`` and ``V`` are kept orthonormal, so ``||U Delta_i V^T||_F = ||Delta_i||_F`` in the personal
and centre steps:

* personal and centre step, jointly: every ``S_i`` is a ridge regression towards the centre,
  ``(F_i^T F_i + w_i I) s_i = F_i^T y_i + w_i s_bar`` (sensing; regression: ``S_i (V^T C_i V +
  w_i I) = U^T B_i^T V + w_i S_bar``), ``w_i = lambda n_i``, and the centre solves the reduced
  system left after eliminating them (``_personal_and_centre``);
* output step: the pooled least squares for ``U`` plus ``lambda sum_i n_i Delta_i Delta_i^T``
  (each row of ``U``), then QR with ``R`` absorbed into every ``S_i`` and ``S_bar``;
* input step: likewise for ``V`` with ``lambda sum_i n_i Delta_i^T Delta_i``, then QR.

The method ``colora-centered`` (``baselines/centered.py``) chooses ``lambda`` on held-out
validation data with ``fit_with_ridge``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from colora_jax._src.estimators import fitting
from colora_jax._src.estimators.fitting import Estimate, Setup, normalize_U, normalize_V
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig
from colora_jax._src.model.linalg import psd_solve


def _personal_and_centre(d: blocks.Design, U, V, weights, axis_name=None):
    """The exact joint minimizer over every ``S_i`` and the centre ``S_bar`` given ``U``, ``V`` (orthonormal).

    Per user the personal problem is a ridge towards the centre, ``A_i s_i = b_i + w_i s_bar`` with
    ``A_i = G_i + w_i I``; eliminating the ``s_i`` leaves ``(sum_i w_i A_i^{-1} G_i) s_bar =
    sum_i w_i A_i^{-1} b_i`` (the users' sum: a ``psum`` when sharded), then ``s_i`` follows. Solving
    the block jointly (not ``S_i`` and ``S_bar`` in turn) keeps a large ``lambda`` from freezing the
    centre. Regression has the same structure row by row: ``S_i (N_i + w_i I) = R_i + w_i S_bar``.
    """
    pool = lambda x: blocks.pool(x, axis_name)
    r = U.shape[1]
    if d.model == "regression":
        VCV, BtV = blocks.regression_projections(d, V)
        R = jnp.einsum("or,kos->krs", U, BtV)
        eye = jnp.eye(r, dtype=U.dtype)
        A_inv = jax.vmap(lambda N, w: psd_solve(N + w * eye, eye))(VCV, weights)
        M = pool(jnp.einsum("k,kab,kbc->ac", weights, A_inv, VCV))
        rhs = pool(jnp.einsum("k,kab,kcb->ac", weights, A_inv, R))  # sum_i w_i A_i^{-1} R_i^T
        centre = psd_solve(M, rhs).T
        S = jnp.einsum("krs,kst->krt", R + weights[:, None, None] * centre[None], A_inv)
        return S, centre, (VCV, BtV)
    XV = d.X @ V
    core = blocks.sensing_core(XV, U)
    F = core.reshape(core.shape[:2] + (r * r,))
    G = jnp.einsum("knp,knq->kpq", F, F)
    b = jnp.einsum("knp,kn->kp", F, d.Y)
    eye = jnp.eye(r * r, dtype=U.dtype)
    A_inv = jax.vmap(lambda G_, w: psd_solve(G_ + w * eye, eye))(G, weights)
    M = pool(jnp.einsum("k,kpq,kqs->ps", weights, A_inv, G))
    centre = psd_solve(M, pool(jnp.einsum("k,kpq,kq->p", weights, A_inv, b)))
    S = jnp.einsum("kpq,kq->kp", A_inv, b + weights[:, None] * centre[None])
    return S.reshape(-1, r, r), centre.reshape(r, r), (XV, core)


def centered_body(d: blocks.Design, U, V, ridge, axis_name=None):
    """One iteration from ``(U, V)``: the current iterate, its penalized objective, the next ``(U, V)``."""
    pool = lambda x: blocks.pool(x, axis_name)
    weights = ridge * d.counts
    S, centre, pass_ = _personal_and_centre(d, U, V, weights, axis_name)
    if d.model == "regression":
        VCV, BtV = pass_
        sse = blocks.sum_squares(d, U, V, S, axis_name)
        G, H = blocks.output_normal_regression(VCV, BtV, S)
    else:
        XV, core = pass_
        sse = pool(jnp.sum(jnp.square(d.Y - jnp.einsum("knrs,krs->kn", core, S))))
        G, H = blocks.factor_normal(XV, d.Y, S)
    objective = sse + pool(jnp.sum(weights * jnp.sum(jnp.square(S - centre[None]), axis=(1, 2))))
    current = Estimate(U, V, S)
    delta = S - centre[None]
    d_out, d_in, r = U.shape[0], V.shape[0], U.shape[1]
    M_U = pool(jnp.einsum("k,kab,kcb->ac", weights, delta, delta))  # sum_i w_i Delta_i Delta_i^T
    G = pool(G) + (M_U if d.model == "regression" else jnp.kron(jnp.eye(d_out, dtype=U.dtype), M_U))
    U2 = blocks.solve_factor(G, pool(H), r)
    U2, SC = normalize_U(U2, jnp.concatenate([S, centre[None]]), False)
    S, centre = SC[:-1], SC[-1]
    delta = S - centre[None]
    K, h = blocks.input_normal(d, U2, S)
    M_V = pool(jnp.einsum("k,kba,kbc->ac", weights, delta, delta))  # sum_i w_i Delta_i^T Delta_i
    K = pool(K) + jnp.kron(jnp.eye(d_in, dtype=U.dtype), M_V)
    V2, _ = normalize_V(blocks.solve_factor(K, pool(h), r), S, False)
    return current, objective, (U2, V2)


def check_centered(config: FitConfig) -> None:
    """ValueError unless ``config`` suits the centred estimator (full personal parts, a known init)."""
    if config.personal != "full":
        raise ValueError("the centred estimator pulls full r x r personal parts to a centre: use personal='full'")
    if config.init != "spectral" and config.init != "random":
        raise ValueError(f"unknown init {config.init!r}")


def fit_with_ridge(observations, config: FitConfig, ridge, *, key=None, truth=None, axis_name=None):
    """The centred fit with a (possibly traced) ``ridge``.

    ``fit`` with ``algorithm="centered"`` uses ``config.ridge``.
    """
    check_centered(config)

    def make_body(s: Setup, config, optimizer, axis_name):
        return (lambda p: centered_body(s.design, *p, ridge, axis_name)), (s.U, s.V)

    return fitting.fit_by_steps(make_body, observations, config, key=key, truth=truth, axis_name=axis_name)


def fit_centered(observations, config, *, key=None, truth=None, axis_name=None):
    """``fit`` with ``algorithm="centered"``: the centred objective with ``lambda = config.ridge``."""
    return fit_with_ridge(
        observations, config, jnp.asarray(config.ridge, observations.X.dtype), key=key, truth=truth, axis_name=axis_name
    )
