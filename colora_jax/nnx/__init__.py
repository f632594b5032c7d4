"""CoLoRA on Flax NNX models: adapters, multi-user routing, sharding, training, PEFT export, checkpoints.

See docs/nnx.md for a guide. The update of user ``i`` in each adapted layer is
``W_i = W_0 + U S_i V^T`` (flax kernel form: ``K + V S_i^T U^T``).
"""

from colora_jax.nnx._checkpoint import restore_adapter, save_adapter
from colora_jax.nnx._decoder import Decoder, DecoderConfig, shard
from colora_jax.nnx._layers import CoLoRALinear, LoRABankLinear, PersonalParam, SharedParam, UserIds, layer_axes
from colora_jax.nnx._models import Transformer, TransformerConfig
from colora_jax.nnx._peft import export_peft, export_peft_users, import_peft
from colora_jax.nnx._pretrained import from_pretrained
from colora_jax.nnx._provenance import code_version as nnx_code_version
from colora_jax.nnx._tasks import (
    SHAKESPEARE_PATH,
    CharVocab,
    PlantedTeacher,
    TeacherConfig,
    load_roles,
    planted_teacher,
    role_windows,
)
from colora_jax.nnx._train import METHODS as METHOD_NAMES
from colora_jax.nnx._train import (
    SCHEMES,
    Examples,
    MethodConfig,
    TrainConfig,
    count_parameters,
    logit_mse,
    next_token_loss,
    per_user_mean,
    pretrain,
    select_ridge,
    train,
    validation_loss,
)
from colora_jax.nnx._train import fit_method as train_method
from colora_jax.nnx._train import predict as user_outputs
from colora_jax.nnx._wrap import (
    adapted_layers,
    add_users,
    apply_colora,
    apply_lora_bank,
    colora_users,
    merge,
    ridge_penalty,
)

__all__ = [
    "SHAKESPEARE_PATH",
    "nnx_code_version",
    "adapted_layers",
    "add_users",
    "apply_colora",
    "apply_lora_bank",
    "CharVocab",
    "colora_users",
    "CoLoRALinear",
    "Decoder",
    "DecoderConfig",
    "count_parameters",
    "Examples",
    "export_peft",
    "export_peft_users",
    "train_method",
    "from_pretrained",
    "import_peft",
    "layer_axes",
    "load_roles",
    "logit_mse",
    "LoRABankLinear",
    "merge",
    "MethodConfig",
    "METHOD_NAMES",
    "next_token_loss",
    "per_user_mean",
    "PersonalParam",
    "planted_teacher",
    "PlantedTeacher",
    "user_outputs",
    "pretrain",
    "restore_adapter",
    "ridge_penalty",
    "role_windows",
    "save_adapter",
    "select_ridge",
    "shard",
    "SCHEMES",
    "SharedParam",
    "TeacherConfig",
    "train",
    "TrainConfig",
    "Transformer",
    "TransformerConfig",
    "UserIds",
    "validation_loss",
]

# Names of the previous release, kept one release as deprecated aliases: they meant something else
# than the same names in ``colora_jax`` (a registry dict, a fit of the linear model, the checkout's
# version, the linear model's prediction).
_DEPRECATED = {
    "METHODS": ("METHOD_NAMES", METHOD_NAMES),
    "fit_method": ("train_method", train_method),
    "predict": ("user_outputs", user_outputs),
    "code_version": ("nnx_code_version", nnx_code_version),
}


def __getattr__(name: str):
    """The deprecated aliases, each with a DeprecationWarning naming its replacement."""
    if name in _DEPRECATED:
        import warnings

        new, value = _DEPRECATED[name]
        message = f"colora_jax.nnx.{name} is deprecated: use colora_jax.nnx.{new}"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module 'colora_jax.nnx' has no attribute {name!r}")
