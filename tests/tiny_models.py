"""The tiny world-model sizes that the unit tests build (a few milliseconds an update on one thread)."""

from cmil.config_sections import WorldModelConfig

TINY = WorldModelConfig(deter=16, hidden=16, stoch=4, ensemble=3, cnn_depth=4)
