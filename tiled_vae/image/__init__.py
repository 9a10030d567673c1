"""The 2D path: SD1.x / SDXL / SD3 / Flux encoders and decoders run level by level over a tile plan,
with GroupNorm statistics pooled across tiles (:mod:`.calls` is its entry point)."""
