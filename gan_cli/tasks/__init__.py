"""GAN families, one module each, behind the `Task` protocol of base.py: image_gan (z -> image)
and cyclegan (unpaired image -> image). The `task` config group picks one by `_target_`."""
