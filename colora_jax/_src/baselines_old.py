"""Baselines for CoLoRA, fitted on the same observations and scored by the same metrics.

Every method estimates the users' matrices ``W_i`` (d_out x d_in) from the same
``Observations``; they differ in what is shared and what is personal (LoRA's ``W = B A``:
``B`` output side, d_out x r; ``A`` input side, r x d_in):

================  ==============================  ===============================================
method            model of user i                 how it is fitted
================  ==============================  ===============================================
``colora``        ``U S_i V^T``, S_i r x r        the core AltMin (``fit``), full personal part
``colora-diag``   ``U S_i V^T``, S_i diagonal     the core AltMin with a diagonal personal part
``local``         ``U_i S_i V_i^T`` (own LoRA)    the core ``fit`` on each user alone (vmapped)
``local-full``    any ``W_i``                     per-user min-norm least squares
``global``        ``U S V^T`` for everybody       the core ``fit`` on all data as one user
``fedrep``        ``H_i V^T``, H_i d_out x r      exact personal H_i, gradient step on V (FedRep)
``fedsa-lora``    ``B_i A``, A shared             exact personal B_i, exact pooled step on A
``alora``         ``B A_i``, B shared             exact personal A_i, exact pooled step on B
``fedavg-lora``   ``B A`` then fine-tuned         FedAvg of (A, B) with local steps, then FT
``ffa-lora``      ``B A0``, A0 frozen random      FedAvg of B with local steps, then FT of B
``oracle``        ``U* S_i V*^T``                 only S_i fitted, the truth's U*, V* given
================  ==============================  ===============================================

The one-sided methods (fedrep, fedsa-lora, alora) are CoLoRA with one shared factor frozen at
the identity: ``H_i V^T = I_{d_out} H_i V^T`` (the personal "S_i" is the d_out x r matrix
``H_i``) and ``B A_i = B A_i I_{d_in}^T``. So the core's exact block steps
(``personal_step``, ``input_step``, ``output_step``) are reused as they are, for both
measurement models, and alora is fedsa-lora with the roles of the two sides exchanged (exact
for regression and sensing alike: nothing is transposed, the identity sits on the other side).

References: FedRep, Collins et al., "Exploiting Shared Representations for Personalized
Federated Learning", ICML 2021; FedSA-LoRA, Guo et al., "Selective Aggregation for Low-Rank
Adaptation in Federated Learning", ICLR 2025; FFA-LoRA, Sun et al., "Improving LoRA in
Privacy-preserving Federated Learning", ICLR 2024; FedAvg, McMahan et al., AISTATS 2017.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from colora_jax._src import blocks
from colora_jax._src.altmin import Trace, _normalize_U, _normalize_V, check_observations, fit, iterate, stopping_floor
from colora_jax._src.config import FitConfig, ProblemConfig, _choice
from colora_jax._src.data import GroundTruth, Observations, Problem, _orthonormal, generate, measure, predict
from colora_jax._src.metrics import subspace_distance
from colora_jax._src.trials import Evaluation, TrialResult, evaluate

METHODS: tuple[str, ...] = (
    "colora",
    "colora-diag",
    "local",
    "local-full",
    "global",
    "fedrep",
    "fedsa-lora",
    "alora",
    "fedavg-lora",
    "ffa-lora",
    "oracle",
)


class MethodFit(NamedTuple):
    """What a method estimated: every user's matrix, its shared factors (if any), a trace."""

    W: Float[Array, "k d_out d_in"]  # the users' estimated matrices
    U: Float[Array, "d_out r"] | None  # shared output-side factor (None if the method has none)
    V: Float[Array, "d_in r"] | None  # shared input-side factor (None if the method has none)
    trace: Trace  # per iteration (or round); NaN where not applicable or past the end


@dataclasses.dataclass(frozen=True)
class FederatedConfig:
    """Local training of the FedAvg-style baselines (fedavg-lora, ffa-lora).

    Rounds are ``FitConfig.iters``; the local optimizer is ``optax.adam(FitConfig.learning_rate)``
    restarted every round (clients keep no optimizer state between rounds).
    """

    local_steps: int = 5  # local gradient steps per user per round, before averaging
    finetune_steps: int = 50  # local steps of each user from the final global adapter ("+ FT")
    init_scale: float = 1.0  # A0 ~ N(0, init_scale^2 / d_in); B0 = 0 (LoRA's initialization)

    def validate(self) -> "FederatedConfig":
        if self.local_steps < 1 or self.finetune_steps < 0 or not self.init_scale > 0:
            raise ValueError("local_steps must be >= 1, finetune_steps >= 0 and init_scale > 0")
        return self


@dataclasses.dataclass(frozen=True)
class SharedInputConfig:
    """A planted problem whose users share only the input side: ``W_i* = H_i* V*^T``.

    ``V*`` is a Haar orthonormal d_in x r basis and every ``H_i*`` (d_out x r) has i.i.d.
    N(0, 1) entries. With ``d_out = 1`` and the defaults this is FedRep's synthetic setting
    (Collins et al. 2021, Sec. 5: d = 20, k = 2, 100 users, noise std 1e-3; they use 5, 10 or
    20 samples per user). The truth is stored in CoLoRA form with ``U* = I_{d_out}`` and
    ``S_i* = H_i*``, so every user's output side is the whole space.
    """

    model: str = "regression"  # "regression" (FedRep's, with d_out = 1) or "sensing"
    users: int = 100  # k
    d_out: int = 1  # output dimension (1: scalar regression, FedRep's linear model)
    d_in: int = 20  # input dimension d
    rank: int = 2  # r, dimension of the shared representation
    samples: int = 10  # training samples per user (FedRep: 5, 10, 20)
    test_samples: int = 50  # held-out samples per user
    noise: float = 1e-3  # standard deviation of the additive Gaussian noise
    x64: bool = False  # float64

    @property
    def dtype(self):
        return jnp.float64 if self.x64 else jnp.float32

    def validate(self) -> "SharedInputConfig":
        _choice("model", self.model, ("regression", "sensing"))
        for name in ("users", "d_out", "d_in", "rank", "samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.rank > self.d_in:
            raise ValueError(f"rank {self.rank} exceeds d_in = {self.d_in}: choose rank <= d_in")
        if self.test_samples < 0 or self.noise < 0:
            raise ValueError("test_samples and noise must be >= 0")
        return self


FEDREP_SYNTHETIC = SharedInputConfig()


def generate_shared_input(key: PRNGKeyArray, config: SharedInputConfig) -> Problem:
    """Draw ``W_i* = H_i* V*^T`` and measure it like ``generate`` does (same measurement model)."""
    config.validate()
    kv, kh, ktr, kte = jax.random.split(key, 4)
    k, dtype = config.users, config.dtype
    V = _orthonormal(kv, config.d_in, config.rank, dtype)
    H = jax.random.normal(kh, (k, config.d_out, config.rank), dtype)
    U = jnp.eye(config.d_out, dtype=dtype)
    W = jnp.einsum("kor,ir->koi", H, V)
    truth = GroundTruth(
        U=U, V=V, S=H, U_users=jnp.broadcast_to(U, (k,) + U.shape), V_users=jnp.broadcast_to(V, (k,) + V.shape), W=W
    )
    train = measure(ktr, W, config.samples, config.noise, config.model)
    test = measure(kte, W, config.test_samples, config.noise, config.model)
    return Problem(truth=truth, train=train, test=test)


def generate_problem(key: PRNGKeyArray, config: ProblemConfig | SharedInputConfig) -> Problem:
    """``generate`` for a ``ProblemConfig``, ``generate_shared_input`` for a ``SharedInputConfig``."""
    if isinstance(config, SharedInputConfig):
        return generate_shared_input(key, config)
    return generate(key, config)


# ----------------------------------------------------------------------------- shared helpers


def _nan(dtype):
    return jnp.full((), jnp.nan, dtype)


def _distance(A, truth_basis):
    """``subspace_distance`` where both are bases (NaN if the estimate has more columns than rows)."""
    if A is None or truth_basis is None or A.shape[1] > A.shape[0]:
        return None
    return subspace_distance(A, truth_basis)


def _stacked_rel_error(W, truth: GroundTruth | None):
    if truth is None:
        return _nan(W.dtype)
    return jnp.linalg.norm(W - truth.W) / jnp.linalg.norm(truth.W)


def _objective(obs: Observations, W) -> Float[Array, ""]:
    """Mean squared residual per sample (summed over outputs for regression), as in ``fit``."""
    pred = jax.vmap(predict, in_axes=(0, 0, None))(W, obs.X, obs.model)
    return jnp.sum(jnp.square(obs.Y - pred)) / (obs.users * obs.samples)


def _finite(obs: Observations):
    return jnp.all(jnp.isfinite(obs.X)) & jnp.all(jnp.isfinite(obs.Y))


def _metrics(obs, W, U, V, truth):
    nan = _nan(W.dtype)
    dU = dV = None
    if truth is not None:
        dU, dV = _distance(U, truth.U), _distance(V, truth.V)
    return (
        _objective(obs, W),
        nan if dU is None else dU,
        nan if dV is None else dV,
        _stacked_rel_error(W, truth),
    )


def _iterate(step, params, measure_fn, iters: int, tol: float, floor, monotone: bool):
    """``fit``'s loop (``iterate``) for ``params <- step(params)`` recording ``measure_fn(params)``."""

    def advance(p):
        p = step(p)
        return p, measure_fn(p)

    return iterate(advance, params, measure_fn(params), iters, tol, floor, monotone)


def _floor(obs: Observations):
    """``fit``'s stopping floor, from the mean squared measurement."""
    return stopping_floor(jnp.sum(jnp.square(obs.Y)) / (obs.users * obs.samples))


def _single_shot_trace(obs, W, U, V, truth, iters: int) -> Trace:
    """Trace of a method without iterations: index 0 holds the result, the rest NaN."""
    m = _metrics(obs, W, U, V, truth)
    bufs = tuple(jnp.full((iters + 1,), jnp.nan, W.dtype).at[0].set(v) for v in m)
    return Trace(*bufs, iterations=jnp.asarray(0), converged=jnp.asarray(True), finite_input=_finite(obs))


def _need_samples(obs: Observations, rows: int, cols: int, method: str) -> None:
    """Refuse an undetermined personal least squares for a ``rows x cols`` personal factor S_i.

    User i's data determine ``S_i`` in ``W_i = U S_i V^T`` (U: d_out x rows, V: d_in x cols)
    when sensing has ``n >= rows cols`` equations, and when regression's ``X_i V`` (n x cols)
    has full column rank, ``n >= cols``.
    """
    need = cols if obs.model == "regression" else rows * cols
    if obs.samples < need:
        raise ValueError(
            f"{method}: {obs.samples} samples per user cannot determine a {rows}x{cols} personal"
            f" factor in the {obs.model} model: use at least {need} samples per user"
        )


# ----------------------------------------------------------------------------- colora, local, global


def _colora(obs, fc, key, truth, personal) -> MethodFit:
    est, trace = fit(obs, dataclasses.replace(fc, personal=personal), key=key, truth=truth)
    return MethodFit(est.W, est.U, est.V, trace)


def _local(obs, fc, key, truth) -> MethodFit:
    """The core ``fit`` on each user alone, vmapped over users; the trace pools the users."""
    check_observations(obs, fc.rank, fc.personal)
    keys = jax.random.split(key, obs.users)

    def one(X, Y, k, t):
        est, tr = fit(Observations(X[None], Y[None], obs.model), fc, key=k, truth=t)
        return est.W[0], tr

    if truth is None:
        W, tr = jax.vmap(lambda X, Y, k: one(X, Y, k, None))(obs.X, obs.Y, keys)
    else:
        own = GroundTruth(
            U=truth.U_users, V=truth.V_users, S=truth.S[:, None], U_users=truth.U_users[:, None],
            V_users=truth.V_users[:, None], W=truth.W[:, None],
        )
        W, tr = jax.vmap(one)(obs.X, obs.Y, keys, own)
    # users stop at different iterations: hold each user's last value, then pool the users
    T = fc.iters + 1
    held = jnp.minimum(jnp.arange(T)[None, :], tr.iterations[:, None])
    last = lambda a: jnp.take_along_axis(a, held, axis=1)
    past = jnp.arange(T) > jnp.max(tr.iterations)
    objective = jnp.where(past, jnp.nan, jnp.mean(last(tr.objective), axis=0))
    if truth is None:
        rel = jnp.full((T,), jnp.nan, W.dtype)
    else:
        ref2 = jnp.sum(jnp.square(truth.W), axis=(1, 2))  # ||W_i*||^2
        rel = jnp.sqrt(jnp.sum(jnp.square(last(tr.rel_error)) * ref2[:, None], axis=0) / jnp.sum(ref2))
        rel = jnp.where(past, jnp.nan, rel)
    nans = jnp.full((T,), jnp.nan, W.dtype)
    trace = Trace(objective, nans, nans, rel, jnp.max(tr.iterations), jnp.all(tr.converged), jnp.all(tr.finite_input))
    return MethodFit(W, None, None, trace)


def _global(obs, fc, key, truth) -> MethodFit:
    """One rank-r adapter for everybody: the core ``fit`` on all users' data pooled as one user.

    The trace's relative error is converted exactly from the pooled fit's error against the
    users' mean ``Wbar``: ``sum_i ||W - W_i||^2 = k ||W - Wbar||^2 + sum_i ||W_i - Wbar||^2``.
    """
    k, n = obs.users, obs.samples
    pooled = Observations(obs.X.reshape((1, k * n) + obs.X.shape[2:]), obs.Y.reshape((1, k * n) + obs.Y.shape[2:]), obs.model)
    mean_truth = None
    if truth is not None:
        Wbar = jnp.mean(truth.W, axis=0, keepdims=True)
        mean_truth = GroundTruth(U=truth.U, V=truth.V, S=truth.S[:1], U_users=truth.U_users[:1], V_users=truth.V_users[:1], W=Wbar)
    est, tr = fit(pooled, fc, key=key, truth=mean_truth)
    if truth is not None:
        spread2 = jnp.sum(jnp.square(truth.W - Wbar))
        rel = jnp.sqrt((k * jnp.square(tr.rel_error) * jnp.sum(jnp.square(Wbar)) + spread2) / jnp.sum(jnp.square(truth.W)))
        tr = tr._replace(rel_error=rel)
    return MethodFit(jnp.broadcast_to(est.W, (k,) + est.W.shape[1:]), est.U, est.V, tr)


def _local_full(obs, fc, truth) -> MethodFit:
    """Each user's min-norm least squares for its whole ``W_i``: CoLoRA's personal step with
    both shared factors the identity (``W_i = I S_i I^T``, ``S_i`` d_out x d_in)."""
    d_out, d_in = obs.dims
    _need_samples(obs, d_out, d_in, "local-full")
    d = blocks.design(obs)
    W = blocks.personal_step(d, jnp.eye(d_out, dtype=obs.X.dtype), jnp.eye(d_in, dtype=obs.X.dtype), False)
    return MethodFit(W, None, None, _single_shot_trace(obs, W, None, None, truth, fc.iters))


def _oracle(obs, fc, truth) -> MethodFit:
    """Only the personal parts fitted, with the truth's shared ``U*``, ``V*`` given.

    When the truth's users are tilted (task_angle > 0) or deviate, the oracle still uses the
    shared ``U*``, ``V*``: it is the best any method that shares exactly the truth's factors
    can do, not the noise floor of a per-user model.
    """
    if truth is None:
        raise ValueError("oracle needs the ground truth: pass truth=problem.truth")
    a, b = truth.U.shape[1], truth.V.shape[1]
    diag = fc.personal == "diag" and a == b
    if a == b:
        check_observations(obs, a, fc.personal)
    else:  # a shared-input truth: U* = I, S_i* = H_i* (d_out x r)
        _need_samples(obs, a, b, "oracle")
    S = blocks.personal_step(blocks.design(obs), truth.U, truth.V, diag)
    W = jnp.einsum("or,krs,is->koi", truth.U, S, truth.V)
    U = truth.U if a == b else None  # a shared-input truth's U* = I is no shared factor
    return MethodFit(W, U, truth.V, _single_shot_trace(obs, W, U, truth.V, truth, fc.iters))


# ----------------------------------------------------------------------------- one shared side


def one_sided_fit(
    obs: Observations,
    config: FitConfig,
    *,
    shared: str = "input",
    gradient: bool = False,
    truth: GroundTruth | None = None,
) -> tuple[Float[Array, "d_out r"], Float[Array, "d_in r"], Float[Array, "k a b"], Trace]:
    """Alternating minimization with one shared side and a full personal other side.

    ``shared="input"``: ``W_i = H_i V^T`` (FedRep; FedSA-LoRA's shared A = V^T, personal
    B_i = H_i), written as CoLoRA with ``U = I_{d_out}`` and ``S_i = H_i`` (d_out x r).
    ``shared="output"``: ``W_i = U A_i`` (shared B = U, personal A_i), CoLoRA with
    ``V = I_{d_in}`` and ``S_i = A_i`` (r x d_in). One iteration:

    1. personal step (exact, per user): ``S_i = argmin ||y_i - A_i(U S_i V^T)||^2``;
    2. shared step, pooled over users: exact (``input_step`` / ``output_step``) or, with
       ``gradient=True``, one gradient step of size ``step_size / L`` with
       ``L = n lambda_max(sum_i S_i^T S_i)`` (FedRep's update of the representation, done
       with the full gradient; the isotropic-design Lipschitz bound as in ``altgd``);
    3. QR of the shared factor, its triangular factor absorbed into every ``S_i``.

    Initialization: the shared side of the core's second-moment ``spectral_init`` (FedRep's
    method-of-moments initialization when d_out = 1).

    Returns:
      ``(U, V, S, trace)``, with the identity in place of the side that is not shared.
    """
    config.validate()
    _choice("shared", shared, ("input", "output"))
    d_out, d_in = obs.dims
    r = config.rank
    if r > (d_in if shared == "input" else d_out):
        raise ValueError(f"rank {r} exceeds the shared side's dimension {d_in if shared == 'input' else d_out}: lower the rank")
    d = blocks.design(obs)
    n = obs.samples
    dtype = obs.X.dtype
    U0, V0 = blocks.spectral_init(d, r)  # only the shared side's is used (the other may be rank-deficient)
    if shared == "input":
        U, V = jnp.eye(d_out, dtype=dtype), V0
    else:
        U, V = U0, jnp.eye(d_in, dtype=dtype)
    params = (U, V, blocks.personal_step(d, U, V, False))

    def step(p):
        U, V, _ = p
        S = blocks.personal_step(d, U, V, False)
        if shared == "input":
            if gradient:
                L = n * jnp.linalg.eigvalsh(jnp.einsum("kor,kos->rs", S, S))[-1]
                V = V - (config.step_size / L) * jax.grad(lambda V_: 0.5 * blocks.sum_squares(d, U, V_, S))(V)
            else:
                V = blocks.input_step(d, U, S)
            V, S = _normalize_V(V, S, False)
        else:
            if gradient:
                L = n * jnp.linalg.eigvalsh(jnp.einsum("kri,ksi->rs", S, S))[-1]
                U = U - (config.step_size / L) * jax.grad(lambda U_: 0.5 * blocks.sum_squares(d, U_, V, S))(U)
            else:
                U = blocks.output_step(d, V, S)
            U, S = _normalize_U(U, S, False)
        return (U, V, S)

    def measure_fn(p):
        U, V, S = p
        W = jnp.einsum("or,krs,is->koi", U, S, V)
        return _metrics(obs, W, U if shared == "output" else None, V if shared == "input" else None, truth)

    (U, V, S), bufs, it, done = _iterate(step, params, measure_fn, config.iters, config.tol, _floor(obs), True)
    return U, V, S, Trace(*bufs, iterations=it, converged=done, finite_input=_finite(obs))


def _one_sided(obs, fc, truth, method) -> MethodFit:
    d_out, d_in = obs.dims
    shared = "output" if method == "alora" else "input"
    if shared == "input":
        _need_samples(obs, d_out, fc.rank, method)
    else:
        _need_samples(obs, fc.rank, d_in, method)
    U, V, S, trace = one_sided_fit(obs, fc, shared=shared, gradient=method == "fedrep", truth=truth)
    W = jnp.einsum("or,krs,is->koi", U, S, V)
    return MethodFit(W, U if shared == "output" else None, V if shared == "input" else None, trace)


# ----------------------------------------------------------------------------- federated averaging


class LoRAFactors(NamedTuple):
    """LoRA factors of one adapter: ``W = B @ A``."""

    B: Float[Array, "d_out r"]  # output side (starts at zero)
    A: Float[Array, "r d_in"]  # input side (random at initialization)


def federated_lora(
    obs: Observations,
    config: FitConfig,
    federated: FederatedConfig,
    *,
    key: PRNGKeyArray,
    train_A: bool = True,
    truth: GroundTruth | None = None,
) -> tuple[LoRAFactors, LoRAFactors, Trace]:
    """FedAvg of LoRA factors with local steps, then per-user fine-tuning ("FedAvg + FT").

    Each round every user starts from the global ``(B, A)``, takes ``local_steps`` Adam steps
    on its own mean squared residual, and the server averages the factors:
    ``B <- mean_i B_i``, ``A <- mean_i A_i``. The product of the averages is not the average
    of the products ``B_i A_i`` (the inexactness FFA-LoRA avoids by freezing A). With
    ``train_A=False`` (FFA-LoRA) A stays at its random initialization and only B is trained
    and averaged. After ``config.iters`` rounds each user fine-tunes its own copy for
    ``finetune_steps`` steps (A frozen too when ``train_A=False``).

    Returns:
      ``(global_adapter, personal_adapters, trace)``: the trace records the global adapter
      after each round (its subspace distances: span(B) to U*, span(A^T) to V*).
    """
    config.validate()
    federated.validate()
    d_out, d_in = obs.dims
    r, dtype = config.rank, obs.X.dtype
    global_ = LoRAFactors(
        B=jnp.zeros((d_out, r), dtype),
        A=(federated.init_scale / jnp.sqrt(jnp.asarray(d_in, dtype))) * jax.random.normal(key, (r, d_in), dtype),
    )
    opt = optax.adam(config.learning_rate)
    mask = LoRAFactors(B=jnp.ones((), dtype), A=jnp.ones((), dtype) if train_A else jnp.zeros((), dtype))

    def user_loss(p: LoRAFactors, X, Y):
        return jnp.mean(jnp.square(Y - predict(p.B @ p.A, X, obs.model)))

    def local(p: LoRAFactors, X, Y, steps: int) -> LoRAFactors:
        def body(_, carry):
            p, s = carry
            g = jax.tree.map(jnp.multiply, jax.grad(user_loss)(p, X, Y), mask)
            with jax.numpy_dtype_promotion("standard"):  # optax mixes its int step count with floats
                u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, steps, body, (p, opt.init(p)))[0]

    def round_(p: LoRAFactors) -> LoRAFactors:
        users = jax.vmap(local, (None, 0, 0, None))(p, obs.X, obs.Y, federated.local_steps)
        return jax.tree.map(lambda a: jnp.mean(a, axis=0), users)

    def measure_fn(p: LoRAFactors):
        W = jnp.broadcast_to(p.B @ p.A, (obs.users, d_out, d_in))
        return _metrics(obs, W, p.B, p.A.T, truth)

    global_, bufs, it, done = _iterate(round_, global_, measure_fn, config.iters, 0.0, _floor(obs), False)
    personal = jax.vmap(local, (None, 0, 0, None))(global_, obs.X, obs.Y, federated.finetune_steps)
    return global_, personal, Trace(*bufs, iterations=it, converged=done, finite_input=_finite(obs))


def _federated(obs, fc, federated, key, truth, train_A) -> MethodFit:
    g, personal, trace = federated_lora(obs, fc, federated, key=key, train_A=train_A, truth=truth)
    W = jnp.einsum("kor,kri->koi", personal.B, personal.A)
    d_out, d_in = obs.dims
    U = g.B if fc.rank <= d_out else None
    V = g.A.T if fc.rank <= d_in else None
    return MethodFit(W, U, V, trace)


# ----------------------------------------------------------------------------- the harness


def check_method(method: str) -> None:
    """Raise ValueError listing the known methods if ``method`` is not one of them."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")


def fit_method(
    method: str,
    observations: Observations,
    fit_config: FitConfig,
    *,
    key: PRNGKeyArray,
    truth: GroundTruth | None = None,
    federated: FederatedConfig = FederatedConfig(),
) -> MethodFit:
    """Fit one of :data:`METHODS` to the users' observations (pure; jit/vmap it with
    ``method``, ``fit_config`` and ``federated`` static).

    Args:
      method: one of ``METHODS`` (see the module's table).
      observations: the users' training data.
      fit_config: rank, iterations, tolerance, and (colora, local, global) the core
        algorithm; ``step_size`` is fedrep's and ``learning_rate`` the federated methods'.
        ``colora`` fits a full personal part and ``colora-diag`` a diagonal one, whatever
        ``fit_config.personal`` says; ``local`` and ``oracle`` use ``fit_config.personal``.
      key: PRNG key (random initializations: federated methods, ``init="random"``).
      truth: optional ground truth; traces then record distances to it (``oracle`` needs it).
      federated: local training of fedavg-lora and ffa-lora.

    Returns:
      ``MethodFit(W, U, V, trace)``. Raises ValueError (at trace time) if the method cannot
      run on these observations, e.g. a personal least squares with too few samples.
    """
    check_method(method)
    fit_config.validate()
    if method in ("colora", "colora-diag"):
        return _colora(observations, fit_config, key, truth, "diag" if method == "colora-diag" else "full")
    if method == "local":
        return _local(observations, fit_config, key, truth)
    if method == "local-full":
        return _local_full(observations, fit_config, truth)
    if method == "global":
        return _global(observations, fit_config, key, truth)
    if method in ("fedrep", "fedsa-lora", "alora"):
        return _one_sided(observations, fit_config, truth, method)
    if method in ("fedavg-lora", "ffa-lora"):
        return _federated(observations, fit_config, federated, key, truth, method == "fedavg-lora")
    return _oracle(observations, fit_config, truth)


def method_trial(
    key: PRNGKeyArray,
    problem_config: ProblemConfig | SharedInputConfig,
    fit_config: FitConfig,
    method: str,
) -> TrialResult:
    """Generate, fit with ``method``, evaluate: ``TrialResult(Evaluation, Trace)``.

    The key is split exactly as in the core ``trial``, so every method sees the same problem
    for the same key (and ``colora`` reproduces ``trial``'s numbers).
    """
    kp, kf = jax.random.split(key)
    problem = generate_problem(kp, problem_config)
    f = fit_method(method, problem.train, fit_config, key=kf, truth=problem.truth)
    return TrialResult(evaluate(f.W, problem, f.U, f.V), f.trace)


@functools.cache
def method_trial_fn(method: str) -> Callable[..., TrialResult]:
    """``method_trial`` with the method bound: a stable, hashable ``fn`` for ``run_trials``."""
    check_method(method)
    return functools.partial(method_trial, method=method)


def parameter_counts(method: str, problem_config: ProblemConfig | SharedInputConfig) -> tuple[int, int]:
    """``(params_shared, params_per_user)`` that the method trains, at the problem's rank.

    colora: ``(d_out + d_in) r`` shared and ``r^2`` per user (``r`` if diagonal); local: a LoRA
    per user, ``(d_out + d_in) r``; local-full: ``d_out d_in`` per user; global:
    ``(d_out + d_in) r`` shared; fedrep / fedsa-lora: ``d_in r`` shared, ``d_out r`` per user;
    alora: ``d_out r`` shared, ``d_in r`` per user; fedavg-lora: ``(d_out + d_in) r`` trained
    federated and again per user in fine-tuning; ffa-lora: ``d_out r`` and ``d_out r`` (A is
    frozen); oracle: nothing shared is trained, ``r^2`` (``r``) per user (``d_out r`` on a
    ``SharedInputConfig`` problem).
    """
    check_method(method)
    pc = problem_config
    o, i, r = pc.d_out, pc.d_in, pc.rank
    if isinstance(pc, SharedInputConfig):  # the truth's personal part is H_i, d_out x r
        personal = o * r
    else:
        personal = r if pc.personal == "diag" else r * r
    counts = {
        "colora": ((o + i) * r, r * r),
        "colora-diag": ((o + i) * r, r),
        "local": (0, (o + i) * r),
        "local-full": (0, o * i),
        "global": ((o + i) * r, 0),
        "fedrep": (i * r, o * r),
        "fedsa-lora": (i * r, o * r),
        "alora": (o * r, i * r),
        "fedavg-lora": ((o + i) * r, (o + i) * r),
        "ffa-lora": (o * r, o * r),
        "oracle": (0, personal),
    }
    return counts[method]
