"""The video path: Wan 2.1 / Wan 2.2 / Qwen-Image VAEs, tile-major over the whole clip when the pack
owns the VAE's loop (:mod:`.tile_major`), chunk by chunk when someone else does (:mod:`.chunk_calls`)."""
