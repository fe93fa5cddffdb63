"""The byte-level LSTM language model. Importing this file has no side effects."""

import torch
import torch.nn as nn


class CharLM(nn.Module):
    """Embedding -> multi-layer LSTM -> linear over the 256 byte values."""

    def __init__(
        self, vocab_size: int = 256, embed: int = 64, hidden: int = 256, layers: int = 2, dropout: float = 0.1
    ):
        super().__init__()
        self.init_args = dict(
            vocab_size=vocab_size, embed=embed, hidden=hidden, layers=layers, dropout=dropout
        )
        self.embed = nn.Embedding(vocab_size, embed)
        # batch_first: (B, T, C) everywhere; cuDNN's fused LSTM kernel on GPU
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, idx: torch.Tensor, state=None):
        """(B, T) byte ids -> (B, T, vocab) logits. Returns (logits, state) when state is given."""
        out, new_state = self.lstm(self.embed(idx), state)  # (B, T, hidden)
        logits = self.head(self.drop(out))
        return logits if state is None else (logits, new_state)

    @torch.no_grad()
    def generate(self, prompt: bytes, length: int, temperature: float = 0.8, generator=None) -> bytes:
        """Sample `length` bytes after `prompt`, carrying the LSTM state one byte at a time."""
        device = self.head.weight.device
        was_training = self.training
        self.eval()
        idx = torch.tensor([list(prompt)], device=device)  # (1, T0)
        h = None
        out = []
        for _ in range(length):
            out_seq, h = self.lstm(self.embed(idx), h)  # h carries the context; feed only the new byte
            logits = self.head(out_seq[:, -1]).float() / temperature  # (1, vocab)
            idx = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (1, 1)
            out.append(int(idx))
        self.train(was_training)
        return prompt + bytes(out)
