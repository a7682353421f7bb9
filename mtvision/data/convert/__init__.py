"""Dataset converters, one module per source format; ``tools/convert_dataset.py`` runs them."""
