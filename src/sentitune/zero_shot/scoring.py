"""Scoring with a causal LM: batched log-likelihoods of label words after each prompt, and their margin.

For a prompt such as ``Review: {text}\\nSentiment:`` the score of a review is the log-likelihood
margin ``log p(positive words | prompt) - log p(negative words | prompt)`` (each label word may be
several tokens: their log-probabilities are summed). With K > 2 label words (one per class) the score
is the row of the K log-likelihoods, normalised over the K words (their log-softmax).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp
from tqdm.auto import tqdm

from sentitune.errors import ModelError
from sentitune.models.registry import load_tokenizer, resolve
from sentitune.zero_shot.prompts import PromptEncoder

MIN_SHARED_PREFIX = 16  # below this, reusing a KV cache saves less than copying it costs


def _common_prefix(sequences: Sequence[list[int]], limit: int) -> int:
    """Length of the longest prefix all sequences share, at most `limit`."""
    if not sequences:
        return 0
    first = sequences[0]
    n = min(limit, len(first))
    for seq in sequences[1:]:
        i = 0
        while i < n and seq[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


class CausalScorer:
    """Batched log-likelihoods of continuations under a causal LM, with left padding.

    Position ids are computed from the attention mask, so a left-padded review gets the same
    positions (and the same scores, to float tolerance) as the review alone.
    """

    def __init__(self, model: Any, pad_id: int, batch_size: int = 8, progress: bool = False) -> None:
        self.model = model
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.progress = progress
        self.tokens = 0
        self.seconds = 0.0

    @torch.inference_mode()
    def _last_logprobs(self, sequences: list[list[int]], keep: int, desc: str) -> list[torch.Tensor]:
        """log-softmax of the last `keep` positions of each sequence (only those go through the LM head).

        A prefix shared by every sequence (few-shot demonstrations) is run once and its KV cache
        reused by every batch, so k demonstrations cost attention, not k times the forward pass.
        """
        out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        shared = _common_prefix(sequences, max(0, min(map(len, sequences), default=0) - keep))
        prefix_cache = None
        start = time.perf_counter()
        if shared >= MIN_SHARED_PREFIX:
            prefix_cache = self.model(input_ids=torch.tensor([sequences[0][:shared]]), use_cache=True).past_key_values
            self.tokens += shared
        else:
            shared = 0
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=desc, disable=not self.progress, leave=False):
            width = max(len(sequences[i]) for i in batch) - shared
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for row, i in enumerate(batch):
                rest = sequences[i][shared:]
                ids[row, width - len(rest):] = torch.tensor(rest)
                mask[row, shared + width - len(rest):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
            kwargs: dict[str, Any] = {"use_cache": False}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                kwargs = {"use_cache": True, "past_key_values": cache}
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                                **kwargs).logits
            logprobs = torch.log_softmax(logits[:, -keep:].float(), dim=-1)
            for row, i in enumerate(batch):
                out[i] = logprobs[row]
            self.tokens += int(mask[:, shared:].sum())
        self.seconds += time.perf_counter() - start
        return out

    def word_logprobs(self, prompts: list[list[int]], words: list[list[int]], desc: str = "scoring") -> np.ndarray:
        """[n_prompts, n_words]: the summed log-probability of each word's tokens after each prompt.

        Single-token words share one pass that keeps only the last position; a multi-token word gets
        its own pass over prompt + word[:-1], reading the positions that predict each word token.
        """
        result = np.zeros((len(prompts), len(words)))
        single = [j for j, w in enumerate(words) if len(w) == 1]
        if single:
            last = self._last_logprobs(prompts, 1, desc)
            for i, lp in enumerate(last):
                for j in single:
                    result[i, j] = float(lp[0, words[j][0]])
        for j, word in enumerate(words):
            if len(word) == 1:
                continue
            rows = self._last_logprobs([p + word[:-1] for p in prompts], len(word), f"{desc} (word {j})")
            target = torch.tensor(word)
            for i, lp in enumerate(rows):
                result[i, j] = float(lp.gather(-1, target[:, None]).sum())
        return result

    def logprobs(self, encoder: PromptEncoder, texts: Sequence[str], desc: str = "scoring",
                 targets: Sequence[str | None] | None = None) -> np.ndarray:
        """[n_texts, K]: each label word's log-likelihood after each text's prompt (its target filled in)."""
        targets = [None] * len(texts) if targets is None else targets
        prompts = [encoder.encode(t, g) for t, g in zip(texts, targets, strict=True)]
        return self.word_logprobs(prompts, encoder.label_ids, desc)

    def scores(self, encoder: PromptEncoder, texts: Sequence[str], desc: str = "scoring",
               targets: Sequence[str | None] | None = None) -> np.ndarray:
        """Two label words: the margin log p(positive) - log p(negative), shape [n]. K > 2: the K
        log-likelihoods normalised over the K words, shape [n, K] (their softmax: the class probabilities)."""
        lp = self.logprobs(encoder, texts, desc, targets)
        if lp.shape[1] == 2:
            return lp[:, 1] - lp[:, 0]
        return lp - logsumexp(lp, axis=1, keepdims=True)

    def margins(self, encoder: PromptEncoder, texts: Sequence[str], desc: str = "scoring",
                targets: Sequence[str | None] | None = None) -> np.ndarray:
        """log p(positive words) - log p(negative words) for each text (two label words)."""
        if len(encoder.label_ids) != 2:
            raise ModelError(f"template {encoder.template.name!r}: a margin needs two label words (use scores)")
        return self.scores(encoder, texts, desc, targets)


def load_causal_lm(spec: str) -> tuple[Any, Any]:
    """The causal LM and its tokenizer (pad = EOS when there is no pad token, as for GPT-2)."""
    # transformers loads only when a model does, as elsewhere in sentitune, so importing this package
    # (sentitune.inference does, for every `predict`) does not pay for it.
    from transformers import AutoModelForCausalLM

    resolved = resolve(spec)
    if not resolved.is_decoder:
        raise ModelError(f"model {spec!r} ({resolved.model_type}) is not a causal LM; zero-shot needs a decoder")
    tokenizer = load_tokenizer(resolved.source)
    model = AutoModelForCausalLM.from_pretrained(resolved.source, dtype=torch.float32)
    model.eval()
    return model, tokenizer
