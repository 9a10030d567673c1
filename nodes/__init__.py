"""The ComfyUI layer: V1 node classes, registered under ids prefixed ``QuadtreeTile_``.

Each node module exports ``NODES``, a tuple of ``(node_id, display_name, class)``; this module
merges them into the two mappings ComfyUI reads.
"""

from . import qwen_clip_nodes, teacache_nodes, vae_nodes

_MODULES = (vae_nodes, teacache_nodes, qwen_clip_nodes)

NODE_CLASS_MAPPINGS = {node_id: cls for m in _MODULES for node_id, _, cls in m.NODES}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for m in _MODULES for node_id, name, _ in m.NODES}
