"""colora_jax: collaborative low-rank adaptation (CoLoRA) in JAX.

Every user i shares the low-rank adapter ``U`` (d_out x r), ``V`` (d_in x r) and keeps a
personal ``S_i`` (r x r): ``W_i = W_0 + U S_i V^T``. See README.md for a tour.
"""

from colora_jax._src.altmin import Estimate as Estimate
from colora_jax._src.altmin import Trace as Trace
from colora_jax._src.altmin import check_observations as check_observations
from colora_jax._src.altmin import fit as fit
from colora_jax._src.baselines import FEDREP_SYNTHETIC as FEDREP_SYNTHETIC
from colora_jax._src.baselines import FederatedConfig as FederatedConfig
from colora_jax._src.baselines import LoRAFactors as LoRAFactors
from colora_jax._src.baselines import METHODS as METHODS
from colora_jax._src.baselines import MethodFit as MethodFit
from colora_jax._src.baselines import SharedInputConfig as SharedInputConfig
from colora_jax._src.baselines import federated_lora as federated_lora
from colora_jax._src.baselines import fit_method as fit_method
from colora_jax._src.baselines import generate_problem as generate_problem
from colora_jax._src.baselines import generate_shared_input as generate_shared_input
from colora_jax._src.baselines import method_trial as method_trial
from colora_jax._src.baselines import method_trial_fn as method_trial_fn
from colora_jax._src.baselines import one_sided_fit as one_sided_fit
from colora_jax._src.baselines import parameter_counts as parameter_counts
from colora_jax._src.blocks import input_step as input_step
from colora_jax._src.blocks import output_step as output_step
from colora_jax._src.blocks import personal_step as personal_step
from colora_jax._src.blocks import spectral_init as spectral_init
from colora_jax._src.blocks import design as design
from colora_jax._src.blocks import sum_squares as sum_squares
from colora_jax._src.config import FitConfig as FitConfig
from colora_jax._src.config import ProblemConfig as ProblemConfig
from colora_jax._src.config import min_samples as min_samples
from colora_jax._src.data import GroundTruth as GroundTruth
from colora_jax._src.data import Observations as Observations
from colora_jax._src.data import Problem as Problem
from colora_jax._src.data import generate as generate
from colora_jax._src.data import generate_truth as generate_truth
from colora_jax._src.data import measure as measure
from colora_jax._src.data import predict as predict
from colora_jax._src.data import tilt as tilt
from colora_jax._src.metrics import chordal_distance_squared as chordal_distance_squared
from colora_jax._src.metrics import geodesic_distance as geodesic_distance
from colora_jax._src.metrics import per_user_relative_error as per_user_relative_error
from colora_jax._src.metrics import principal_angles as principal_angles
from colora_jax._src.metrics import projection_distance as projection_distance
from colora_jax._src.metrics import relative_error as relative_error
from colora_jax._src.metrics import subspace_distance as subspace_distance
from colora_jax._src.provenance import code_version as code_version
from colora_jax._src.provenance import device_info as device_info
from colora_jax._src.sharding import fit_sharded as fit_sharded
from colora_jax._src.sharding import shard_users as shard_users
from colora_jax._src.sharding import users_mesh as users_mesh
from colora_jax._src.streaming import PlantedBlocks as PlantedBlocks
from colora_jax._src.streaming import fit_blocks as fit_blocks
from colora_jax._src.streaming import fit_streaming as fit_streaming
from colora_jax._src.streaming import generate_blocks as generate_blocks
from colora_jax._src.sweep import Cell as Cell
from colora_jax._src.sweep import SweepResult as SweepResult
from colora_jax._src.sweep import cell_trials as cell_trials
from colora_jax._src.sweep import run_cell as run_cell
from colora_jax._src.sweep import sweep as sweep
from colora_jax._src.trials import Evaluation as Evaluation
from colora_jax._src.trials import TrialResult as TrialResult
from colora_jax._src.trials import evaluate as evaluate
from colora_jax._src.trials import prediction_error as prediction_error
from colora_jax._src.trials import run_trials as run_trials
from colora_jax._src.trials import trial as trial

__version__ = "0.1.0"

__all__ = (
    "Cell",
    "Estimate",
    "Evaluation",
    "FEDREP_SYNTHETIC",
    "FederatedConfig",
    "FitConfig",
    "GroundTruth",
    "LoRAFactors",
    "METHODS",
    "MethodFit",
    "Observations",
    "PlantedBlocks",
    "Problem",
    "ProblemConfig",
    "SharedInputConfig",
    "SweepResult",
    "Trace",
    "TrialResult",
    "cell_trials",
    "check_observations",
    "chordal_distance_squared",
    "code_version",
    "design",
    "device_info",
    "evaluate",
    "federated_lora",
    "fit",
    "fit_blocks",
    "fit_method",
    "fit_sharded",
    "fit_streaming",
    "generate",
    "generate_blocks",
    "generate_problem",
    "generate_shared_input",
    "generate_truth",
    "geodesic_distance",
    "input_step",
    "measure",
    "method_trial",
    "method_trial_fn",
    "min_samples",
    "one_sided_fit",
    "output_step",
    "parameter_counts",
    "per_user_relative_error",
    "personal_step",
    "predict",
    "prediction_error",
    "principal_angles",
    "projection_distance",
    "relative_error",
    "run_cell",
    "run_trials",
    "shard_users",
    "spectral_init",
    "subspace_distance",
    "sum_squares",
    "sweep",
    "tilt",
    "trial",
    "users_mesh",
)
