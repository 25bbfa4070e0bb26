"""The modality gap measured during training, on a fixed sample of held-out pairs."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from babymm.data import DEFAULT_MAX_CAPTION_TOKENS
from babymm.models import VisionLanguageModel
from eval.gap_metrics import gap_summary
from eval.multimodal import embed_images, embed_texts, heldout_pairs


class GapProbe:
    """Logs `eval/gap/*` (centroid distance, separability, cosines, uniformity, alignment) so a
    run shows the gap opening or closing. Images and captions are read once; each call embeds
    them with the current weights and puts the model back in the mode it was in. Captions are
    tokenized as the run's training batches are: `max_tokens` is its --max_caption_tokens
    (train.py: `cfg.data.max_caption_tokens`), so the probe reads the embeddings training trains."""

    def __init__(self, model: VisionLanguageModel, tokenizer: PreTrainedTokenizerBase, jsonl: Path,
                 num_pairs: int, batch_size: int = 64, max_tokens: int = DEFAULT_MAX_CAPTION_TOKENS):
        items, self.images = heldout_pairs(model, Path(jsonl), num_pairs)
        self.captions = [it["caption"] for it in items]
        self.tokenizer, self.batch_size, self.max_tokens = tokenizer, batch_size, max_tokens

    def __call__(self, model: VisionLanguageModel) -> dict[str, float]:
        training = model.training
        try:
            image = embed_images(model, self.images, self.batch_size)
            text = embed_texts(model, self.tokenizer, self.captions, self.batch_size, max_tokens=self.max_tokens)
        finally:
            model.train(training)
        return {f"eval/gap/{k}": round(float(v), 5) for k, v in gap_summary(image, text).items()}
