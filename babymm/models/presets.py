"""Size presets (`--preset`): defaults for the architecture flags of every model type.

tiny is for tests, small is the CPU default, base is the BabyLM baselines' scale (12 layers,
768 wide, vocabulary 32,768). A preset only sets defaults: a config file or a flag overrides
any of its values, and a value that does not apply to the chosen type is not used.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192, max_positions=256,
                 vision_width=64, vision_layers=1, vision_heads=2, embed_dim=64,
                 num_latents=8, resampler_layers=1, cross_attn_every=1, vocab_size=2048),
    "small": dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384, max_positions=256,
                  vision_width=128, vision_layers=2, vision_heads=4, embed_dim=128,
                  num_latents=16, resampler_layers=2, cross_attn_every=2, vocab_size=2048),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_positions=1024,
                 vision_width=768, vision_layers=12, vision_heads=12, embed_dim=512,
                 num_latents=64, resampler_layers=6, cross_attn_every=4, vocab_size=32_768),
}
DEFAULT_PRESET = "small"
