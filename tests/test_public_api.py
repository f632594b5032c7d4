"""The public surface is pinned: adding or removing a name is a deliberate change here."""

import pytest

import colora_jax
import colora_jax.nnx

CORE = """
ALGORITHMS Adam AllUsers AltGD AltMin Centered Estimator GNMR ScaledGD UserChunks Users VarPro resolve
Cell Design Estimate Evaluation FEDREP_SYNTHETIC FederatedConfig FitConfig GroundTruth LoRAFactors
METHODS MethodFit Observations PlantedChunks Problem ProblemConfig STREAM_VERSION SharedInputConfig SweepResult
Trace TrialResult VarProOptions cell_key cell_trials check_observations chordal_distance_squared code_version
data_digest degrees_of_freedom design
device_info enable_compile_cache evaluate federated_lora fit fit_and_evaluate fit_chunks fit_method
fit_sharded fit_streaming fit_varpro fit_varpro_chunks generate generate_chunks generate_problem
generate_shared_input generate_truth
geodesic_distance input_step limit_cpu_threads measure method_evaluator min_samples one_sided_fit output_step
moment_estimates nested_normals parameter_counts per_cell per_user_relative_error personal_step population_risk
predict prediction_error psd_solve residuals users_sharding
principal_angles projection_distance read_results relative_error run_cells run_trials shard_users
spectral_init subspace_distance sum_squares sweep tilt to_jsonable trial trial_keys users_mesh
""".split()

NNX = """
CharVocab CoLoRALinear Decoder DecoderConfig Examples LoRABankLinear METHOD_NAMES MethodConfig PersonalParam
PlantedTeacher SCHEMES SHAKESPEARE_PATH SharedParam TeacherConfig TrainConfig Transformer TransformerConfig UserIds
adapted_layers add_users apply_colora apply_lora_bank nnx_code_version colora_users count_parameters export_peft
export_peft_users train_method
from_pretrained import_peft layer_axes load_roles logit_mse merge next_token_loss per_user_mean planted_teacher
user_outputs pretrain restore_adapter ridge_penalty role_windows save_adapter select_ridge shard train validation_loss
""".split()


def test_core_surface_is_pinned_and_sorted():
    assert list(colora_jax.__all__) == sorted(colora_jax.__all__)
    assert set(colora_jax.__all__) == set(CORE)
    for name in CORE:
        assert getattr(colora_jax, name) is not None


def test_one_spelling_per_method():
    """The NNX harness's methods are registry entries: one name for one method everywhere."""
    from colora_jax.nnx import _train

    assert set(colora_jax.nnx.METHOD_NAMES) <= set(colora_jax.METHODS)
    assert tuple(_train.TRAINERS) == colora_jax.nnx.METHOD_NAMES


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("METHODS", "METHOD_NAMES"),
        ("fit_method", "train_method"),
        ("predict", "user_outputs"),
        ("code_version", "nnx_code_version"),
    ],
)
def test_renamed_nnx_names_stay_one_release_as_deprecated_aliases(old, new):
    """The NNX names that clashed with colora_jax's (same spelling, other meaning) were renamed;
    the old spelling still works, warns, and is the same object."""
    with pytest.warns(DeprecationWarning, match=f"use colora_jax.nnx.{new}"):
        assert getattr(colora_jax.nnx, old) is getattr(colora_jax.nnx, new)
    with pytest.raises(AttributeError):
        colora_jax.nnx.no_such_name  # noqa: B018


def test_nnx_surface_is_pinned():
    assert set(colora_jax.nnx.__all__) == set(NNX)
    for name in NNX:
        assert getattr(colora_jax.nnx, name) is not None


def test_version_has_one_source():
    """pyproject.toml reads the version from colora_jax.__version__, so the two cannot disagree."""
    import pathlib
    import tomllib

    pyproject = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "colora_jax.__version__"}
