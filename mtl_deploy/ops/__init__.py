"""Fused C++ kernels for few-shot adaptation and multi-head layers, with their
pure-PyTorch reference twins and the switch between them."""

from .fused import inner_loop, maml_step, multihead_linear
from .loader import backend
from .reference import inner_loop_reference, maml_step_reference, multihead_linear_reference

__all__ = ["backend", "inner_loop", "inner_loop_reference", "maml_step", "maml_step_reference", "multihead_linear",
           "multihead_linear_reference"]
