"""Frozen configuration objects: one for the planted problem, one for the estimator.

Both are hashable, so they can be passed to ``jax.jit`` as static arguments; every field
is documented where it is declared. ``validate`` methods raise ``ValueError`` with a message
that says what to change; they run at trace time (shapes and static numbers only).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MODELS: tuple[str, ...] = ("regression", "sensing")
PERSONALS: tuple[str, ...] = ("full", "diag")
INITS: tuple[str, ...] = ("spectral", "random")
PERSONAL_MEANS: tuple[str, ...] = ("random", "zero")


def choice(name: str, value: str, allowed) -> None:
    """Raise ValueError naming the allowed values unless ``value`` is one of them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")


def check_integer(owner: str, name: str, value, low: int) -> None:
    """Raise ValueError unless field ``name`` of ``owner`` is an integer (Python or NumPy, not bool) ``>= low``.

    Integer fields size arrays and loops, so a float such as ``2.5`` (or ``2.0``) would fail
    deep inside JAX, or be truncated silently; the message names the field and the fix.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        whole = isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer()
        fix = f"pass {name}={int(value)}" if whole else f"pass a whole number >= {low}"
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r} ({type(value).__name__}): {fix}")
    if value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{owner}.{name} must be {kind}, got {value}")


def check_real(owner: str, name: str, value) -> None:
    """Raise ValueError unless field ``name`` of ``owner`` is a finite real number (NaN passes every ``<`` test)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{owner}.{name} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be finite, got {value}")


def check_positive(owner: str, name: str, value) -> None:
    """Raise ValueError unless field ``name`` of ``owner`` is a finite real number ``> 0``."""
    check_real(owner, name, value)
    if not value > 0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value}")


def effective_precision(config) -> str:
    """The floating-point type a problem configuration generates and is fitted in.

    ``"float64"`` or ``"float32"``; raises ValueError when ``config.x64`` asks for float64 and JAX's
    64-bit mode is off.

    JAX silently computes in float32 when its ``jax_enable_x64`` flag is off, whatever dtype is
    asked for, so float64 is honoured only with the flag on. The flag is process-wide (or scoped
    with ``jax.enable_x64``) and the library does not set it behind the caller's back: this
    function is the one place where ``x64=True`` and the flag are checked against each other
    (``ProblemConfig.validate`` and ``SharedInputConfig.validate`` call it), and the value to
    record with a result as the precision it was computed in.
    """
    if not isinstance(config.x64, (bool, np.bool_)):
        raise ValueError(f"x64 must be True or False, got {config.x64!r}")
    if config.x64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "x64=True needs JAX's 64-bit mode, which is off (JAX would compute in float32 and the"
            " fit would return NaN): call jax.config.update('jax_enable_x64', True) before any"
            " computation, or run inside `with jax.enable_x64(True):`, or use x64=False"
        )
    return "float64" if config.x64 else "float32"


def min_samples(model: str, rank: int, personal: str) -> int:
    """Fewest samples per user for which the personal (S-step) least squares is determined.

    The S-step of user i solves for ``r**2`` numbers (``r`` when diagonal). In the sensing
    model each sample is one scalar equation, so it needs ``n >= r**2`` (``n >= r``). In the
    regression model each sample gives ``d_out`` equations and the normal matrix is
    ``V^T X_i^T X_i V`` (r x r), which is invertible once ``n >= r`` (``n >= 1`` when diagonal).
    """
    if model == "sensing":
        return rank * rank if personal == "full" else rank
    return rank if personal == "full" else 1


def degrees_of_freedom(model: str, users: int, d_out: int, d_in: int, rank: int, personal: str = "full") -> float:
    """Fewest samples per user that can determine the k users' ``U S_i V^T``: ``m*(k)``.

    Sensing (one scalar equation per sample): the parameters per user,
    ``m*(k) = r^2 + r (d_out + d_in - 2 r) / k`` (``r + r (d_out + d_in - 2) / k`` when the
    personal parts are diagonal). Regression: ``U`` is the column space of any user's outputs
    (``n >= r``); given ``U``, the equations ``U^T y_ij = S_i V^T x_ij`` are ``r`` per sample,
    against ``r (d_in - r)`` unknowns in span(V) and ``r^2`` per user, so ``k n r >= r (d_in - r)
    + k r^2``, i.e. ``n >= r + (d_in - r) / k``. (The plain count ``m*(k) / d_out`` is lower but
    not attainable: the ``d_out`` outputs of a sample all see the input through the same
    r-dimensional projection ``V^T x``.) Regression with diagonal personal parts is not derived
    here and raises.
    """
    choice("model", model, MODELS)
    choice("personal", personal, PERSONALS)
    if model == "sensing":
        if personal == "diag":
            return rank + rank * (d_out + d_in - 2) / users
        return rank**2 + rank * (d_out + d_in - 2 * rank) / users
    if personal == "diag":
        raise ValueError("degrees_of_freedom: the regression count is derived for full personal parts only")
    return rank + (d_in - rank) / users


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    """A planted heterogeneous linear-regression problem, ``W_i* = U_i* S_i* V_i*^T (+ D_i)``."""

    model: str = "sensing"  # "regression": y = W_i x + e in R^{d_out}; "sensing": y = <X, W_i> + e
    users: int = 50  # k, number of users (tasks)
    d_out: int = 20  # output dimension (rows of W_i)
    d_in: int = 20  # input dimension (columns of W_i)
    rank: int = 2  # r, rank of the shared adapter
    samples: int = 80  # n, training samples per user
    test_samples: int = 0  # held-out samples per user (0: held-out error is the exact population risk)
    noise: float = 0.0  # standard deviation of the additive Gaussian noise e
    task_angle: float = 0.0  # principal angle (radians) between U_i*, V_i* and the shared U*, V*
    deviation: float = 0.0  # relative Frobenius size of a personal full-rank term D_i
    personal: str = "full"  # truth's personal part: "full" r x r or "diag" (r numbers)
    condition: float = 1.0  # condition number of each S_i* (singular values geometric in [1/c, 1])
    personal_mean: str = "random"  # "random": S_i* i.i.d.; "zero": S_i* re-centred to average 0
    personal_groups: int = 0  # 0: every S_i* its own draw; g > 0: only g distinct S_i* (user i has S*_{i mod g})
    x64: bool = False  # generate (and then fit) in float64

    @property
    def dtype(self):
        """The JAX float type: float64 when ``x64``, else float32."""
        return jnp.float64 if self.x64 else jnp.float32

    def validate(self) -> "ProblemConfig":
        """Check the static configuration; returns self so calls can be chained."""
        choice("model", self.model, MODELS)
        choice("personal", self.personal, PERSONALS)
        choice("personal_mean", self.personal_mean, PERSONAL_MEANS)
        for name in ("users", "d_out", "d_in", "rank", "samples"):
            check_integer("ProblemConfig", name, getattr(self, name), 1)
        check_integer("ProblemConfig", "test_samples", self.test_samples, 0)
        check_integer("ProblemConfig", "personal_groups", self.personal_groups, 0)
        for name in ("noise", "task_angle", "deviation", "condition"):
            check_real("ProblemConfig", name, getattr(self, name))
        effective_precision(self)
        if self.rank > min(self.d_out, self.d_in):
            raise ValueError(
                f"rank {self.rank} is larger than min(d_out, d_in) = {min(self.d_out, self.d_in)}:"
                " choose rank <= both dimensions"
            )
        if self.task_angle != 0.0 and 2 * self.rank > min(self.d_out, self.d_in):
            raise ValueError(
                f"task_angle > 0 tilts each user's rank-{self.rank} subspace into its complement,"
                f" which needs 2*rank <= min(d_out, d_in) = {min(self.d_out, self.d_in)}:"
                " lower the rank or use task_angle 0"
            )
        if not 0.0 <= self.task_angle <= jnp.pi / 2:
            raise ValueError(f"task_angle must lie in [0, pi/2] radians, got {self.task_angle}")
        if self.deviation < 0 or self.noise < 0:
            raise ValueError("deviation and noise must be >= 0")
        if not self.condition >= 1.0:
            raise ValueError(f"condition must be >= 1, got {self.condition}")
        need = min_samples(self.model, self.rank, self.personal)
        if self.samples < need:
            raise ValueError(
                f"samples={self.samples} per user is too few for the personal solve of the"
                f" {self.model} model with a {self.personal} rank-{self.rank} personal part:"
                f" use samples >= {need}"
            )
        return self


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How to estimate the shared factors U, V and the personal S_i."""

    rank: int = 2  # r, rank of the fitted shared adapter
    personal: str = "full"  # fitted personal part: "full" r x r or "diag"
    algorithm: Any = "altmin"  # a name in ALGORITHMS (altmin, altgd, adam, varpro, ...) or an Estimator object
    #   with its own options (AltGD(step_size=0.3)); resolved and checked by fit
    iters: int = 100  # iteration budget (an iteration = S-, U- and V-step, or one optimizer step)
    tol: float = 1e-7  # stop when the objective's relative decrease falls below tol
    init: str = "spectral"  # "spectral" (second-moment) or "random" orthonormal U, V
    # shorthand for the options of an algorithm named by a string (an Estimator object carries its own),
    # and the knobs of the baselines that reuse them (fedrep's step, the federated methods' learning rate):
    step_size: float = 0.5  # altgd: step = step_size / L (isotropic-design Lipschitz bound); scaledgd: eta
    learning_rate: float = 1e-2  # adam: optax.adam learning rate
    ridge: float = 0.0  # centered: lambda of lambda sum_i n_i ||U (S_i - S_bar) V^T||_F^2 (0: CoLoRA)

    def validate(self) -> "FitConfig":
        """Check every field; returns ``self``, or raises ValueError saying what to change."""
        choice("personal", self.personal, PERSONALS)
        choice("init", self.init, INITS)
        check_integer("FitConfig", "rank", self.rank, 1)
        check_integer("FitConfig", "iters", self.iters, 1)
        for name in ("tol", "step_size", "learning_rate", "ridge"):
            check_real("FitConfig", name, getattr(self, name))
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        if not self.step_size > 0 or not self.learning_rate > 0:
            raise ValueError("step_size and learning_rate must be > 0")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be >= 0 (0: plain CoLoRA), got {self.ridge}")
        return self
