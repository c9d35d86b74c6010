"""The engine: Modules with hand-written forward and backward passes, losses, init."""
from .grad_mode import is_grad_enabled, no_grad
from .module import IncompatibleKeys, Module, Parameter, RemovableHandle, Sequential
from .random import get_rng, manual_seed
