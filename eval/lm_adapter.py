"""lm-eval adapter: any HF causal LM + fast tokenizer as an lm-eval `TemplateLM`.

lm-eval turns each task into (context, continuation) requests; TemplateLM tokenizes them
(an empty context becomes the BOS token) and this class scores the token lists with the
shared `continuation_logprobs`, the same primitive the multimodal tasks use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lm_eval.api.model import TemplateLM
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from eval.scoring import continuation_logprobs


class BabymmLM(TemplateLM):
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 32,
                 device: str | torch.device = "cpu"):
        super().__init__()
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs BOS and EOS tokens")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._device = torch.device(device)
        self.max_length = int(getattr(model.config, "max_position_embeddings", 1024))

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> BabymmLM:
        return cls(AutoModelForCausalLM.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)), **kwargs)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_token_id  # an empty context is "start of text"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """BOS first unless told otherwise, as lm-eval's `hf` model with `add_bos_token=True`:
        a non-empty context (EWoK's) is then conditioned on BOS too, as the official BabyLM
        pipeline does; lm-eval asks for no BOS where it adds `prefix_token_id` itself."""
        add = True if add_special_tokens is None else add_special_tokens
        return self.tokenizer(string, add_special_tokens=add)["input_ids"]

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        pairs = []
        for _, ctx, cont in requests:
            whole = (list(ctx) + list(cont))[-(self.max_length + 1):]  # keep the end if too long
            pairs.append((whole[: len(whole) - len(cont)] or whole[:1], whole[len(whole) - len(cont):]))
        with torch.no_grad():
            return continuation_logprobs(self._logits, pairs, batch_size=self.batch_size,
                                         pad_id=self.tokenizer.pad_token_id or 0, device=self._device)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-string log-likelihood conditioned on BOS, in windows of the model's length."""
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="rolling loglikelihood"):
            ids = self.tok_encode(req.args[0], add_special_tokens=False)
            pairs, start = [], 0
            while start < len(ids):
                chunk = ids[start: start + self.max_length]
                ctx = [self.prefix_token_id] if start == 0 else ids[start - 1: start]
                pairs.append((ctx, chunk))
                start += len(chunk)
            with torch.no_grad():
                scores = continuation_logprobs(self._logits, pairs, batch_size=self.batch_size,
                                               pad_id=self.tokenizer.pad_token_id or 0, device=self._device)
            out.append(sum(s for s, _ in scores))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError("babymm scores zero-shot tasks by log-likelihood; generation tasks "
                                  "are not supported")
