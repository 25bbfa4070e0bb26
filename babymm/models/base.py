"""What every multimodal model type shares: the text decoder, contrastive heads, save/load.

A model type (GIT, later Flamingo, CoCa) differs only in how image tokens reach the decoder,
i.e. in `caption_logits`. The text decoder is a plain `LlamaForCausalLM`, saved at the run's
root with `save_pretrained`, so that `AutoModelForCausalLM.from_pretrained(run_dir)` loads it
for text-only benchmarks; the vision side is saved beside it in `multimodal.safetensors`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from babymm.vision import VisionConfig, build_vision_encoder

MULTIMODAL_CONFIG = "babymm_config.json"
MULTIMODAL_WEIGHTS = "multimodal.safetensors"
MAX_LOGIT_SCALE = 100.0


@dataclass
class MultimodalConfig:
    model_type: str = "git"
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 256
    bos_token_id: int = 2
    eos_token_id: int = 3
    pad_token_id: int = 0
    embed_dim: int = 128
    temperature: float = 0.07
    learn_temperature: bool = True
    vision: VisionConfig = field(default_factory=VisionConfig)

    @classmethod
    def from_dict(cls, d: dict) -> MultimodalConfig:
        d = dict(d)
        d["vision"] = VisionConfig(**d.get("vision", {}))
        return cls(**d)

    def text_config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_positions, tie_word_embeddings=True,
            bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the real (unmasked) positions. logits [B, T, V]."""
    targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


class MultimodalModel(nn.Module):
    """Decoder + vision encoder + contrastive heads. Subclasses define how images enter."""

    def __init__(self, config: MultimodalConfig, decoder: PreTrainedModel | None = None):
        super().__init__()
        self.config = config
        self.decoder = decoder if decoder is not None else LlamaForCausalLM(config.text_config())
        self.vision = build_vision_encoder(config.vision)
        self.image_head = nn.Linear(config.vision.width, config.embed_dim, bias=False)
        self.text_head = nn.Linear(config.hidden_size, config.embed_dim, bias=False)
        # log of the logit scale, open_clip style; a buffer when the temperature is fixed
        init = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init)

    # -- the part each model type defines ------------------------------------------------
    def caption_logits(self, image_tokens: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] for the text positions, conditioned on image tokens [B, P, W]."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def text_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask).logits

    def embed_images(self, images: torch.Tensor, image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised image embeddings [B, E] from mean-pooled vision tokens."""
        if image_tokens is None:
            image_tokens = self.vision(images)
        return F.normalize(self.image_head(image_tokens.mean(dim=1)), dim=-1)

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings [B, E]: the decoder's state at the last real token
        (EOS), read with no image in context (CLIP's EOT token, CoCa's unimodal text)."""
        hidden = self.decoder.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1  # [B]
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, H]
        return F.normalize(self.text_head(pooled), dim=-1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                text_input_ids: torch.Tensor | None = None,
                text_attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One training step's forward: a caption batch and, optionally, a text-only batch.

        Everything goes through this one call so that data-parallel wrappers see every use
        of the parameters. Returns the LM losses and both embeddings (the contrastive loss is
        computed outside, where features can be gathered across processes).
        """
        image_tokens = self.vision(images)  # [B, P, W]
        logits = self.caption_logits(image_tokens, input_ids, attention_mask)
        out = {
            "caption_loss": lm_loss(logits, input_ids, attention_mask),
            "image_embeds": self.embed_images(images, image_tokens),
            "text_embeds": self.embed_texts(input_ids, attention_mask),
        }
        if text_input_ids is not None:
            text_logits = self.text_logits(text_input_ids, text_attention_mask)
            out["text_loss"] = lm_loss(text_logits, text_input_ids, text_attention_mask)
        return out

    # -- persistence --------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        self.decoder.save_pretrained(out_dir)  # config.json + model.safetensors (llama)
        rest = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith("decoder.")}
        save_file(rest, str(out_dir / MULTIMODAL_WEIGHTS))
        (out_dir / MULTIMODAL_CONFIG).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")


def load_multimodal(path: str | Path, model_types: dict[str, type[MultimodalModel]]) -> MultimodalModel:
    path = Path(path)
    cfg_path = path / MULTIMODAL_CONFIG
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} not found: {path} is not a saved babymm model")
    config = MultimodalConfig.from_dict(json.loads(cfg_path.read_text()))
    decoder = AutoModelForCausalLM.from_pretrained(path)
    model = model_types[config.model_type](config, decoder=decoder)
    missing, unexpected = model.load_state_dict(load_file(str(path / MULTIMODAL_WEIGHTS)), strict=False)
    missing = [k for k in missing if not k.startswith("decoder.")]
    if missing or unexpected:
        raise ValueError(f"{path / MULTIMODAL_WEIGHTS}: missing {missing}, unexpected {unexpected}")
    return model
