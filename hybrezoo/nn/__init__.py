"""Layers for private inference: the maskable ReLU every zoo model uses, Circa's stochastic ReLU, and
DeepReShape's ReLU-reuse."""
from .relu import PIReLU, kept_relus, relu_layers
from .relu_reuse import ReLUReuse
from .stochastic_relu import StochasticReLU, fault_probability, truncated_sign_test

__all__ = ["PIReLU", "ReLUReuse", "StochasticReLU", "fault_probability", "kept_relus", "relu_layers",
           "truncated_sign_test"]
