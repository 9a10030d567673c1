"""TeaCache for Qwen-Image and Qwen-Image-Edit: skip transformer steps whose input barely changed.

Import-free of ComfyUI: needs only torch (and numpy for the fit). The decision follows TeaCache
(arXiv 2411.19108): the relative L1 change of block 0's timestep-modulated input on the noisy
image tokens, rescaled (a fitted polynomial, or the identity when uncalibrated) and accumulated;
below the threshold a step reuses the cached residual of the block stack, otherwise it computes
and resets. :func:`apply_teacache` installs it on a clone of a ComfyUI ``ModelPatcher``.
"""

from .config import CACHE_DEVICES, TeaCacheConfig
from .fit import FitResult, fit_polynomial, fit_records
from .hooks import SUPPORTED, BlockPatch, apply_teacache, check_qwen_image
from .profile import build_profile, load_profile, save_profile
from .records import read_records
from .rescale import UNCALIBRATED, Rescale
from .run import TeaCacheRun
from .signal import modulated_input, rel_l1

__all__ = [
    "CACHE_DEVICES",
    "SUPPORTED",
    "UNCALIBRATED",
    "BlockPatch",
    "FitResult",
    "Rescale",
    "TeaCacheConfig",
    "TeaCacheRun",
    "apply_teacache",
    "build_profile",
    "check_qwen_image",
    "fit_polynomial",
    "fit_records",
    "load_profile",
    "modulated_input",
    "read_records",
    "rel_l1",
    "save_profile",
]
