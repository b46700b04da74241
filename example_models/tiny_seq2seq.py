"""A tiny encoder-decoder transformer: the seq2seq_tiny example (vocab 128, length 32).

One bidirectional encoder block and two decoder blocks (causal self-attention, then
cross-attention to the encoder), written with ``scaled_dot_product_attention``; shared token
embeddings, learned positions, no dropout; about 155k parameters.
``forward(input_ids, attention_mask=None, decoder_input_ids=None)`` returns logits [B,T_dec,V].
Decoder position ``t`` sees decoder inputs ``<= t`` only, and no position sees padded source
tokens. The decoder inputs are the targets shifted right, which the adapter builds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TASK = {
    "name": "seq2seq_tiny",
    "input_schema": {"vocab_size": 128, "max_seq_len": 32, "max_target_len": 32},
}

VOCAB_SIZE = 128
MAX_SEQ_LEN = 32
D_MODEL = 64
N_HEADS = 4


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    b, h, t, e = y.shape
    return y.transpose(1, 2).reshape(b, t, h * e)


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``memory`` with a boolean ``allowed`` mask."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, allowed: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        k, v = self.kv(memory).chunk(2, dim=-1)
        q, k, v = (_heads(z, self.n_heads) for z in (self.q(x), k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=causal)
        return self.proj(_merge(y))


def _mlp(d_model: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model)
    )


class EncoderBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.mlp = _mlp(d_model)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, allowed, causal=False)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = Attention(d_model, n_heads)
        self.cross_attn = Attention(d_model, n_heads)
        self.mlp = _mlp(d_model)

    def forward(
        self, y: torch.Tensor, memory: torch.Tensor, memory_allowed: torch.Tensor
    ) -> torch.Tensor:
        h = self.ln1(y)
        y = y + self.self_attn(h, h, None, causal=True)
        y = y + self.cross_attn(self.ln2(y), memory, memory_allowed, causal=False)
        return y + self.mlp(self.ln3(y))


class TinySeq2Seq(nn.Module):
    """Encoder-decoder with shared embeddings and an untied output head."""

    def __init__(
        self, vocab_size: int = VOCAB_SIZE, max_seq_len: int = MAX_SEQ_LEN, d_model: int = D_MODEL
    ) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.enc_pos = nn.Embedding(max_seq_len, d_model)
        self.dec_pos = nn.Embedding(max_seq_len, d_model)
        self.encoder = EncoderBlock(d_model, N_HEADS)
        self.decoder = nn.ModuleList(DecoderBlock(d_model, N_HEADS) for _ in range(2))
        self.ln_enc, self.ln_dec = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def _embed(self, ids: torch.Tensor, pos: nn.Embedding) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len {self.max_seq_len}")
        return self.tok_emb(ids) + pos(torch.arange(t, device=ids.device))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids are required: pass the targets shifted right")
        b, s = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(b, s, dtype=torch.long, device=input_ids.device)
        keys = attention_mask.bool()[:, None, None, :]
        # Encoder queries may always see themselves so an all-padding row stays finite.
        eye = torch.eye(s, dtype=torch.bool, device=input_ids.device)
        memory = self.ln_enc(self.encoder(self._embed(input_ids, self.enc_pos), keys | eye))
        # Decoder queries see real source tokens only; a source with no real token at all
        # (which would leave the rows empty and give NaN) lets them see every position.
        memory_allowed = keys | ~keys.any(dim=-1, keepdim=True)
        y = self._embed(decoder_input_ids, self.dec_pos)
        for block in self.decoder:
            y = block(y, memory, memory_allowed)
        return self.head(self.ln_dec(y))


def build_model(task_spec: object = None) -> TinySeq2Seq:
    """The example model; ``task_spec`` is accepted for the loader's convention and unused."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(0)
        return TinySeq2Seq().eval()
