"""transformers classes around lingrid's LM stack (grid/models/stack.py): the `lingrid` export format.

`python -m grid export` copies this file into the model folder, whose config.json names it in
`auto_map`, so that

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

builds our own stack (lingrid must be importable: installed, or on PYTHONPATH) and loads the trained
weights. Each mixer runs its `auto` backend: fla's fused kernels on a GPU where they run, our plain
PyTorch reference elsewhere (CPU included); `from_pretrained(..., lingrid_backend="reference")` (or
"fused") picks one for every layer. There is no KV/state cache: `generate` recomputes the
whole sequence at every step (correct, slow for long outputs).

Padding: rows with zeros in `attention_mask` are run one at a time on their unpadded tokens (a
recurrent mixer cannot skip pad tokens), so left- and right-padded batches give each row the
logits it would get alone; padded positions get zero logits.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from grid.models import ModelConfig, build_model

MODEL_TYPE = "lingrid"


class LingridConfig(PreTrainedConfig):
    """`lingrid_model`: our ModelConfig as JSON (grid.models.config); `lingrid_backend`: auto | fused |
    reference for every mixer; the rest mirrors the model for tools."""

    model_type = MODEL_TYPE

    def __init__(self, lingrid_model: dict[str, Any] | None = None, lingrid_backend: str = "auto", **kwargs):
        self.lingrid_model = dict(lingrid_model or {})
        self.lingrid_backend = lingrid_backend
        m = self.lingrid_model
        kwargs.setdefault("vocab_size", m.get("vocab_size"))
        kwargs.setdefault("hidden_size", m.get("d_model"))
        kwargs.setdefault("num_hidden_layers", m.get("n_layers"))
        kwargs.setdefault("max_position_embeddings", m.get("context"))
        kwargs.setdefault("tie_word_embeddings", bool(m.get("tie_embeddings", False)))
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)


class LingridForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = LingridConfig
    base_model_prefix = "lm"
    _tied_weights_keys = {"lm.lm_head.weight": "lm.embed.weight"}  # used only when tie_word_embeddings

    def __init__(self, config: LingridConfig):
        super().__init__(config)

        cfg = ModelConfig.model_validate({**config.lingrid_model, "backend": config.lingrid_backend})
        self.lm = build_model(cfg)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no cache: generate() feeds the whole sequence each step

    def _init_weights(self, module) -> None:
        # Weights come from the checkpoint (or from LM's own init when built from a config). Non-persistent
        # buffers (attention's RoPE table) are not in the file, and from_pretrained materialises the model
        # from the meta device: recompute them.
        reset = getattr(module, "reset_buffers", None)
        if callable(reset):
            reset()

    def get_input_embeddings(self):
        return self.lm.embed

    def get_output_embeddings(self):
        return self.lm.lm_head

    def _logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None or bool(attention_mask.all()):
            return self.lm(input_ids)
        out = None
        for i in range(input_ids.shape[0]):
            keep = attention_mask[i].bool()
            row = self.lm(input_ids[i:i + 1, keep])
            if out is None:
                out = row.new_zeros(*input_ids.shape, row.shape[-1])
            out[i, keep] = row[0]
        return out

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> CausalLMOutput:
        logits = self._logits(input_ids, attention_mask)
        loss = None
        if labels is not None:  # transformers' convention: labels are the inputs, shifted here
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}


__all__ = ["MODEL_TYPE", "LingridConfig", "LingridForCausalLM"]
