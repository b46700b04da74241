"""A tiny GPT-style decoder language model: the lm_tiny example.

Two pre-norm transformer blocks with causal self-attention through
``torch.nn.functional.scaled_dot_product_attention``, learned positions, no dropout (so eval is
deterministic), about 140k parameters. ``forward(input_ids, attention_mask=None)`` returns logits
[B,T,V]. Each row is computed independently of the others, and position ``t`` only sees
positions ``<= t``; a padded key (mask 0) is never attended to by any other position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TASK = {"name": "lm_tiny", "input_schema": {"vocab_size": 256, "max_seq_len": 64}}

VOCAB_SIZE = 256
MAX_SEQ_LEN = 64
D_MODEL = 64
N_HEADS = 4
N_LAYERS = 2


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; an attention mask also hides padded keys."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        if key_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # Causal AND (real key OR the query itself): every row keeps at least one key, so
            # a padded query never produces NaN, and real queries never see padded keys.
            eye = torch.eye(t, dtype=torch.bool, device=x.device)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            allowed = causal & (key_mask[:, None, None, :] | eye)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention then a 4x MLP, both residual."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_mask)
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Decoder-only LM: token + learned position embeddings, blocks, final norm, LM head."""

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        max_seq_len: int = MAX_SEQ_LEN,
        d_model: int = D_MODEL,
        n_heads: int = N_HEADS,
        n_layers: int = N_LAYERS,
    ) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len {self.max_seq_len}")
        positions = torch.arange(t, device=input_ids.device)
        x = self.tok_emb(input_ids) + self.pos_emb(positions)
        key_mask = None if attention_mask is None else attention_mask.bool()
        for block in self.blocks:
            x = block(x, key_mask)
        return self.lm_head(self.ln_f(x))


def build_model(task_spec: object = None) -> TinyGPT:
    """The example model; ``task_spec`` is accepted for the loader's convention and unused."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(0)
        return TinyGPT().eval()
