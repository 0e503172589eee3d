"""Generator / discriminator families. Each file is one family; the config picks it by `_target_`.

The contract the training loop relies on:
  G(z, labels=None) -> images (B, C, H, W) in [-1, 1], with `G.z_dim` telling the latent size
    and `G.num_classes` the classes it is conditioned on (0 = unconditional);
  D(images, labels=None) -> raw logits (B,): no Sigmoid, the losses work on logits.
Labels are int64 (B,); unconditional models ignore them, conditional ones require them.
Every family takes `num_classes` and `conditional` (the config passes dataset.num_classes and
model.conditional); discriminators also take `spectral_norm`.
"""
