"""PyTorch closure architectures, training scripts and trained artifacts with their manifests.

Architectures are built by factory functions (``mlbridge_models.cnn:build_cnn``) that a
``state_dict`` manifest names as its ``entry_point``; the weights are loaded with
``weights_only=True``.
"""
