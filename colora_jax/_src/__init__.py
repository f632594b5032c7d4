"""colora_jax's implementation, in floors (docs/layout.md): a module imports its own floor or lower ones."""
