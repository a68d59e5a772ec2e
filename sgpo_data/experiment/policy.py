"""The experiment's policy: a small decoder-only transformer (pre-norm, rotary positions, tied embeddings) on
the task's characters, trained from scratch, and batched sampling with a key/value cache.

Rotary positions make "the line above" and "the k-th operand" the same relative offset at every step of a
chain, so what the policy learns for one step serves the others (with learned absolute positions, a 2-layer
model learned the first step of the chain task and stayed at chance on the later ones for 3000 steps).

`TinyGPT(input_ids=..., attention_mask=...)` returns an object with `.logits`, the calling convention of the
offline trainer's `token_logprobs`. The attention mask is accepted and not needed: padding sits only at the
right of a sequence, after every token that is scored, and a causal model never looks ahead.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, rotary: tuple, cache: tuple | None = None, pos: int = 0) -> torch.Tensor:
        """`cache` = (keys, values) buffers of shape (B, heads, T_max, d_head): this call's keys and values are
        written at `pos`.., and attention covers everything up to them."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, *rotary), _rotate(k, *rotary)
        if cache is None:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values = cache
            keys[:, :, pos : pos + t], values[:, :, pos : pos + t] = k, v
            k, v = keys[:, :, : pos + t], values[:, :, : pos + t]
            att = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)  # t > 1 only for the prompt (pos 0)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, layers: int, heads: int, max_len: int, rotary: bool = True):
        super().__init__()
        self.max_len, self.rotary = max_len, rotary
        self.embed, self.position = nn.Embedding(vocab_size, d_model), nn.Embedding(max_len, d_model)
        half = d_model // heads // 2
        frequencies = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32) / half))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), frequencies)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.blocks = nn.ModuleList(_Block(d_model, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        # Weights at std 1/sqrt(d): the usual 0.02 leaves a model this narrow on a long plateau before it learns
        # modular addition (no progress in 1500 steps, against about 400 at 1/sqrt(d)).
        std = d_model ** -0.5
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # residual branches scaled down with depth (GPT-2)
            nn.init.normal_(block.proj.weight, std=std / math.sqrt(2 * layers))

    def hidden(self, ids: torch.Tensor, pos: int = 0, caches: list | None = None) -> torch.Tensor:
        x = self.embed(ids) + self.position(torch.arange(pos, pos + ids.shape[1], device=ids.device))
        if self.rotary:
            rotary = (self.cos[pos : pos + ids.shape[1]], self.sin[pos : pos + ids.shape[1]])
        else:  # no rotation
            rotary = (torch.ones_like(self.cos[:1]), torch.zeros_like(self.sin[:1]))
        for i, block in enumerate(self.blocks):
            x = block(x, rotary, caches[i] if caches else None, pos)
        return self.norm(x) @ self.embed.weight.T

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.hidden(input_ids))

    @torch.no_grad()
    def sample(self, prompts: torch.Tensor, max_new: int, temperature: float, end_id: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Responses to `prompts` (B, P), all of one length: (ids, log-probs under logits / temperature), each
        (B, max_new); temperature 0 is greedy (log-probs at temperature 1). Stops early once every row has
        produced `end_id`; what a row produces after its end mark is to be cut off by the caller."""
        b, p = prompts.shape
        if p + max_new > self.max_len:
            raise ValueError(f"prompt {p} + response {max_new} tokens exceed the policy's {self.max_len} positions")
        first = self.blocks[0]
        d_head = first.qkv.in_features // first.heads
        caches = [tuple(torch.empty(b, first.heads, p + max_new, d_head, device=prompts.device,
                                    dtype=first.qkv.weight.dtype) for _ in range(2)) for _ in self.blocks]
        logits = self.hidden(prompts, 0, caches)[:, -1]
        ids, logps = [], []
        done = torch.zeros(b, dtype=torch.bool, device=prompts.device)
        for t in range(max_new):
            scaled = logits.float() / (temperature or 1.0)
            logp_all = torch.log_softmax(scaled, dim=-1)
            if temperature:
                token = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(1)
            else:
                token = scaled.argmax(-1)
            ids.append(token)
            logps.append(logp_all.gather(1, token[:, None]).squeeze(1))
            done |= token == end_id
            if bool(done.all()) or t == max_new - 1:
                break
            logits = self.hidden(token[:, None], p + t, caches)[:, -1]
        return torch.stack(ids, 1), torch.stack(logps, 1)
