"""se_kernels: fused Squeeze-and-Excitation kernels for PyTorch.

Public names only; see README.md and DESIGN.md for the maths and the kernel design.
"""

from .autograd import SEFunction
from .backends import BackendUnavailableError, available_backends
from .functional import squeeze_excite
from .modules import SqueezeExcite
from .reference import squeeze_excite_reference

__all__ = [
    "BackendUnavailableError",
    "SEFunction",
    "SqueezeExcite",
    "available_backends",
    "squeeze_excite",
    "squeeze_excite_reference",
]
__version__ = "0.1.0"
