"""The model and its math: configs, planted data, counter-based draws, block minimizations, linear algebra, metrics."""
