"""CoLoRA on Flax NNX models: adapters, multi-user routing, sharding, training, PEFT export, checkpoints.

See docs/nnx.md for a guide. The update of user ``i`` in each adapted layer is
``W_i = W_0 + U S_i V^T`` (flax kernel form: ``K + V S_i^T U^T``).
"""

from colora_jax.nnx._checkpoint import restore_adapter
from colora_jax.nnx._checkpoint import save_adapter
from colora_jax.nnx._decoder import Decoder
from colora_jax.nnx._decoder import DecoderConfig
from colora_jax.nnx._decoder import shard
from colora_jax.nnx._layers import CoLoRALinear
from colora_jax.nnx._layers import LoRABankLinear
from colora_jax.nnx._layers import PersonalParam
from colora_jax.nnx._layers import SharedParam
from colora_jax.nnx._layers import UserIds
from colora_jax.nnx._layers import layer_axes
from colora_jax.nnx._models import Transformer
from colora_jax.nnx._models import TransformerConfig
from colora_jax.nnx._peft import export_peft
from colora_jax.nnx._peft import import_peft
from colora_jax.nnx._tasks import CharVocab
from colora_jax.nnx._tasks import PlantedTeacher
from colora_jax.nnx._tasks import TeacherConfig
from colora_jax.nnx._tasks import load_roles
from colora_jax.nnx._tasks import planted_teacher
from colora_jax.nnx._tasks import role_windows
from colora_jax.nnx._train import METHODS
from colora_jax.nnx._train import SCHEMES
from colora_jax.nnx._train import Examples
from colora_jax.nnx._train import MethodConfig
from colora_jax.nnx._train import TrainConfig
from colora_jax.nnx._train import count_parameters
from colora_jax.nnx._train import fit_method
from colora_jax.nnx._train import logit_mse
from colora_jax.nnx._train import next_token_loss
from colora_jax.nnx._train import per_user_mean
from colora_jax.nnx._train import predict
from colora_jax.nnx._train import select_ridge
from colora_jax.nnx._train import pretrain
from colora_jax.nnx._train import train
from colora_jax.nnx._train import validation_loss
from colora_jax.nnx._wrap import add_users
from colora_jax.nnx._wrap import adapted_layers
from colora_jax.nnx._wrap import apply_colora
from colora_jax.nnx._wrap import apply_lora_bank
from colora_jax.nnx._wrap import colora_users
from colora_jax.nnx._wrap import merge
from colora_jax.nnx._wrap import ridge_penalty

__all__ = [
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
    "fit_method",
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
