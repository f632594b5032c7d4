"""CoLoRA on Flax NNX models: adapters, multi-user routing, training, PEFT export, checkpoints.

See docs/nnx.md for a guide. The update of user ``i`` in each adapted layer is
``W_i = W_0 + U S_i V^T`` (flax kernel form: ``K + V S_i^T U^T``).
"""

from colora_jax.nnx._checkpoint import restore_adapter
from colora_jax.nnx._checkpoint import save_adapter
from colora_jax.nnx._layers import CoLoRALinear
from colora_jax.nnx._layers import LoRABankLinear
from colora_jax.nnx._layers import PersonalParam
from colora_jax.nnx._layers import SharedParam
from colora_jax.nnx._layers import UserIds
from colora_jax.nnx._models import Transformer
from colora_jax.nnx._models import TransformerConfig
from colora_jax.nnx._peft import export_peft
from colora_jax.nnx._peft import import_peft
from colora_jax.nnx._wrap import add_users
from colora_jax.nnx._wrap import adapted_layers
from colora_jax.nnx._wrap import apply_colora
from colora_jax.nnx._wrap import apply_lora_bank
from colora_jax.nnx._wrap import colora_users
from colora_jax.nnx._wrap import merge

__all__ = [
    "CoLoRALinear",
    "LoRABankLinear",
    "PersonalParam",
    "SharedParam",
    "Transformer",
    "TransformerConfig",
    "UserIds",
    "add_users",
    "adapted_layers",
    "apply_colora",
    "apply_lora_bank",
    "colora_users",
    "export_peft",
    "import_peft",
    "merge",
    "restore_adapter",
    "save_adapter",
]
