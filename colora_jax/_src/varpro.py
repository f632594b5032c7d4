"""Variable projection (VarPro): Levenberg-Marquardt on the shared factors, personal parts eliminated.

The CoLoRA objective is linear in every ``S_i`` once ``U`` and ``V`` are fixed, so the personal
parts can be eliminated exactly (Golub & Pereyra 1973)::

    phi(U, V) = min_S f(U, V, S) = sum_i || P_i(U, V)^perp y_i ||^2,

``P_i^perp`` the projector onto the orthogonal complement of the columns of user i's personal
Jacobian ``J_S,i`` (the map ``S_i -> A_i(U S_i V^T)``). Each iteration takes one damped
Gauss-Newton (Levenberg-Marquardt) step on ``theta = (U, V)`` alone, then re-solves every
``S_i`` exactly at the new factors (the existing personal step): the Kaufman / Ruhe-Wedin
"RW2" scheme, which Hong, Zach & Fitzgibbon (CVPR 2017) found to have a far larger basin than
alternating least squares for low-rank factorization with missing data.

Jacobian of the reduced residual ``r(theta) = P^perp y`` in a direction ``dtheta``::

    -dr = P^perp J_theta dtheta  +  J_S (J_S^T J_S)^-1 G dtheta,      G dtheta = (dJ_S[dtheta])^T r,

with ``J_theta`` the Jacobian of the predictions in ``theta`` at fixed ``S``. Kaufman's
approximation keeps the first term; the full Golub-Pereyra Jacobian keeps both. The two terms
are orthogonal, so the Gauss-Newton matrix is ``N = N_K + N_GP`` with

* ``N_K = sum_i (P_i^perp J_theta,i)^T (P_i^perp J_theta,i)``, the Schur complement of the
  users' ``r^2 x r^2`` personal blocks in the joint Gauss-Newton matrix of ``(U, V, S)`` (as in
  bundle adjustment): each user is eliminated on its own, the pooled system has
  ``(d_out + d_in) r`` unknowns, never ``k r^2``;
* ``N_GP = sum_i G_i^T (J_S,i^T J_S,i)^-1 G_i`` with ``G_i dtheta = dU^T M_i V + U^T M_i dV`` and
  ``M_i = sum_j r_ij X_ij`` (sensing) or ``R_i^T X_i`` (regression), the residual moments.

The gradient ``g = J_theta^T r = (sum_i M_i V S_i^T, sum_i M_i^T U S_i)`` is ``-grad phi / 2``
(the personal parts are optimal, so no term in ``J_S^T r`` remains). Sums over users are the
only cross-user operation (``blocks.pool``: a ``psum`` when the users are sharded).

Gauge: ``U S_i V^T`` is unchanged by ``U -> U A, S_i -> A^-1 S_i B^-T, V -> V B`` (``A``, ``B``
diagonal for a diagonal personal part), so ``phi`` is constant along ``(U A, V B)`` and ``N``
is singular there. Steps are restricted to the horizontal space explicitly: with ``P_g`` the
orthogonal projector onto the gauge directions and ``P_h = I - P_g``, the step solves
``(P_h (N + mu c I) P_h + c P_g) delta = P_h g`` (``c`` the largest diagonal entry of
``P_h N P_h``), which is positive definite for every ``mu > 0`` and has a horizontal solution.
The factors are then re-orthonormalized (QR; column normalization when diagonal), which
leaves ``phi`` unchanged. LM damping ``mu`` follows Nielsen's gain-ratio rule; a step is
accepted only if it lowers the objective, so the objective never increases.

Regression model: with the per-user statistics ``C_i = X_i^T X_i``, ``B_i = X_i^T Y_i`` the
Kaufman matrix for a full personal part separates exactly into
``N_UU = (I - P_U) (x) sum_i S_i Q_i S_i^T`` and ``N_VV = sum_i C_i^perp (x) S_i^T U^T U S_i``,
``Q_i = V^T C_i V``, ``C_i^perp = C_i - C_i V Q_i^-1 V^T C_i`` (the U-V block cancels), so an
iteration costs about two AltMin input steps; for a diagonal personal part the users' ``r``
personal directions are eliminated explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src import blocks
from colora_jax._src.altmin import Estimate, Trace, check_finite, check_observations, initialize, iterate, stopping_floor
from colora_jax._src.config import ALGORITHMS, FitConfig, ProblemConfig
from colora_jax._src.data import GroundTruth, Observations, generate
from colora_jax._src.linalg import psd_solve, qr_positive, top_eigenvectors
from colora_jax._src.metrics import subspace_distance
from colora_jax._src.streaming import stored_blocks
from colora_jax._src.trials import TrialResult, evaluate

JACOBIANS: tuple[str, ...] = ("kaufman", "golub-pereyra")


@dataclasses.dataclass(frozen=True)
class VarProOptions:
    """Hyper-parameters of the variable-projection estimator (beyond ``FitConfig``)."""

    jacobian: str = "kaufman"  # reduced-residual Jacobian: "kaufman" (approximation) or "golub-pereyra" (full)
    damping: float = 1e-3  # initial LM damping mu, relative to the largest diagonal entry of the normal matrix
    max_tries: int = 12  # damping increases tried in one iteration; if none lowers f the fit stops there

    def validate(self) -> "VarProOptions":
        if self.jacobian not in JACOBIANS:
            raise ValueError(f"unknown jacobian {self.jacobian!r}: choose one of {', '.join(JACOBIANS)}")
        if not self.damping > 0:
            raise ValueError(f"damping must be > 0, got {self.damping}")
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {self.max_tries}")
        return self


def check_config(config: FitConfig) -> None:
    """``FitConfig.validate`` for every field but the algorithm name (until "varpro" is registered)."""
    if config.algorithm not in ALGORITHMS:
        config = dataclasses.replace(config, algorithm=ALGORITHMS[0])
    config.validate()


# ----------------------------------------------------------------------------- per-user helpers


def _times(A: Float[Array, "k p q"], M: Float[Array, "q s"]) -> Float[Array, "k p s"]:
    """``A_i M`` for every user, one GEMM over the stacked rows (as ``blocks._times``)."""
    k, p, q = A.shape
    return (A.reshape(k * p, q) @ M).reshape(k, p, M.shape[1])


def _mm(A: Float[Array, "k p q"], B: Float[Array, "k q s"]) -> Float[Array, "k p s"]:
    """``A_i B_i`` for every user (small factors; a fused broadcast-and-reduce, as ``blocks._mm``)."""
    return jnp.sum(A[:, :, :, None] * B[:, None, :, :], axis=2)


def _sum_outer(A: Float[Array, "k a"], B: Float[Array, "k b"]) -> Float[Array, "a b"]:
    """``sum_i a_i b_i^T`` as one GEMM over users."""
    return A.T @ B


class Point(NamedTuple):
    """The shared factors, the exact personal parts there, and what the next step reuses."""

    U: Float[Array, "d_out r"]
    V: Float[Array, "d_in r"]
    S: Float[Array, "k r r"]
    sse: Float[Array, ""]  # f(U, V, S), pooled over all users
    cache: tuple  # sensing: (X_ij V, r_ij); regression: (C_i V, V^T C_i V, Y_i^T X_i V)


def evaluate_point(d: blocks.Design, U, V, diag: bool, axis_name=None, S=None) -> Point:
    """Exact personal solves at ``(U, V)`` (unless ``S`` is given) and the objective there, in one
    pass over the data (regression: over the statistics, then the raw residuals)."""
    if d.model == "regression":
        CV = _times(d.C, V)
        VCV = _mm(V.T[None], CV)
        BtV = _times(d.Bt, V)
        S = blocks.personal_regression(VCV, BtV, U, diag) if S is None else S
        sse = blocks.sum_squares(d, U, V, S, axis_name)
        return Point(U, V, S, sse, (CV, VCV, BtV))
    XV = d.X @ V
    core = blocks.sensing_core(XV, U)
    S = blocks.personal_from_core(d, core, diag) if S is None else S
    resid = d.Y - jnp.einsum("knrs,krs->kn", core, S)
    return Point(U, V, S, blocks.pool(jnp.sum(jnp.square(resid)), axis_name), (XV, resid))


# ----------------------------------------------------------------------------- normal equations
#
# theta = (vec dU, vec dV), both row-major: index (o, a) -> o r + a, (j, b) -> j r + b.


def _personal_dims(r: int, diag: bool) -> int:
    return r if diag else r * r


def _moment_jacobian(MV: Float[Array, "k d_out r"], UtM: Float[Array, "k r d_in"], diag: bool) -> Float[Array, "k q p"]:
    """``G_i``: the map ``dtheta -> dU^T M_i V + U^T M_i dV`` (its diagonal when ``diag``), as a matrix."""
    k, d_out, r = MV.shape
    d_in = UtM.shape[2]
    eye = jnp.eye(r, dtype=MV.dtype)
    # [dU^T M V]_ab = sum_o dU[o, a] (MV)[o, b];  [U^T M dV]_ab = sum_j (U^T M)[a, j] dV[j, b]
    GU = jnp.einsum("ac,kob->kaboc", eye, MV)  # row (a, b), column (o, c)
    GV = jnp.einsum("bc,kaj->kabjc", eye, UtM)  # row (a, b), column (j, c)
    if diag:
        GU, GV = (jnp.diagonal(G, axis1=1, axis2=2).transpose(0, 3, 1, 2) for G in (GU, GV))
        return jnp.concatenate([GU.reshape(k, r, d_out * r), GV.reshape(k, r, d_in * r)], axis=2)
    return jnp.concatenate([GU.reshape(k, r * r, d_out * r), GV.reshape(k, r * r, d_in * r)], axis=2)


def _eliminated(H: Float[Array, "k q q"], B: Float[Array, "k q p"]) -> Float[Array, "p p"]:
    """``sum_i B_i^T H_i^+ B_i`` (the users' personal directions, eliminated one user at a time)."""
    HB = jax.vmap(psd_solve)(H, B)
    k, q, p = B.shape
    return B.reshape(k * q, p).T @ HB.reshape(k * q, p)


def _sensing_normal(d: blocks.Design, pt: Point, diag: bool, golub_pereyra: bool):
    """These users' (unpooled) Gauss-Newton matrix and gradient, sensing model."""
    XV, resid = pt.cache
    U, S = pt.U, pt.S
    XtU = d.Xt @ U  # the second pass over the data (the first made X V)
    k, n, d_out, r = XV.shape
    core = blocks.sensing_core(XV, U)
    Js = jnp.diagonal(core, axis1=2, axis2=3) if diag else core.reshape(k, n, r * r)  # personal Jacobian rows
    JU = jnp.sum(XV[:, :, :, None, :] * S[:, None, None, :, :], axis=-1)  # X_j V S^T (d_out x r)
    JV = jnp.sum(XtU[:, :, :, :, None] * S[:, None, None, :, :], axis=-2)  # X_j^T U S (d_in x r)
    Jt = jnp.concatenate([JU.reshape(k, n, -1), JV.reshape(k, n, -1)], axis=2)  # (k, n, p)
    Hs = jnp.sum(Js[:, :, :, None] * Js[:, :, None, :], axis=1)  # J_S^T J_S per user (q x q)
    Bs = jnp.sum(Js[:, :, :, None] * Jt[:, :, None, :], axis=1)  # J_S^T J_theta per user (q x p)
    K = Jt - jnp.sum(Js[:, :, :, None] * jax.vmap(psd_solve)(Hs, Bs)[:, None], axis=2)  # P^perp J_theta
    p = K.shape[2]
    N = K.reshape(k * n, p).T @ K.reshape(k * n, p)
    MV = jnp.einsum("kn,knob->kob", resid, XV)  # M_i V, M_i = sum_j r_ij X_ij
    UtM = jnp.einsum("kn,knja->kaj", resid, XtU)  # U^T M_i
    if golub_pereyra:
        N = N + _eliminated(Hs, _moment_jacobian(MV, UtM, diag))
    return N, _gradient(MV, UtM, S)


def _gradient(MV, UtM, S):
    """``J_theta^T r = (sum_i M_i V S_i^T, sum_i M_i^T U S_i)`` flattened (``-grad phi / 2``)."""
    gU = jnp.einsum("kob,kab->oa", MV, S)
    gV = jnp.einsum("kaj,kab->jb", UtM, S)
    return jnp.concatenate([gU.reshape(-1), gV.reshape(-1)])


def _regression_normal(d: blocks.Design, pt: Point, diag: bool, golub_pereyra: bool):
    """These users' (unpooled) Gauss-Newton matrix and gradient, regression model (statistics only).

    Joint quadratic form of a step ``(dU, dS_i, dV)``: ``sum_i tr(D_i C_i D_i^T)`` with
    ``D_i = dU S_i V^T + U dS_i V^T + U S_i dV^T``. Eliminating ``dS_i`` leaves
    ``A(dtheta) - b_i^T H_i^-1 b_i`` with ``b_i = U^T dU S_i Q_i + U^T U S_i dV^T C_i V`` and
    ``H_i = U^T U (x) Q_i`` (``o`` when diagonal).
    """
    CV, VCV, BtV = pt.cache
    U, S = pt.U, pt.S
    k, d_in, r = CV.shape
    d_out = U.shape[0]
    Gu = U.T @ U
    UtB = jnp.einsum("or,koi->kri", U, d.Bt)  # (U^T Y_i^T X_i), a pass over the statistics Bt
    SQ = _mm(S, VCV)  # S_i Q_i
    GuS = _mm(Gu[None], S)
    T = _mm(jnp.swapaxes(S, 1, 2), GuS)  # S_i^T U^T U S_i
    MV = BtV - _mm(U[None], SQ)  # M_i V = (Bt_i - U S_i V^T C_i) V
    UtM = UtB - _mm(GuS, jnp.swapaxes(CV, 1, 2))  # U^T M_i
    G = jnp.sum(_mm(SQ, jnp.swapaxes(S, 1, 2)), axis=0)  # sum_i S_i Q_i S_i^T
    CT = _sum_outer(T.reshape(k, r * r), d.C.reshape(k, d_in * d_in))  # sum_i T_i (x) C_i as [(b, e), (j, l)]
    if not diag:
        # exact separation: N_UU = (I - P_U) (x) G, N_VV = sum_i C_i^perp (x) T_i, N_UV = 0
        P_U = U @ jnp.linalg.solve(Gu, U.T)
        NUU = jnp.kron(jnp.eye(d_out, dtype=U.dtype) - P_U, G)
        QinvCVt = jax.vmap(psd_solve)(VCV, jnp.swapaxes(CV, 1, 2))  # Q_i^-1 V^T C_i (r x d_in)
        low = _sum_outer(T.reshape(k, r * r), jnp.einsum("kja,kal->kjl", CV, QinvCVt).reshape(k, d_in * d_in))
        NVV = (CT - low).reshape(r, r, d_in, d_in).transpose(2, 0, 3, 1).reshape(d_in * r, d_in * r)
        zeros = jnp.zeros((d_out * r, d_in * r), U.dtype)
        N = jnp.block([[NUU, zeros], [zeros.T, NVV]])
        H = jax.vmap(jnp.kron, (None, 0))(Gu, VCV)  # personal block U^T U (x) Q_i over (a, b)
    else:
        NUU = jnp.kron(jnp.eye(d_out, dtype=U.dtype), G)
        NVV = CT.reshape(r, r, d_in, d_in).transpose(2, 0, 3, 1).reshape(d_in * r, d_in * r)
        # cross term tr(dU S_i V^T C_i dV S_i^T U^T): [(o, a), (j, b)] = sum_i (U S_i)[o, b] (S_i V^T C_i)[a, j]
        US = _mm(U[None], S)
        SWt = _mm(S, jnp.swapaxes(CV, 1, 2))
        NUV = _sum_outer(US.reshape(k, d_out * r), SWt.reshape(k, r * d_in))
        NUV = NUV.reshape(d_out, r, r, d_in).transpose(0, 2, 3, 1).reshape(d_out * r, d_in * r)
        N = jnp.block([[NUU, NUV], [NUV.T, NVV]])
        # b_aa = u_a^T dU (S Q)[:, a] + (U^T U S)[a, :] dV^T (C V)[:, a]
        BU = jnp.einsum("oa,kca->kaoc", U, SQ).reshape(k, r, d_out * r)
        BV = jnp.einsum("kac,kja->kajc", GuS, CV).reshape(k, r, d_in * r)
        H = Gu[None] * VCV  # U^T U o Q_i
        N = N - _eliminated(H, jnp.concatenate([BU, BV], axis=2))
    if golub_pereyra:
        N = N + _eliminated(H, _moment_jacobian(MV, UtM, diag))
    return N, _gradient(MV, UtM, S)


def normal_equations(d: blocks.Design, pt: Point, diag: bool, golub_pereyra: bool):
    """These users' (unpooled) Gauss-Newton matrix ``N`` ((d_out + d_in) r square) and gradient
    ``g = J_theta^T r`` of the reduced objective at ``pt`` (see the module docstring)."""
    if d.model == "regression":
        return _regression_normal(d, pt, diag, golub_pereyra)
    return _sensing_normal(d, pt, diag, golub_pereyra)


# ----------------------------------------------------------------------------- gauge and step


def gauge_projector(U, V, diag: bool) -> Float[Array, "p p"]:
    """Orthogonal projector onto the gauge directions ``(U A, V B)`` in ``theta`` coordinates
    (``A``, ``B`` any ``r x r``, or diagonal when the personal part is diagonal)."""
    r = U.shape[1]
    if diag:  # column a moves along u_a only: blocks u_a u_a^T / |u_a|^2 on (., a), (., a)
        def side(F):
            Fn = F / jnp.sum(jnp.square(F), axis=0, keepdims=True)
            return jnp.einsum("oa,pa,ab->oapb", F, Fn, jnp.eye(r, dtype=F.dtype)).reshape(F.size, F.size)
    else:  # span(U) (x) R^r: P_U (x) I_r
        def side(F):
            return jnp.kron(F @ jnp.linalg.solve(F.T @ F, F.T), jnp.eye(r, dtype=F.dtype))
    PU, PV = side(U), side(V)
    zeros = jnp.zeros((PU.shape[0], PV.shape[0]), U.dtype)
    return jnp.block([[PU, zeros], [zeros.T, PV]])


def retract(U, V, diag: bool):
    """Back onto the normalized factors: QR (``diag(R) > 0``), or unit columns when diagonal."""
    if diag:
        return U / jnp.linalg.norm(U, axis=0), V / jnp.linalg.norm(V, axis=0)
    return qr_positive(U)[0], qr_positive(V)[0]


class _Tries(NamedTuple):
    tries: Array  # attempts made in this iteration
    mu: Array  # damping, relative to the scale c
    nu: Array  # Nielsen's growth factor
    point: Point  # the accepted point (the old one until a step is accepted)
    accepted: Array


def lm_iteration(evaluate_at: Callable[[Array, Array], Point], N, g, pt: Point, mu, diag: bool, max_tries: int):
    """One Levenberg-Marquardt iteration on the shared factors from ``pt`` (objective ``pt.sse``).

    Tries damped Gauss-Newton steps, raising the damping (Nielsen's rule) until one lowers
    the objective or ``max_tries`` are spent (the point is then returned unchanged).

    Returns:
      ``(point, mu)``: the new (or unchanged) point and the damping for the next iteration.
    """
    d_out = pt.U.shape[0]
    Pg = gauge_projector(pt.U, pt.V, diag)
    eye = jnp.eye(Pg.shape[0], dtype=Pg.dtype)
    Ph = eye - Pg
    Nh = Ph @ N @ Ph
    gh = Ph @ g
    c = jnp.max(jnp.diagonal(Nh)) + jnp.finfo(N.dtype).tiny

    def attempt(t: _Tries) -> _Tries:
        A = Nh + c * (t.mu * Ph + Pg)
        delta = Ph @ psd_solve(0.5 * (A + A.T), gh)
        dU = delta[: d_out * pt.U.shape[1]].reshape(pt.U.shape)
        dV = delta[d_out * pt.U.shape[1]:].reshape(pt.V.shape)
        new = evaluate_at(*retract(pt.U + dU, pt.V + dV, diag))
        predicted = 2 * delta @ gh - delta @ (Nh @ delta)  # decrease of the Gauss-Newton model of f
        rho = (pt.sse - new.sse) / predicted
        ok = new.sse < pt.sse  # False for NaN
        mu = jnp.where(ok, t.mu * jnp.maximum(1 / 3, 1 - (2 * rho - 1) ** 3), t.mu * t.nu)
        nu = jnp.where(ok, 2.0, 2 * t.nu).astype(t.nu.dtype)
        point = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, pt)
        return _Tries(t.tries + 1, mu.astype(t.mu.dtype), nu, point, ok)

    start = _Tries(jnp.asarray(0), mu, jnp.asarray(2.0, mu.dtype), pt, jnp.asarray(False))
    done = jax.lax.while_loop(lambda t: (t.tries < max_tries) & ~t.accepted, attempt, start)
    # with no decrease possible, keep mu where it was (the next fit from here starts the same)
    return done.point, jnp.where(done.accepted, done.mu, mu)


# ----------------------------------------------------------------------------- the driver


def _counts(observations: Observations, d: blocks.Design, axis_name):
    """Samples pooled over users (``fit``'s normalization of the objective) and the stopping floor."""
    count = blocks.pool(jnp.asarray(observations.Y.size, d.X.dtype), axis_name)
    count = count / (observations.dims[0] if observations.model == "regression" else 1)
    floor = stopping_floor(blocks.pool(jnp.sum(jnp.square(d.Y)), axis_name) / count)
    return count, floor


def _metrics(p: Estimate, sse, count, truth: GroundTruth | None, axis_name):
    """The trace's entries at one iterate (as ``fit`` records them)."""
    f = sse / count
    if truth is None:
        nan = jnp.full((), jnp.nan, f.dtype)
        return f, nan, nan, nan
    err2 = blocks.pool(jnp.sum(jnp.square(p.W - truth.W)), axis_name)
    ref2 = blocks.pool(jnp.sum(jnp.square(truth.W)), axis_name)
    return f, subspace_distance(p.U, truth.U), subspace_distance(p.V, truth.V), jnp.sqrt(err2 / ref2)


def fit_varpro(
    observations: Observations,
    config: FitConfig = FitConfig(),
    *,
    key: PRNGKeyArray | None = None,
    truth: GroundTruth | None = None,
    axis_name: str | None = None,
    **options,
) -> tuple[Estimate, Trace]:
    """Fit the shared factors by variable projection (Levenberg-Marquardt on ``phi(U, V)``).

    Same contract as ``altmin.fit``: ``config`` gives the rank, personal part, iteration budget
    ``iters``, tolerance ``tol`` and initialization (``config.algorithm`` is not read); an
    iteration is one accepted Levenberg-Marquardt step, after which every ``S_i`` is the exact
    personal solve. The objective never increases.

    Args:
      observations: the users' training data.
      config: static settings (as for ``fit``).
      key: PRNG key, needed only for ``init="random"``.
      truth: optional ground truth; when given, the trace records distances to it.
      axis_name: mesh axis over which users are sharded (inside ``shard_map``), else ``None``.
      **options: fields of ``VarProOptions`` (``jacobian``, ``damping``, ``max_tries``).

    Returns:
      ``(Estimate, Trace)`` as ``fit``: trace index 0 is the initialization, the objective is
      the mean squared residual per sample, entries past ``iterations`` are NaN. Iteration
      stops after ``config.iters`` iterations, once the objective's relative decrease is
      ``<= config.tol`` (including when no damped step decreases it), or at the floor
      ``(10 eps)^2`` times the mean squared measurement.

    Example:
      >>> import jax, colora_jax as cj
      >>> from colora_jax._src.varpro import fit_varpro
      >>> pc = cj.ProblemConfig(model="sensing", users=20, d_out=8, d_in=8, samples=12)
      >>> problem = cj.generate(jax.random.key(0), pc)
      >>> est, trace = jax.jit(lambda o: fit_varpro(o, cj.FitConfig(iters=30)))(problem.train)
      >>> bool(cj.relative_error(est.W, problem.truth.W) < 1e-3)
      True
    """
    opts = VarProOptions(**options).validate()
    check_config(config)
    check_observations(observations, config.rank, config.personal)
    check_finite(observations)
    diag = config.personal == "diag"
    gp = opts.jacobian == "golub-pereyra"
    d = blocks.design(observations)
    count, floor = _counts(observations, d, axis_name)
    evaluate_at = lambda U, V: evaluate_point(d, U, V, diag, axis_name)

    U, V = initialize(d, config, key, axis_name)
    pt = evaluate_at(*retract(U, V, diag))
    metrics = lambda q: _metrics(Estimate(q.U, q.V, q.S), q.sse, count, truth, axis_name)

    def advance(state):
        pt, mu = state
        N, g = normal_equations(d, pt, diag, gp)
        pt, mu = lm_iteration(evaluate_at, blocks.pool(N, axis_name), blocks.pool(g, axis_name), pt, mu, diag,
                              opts.max_tries)
        return (pt, mu), metrics(pt)

    mu0 = jnp.asarray(opts.damping, d.X.dtype)
    (pt, _), buffers, iterations, done = iterate(advance, (pt, mu0), metrics(pt), config.iters, config.tol, floor)
    finite = jnp.all(jnp.isfinite(observations.X)) & jnp.all(jnp.isfinite(observations.Y))
    finite = blocks.pool((~finite).astype(jnp.int32), axis_name) == 0
    return Estimate(pt.U, pt.V, pt.S), Trace(*buffers, iterations=iterations, converged=done, finite_input=finite)


def varpro_trial(key, problem_config: ProblemConfig, fit_config: FitConfig, options: VarProOptions = VarProOptions()):
    """``trials.trial`` with the variable-projection fit (for ``run_trials(fn=...)``)."""
    kp, kf = jax.random.split(key)
    problem = generate(kp, problem_config)
    estimate, trace = fit_varpro(problem.train, fit_config, key=kf, truth=problem.truth,
                                 **dataclasses.asdict(options))
    return TrialResult(evaluate(estimate.W, problem, estimate.U, estimate.V), trace)


@functools.lru_cache(maxsize=None)
def varpro_trial_fn(options: VarProOptions = VarProOptions()):
    """A stable, hashable ``varpro_trial`` with these options (for ``run_trials(fn=...)``)."""
    return functools.partial(varpro_trial, options=options)


# ----------------------------------------------------------------------------- users streamed in chunks


def _scan_chunks(part, S, nchunks):
    """``sum_b part(b, S_b)[0]`` over chunks with ``lax.scan``, and the stacked ``part(b, S_b)[1]``
    (``S_b``: chunk b's rows of ``S``); as ``streaming._sweep``."""
    xs = (jnp.arange(nchunks), S.reshape((nchunks, -1) + S.shape[1:]))
    shapes = jax.eval_shape(lambda x: part(*x)[0], jax.tree.map(lambda a: a[0], xs))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def step(total, x):
        value, out = part(*x)
        return jax.tree.map(jnp.add, total, value), out

    return jax.lax.scan(step, zeros, xs)


def fit_varpro_chunks(
    block: Callable[[Array], Observations],
    nchunks: int,
    config: FitConfig = FitConfig(),
    *,
    key: PRNGKeyArray | None = None,
    truth_U: Float[Array, "d_out r"] | None = None,
    truth_V: Float[Array, "d_in r"] | None = None,
    axis_name: str | None = None,
    **options,
) -> tuple[Estimate, Trace]:
    """``fit_varpro`` with the users visited chunk by chunk (memory: one chunk plus ``k r^2``).

    Args:
      block: ``block(b)`` returns the observations of users ``b m .. (b+1) m - 1`` (``b`` traced;
        see ``streaming.fit_blocks``). Every chunk has the same shapes.
      nchunks: number of chunks; the users are ``nchunks * m``.
      config, key, axis_name, options: as for ``fit_varpro``.
      truth_U, truth_V: optional planted shared factors for the trace's subspace distances
        (``rel_error`` stays NaN: the users' ``W`` are never formed).

    Each iteration makes one pass over the chunks for the pooled normal equations and one per
    Levenberg-Marquardt attempt (personal solves and objective at the trial point).
    """
    opts = VarProOptions(**options).validate()
    check_config(config)
    first = jax.eval_shape(block, jnp.asarray(0))
    check_observations(first, config.rank, config.personal)
    diag, r, gp = config.personal == "diag", config.rank, opts.jacobian == "golub-pereyra"
    dtype = first.X.dtype
    k = nchunks * first.users
    S0 = jnp.zeros((k, r, r), dtype)
    pool = lambda x: blocks.pool(x, axis_name)
    design = lambda b: blocks.design(block(b))

    def init_part(b, _):
        obs = block(b)
        bad = jnp.sum(~jnp.isfinite(obs.X)) + jnp.sum(~jnp.isfinite(obs.Y))
        return (blocks.spectral_moments(blocks.design(obs)), jnp.sum(jnp.square(obs.Y)), bad), None

    ((MU, MV), yy, bad), _ = _scan_chunks(init_part, S0, nchunks)
    count = pool(jnp.asarray(k * first.samples, dtype))
    floor = stopping_floor(pool(yy) / count)
    if config.init == "spectral":
        U, V = top_eigenvectors(pool(MU), r), top_eigenvectors(pool(MV), r)
    else:
        U, V = initialize(design(jnp.asarray(0)), config, key, axis_name)

    def evaluate_at(U, V):
        def part(b, _):
            q = evaluate_point(design(b), U, V, diag)
            return q.sse, q.S

        sse, S = _scan_chunks(part, S0, nchunks)
        return Point(U, V, S.reshape(k, r, r), pool(sse), ())

    def normal(pt):
        part = lambda b, Sb: (normal_equations(design(b), evaluate_point(design(b), pt.U, pt.V, diag, S=Sb), diag, gp),
                              None)
        N, g = _scan_chunks(part, pt.S, nchunks)[0]
        return pool(N), pool(g)

    def metrics(pt):
        nan = jnp.full((), jnp.nan, dtype)
        dU = nan if truth_U is None else subspace_distance(pt.U, truth_U)
        dV = nan if truth_V is None else subspace_distance(pt.V, truth_V)
        return pt.sse / count, dU, dV, nan

    def advance(state):
        pt, mu = state
        pt, mu = lm_iteration(evaluate_at, *normal(pt), pt, mu, diag, opts.max_tries)
        return (pt, mu), metrics(pt)

    pt = evaluate_at(*retract(U, V, diag))
    mu0 = jnp.asarray(opts.damping, dtype)
    (pt, _), buffers, iterations, done = iterate(advance, (pt, mu0), metrics(pt), config.iters, config.tol, floor)
    finite = pool(bad) == 0
    return Estimate(pt.U, pt.V, pt.S), Trace(*buffers, iterations=iterations, converged=done, finite_input=finite)


def fit_varpro_streaming(observations: Observations, config: FitConfig = FitConfig(), *, nchunks: int, **kwargs):
    """``fit_varpro_chunks`` over stored observations cut into ``nchunks`` chunks of users."""
    return fit_varpro_chunks(stored_blocks(observations, nchunks), nchunks, config, **kwargs)
