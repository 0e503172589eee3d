"""Generator / discriminator families. Each file is one family; the config picks it by `_target_`.

The contract the training loop relies on:
  G(z) -> images (B, C, H, W) in [-1, 1], with `G.z_dim` telling the latent size;
  D(images) -> raw logits (B,): no Sigmoid, the losses work on logits.
"""
