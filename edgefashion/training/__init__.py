"""Training half of edgefashion: data, model zoo, training loop, export (needs the ``train`` extra: torch, timm)."""
