"""se_kernels: fused Squeeze-and-Excitation kernels for PyTorch.

Public names only; see README.md and DESIGN.md for the maths and the kernel design.
"""

from .adapters import UnsupportedSE
from .autograd import SEFunction
from .batchnorm_se import SEBatchNormFunction, squeeze_excite_batchnorm
from .backends import BackendUnavailableError, available_backends, describe_backends
from .convert import ConversionSummary, convert_model, revert_model
from .eca import ECAFunction, efficient_channel_attention
from .functional import squeeze_excite
from .gates import FoldSummary, GateStats, fold_static_gates, gate_stats
from .modules import EfficientChannelAttention, SqueezeExcite
from .reference import squeeze_excite_reference

__all__ = [
    "BackendUnavailableError",
    "ConversionSummary",
    "ECAFunction",
    "EfficientChannelAttention",
    "FoldSummary",
    "GateStats",
    "SEBatchNormFunction",
    "SEFunction",
    "SqueezeExcite",
    "UnsupportedSE",
    "available_backends",
    "convert_model",
    "describe_backends",
    "efficient_channel_attention",
    "fold_static_gates",
    "gate_stats",
    "revert_model",
    "squeeze_excite",
    "squeeze_excite_batchnorm",
    "squeeze_excite_reference",
]
__version__ = "0.1.0"
