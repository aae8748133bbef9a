"""Raw item IDs -> rows of a catalog-sized embedding table (row 0: padding and unknown IDs).

Used when the catalog is small enough for one row per item (hashing is for catalogs that
do not fit). The sorted ID list is a persistent buffer, so a saved state dict carries it;
loading resizes the buffer to the saved one.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ItemVocab(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("ids", torch.zeros(0, dtype=torch.long))

    def set(self, item_ids: torch.Tensor) -> None:
        """Sorted unique IDs; row r + 1 holds ids[r]."""
        self.ids = torch.unique(torch.as_tensor(item_ids).long()).to(self.ids.device)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """(...,) raw int64 IDs -> (...,) rows in [0, len]; 0 for IDs not in the vocabulary."""
        if self.ids.numel() == 0:
            return torch.zeros_like(raw, dtype=torch.long)
        idx = torch.searchsorted(self.ids, raw.long().contiguous()).clamp(max=self.ids.numel() - 1)
        return torch.where(self.ids[idx] == raw, idx + 1, torch.zeros_like(idx))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "ids"
        if key in state_dict:
            self.ids = torch.empty_like(state_dict[key], device=self.ids.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
