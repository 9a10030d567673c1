"""comfyui-quadtree-tile: exact tiled VAE, TeaCache for Qwen-Image and a Qwen2.5-VL encoder.

ComfyUI imports this folder as a package under a name derived from its path, so everything
inside uses relative imports; the core packages (``tiled_vae``, ``teacache``, ``qwen_clip``)
import no ``comfy.*`` and the ComfyUI layer lives in ``nodes``.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
