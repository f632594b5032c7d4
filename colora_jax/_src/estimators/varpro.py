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
accepted only if it lowers the objective, so the objective never increases. The fit proper
makes one attempt per iteration (a rejection costs an iteration and keeps the point), so under
``vmap`` no trial waits inside an iteration while another retries; after the ridge continuation it
also stops once its progress stalls (``VarPro.stall``), so a fit crawling near a spurious
stationary point does not hold the batch either.

Regression model: with the per-user statistics ``C_i = X_i^T X_i``, ``B_i = X_i^T Y_i`` the
Kaufman matrix for a full personal part separates exactly into
``N_UU = (I - P_U) (x) sum_i S_i Q_i S_i^T`` and ``N_VV = sum_i C_i^perp (x) S_i^T U^T U S_i``,
``Q_i = V^T C_i V``, ``C_i^perp = C_i - C_i V Q_i^-1 V^T C_i`` (the U-V block cancels), so an
iteration costs about two AltMin input steps; for a diagonal personal part the users' ``r``
personal directions are eliminated explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from colora_jax._src.estimators.fitting import (
    Estimate,
    Estimator,
    Stages,
    check_fit,
    initialize,
    make_trace,
    metrics_of,
    restart_keys,
    run_loop,
    setup,
)
from colora_jax._src.estimators.users import AllUsers, Users
from colora_jax._src.model import blocks
from colora_jax._src.model.config import FitConfig, check_integer, check_positive, check_real, choice
from colora_jax._src.model.data import GroundTruth, Observations
from colora_jax._src.model.linalg import psd_solve, qr_positive

JACOBIANS: tuple[str, ...] = ("kaufman", "golub-pereyra")
CONTINUATIONS: tuple[str, ...] = ("fallback", "always", "never")
RESTART_RULES: tuple[str, ...] = ("all", "until-exact")


_RENAMED = {"ridge_start": "continuation_start", "ridge_stop": "continuation_stop", "ridge_decay": "continuation_decay"}


@dataclasses.dataclass(frozen=True)
class VarPro(Estimator):
    """Variable projection: Levenberg-Marquardt on ``(U, V)`` with every ``S_i`` eliminated exactly.

    Its options (beyond ``FitConfig``) are its fields; ``restarts``/``restart_rule`` draw keyed
    random starts, so ``fit`` then needs a key.
    """

    jacobian: str = "kaufman"  # reduced-residual Jacobian: "kaufman" (approximation) or "golub-pereyra" (full)
    damping: float = 1e-3  # initial LM damping mu, relative to the largest diagonal entry of the normal matrix
    max_tries: int = 10  # rejected damped steps in a row (mu grows 2x, 4x, 8x, ...) before the fit gives up
    #   (in the continuation: tried at one ridge before it moves on)
    continuation: str = "always"  # ridge continuation (see ``continuation``): "always" before the fit; "never";
    #   "fallback": the continued fit first, then, only where it does not reach the stopping floor (an exact
    #   fit), the plain fit from the start; the lower final objective of the two fits wins
    continuation_start: float = 10.0  # first ridge on the personal parts, relative to each user's Gram scale
    continuation_stop: float = 0.1  # last ridge of the continuation; the fit proper (no ridge) follows
    continuation_decay: float = 0.92  # the ridge's factor per iteration (one LM iteration per ridge)
    stall: int = 10  # after a continuation, the fit proper stops once this many iterations have lowered its
    #   objective by less than ``stall_decrease`` of its value (see ``_lm_fit``); 0: never (tol, floor or budget)
    stall_decrease: float = 0.1  # the fraction of the objective the last ``stall`` iterations must remove
    restarts: int = 0  # extra fits from random orthonormal starts (needs a key); the lowest final objective wins
    restart_rule: str = "all"  # "all": every restart runs; "until-exact": restarts run one after another only
    #   while no fit so far reaches the stopping floor (an exact fit: on noiseless data a fit above it is a
    #   spurious stationary point), so a trial whose first fit is exact runs no restart

    @classmethod
    def from_options(cls, **options) -> "VarPro":
        """``VarPro(**options)``, accepting the names before 0.2 (``ridge_start`` etc.) with a DeprecationWarning."""
        for old, new in _RENAMED.items():
            if old in options:
                warnings.warn(f"VarPro option {old!r} is now {new!r}", DeprecationWarning, stacklevel=3)
                options[new] = options.pop(old)
        return cls(**options)

    @property
    def needs_key(self) -> bool:
        """Restarts draw random starts."""
        return self.restarts > 0

    @property
    def continuation_iterations(self) -> int:
        """LM iterations of the continuation: ridges ``start * decay^t >= stop`` (the ``continuation_*`` fields)."""
        if self.continuation == "never":
            return 0
        ratio = math.log(self.continuation_stop / self.continuation_start) / math.log(self.continuation_decay)
        return 1 + int(math.floor(ratio + 1e-9))

    def check(self, config=None) -> "VarPro":
        """ValueError naming the option and the fix; returns ``self``."""
        choice("continuation", self.continuation, CONTINUATIONS)
        choice("jacobian", self.jacobian, JACOBIANS)
        choice("restart_rule", self.restart_rule, RESTART_RULES)
        for name in ("continuation_start", "continuation_stop", "continuation_decay", "stall_decrease"):
            check_real("VarPro", name, getattr(self, name))
        check_positive("VarPro", "damping", self.damping)
        check_integer("VarPro", "max_tries", self.max_tries, 1)
        check_integer("VarPro", "stall", self.stall, 0)
        check_integer("VarPro", "restarts", self.restarts, 0)
        if not 0 < self.continuation_stop <= self.continuation_start:
            raise ValueError(
                "need 0 < continuation_stop <= continuation_start,"
                f" got {self.continuation_stop}, {self.continuation_start}"
            )
        for name in ("continuation_decay", "stall_decrease"):  # factors strictly between 0 and 1
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        return self

    validate = check  # VarProOptions(...).validate() before 0.2

    @property
    def stages(self) -> Stages | None:
        """The first fit (no restarts; the continued fit) on every trial, then only where it is not
        exact: the restarts until exact, one round each (the lowest final objective of the fits
        run), or the fallback's plain fit (the better of the two)."""
        if self.restarts:
            if self.restart_rule != "until-exact":
                return None
            plain = dataclasses.replace(self, restarts=0, restart_rule="all")
            return Stages(plain, plain, restarts=self.restarts)
        if self.continuation != "fallback":
            return None
        return Stages(dataclasses.replace(self, continuation="always"), dataclasses.replace(self, continuation="never"))

    def reduced(self, users: Users, config: FitConfig, s, truth=None):
        """The reduced problem over ``users`` from ``setup``'s ``s``: ``(evaluate_at, normal, metrics, diag)``.

        ``evaluate_at(U, V, alpha, at=None)`` is the ``Point`` with every ``S_i`` eliminated (under
        the ridge ``alpha`` times each user's Gram scale; None: none), reusing the ``X_ij V`` of ``at``,
        a point at the same ``U``, ``V``, when given (sensing; ``evaluate_point``'s ``cache``);
        ``normal(point)`` the pooled normal equations there, ``metrics(point)`` the trace's metrics
        (against ``truth``).

        Every sum over users goes through ``users``. With every user in memory each user's pass
        over the data (``X_ij V`` and residuals, or ``C_i V``) is kept from the objective's
        evaluation for the next normal equations; in chunks it is recomputed chunk by chunk (one
        pass for the normal equations, one per Levenberg-Marquardt attempt).
        """
        diag, gp = config.personal == "diag", self.jacobian == "golub-pereyra"
        keep = users.in_memory
        scale = None if self.continuation == "never" else users.sum(lambda d, _: (None, ridge_scale(d)))[1]

        def evaluate_at(U, V, alpha, at=None):
            def part(d, per_user):
                scale_, cache = per_user
                q = evaluate_point(d, U, V, diag, ridge=None if alpha is None else alpha * scale_, cache=cache)
                return q.sse, (q.S, q.ridge, q.cache if keep else ())

            reuse = keep and at is not None  # ``at``: a point at these U, V whose cache is kept
            sse, (S, lam, cache) = users.sum(part, (scale, at.cache if reuse else None))
            return Point(U, V, S, sse, lam, cache)

        def normal(pt):
            def part(d, per_user):
                S_, lam, cache = per_user
                q = (
                    pt._replace(S=S_, ridge=lam, cache=cache)
                    if keep
                    else evaluate_point(d, pt.U, pt.V, diag, S=S_, ridge=lam)
                )
                return normal_equations(d, q, diag, gp), None

            return users.sum(part, (pt.S, pt.ridge, pt.cache))[0]

        metrics = lambda q: metrics_of(users, q.sse / s.count, Estimate(q.U, q.V, q.S), truth)
        return evaluate_at, normal, metrics, diag

    def fit(self, users: Users, config: FitConfig, *, key=None, truth=None, start=None):
        """The fit (and its fallback, restarts) over ``users`` (``reduced``); inputs trusted."""
        s = setup(users, config, key, start)
        evaluate_at, normal, metrics, diag = self.reduced(users, config, s, truth)
        run = lambda U, V: _fit_from(evaluate_at, normal, metrics, U, V, config, self, diag, s.floor)
        if not self.restarts:
            pt, history, iterations, done = run(s.U, s.V)
        else:
            random_init = dataclasses.replace(config, init="random")
            Us, Vs = jax.vmap(lambda kk: initialize(users, random_init, kk))(restart_keys(key, self.restarts))
            if self.restart_rule == "all":
                runs = jax.vmap(run)(jnp.concatenate([s.U[None], Us]), jnp.concatenate([s.V[None], Vs]))
                best = jnp.argmin(jax.vmap(lambda f: f.final_objective)(runs))
                pt, history, iterations, done = jax.tree.map(lambda a: a[best], runs)
            else:
                pt, history, iterations, done = restart_until_exact(run, s.U, s.V, Us, Vs, s.floor)
        return Estimate(pt.U, pt.V, pt.S), make_trace(history, iterations, done, s.finite)


VarProOptions = VarPro  # the name before 0.2 (options and estimator are one object now)


# ----------------------------------------------------------------------------- per-user helpers


def _times(A: Float[Array, "k p q"], M: Float[Array, "q s"]) -> Float[Array, "k p s"]:
    """``A_i M`` for every user, one GEMM over the stacked rows (as ``blocks._times``)."""
    k, p, q = A.shape
    return (A.reshape(k * p, q) @ M).reshape(k, p, M.shape[1])


def _mm(A: Float[Array, "k p q"], B: Float[Array, "k q s"]) -> Float[Array, "k p s"]:
    """``A_i B_i`` for every user (small factors; a fused broadcast-and-reduce, as ``blocks._mm``)."""
    return jnp.sum(A[:, :, :, None] * B[:, None, :, :], axis=2)


def _sum_tn(A: Float[Array, "k p a"], B: Float[Array, "k p b"]) -> Float[Array, "a b"]:
    """``sum_i A_i^T B_i`` as one GEMM over the stacked rows (as ``blocks._sum_tn``)."""
    k, p, a = A.shape
    return A.reshape(k * p, a).T @ B.reshape(k * p, B.shape[2])


def _sum_outer(A: Float[Array, "k a"], B: Float[Array, "k b"]) -> Float[Array, "a b"]:
    """``sum_i a_i b_i^T`` as one GEMM over users."""
    return A.T @ B


def small_psd_solve(G: Float[Array, "k q q"], H: Float[Array, "k q ..."], refine: int = 2) -> Float[Array, "k q ..."]:
    """``linalg.psd_solve`` for a stack of tiny systems (every user's ``r^2`` personal block).

    The same numerics (Cholesky of ``G + diag(10 q eps G_jj + tiny)``, then ``refine`` steps of
    iterative refinement against ``G``), with the factorization and both substitutions unrolled
    over ``q`` into elementwise operations on the whole stack: for ``q <= 9`` and many
    right-hand sides it is several times faster on CPU than a batched LAPACK call per user (a
    call per tiny system is mostly overhead). Larger ``q`` use
    ``psd_solve``.
    """
    q = G.shape[-1]
    if q > 9:
        return jax.vmap(psd_solve)(G, H)
    finfo = jnp.finfo(G.dtype)
    A = (
        G
        + (10 * q * finfo.eps * jnp.diagonal(G, axis1=1, axis2=2) + finfo.tiny)[:, :, None]
        * jnp.eye(q, dtype=G.dtype)[None]
    )
    L = [[None] * q for _ in range(q)]
    inv = [None] * q
    for j in range(q):
        t = A[:, j, j]
        for m in range(j):
            t = t - L[j][m] * L[j][m]
        inv[j] = 1 / jnp.sqrt(t)
        for i in range(j + 1, q):
            t = A[:, i, j]
            for m in range(j):
                t = t - L[i][m] * L[j][m]
            L[i][j] = t * inv[j]
    col = lambda a: a.reshape(a.shape + (1,) * (H.ndim - 2))  # (k,) against a row (k, ...) of H

    def solve(b):
        y = []
        for i in range(q):
            t = b[:, i]
            for m in range(i):
                t = t - col(L[i][m]) * y[m]
            y.append(t * col(inv[i]))
        x = [None] * q
        for i in reversed(range(q)):
            t = y[i]
            for m in range(i + 1, q):
                t = t - col(L[m][i]) * x[m]
            x[i] = t * col(inv[i])
        return jnp.stack(x, axis=1)

    X = solve(H)
    for _ in range(refine):
        GX = jnp.sum(G.reshape(G.shape + (1,) * (H.ndim - 2)) * X[:, None], axis=2)
        X = X + solve(H - GX)
    return X


def _ridged(H: Float[Array, "k q q"], ridge: Float[Array, " k"] | None) -> Float[Array, "k q q"]:
    return H if ridge is None else H + ridge[:, None, None] * jnp.eye(H.shape[-1], dtype=H.dtype)[None]


class Point(NamedTuple):
    """The shared factors, the (ridge-)optimal personal parts there, and what the next step reuses."""

    U: Float[Array, "d_out r"]
    V: Float[Array, "d_in r"]
    S: Float[Array, "k r r"]
    sse: Float[Array, ""]  # f(U, V, S) (+ sum_i ridge_i ||S_i||^2), pooled over all users
    ridge: Float[Array, " k"] | None  # each user's ridge lambda_i on S_i (None: the exact personal solves)
    cache: tuple  # sensing: (X_ij V, r_ij); regression: (C_i V, V^T C_i V, Y_i^T X_i V)


def ridge_scale(d: blocks.Design) -> Float[Array, " k"]:
    """Each user's Gram scale ``E[J_S^T J_S] / I`` for orthonormal U, V: ``sum_j ||X_ij||^2 / (d_out d_in)``
    (sensing) or ``tr(C_i) / d_in`` (regression), i.e. ``n`` for standard Gaussian designs."""
    if d.model == "regression":
        return jnp.trace(d.C, axis1=1, axis2=2) / d.C.shape[1]
    return jnp.sum(jnp.square(d.X), axis=(1, 2, 3)) / (d.X.shape[2] * d.X.shape[3])


def _solve_ridged(H, rhs, ridge):
    return small_psd_solve(_ridged(H, ridge), rhs)


def evaluate_point(d: blocks.Design, U, V, diag: bool, axis_name=None, S=None, ridge=None, cache=None) -> Point:
    """Personal solves at ``(U, V)`` (unless ``S`` is given) and the objective there, in one pass
    over the data (regression: over the statistics, then the raw residuals).

    With ``ridge=None`` the personal parts are the exact minimizers (the blocks' personal step);
    with ``ridge = lambda`` (one value per user, e.g. ``alpha * ridge_scale(d)``) they minimize
    ``||y_i - A_i(U S_i V^T)||^2 + lambda_i ||S_i||_F^2``, and ``sse`` includes the penalty.
    ``cache``: sensing, a ``Point.cache`` at the same ``V``, whose ``X_ij V`` is reused (the ridge
    continuation's next ridge starts where the last ended): the same numbers, one pass over the data
    fewer. Regression recomputes its products with the statistics (``d x d`` per user, cheap; reused,
    they would round differently, as XLA fuses them here).
    """
    lam = ridge
    r = U.shape[1]
    if d.model == "regression":
        CV = _times(d.C, V)
        VCV = _mm(V.T[None], CV)
        BtV = _times(d.Bt, V)
        if S is None and lam is None:
            S = blocks.personal_regression(VCV, BtV, U, diag)
        elif S is None:
            rhs = _mm(U.T[None], BtV)
            H = _personal_gram(U.T @ U, VCV, diag)
            s = _solve_ridged(H, jnp.diagonal(rhs, axis1=1, axis2=2) if diag else rhs.reshape(-1, r * r), lam)
            S = jax.vmap(jnp.diag)(s) if diag else s.reshape(-1, r, r)
        sse = blocks.sum_squares(d, U, V, S, axis_name)
        cache = (CV, VCV, BtV)
    else:
        XV = d.X @ V if cache is None else cache[0]
        core = blocks.sensing_core(XV, U)
        if S is None and lam is None:
            S = blocks.personal_from_core(d, core, diag)
        elif S is None:
            F = _personal_rows(core, diag)
            s = _solve_ridged(_gram(F), jnp.sum(F * d.Y[:, :, None], axis=1), lam)
            S = jax.vmap(jnp.diag)(s) if diag else s.reshape(-1, r, r)
        resid = d.Y - jnp.sum(core * S[:, None], axis=(2, 3))
        sse = blocks.pool(jnp.sum(jnp.square(resid)), axis_name)
        cache = (XV, resid)
    if lam is not None:
        sse = sse + blocks.pool(jnp.sum(lam * jnp.sum(jnp.square(S), axis=(1, 2))), axis_name)
    return Point(U, V, S, sse, ridge, cache)


def _personal_rows(core: Float[Array, "k n r r"], diag: bool) -> Float[Array, "k n q"]:
    """Rows of each user's personal Jacobian ``J_S`` (sensing): ``vec(U^T X_ij V)`` or its diagonal."""
    k, n, r, _ = core.shape
    return jnp.diagonal(core, axis1=2, axis2=3) if diag else core.reshape(k, n, r * r)


def _gram(F: Float[Array, "k n q"]) -> Float[Array, "k q q"]:
    return jnp.sum(F[:, :, :, None] * F[:, :, None, :], axis=1)


def _personal_gram(Gu, VCV, diag: bool) -> Float[Array, "k q q"]:
    """Regression ``J_S^T J_S``: ``U^T U (x) Q_i`` over ``(a, b)``, or ``U^T U o Q_i`` when diagonal."""
    if diag:
        return Gu[None] * VCV
    return jax.vmap(jnp.kron, (None, 0))(Gu, VCV)


# ----------------------------------------------------------------------------- normal equations
#
# theta = (vec dU, vec dV), both row-major: index (o, a) -> o r + a, (j, b) -> j r + b.


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


def _eliminated(H: Float[Array, "k q q"], B: Float[Array, "k q p"], ridge=None) -> Float[Array, "p p"]:
    """``sum_i B_i^T (H_i + ridge_i I)^+ B_i`` (personal directions eliminated one user at a time)."""
    HB = _solve_ridged(H, B, ridge)
    k, q, p = B.shape
    return B.reshape(k * q, p).T @ HB.reshape(k * q, p)


def _gradient(MV, UtM, S):
    """``J_theta^T r = (sum_i M_i V S_i^T, sum_i M_i^T U S_i)`` flattened (``-grad phi / 2``)."""
    gU = jnp.einsum("kob,kab->oa", MV, S)
    gV = jnp.einsum("kaj,kab->jb", UtM, S)
    return jnp.concatenate([gU.reshape(-1), gV.reshape(-1)])


def _sensing_normal(d: blocks.Design, pt: Point, diag: bool, golub_pereyra: bool):
    """These users' (unpooled) Gauss-Newton matrix and gradient, sensing model."""
    XV, resid = pt.cache
    U, S = pt.U, pt.S
    lam = pt.ridge
    XtU = d.Xt @ U  # the second pass over the data (the first made X V)
    k, n, d_out, r = XV.shape
    Js = _personal_rows(blocks.sensing_core(XV, U), diag)  # personal Jacobian rows (k, n, q)
    JU = jnp.sum(XV[:, :, :, None, :] * S[:, None, None, :, :], axis=-1)  # X_j V S^T (d_out x r)
    JV = jnp.sum(XtU[:, :, :, :, None] * S[:, None, None, :, :], axis=-2)  # X_j^T U S (d_in x r)
    Jt = jnp.concatenate([JU.reshape(k, n, -1), JV.reshape(k, n, -1)], axis=2)  # (k, n, p)
    Hs = _gram(Js)  # J_S^T J_S per user (q x q)
    Bs = jnp.sum(Js[:, :, :, None] * Jt[:, :, None, :], axis=1)  # J_S^T J_theta per user (q x p)
    Z = _solve_ridged(Hs, Bs, lam)
    K = Jt - jnp.sum(Js[:, :, :, None] * Z[:, None], axis=2)  # P^perp J_theta (ridged: J_theta - J_S Z)
    p = K.shape[2]
    N = K.reshape(k * n, p).T @ K.reshape(k * n, p)
    if lam is not None:  # A - B^T (H + lam)^-1 B = K^T K + lam Z^T Z
        Zs = jnp.sqrt(lam)[:, None, None] * Z
        N = N + Zs.reshape(-1, p).T @ Zs.reshape(-1, p)
    MV = jnp.einsum("kn,knob->kob", resid, XV)  # M_i V, M_i = sum_j r_ij X_ij
    UtM = jnp.einsum("kn,knja->kaj", resid, XtU)  # U^T M_i
    if golub_pereyra:
        N = N + _eliminated(Hs, _moment_jacobian(MV, UtM, diag), lam)
    return N, _gradient(MV, UtM, S)


def _regression_normal(d: blocks.Design, pt: Point, diag: bool, golub_pereyra: bool):
    """These users' (unpooled) Gauss-Newton matrix and gradient, regression model (statistics only).

    Joint quadratic form of a step ``(dU, dS_i, dV)``: ``sum_i tr(D_i C_i D_i^T)`` with
    ``D_i = dU S_i V^T + U dS_i V^T + U S_i dV^T``. Eliminating ``dS_i`` leaves
    ``A(dtheta) - b_i^T H_i^-1 b_i`` with ``b_i = U^T dU S_i Q_i + U^T U S_i dV^T C_i V`` and
    ``H_i = U^T U (x) Q_i`` (``o`` when diagonal; ``+ lambda_i I`` with a ridge).
    """
    CV, VCV, BtV = pt.cache
    U, S = pt.U, pt.S
    lam = pt.ridge
    k, d_in, r = CV.shape
    d_out = U.shape[0]
    Gu = U.T @ U
    SQ = _mm(S, VCV)  # S_i Q_i
    GuS = _mm(Gu[None], S)
    US = _mm(U[None], S)
    T = _mm(jnp.swapaxes(S, 1, 2), GuS)  # S_i^T U^T U S_i
    MV = BtV - _mm(U[None], SQ)  # M_i V = (Bt_i - U S_i V^T C_i) V, M_i = R_i^T X_i
    # g = (sum_i M_i V S_i^T, sum_i M_i^T U S_i); the second from one pass over Bt (no per-user U^T Bt_i)
    gU = jnp.einsum("kob,kab->oa", MV, S)
    gV = _sum_tn(US, d.Bt).T - jnp.sum(_mm(CV, T), axis=0)
    g = jnp.concatenate([gU.reshape(-1), gV.reshape(-1)])
    G = jnp.sum(_mm(SQ, jnp.swapaxes(S, 1, 2)), axis=0)  # sum_i S_i Q_i S_i^T
    CT = _sum_outer(T.reshape(k, r * r), d.C.reshape(k, d_in * d_in))  # sum_i T_i (x) C_i as [(b, e), (j, l)]
    H = _personal_gram(Gu, VCV, diag)
    if not diag:
        # separation: N_UU = (I - P_U) (x) G, N_VV = sum_i C_i^perp (x) T_i, N_UV = 0, with
        # C_i^perp = C_i - C_i V (Q_i + lambda_i)^-1 V^T C_i. Without a ridge this is N itself for any U;
        # with one it is N on the horizontal space (U^T dU = 0, V^T dV = 0) for orthonormal U
        P_U = U @ jnp.linalg.solve(Gu, U.T)
        NUU = jnp.kron(jnp.eye(d_out, dtype=U.dtype) - P_U, G)
        QinvCVt = _solve_ridged(VCV, jnp.swapaxes(CV, 1, 2), lam)  # (Q_i + lambda_i)^-1 V^T C_i (r x d_in)
        low = _sum_outer(T.reshape(k, r * r), _mm(CV, QinvCVt).reshape(k, d_in * d_in))
        NVV = (CT - low).reshape(r, r, d_in, d_in).transpose(2, 0, 3, 1).reshape(d_in * r, d_in * r)
        zeros = jnp.zeros((d_out * r, d_in * r), U.dtype)
        N = jnp.block([[NUU, zeros], [zeros.T, NVV]])
    else:  # diagonal: the joint matrix, minus the users' eliminated personal directions
        NUU = jnp.kron(jnp.eye(d_out, dtype=U.dtype), G)
        NVV = CT.reshape(r, r, d_in, d_in).transpose(2, 0, 3, 1).reshape(d_in * r, d_in * r)
        # cross term tr(dU S_i V^T C_i dV S_i^T U^T): [(o, a), (j, b)] = sum_i (U S_i)[o, b] (S_i V^T C_i)[a, j]
        SWt = _mm(S, jnp.swapaxes(CV, 1, 2))
        NUV = _sum_outer(US.reshape(k, d_out * r), SWt.reshape(k, r * d_in))
        NUV = NUV.reshape(d_out, r, r, d_in).transpose(0, 2, 3, 1).reshape(d_out * r, d_in * r)
        N = jnp.block([[NUU, NUV], [NUV.T, NVV]])
        # b_aa = u_a^T dU (S Q)[:, a] + (U^T U S)[a, :] dV^T (C V)[:, a]: each user's r personal directions
        BU = jnp.einsum("oa,kca->kaoc", U, SQ).reshape(k, r, d_out * r)
        BV = jnp.einsum("kac,kja->kajc", GuS, CV).reshape(k, r, d_in * r)
        B = jnp.concatenate([BU, BV], axis=2)
        N = N - _eliminated(H, B, lam)
    if golub_pereyra:
        UtM = jnp.einsum("or,koi->kri", U, d.Bt) - _mm(GuS, jnp.swapaxes(CV, 1, 2))  # U^T M_i
        N = N + _eliminated(H, _moment_jacobian(MV, UtM, diag), lam)
    return N, g


def normal_equations(d: blocks.Design, pt: Point, diag: bool, golub_pereyra: bool):
    """These users' (unpooled) Gauss-Newton matrix ``N`` ((d_out + d_in) r square) and gradient
    ``g = J_theta^T r`` of the reduced objective at ``pt`` (see the module docstring)."""
    if d.model == "regression":
        return _regression_normal(d, pt, diag, golub_pereyra)
    return _sensing_normal(d, pt, diag, golub_pereyra)


# ----------------------------------------------------------------------------- gauge and step


def gauge_basis(U, V, diag: bool) -> Float[Array, "p m"]:
    """Orthonormal columns spanning the gauge directions ``(U A, V B)`` in ``theta`` coordinates
    (``A``, ``B`` any ``r x r``: ``m = 2 r^2``; diagonal when the personal part is: ``m = 2 r``)."""
    r = U.shape[1]
    eye = jnp.eye(r, dtype=U.dtype)

    def side(F):
        if diag:  # column a moves along u_a only
            Fn = F / jnp.linalg.norm(F, axis=0, keepdims=True)
            return jnp.einsum("oa,ab->oab", Fn, eye).reshape(F.size, r)
        return jnp.kron(qr_positive(F)[0], eye)  # span(U) (x) R^r

    QU, QV = side(U), side(V)
    return jnp.block(
        [[QU, jnp.zeros((QU.shape[0], QV.shape[1]), U.dtype)], [jnp.zeros((QV.shape[0], QU.shape[1]), U.dtype), QV]]
    )


def retract(U, V, diag: bool):
    """Back onto the normalized factors: QR (``diag(R) > 0``), or unit columns when diagonal."""
    if diag:
        return U / jnp.linalg.norm(U, axis=0, keepdims=True), V / jnp.linalg.norm(V, axis=0, keepdims=True)
    return qr_positive(U)[0], qr_positive(V)[0]


class Horizontal(NamedTuple):
    """The Gauss-Newton system restricted to the horizontal space (``P_h = I - P_g``, ``P_g = Q Q^T``)."""

    N: Float[Array, "p p"]  # P_h N P_h
    g: Float[Array, " p"]  # P_h g
    Q: Float[Array, "p m"]  # orthonormal basis of the gauge directions
    scale: Float[Array, ""]  # c, the largest diagonal entry of P_h N P_h

    @property
    def Pg(self) -> Float[Array, "p p"]:  # noqa: N802 (the math's name)
        """The projector onto the gauge directions."""
        return self.Q @ self.Q.T


def horizontal(N: Float[Array, "p p"], g: Float[Array, " p"], Q: Float[Array, "p m"]) -> Horizontal:
    """``P_h N P_h`` and ``P_h g`` from the gauge basis ``Q`` (``m`` columns, ``m << p``): products with
    ``Q`` only, about ``4 p^2 m`` operations instead of two ``p x p`` products."""
    NQ = N @ Q
    Nh = N - Q @ NQ.T - NQ @ Q.T + Q @ ((Q.T @ NQ) @ Q.T)
    return Horizontal(Nh, g - Q @ (Q.T @ g), Q, jnp.max(jnp.diagonal(Nh)) + jnp.finfo(N.dtype).tiny)


def damped_step(h: Horizontal, mu, refine: int = 2):
    """The horizontal Levenberg-Marquardt step and the decrease of ``f`` its Gauss-Newton model predicts.

    Solves ``(P_h N P_h + c (mu P_h + P_g)) delta = P_h g``: positive definite for ``mu > 0``
    whatever ``N`` (singular along the gauge, or zero), with ``P_g delta = 0`` and
    ``||delta|| <= ||P_h g|| / (mu c)``. The predicted decrease is ``2 delta^T g - delta^T N delta``
    (for ``f = ||r||^2``). ``refine``: ``psd_solve``'s refinement steps. The Levenberg-Marquardt
    attempts take none: without them the solve adds a damping of ``10 p eps`` relative to each
    diagonal entry, and a trial step is kept only if it lowers the objective anyway (GNMR's
    undamped step keeps them).
    """
    p = h.N.shape[0]
    A = h.N + h.scale * (mu * jnp.eye(p, dtype=h.N.dtype) + (1 - mu) * h.Pg)
    x = psd_solve(0.5 * (A + A.T), h.g, refine=refine, substitute=True)
    delta = x - h.Q @ (h.Q.T @ x)
    return delta, 2 * delta @ h.g - delta @ (h.N @ delta)


class Attempt(NamedTuple):
    """A damped step tried from a point: where the search stands after it."""

    point: Point  # the new point if the step was accepted, else the old one
    mu: Array  # damping for the next attempt, relative to the scale c
    nu: Array  # Nielsen's growth factor: 2 after an accepted step, doubled by each rejection
    accepted: Array  # the step lowered the objective
    hopeless: Array  # rejected, and the model's predicted decrease fell below the rounding of f


def lm_attempt(evaluate_at: Callable[[Array, Array], Point], h: Horizontal, pt: Point, mu, nu, diag: bool) -> Attempt:
    """One damped Gauss-Newton step from ``pt`` (``h``: the system built there), kept only if it
    lowers the objective; the damping then follows Nielsen's gain-ratio rule."""
    d_out, r = pt.U.shape
    delta, predicted = damped_step(h, mu, refine=0)
    dU, dV = delta[: d_out * r].reshape(pt.U.shape), delta[d_out * r :].reshape(pt.V.shape)
    new = evaluate_at(*retract(pt.U + dU, pt.V + dV, diag))
    rho = (pt.sse - new.sse) / predicted
    ok = new.sse < pt.sse  # False for NaN
    mu_next = jnp.where(ok, mu * jnp.maximum(1 / 3, 1 - (2 * rho - 1) ** 3), mu * nu).astype(mu.dtype)
    nu_next = jnp.where(ok, 2.0, 2 * nu).astype(nu.dtype)
    point = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, pt)
    rounding = 16 * jnp.finfo(pt.sse.dtype).eps * pt.sse
    return Attempt(point, mu_next, nu_next, ok, ~ok & (predicted <= rounding))


def lm_system(N, g, pt: Point, diag: bool) -> Horizontal:
    """The Gauss-Newton system at ``pt`` restricted to the horizontal space."""
    return horizontal(N, g, gauge_basis(pt.U, pt.V, diag))


# ----------------------------------------------------------------------------- the driver


class _Ridge(NamedTuple):
    """The continuation's loop state: one Levenberg-Marquardt attempt per turn of the loop."""

    t: Array  # the ridge
    tries: Array  # attempts made at this ridge
    point: Point  # where the next attempt starts, evaluated under ridge t
    h: Horizontal  # the system built at the ridge's point (kept while its attempts are rejected)
    mu: Array  # damping of the next attempt
    nu: Array  # Nielsen's growth factor
    mu_ridge: Array  # damping at the ridge's start (kept when no attempt there is accepted)
    objectives: Array | tuple  # phi_alpha after each ridge (``path``), else ()


def continuation(evaluate_at, normal, U, V, mu, diag: bool, opts: VarPro, *, path: bool = False):
    """Ridge continuation: one LM iteration on ``phi_alpha(U, V) = min_S f + sum_i alpha lambda_i ||S_i||^2``
    for each ``alpha = continuation_start * continuation_decay^t >= continuation_stop``
    (``lambda_i = ridge_scale_i``, each user's Gram scale).

    At large ``alpha`` the personal parts are shrunk toward ``J_S^T y / lambda`` and ``phi_alpha``
    is, up to constants, ``-sum_i ||U^T M_i V||^2 / lambda_i`` with ``M_i`` the moment estimate:
    the tensor-PCA (HOOI) objective behind the spectral start, without the spurious minima that
    ill-conditioned personal solves create near the sample threshold. Following its minimizer
    while ``alpha`` falls ends near a minimizer of ``phi`` itself (measured: docs/varpro.md).

    A ridge's iteration builds the Gauss-Newton system at its point once and tries damped steps
    from it (``lm_attempt``, Nielsen's rule raising the damping) until one lowers ``phi_alpha``,
    ``max_tries`` are spent, or no decrease is possible; the next ridge starts with the damping of
    the accepted step (else the ridge's own). The attempts run one per turn of a single loop, a
    trial moving to the next ridge as soon as its iteration ends: under ``vmap`` no trial waits at
    a ridge for another's retries (the batch runs as many turns as its trial with the most
    attempts in all, not the sum over ridges of each ridge's most). The system is built in a
    ``lax.cond`` (under ``vmap``: for every trial, kept where one retries).

    Args:
      evaluate_at: ``(U, V, alpha, at=None) -> Point`` with the ridge ``alpha`` (``VarPro.reduced``).
      normal: ``Point -> (N, g)`` pooled over users.
      U, V: the start; mu: the initial damping; diag: diagonal personal parts; opts: the estimator.
      path: also return ``phi_alpha`` after each ridge's iteration (for analysis; the fit never asks).

    Returns:
      ``(U, V, mu)`` at the end of the path, and with ``path`` the objectives, one per ridge.
    """
    decay = jnp.asarray(opts.continuation_decay, U.dtype)
    ridges = opts.continuation_iterations
    alpha = lambda t: opts.continuation_start * decay**t
    system = lambda pt: lm_system(*normal(pt), pt, diag)

    def attempt(c: _Ridge) -> _Ridge:
        a = lm_attempt(lambda U_, V_: evaluate_at(U_, V_, alpha(c.t)), c.h, c.point, c.mu, c.nu, diag)
        tries = c.tries + 1
        done = a.accepted | a.hopeless | (tries >= opts.max_tries)  # this ridge's iteration ends
        mu_next = jnp.where(a.accepted, a.mu, c.mu_ridge)

        def next_ridge(_):  # the next ridge where this one ended, its pass over the data reused
            pt = evaluate_at(a.point.U, a.point.V, alpha(c.t + 1), a.point)
            return pt, system(pt)

        point, h = jax.lax.cond(done & (c.t + 1 < ridges), next_ridge, lambda _: (a.point, c.h), None)
        objectives = c.objectives
        if path:
            objectives = jnp.where(done, objectives.at[c.t].set(a.point.sse), objectives)
        nu2 = jnp.asarray(2.0, c.nu.dtype)
        return _Ridge(
            jnp.where(done, c.t + 1, c.t),
            jnp.where(done, 0, tries),
            point,
            h,
            jnp.where(done, mu_next, a.mu).astype(c.mu.dtype),
            jnp.where(done, nu2, a.nu).astype(c.nu.dtype),
            jnp.where(done, mu_next, c.mu_ridge).astype(c.mu.dtype),
            objectives,
        )

    pt = evaluate_at(U, V, alpha(0))
    objectives = jnp.zeros(ridges, U.dtype) if path else ()
    nu = jnp.asarray(2.0, mu.dtype)
    start = _Ridge(jnp.asarray(0), jnp.asarray(0), pt, system(pt), mu, nu, mu, objectives)
    end = jax.lax.while_loop(lambda c: c.t < ridges, attempt, start)
    U, V = end.point.U, end.point.V
    return (U, V, end.mu_ridge, end.objectives) if path else (U, V, end.mu_ridge)


class _Fit(NamedTuple):
    point: Point
    history: tuple  # the trace's per-iteration ``Metrics``
    iterations: Array
    converged: Array

    @property
    def final_objective(self):
        return self.history.objective[self.iterations]


class _Search(NamedTuple):
    """The fit proper's loop state: where the next attempt starts, and whether to stop here."""

    point: Point
    mu: Array
    nu: Array
    rejected: Array  # attempts rejected in a row
    done: Array  # the attempt that led here ended the fit (see ``_lm_fit``)
    recent: Array | tuple  # the objectives of the last ``stall`` points, oldest first (``()`` without the rule)


def _lm_fit(evaluate_at, normal, metrics, U, V, mu, config: FitConfig, opts: VarPro, diag: bool, floor, stall: int):
    """Levenberg-Marquardt from ``(U, V)`` under ``fitting.run_loop``, one attempt per iteration.

    An iteration builds the normal equations at the current point and tries one damped step; a
    rejected step leaves the point (its objective repeats in the trace) and raises the damping
    for the next iteration. So under ``vmap`` no trial waits inside an iteration for another
    trial's retries, and a rejection costs an iteration of the budget. The fit stops once an
    accepted step's relative decrease is ``<= config.tol``, after ``max_tries`` rejections in a
    row, or when a rejected step's predicted decrease is below the rounding of the objective.

    With ``stall > 0`` it also stops once the last ``stall`` iterations have lowered the objective
    by less than ``opts.stall_decrease`` of its value. After the ridge continuation a fit that
    recovers converges (by orders of magnitude per iteration well above the sample threshold,
    steadily near it), while one that does not crawls near a spurious stationary point, a few
    percent per iteration or less, for the rest of the budget; under ``vmap`` the crawlers would
    hold the whole batch (measured: docs/varpro.md, "When a fit stops").
    """
    ev = lambda U_, V_: evaluate_at(U_, V_, None)

    def body(search: _Search):
        pt = search.point
        a = lm_attempt(ev, lm_system(*normal(pt), pt, diag), pt, search.mu, search.nu, diag)
        rejected = jnp.where(a.accepted, 0, search.rejected + 1)
        small = a.accepted & (pt.sse - a.point.sse <= config.tol * pt.sse)
        done = small | a.hopeless | (rejected >= opts.max_tries)
        recent = search.recent
        if stall:  # recent[0]: the objective ``stall`` iterations before the new point (inf before the start)
            done = done | (a.point.sse >= (1 - opts.stall_decrease) * recent[0])
            recent = jnp.concatenate([recent[1:], a.point.sse[None]])
        return pt, metrics(pt), _Search(a.point, a.mu, a.nu, rejected, done, recent)

    pt0 = ev(U, V)
    recent = jnp.concatenate([jnp.full((stall - 1,), jnp.inf, pt0.sse.dtype), pt0.sse[None]]) if stall else ()
    start = _Search(pt0, mu, jnp.asarray(2.0, mu.dtype), jnp.asarray(0), jnp.asarray(False), recent)
    return _Fit(*run_loop(body, start, config.iters, config.tol, floor, stopped=lambda search: search.done))


def _fit_from(evaluate_at, normal, metrics, U, V, config: FitConfig, opts: VarPro, diag: bool, floor, *, path=False):
    """One fit (a ``_Fit``) from the start ``(U, V)``, with the ridge continuation as ``opts.continuation`` says.

    With ``path`` (for analysis; ``continuation="always"`` only): ``(fit, objectives)``, the
    objectives of the continuation after each ridge (``continuation(path=True)``).
    """
    U, V = retract(U, V, diag)
    mu = jnp.asarray(opts.damping, U.dtype)
    fit = lambda U_, V_, mu_, stall: _lm_fit(
        evaluate_at, normal, metrics, U_, V_, mu_, config, opts, diag, floor, stall
    )
    if path:
        if opts.continuation != "always":
            raise ValueError(f"a fit's continuation path needs continuation='always', got {opts.continuation!r}")
        *end, objectives = continuation(evaluate_at, normal, U, V, mu, diag, opts, path=True)
        return fit(*end, opts.stall), objectives
    if opts.continuation == "never":
        return fit(U, V, mu, 0)
    first = fit(*continuation(evaluate_at, normal, U, V, mu, diag, opts), opts.stall)
    if opts.continuation == "always":
        return first
    exact = first.final_objective <= floor  # the continued fit interpolates the data: nothing to fall back for
    # when exact, the plain fit starts where the first ended and stops at once (at the floor)
    second = fit(jnp.where(exact, first.point.U, U), jnp.where(exact, first.point.V, V), mu, 0)
    keep_first = exact | (first.final_objective <= second.final_objective)
    return jax.tree.map(lambda a, b: jnp.where(keep_first, a, b), first, second)


def restart_until_exact(run: Callable[[Array, Array], _Fit], U0, V0, Us, Vs, floor) -> _Fit:
    """The fit from ``(U0, V0)``, then fits from ``(Us[j], Vs[j])`` one after another while the
    best so far is above ``floor``; the lowest final objective wins (the earliest on a tie).

    On noiseless data an exact fit reaches the floor, and a converged fit above it is a spurious
    stationary point: a data-only signal (the truth is never looked at). A fit whose first run is
    exact runs no restart and returns that run unchanged; under ``vmap`` a trial that is done keeps
    its result while others restart (``while_loop`` batching), so batched equals looped.
    """
    first = run(U0, V0)

    def going(carry):
        j, best = carry
        return (j < Us.shape[0]) & (best.final_objective > floor)

    def another(carry):
        j, best = carry
        fit = run(Us[j], Vs[j])
        better = fit.final_objective < best.final_objective  # False for NaN
        return j + 1, jax.tree.map(lambda a, b: jnp.where(better, a, b), fit, best)

    return jax.lax.while_loop(going, another, (jnp.asarray(0), first))[1]


def fit_varpro(
    observations: Observations,
    config: FitConfig = FitConfig(),
    *,
    key=None,
    truth: GroundTruth | None = None,
    optimizer=None,
    axis_name: str | None = None,
    **options,
):
    """Fit the shared factors by variable projection (Levenberg-Marquardt on ``phi(U, V)``).

    ``VarPro(**options).fit`` on the observations, checked as ``fit`` checks them (without
    ``fit``'s rescaling of data far from order one). Same contract as ``fit``: ``config`` gives
    the rank, personal part, iteration budget ``iters``, tolerance ``tol`` and initialization; an
    iteration is one Levenberg-Marquardt attempt: a step that lowers the objective is taken (every
    ``S_i`` is then the exact personal solve), any other leaves the point and raises the damping.
    The objective never increases.

    Args:
      observations: the users' training data (``counts`` selects a prefix of each user's samples).
      config: static settings (as for ``fit``; ``config.algorithm`` is not read).
      key: PRNG key, needed for ``init="random"`` and for ``restarts``.
      truth: optional ground truth; when given, the trace records distances to it.
      optimizer: not taken (a Gauss-Newton method); must be None.
      axis_name: mesh axis over which users are sharded (inside ``shard_map``), else ``None``.
      **options: fields of ``VarPro`` (``jacobian``, ``damping``, ``max_tries``, ``continuation``,
        ``continuation_start``, ``continuation_stop``, ``continuation_decay``, ``stall``,
        ``stall_decrease``, ``restarts``, ``restart_rule``).

    Returns:
      ``(Estimate, Trace)`` as ``fit``: trace index 0 is the start of the returned fit (the
      initialization, or the end of the ridge continuation when that fit won), the objective is
      the mean squared residual per used sample, entries past ``iterations`` are NaN. Iteration
      stops after ``config.iters`` iterations, once the objective's relative decrease is
      ``<= config.tol`` (including when no damped step decreases it), at the floor
      ``(10 eps)^2`` times the mean squared measurement, or (after a continuation) once
      ``stall`` iterations have lowered the objective by less than ``stall_decrease`` of it.

    Example:
      >>> import jax, colora_jax as cj
      >>> pc = cj.ProblemConfig(model="sensing", users=20, d_out=8, d_in=8, samples=12)
      >>> problem = cj.generate(jax.random.key(0), pc)
      >>> est, trace = jax.jit(lambda o: cj.fit_varpro(o, cj.FitConfig(iters=30)))(problem.train)
      >>> bool(cj.relative_error(est.W, problem.truth.W) < 1e-3)
      True
    """
    if optimizer is not None:
        raise ValueError("varpro takes no optimizer (it is a Gauss-Newton method): drop optimizer=")
    estimator = VarPro.from_options(**options)
    check_fit(observations, config, estimator, key)
    return estimator.fit(AllUsers(blocks.design(observations), axis_name), config, key=key, truth=truth)


# The registered "varpro-restarts": a shorter continuation (ridges 3 -> 0.2: 33, against 56) and an earlier
# stall (5 iterations, 50%), so a fit costs 52-63% of varpro's, then up to 16 restarts until one is
# exact. Chosen on development seeds 1-3 at 1.3 m* (docs/varpro.md, "A cheaper fit, more restarts").
ROBUST = VarPro(
    restarts=16,
    restart_rule="until-exact",
    continuation_start=3.0,
    continuation_stop=0.2,
    stall=5,
    stall_decrease=0.5,
)
