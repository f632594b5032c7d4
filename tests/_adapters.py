"""Test helper shared by the NNX test modules (not a test module itself)."""

import jax

import colora_jax.nnx as cn


def randomize_adapters(model, key):
    """Standard-normal values in every adapter factor of ``model`` (U = 0 at initialization hides bugs)."""
    for _, layer in cn.adapted_layers(model):
        for name in ("shared_u", "shared_v", "personal", "lora_a", "lora_b"):
            if hasattr(layer, name):
                key, sub = jax.random.split(key)
                var = getattr(layer, name)
                var.set_value(jax.random.normal(sub, var[...].shape, var[...].dtype))
    return model
