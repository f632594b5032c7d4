"""colora_jax: collaborative low-rank adaptation (CoLoRA) in JAX.

Every user i shares the low-rank adapter ``U`` (d_out x r), ``V`` (d_in x r) and keeps a
personal ``S_i`` (r x r): ``W_i = W_0 + U S_i V^T``. See README.md for a tour.
"""

import os as _os
import sys as _sys

# First, before JAX loads: in the colora command's process, a Ctrl-C from here on ends it in one line.
from colora_jax._src.runtime import interrupts as _interrupts  # noqa: F401  (imported for that effect)

if "jax" not in _sys.modules:
    # XLA:CPU logs two spurious error lines (4 KB) for every executable it loads from the persistent
    # compilation cache (jax-ml/jax#38445: tuning flags taken for missing CPU features). XLA reads
    # this variable once, when jax is first imported: hide its C++ log lines below FATAL unless the
    # user set the level. Python errors are unaffected. (README, "Known issues".)
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from colora_jax._src.algorithms import fit as fit
from colora_jax._src.algorithms import fit_chunks as fit_chunks
from colora_jax._src.algorithms import fit_streaming as fit_streaming
from colora_jax._src.algorithms import fit_varpro_chunks as fit_varpro_chunks
from colora_jax._src.algorithms import resolve as resolve
from colora_jax._src.baselines.common import MethodFit as MethodFit
from colora_jax._src.baselines.federated import FederatedConfig as FederatedConfig
from colora_jax._src.baselines.federated import LoRAFactors as LoRAFactors
from colora_jax._src.baselines.federated import federated_lora as federated_lora
from colora_jax._src.baselines.one_sided import one_sided_fit as one_sided_fit
from colora_jax._src.estimators.altgd import AltGD as AltGD
from colora_jax._src.estimators.altmin import AltMin as AltMin
from colora_jax._src.estimators.centered import Centered as Centered
from colora_jax._src.estimators.fitting import Estimate as Estimate
from colora_jax._src.estimators.fitting import Estimator as Estimator
from colora_jax._src.estimators.fitting import Trace as Trace
from colora_jax._src.estimators.fitting import check_observations as check_observations
from colora_jax._src.estimators.gnmr import GNMR as GNMR
from colora_jax._src.estimators.joint import Adam as Adam
from colora_jax._src.estimators.scaledgd import ScaledGD as ScaledGD
from colora_jax._src.estimators.users import AllUsers as AllUsers
from colora_jax._src.estimators.users import UserChunks as UserChunks
from colora_jax._src.estimators.users import Users as Users
from colora_jax._src.estimators.varpro import VarPro as VarPro
from colora_jax._src.estimators.varpro import VarProOptions as VarProOptions
from colora_jax._src.estimators.varpro import fit_varpro as fit_varpro
from colora_jax._src.experiments.sharding import fit_sharded as fit_sharded
from colora_jax._src.experiments.sharding import shard_users as shard_users
from colora_jax._src.experiments.sharding import users_mesh as users_mesh
from colora_jax._src.experiments.sharding import users_sharding as users_sharding
from colora_jax._src.experiments.sweep import Cell as Cell
from colora_jax._src.experiments.sweep import SweepResult as SweepResult
from colora_jax._src.experiments.sweep import cell_key as cell_key
from colora_jax._src.experiments.sweep import cell_trials as cell_trials
from colora_jax._src.experiments.sweep import data_digest as data_digest
from colora_jax._src.experiments.sweep import per_cell as per_cell
from colora_jax._src.experiments.sweep import read_results as read_results
from colora_jax._src.experiments.sweep import run_cells as run_cells
from colora_jax._src.experiments.sweep import sweep as sweep
from colora_jax._src.experiments.trials import Evaluation as Evaluation
from colora_jax._src.experiments.trials import TrialResult as TrialResult
from colora_jax._src.experiments.trials import evaluate as evaluate
from colora_jax._src.experiments.trials import fit_and_evaluate as fit_and_evaluate
from colora_jax._src.experiments.trials import method_evaluator as method_evaluator
from colora_jax._src.experiments.trials import population_risk as population_risk
from colora_jax._src.experiments.trials import prediction_error as prediction_error
from colora_jax._src.experiments.trials import run_trials as run_trials
from colora_jax._src.experiments.trials import trial as trial
from colora_jax._src.experiments.trials import trial_keys as trial_keys
from colora_jax._src.methods import fit_method as fit_method
from colora_jax._src.methods import parameter_counts as parameter_counts
from colora_jax._src.model.blocks import Design as Design
from colora_jax._src.model.blocks import design as design
from colora_jax._src.model.blocks import input_step as input_step
from colora_jax._src.model.blocks import moment_estimates as moment_estimates
from colora_jax._src.model.blocks import output_step as output_step
from colora_jax._src.model.blocks import personal_step as personal_step
from colora_jax._src.model.blocks import residuals as residuals
from colora_jax._src.model.blocks import spectral_init as spectral_init
from colora_jax._src.model.blocks import sum_squares as sum_squares
from colora_jax._src.model.chunks import PlantedChunks as PlantedChunks
from colora_jax._src.model.chunks import generate_chunks as generate_chunks
from colora_jax._src.model.config import FitConfig as FitConfig
from colora_jax._src.model.config import ProblemConfig as ProblemConfig
from colora_jax._src.model.config import degrees_of_freedom as degrees_of_freedom
from colora_jax._src.model.config import min_samples as min_samples
from colora_jax._src.model.counter_rng import normals as nested_normals
from colora_jax._src.model.data import STREAM_VERSION as STREAM_VERSION
from colora_jax._src.model.data import GroundTruth as GroundTruth
from colora_jax._src.model.data import Observations as Observations
from colora_jax._src.model.data import Problem as Problem
from colora_jax._src.model.data import generate as generate
from colora_jax._src.model.data import generate_truth as generate_truth
from colora_jax._src.model.data import measure as measure
from colora_jax._src.model.data import predict as predict
from colora_jax._src.model.data import tilt as tilt
from colora_jax._src.model.linalg import psd_solve as psd_solve
from colora_jax._src.model.metrics import chordal_distance_squared as chordal_distance_squared
from colora_jax._src.model.metrics import geodesic_distance as geodesic_distance
from colora_jax._src.model.metrics import per_user_relative_error as per_user_relative_error
from colora_jax._src.model.metrics import principal_angles as principal_angles
from colora_jax._src.model.metrics import projection_distance as projection_distance
from colora_jax._src.model.metrics import relative_error as relative_error
from colora_jax._src.model.metrics import subspace_distance as subspace_distance
from colora_jax._src.model.shared_input import FEDREP_SYNTHETIC as FEDREP_SYNTHETIC
from colora_jax._src.model.shared_input import SharedInputConfig as SharedInputConfig
from colora_jax._src.model.shared_input import generate_problem as generate_problem
from colora_jax._src.model.shared_input import generate_shared_input as generate_shared_input
from colora_jax._src.registry import ALGORITHMS as ALGORITHMS
from colora_jax._src.registry import METHODS as METHODS
from colora_jax._src.runtime.caches import enable_compile_cache as enable_compile_cache
from colora_jax._src.runtime.cpu_threads import limit_cpu_threads as limit_cpu_threads
from colora_jax._src.runtime.provenance import code_version as code_version
from colora_jax._src.runtime.provenance import device_info as device_info
from colora_jax._src.runtime.serialization import to_jsonable as to_jsonable

__version__ = "0.2.0"

__all__ = (
    "ALGORITHMS",
    "Adam",
    "AllUsers",
    "AltGD",
    "AltMin",
    "Cell",
    "Centered",
    "Design",
    "Estimate",
    "Estimator",
    "Evaluation",
    "FEDREP_SYNTHETIC",
    "FederatedConfig",
    "FitConfig",
    "GNMR",
    "GroundTruth",
    "LoRAFactors",
    "METHODS",
    "MethodFit",
    "Observations",
    "PlantedChunks",
    "Problem",
    "ProblemConfig",
    "STREAM_VERSION",
    "ScaledGD",
    "SharedInputConfig",
    "SweepResult",
    "Trace",
    "TrialResult",
    "UserChunks",
    "Users",
    "VarPro",
    "VarProOptions",
    "cell_key",
    "cell_trials",
    "check_observations",
    "chordal_distance_squared",
    "code_version",
    "data_digest",
    "degrees_of_freedom",
    "design",
    "device_info",
    "enable_compile_cache",
    "evaluate",
    "federated_lora",
    "fit",
    "fit_and_evaluate",
    "fit_chunks",
    "fit_method",
    "fit_sharded",
    "fit_streaming",
    "fit_varpro",
    "fit_varpro_chunks",
    "generate",
    "generate_chunks",
    "generate_problem",
    "generate_shared_input",
    "generate_truth",
    "geodesic_distance",
    "input_step",
    "limit_cpu_threads",
    "measure",
    "method_evaluator",
    "min_samples",
    "moment_estimates",
    "nested_normals",
    "one_sided_fit",
    "output_step",
    "parameter_counts",
    "per_cell",
    "per_user_relative_error",
    "personal_step",
    "population_risk",
    "predict",
    "prediction_error",
    "principal_angles",
    "projection_distance",
    "psd_solve",
    "read_results",
    "relative_error",
    "residuals",
    "resolve",
    "run_cells",
    "run_trials",
    "shard_users",
    "spectral_init",
    "subspace_distance",
    "sum_squares",
    "sweep",
    "tilt",
    "to_jsonable",
    "trial",
    "trial_keys",
    "users_mesh",
    "users_sharding",
)
