"""GAN families, one module each, behind the `Task` protocol of base.py: image_gan (z -> image)
cyclegan (unpaired image -> image) and srgan (super-resolution). The `task` config group picks one by `_target_`."""
