"""Sharing trained models: ``pu-nnunet export-model`` wraps nnU-Net's own model zip and adds a
model card that tells a receiver what to install and what the model was trained and validated on."""
