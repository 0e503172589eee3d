"""Swappable pieces a task builds from config groups: losses, regularizers, augmentation,
diversity terms, EMA copies, learning-rate schedules, perceptual features."""
