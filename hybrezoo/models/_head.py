"""The classifier-head API every zoo model shares with timm's models (one implementation for all).

No ``from __future__ import annotations`` here: ``forward``'s annotations must be real types, because
torch.fx copies them into traced graphs, which TorchScript then compiles (a string annotation there is
an unknown type)."""
from typing import Optional

import torch
from timm.layers import create_classifier, get_device_dtype
from torch import nn

__all__ = ["ClassifierHeadMixin"]


class ClassifierHeadMixin:
    """``forward_head``, ``reset_classifier``, ``get_classifier`` and gradient checkpointing for a model
    that defines ``forward_features`` and sets ``num_features``, ``num_classes``, ``drop_rate`` and
    ``grad_checkpointing``; :meth:`_init_head` builds the pooling and the classifier."""

    def _init_head(self, num_classes: int, global_pool: str, device: Optional[torch.device] = None,
                   dtype: Optional[torch.dtype] = None) -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool,
                                                      device=device, dtype=dtype)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()  # "catavgmax" doubles it

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        # the new head joins the model where it is (device, dtype, train/eval), as timm's models do
        self._init_head(num_classes, self.global_pool.pool_type if global_pool is None else global_pool,
                        **get_device_dtype(self))
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
