"""A tiny transformer encoder for sequence classification: the cls_tiny example.

Two pre-norm encoder blocks whose attention never looks at padded keys, then a mean over the
real tokens only (``attention_mask``), then a linear head to 2 classes. Because neither the
attention nor the pooling can see a padded position, the logits do not change when padding is
added or when the padded token ids change. No dropout, so eval is deterministic; about 90k
parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TASK = {"name": "cls_tiny", "input_schema": {"vocab_size": 256, "max_seq_len": 64}}

VOCAB_SIZE = 256
MAX_SEQ_LEN = 64
NUM_CLASSES = 2
D_MODEL = 64
N_HEADS = 4
N_LAYERS = 2


class EncoderBlock(nn.Module):
    """Bidirectional self-attention over real keys, then a 2x MLP; pre-norm, residual."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        # A query may always see itself, so an all-padding row yields numbers, not NaN.
        eye = torch.eye(t, dtype=torch.bool, device=x.device)
        allowed = key_mask[:, None, None, :] | eye
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyEncoderClassifier(nn.Module):
    """Embeddings, encoder blocks, masked mean pooling, classification head."""

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        max_seq_len: int = MAX_SEQ_LEN,
        num_classes: int = NUM_CLASSES,
        d_model: int = D_MODEL,
        n_heads: int = N_HEADS,
        n_layers: int = N_LAYERS,
    ) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_seq_len, d_model)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, t = input_ids.shape
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len {self.max_seq_len}")
        if attention_mask is None:
            attention_mask = torch.ones(b, t, dtype=torch.long, device=input_ids.device)
        key_mask = attention_mask.bool()
        positions = torch.arange(t, device=input_ids.device)
        x = self.tok_emb(input_ids) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x, key_mask)
        x = self.ln_f(x)
        weights = key_mask.to(x.dtype).unsqueeze(-1)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


def build_model(task_spec: object = None) -> TinyEncoderClassifier:
    """The example model; ``task_spec`` is accepted for the loader's convention and unused."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(0)
        return TinyEncoderClassifier().eval()
