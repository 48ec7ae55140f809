"""Pre-activation Wide ResNet (CIFAR style), the larger backbone of SNL and SENet.

WRN-d-k has (d - 4) / 6 pre-activation blocks per group and widths 16k, 32k, 64k after a 16-channel
stem conv (no BN or ReLU on the stem). In a block that changes shape, the first BN-ReLU acts on the
block input at the previous resolution and feeds both the conv and the 1x1 shortcut.

Two ReLU conventions exist in the literature and both are registered: the standard network ends
with BN-ReLU before pooling (SENet's count: 1,392,640 ReLUs at 32x32 for WRN-22-8); SNL's code
defines that ReLU but never applies it (1,359,872).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.fx
from timm.models import checkpoint_seq, register_model
from torch import nn

from ..nn import PIReLU
from ..registry import zoo_cfgs, zoo_entry
from ._builder import build_zoo_model, check_image_batch
from ._head import ClassifierHeadMixin
from .pi_resnet import with_finalize

__all__ = ["PIWideResNet", "PreActBlock"]

torch.fx.wrap("check_image_batch")  # its shape checks are a leaf call in torch.fx graphs


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-(dropout)-conv, plus the identity or a 1x1 conv of the activated input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, in_reduction: int, drop_rate: float = 0.0,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.act1 = PIReLU(inplace=False, reduction=in_reduction)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.act2 = PIReLU(inplace=True, reduction=in_reduction * stride)
        self.drop_rate = drop_rate
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False, **dd)
        self.shortcut: Optional[nn.Module] = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.act2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0.0:
            out = nn.functional.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class PIWideResNet(ClassifierHeadMixin, nn.Module):
    """WRN-depth-k for 32x32 / 64x64 inputs; ``final_relu=False`` gives SNL's ReLU convention."""

    def __init__(
            self,
            depth: int = 22,
            widen_factor: int = 8,
            final_relu: bool = True,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            block_drop_rate: float = 0.0,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)  # timm's factory arguments: build in place (e.g. on "meta")
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        blocks_per_group = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, 16, 3, stride=1, padding=1, bias=False, **dd)
        self.feature_info = [dict(num_chs=16, reduction=1, module="conv1")]
        in_chs, reduction = 16, 1
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(blocks_per_group):
                s = stride if j == 0 else 1
                blocks.append(PreActBlock(in_chs, width, s, reduction, block_drop_rate, **dd))
                reduction *= s
                in_chs = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            if i < len(widths) - 1:
                self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"layer{i + 1}"))
        self.reduction = reduction
        self.bn_final = nn.BatchNorm2d(in_chs, **dd)
        self.act_final: nn.Module = PIReLU(inplace=True, reduction=reduction) if final_relu else nn.Identity()
        self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module="act_final"))

        self.num_features = in_chs
        self._init_head(num_classes, global_pool, **dd)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        return dict(stem=r"^conv1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_image_batch(x, self.in_chans, self.reduction)
        x = self.conv1(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
        return self.act_final(self.bn_final(x))



def _create_pi_wide_resnet(variant: str, pretrained: bool = False,
                           finalize: Optional[Callable[[nn.Module], nn.Module]] = None, **kwargs) -> PIWideResNet:
    # Four feature levels (stem conv, three groups), not timm's default five.
    return build_zoo_model(with_finalize(PIWideResNet, finalize), variant, pretrained,
                           feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs)


def _entry(final_relu: bool = True, **kwargs):
    convention = ("final BN-ReLU kept (standard WRN; SENet's count)" if final_relu
                  else "final ReLU not applied (SNL's wide_resnet_22_8)")
    return zoo_entry("baseline", "wrn", convention, reduction=4, **kwargs)


default_cfgs = zoo_cfgs({
    "pi_wrn22_8.c100": _entry(
        published_relus=1_392_640, published_source="derived from the architecture",
        description="Pre-activation WRN-22-8 with the final BN-ReLU."),
    "pi_wrn22_8.tin": _entry(
        published_relus=5_570_560, published_source="derived from the architecture",
        description="Pre-activation WRN-22-8 with the final BN-ReLU."),
    "pi_wrn22_8_nofinal.c100": _entry(
        final_relu=False, published_relus=1_359_872, published_source="derived; SNL's wide_resnet_22_8 (code)",
        description="Pre-activation WRN-22-8 without the final ReLU, SNL's starting point."),
    "pi_wrn22_8_nofinal.tin": _entry(
        final_relu=False, published_relus=5_439_488, published_source="derived from the architecture",
        description="Pre-activation WRN-22-8 without the final ReLU, SNL's starting point."),
})


@register_model
def pi_wrn22_8(pretrained: bool = False, **kwargs) -> PIWideResNet:
    """WRN-22-8, pre-activation, final BN-ReLU kept: 1,392,640 ReLUs at 32x32."""
    return _create_pi_wide_resnet("pi_wrn22_8", pretrained, **dict(dict(depth=22, widen_factor=8), **kwargs))


@register_model
def pi_wrn22_8_nofinal(pretrained: bool = False, **kwargs) -> PIWideResNet:
    """WRN-22-8 without the final ReLU (SNL's convention): 1,359,872 ReLUs at 32x32."""
    model_args = dict(depth=22, widen_factor=8, final_relu=False)
    return _create_pi_wide_resnet("pi_wrn22_8_nofinal", pretrained, **dict(model_args, **kwargs))
