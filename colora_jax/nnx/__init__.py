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
from colora_jax.nnx._provenance import code_version
from colora_jax.nnx._tasks import (
    SHAKESPEARE_PATH,
    CharVocab,
    PlantedTeacher,
    TeacherConfig,
    load_roles,
    planted_teacher,
    role_windows,
)
from colora_jax.nnx._train import (
    METHODS,
    SCHEMES,
    Examples,
    MethodConfig,
    TrainConfig,
    count_parameters,
    fit_method,
    logit_mse,
    next_token_loss,
    per_user_mean,
    predict,
    pretrain,
    select_ridge,
    train,
    validation_loss,
)
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
    "code_version",
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
    "fit_method",
    "from_pretrained",
    "import_peft",
    "layer_axes",
    "load_roles",
    "logit_mse",
    "LoRABankLinear",
    "merge",
    "MethodConfig",
    "METHODS",
    "next_token_loss",
    "per_user_mean",
    "PersonalParam",
    "planted_teacher",
    "PlantedTeacher",
    "predict",
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
