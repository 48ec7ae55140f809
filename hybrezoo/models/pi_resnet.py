"""PI-ResNet: the CIFAR / Tiny ImageNet ResNet family shared by DeepReDuce, DeepReShape, SNL and SENet.

One builder covers them all. A BasicBlock ResNet with a 3x3 stem and no max-pool, whose shape is
set by the quantities the PI papers vary:

- base width ``m`` and stage factors ``(alpha, beta, gamma)``: stage widths
  ``[m, m*alpha, m*alpha*beta, m*alpha*beta*gamma]`` (ResNet18 is ``m=64; (2, 2, 2)``, DeepReShape's
  HybReNets change them so that ReLUs sit where they matter);
- stage depths ``(phi1, .., phi4)``;
- ``channel_mult``, DeepReDuce's channel scaling alpha (all widths times it);
- ``stem_stride`` 1, or 2 for DeepReDuce's resolution scaling rho = 0.5 (the stem conv strides, as in
  the DeepReDuce code, rather than the image being resized);
- ``stem_relu`` on or off (SNL and DeepReDuce drop it);
- per stage a ReLU mode: ``"all"``, ``"thin"`` (one ReLU per block, ``thin_keep`` says which) or
  ``"cull"`` (none).

Every nonlinearity is a :class:`~hybrezoo.nn.PIReLU`; removed ones are ``nn.Identity``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx
from timm.models import checkpoint_seq, register_model
from torch import nn

from ..nn import PIReLU
from ..registry import zoo_cfgs, zoo_entry
from ._builder import build_zoo_model, check_image_batch
from ._head import ClassifierHeadMixin

__all__ = ["PIResNet", "BasicBlock", "RELU_MODES"]

torch.fx.wrap("check_image_batch")  # its shape checks are a leaf call in torch.fx graphs

RELU_MODES = ("all", "thin", "cull")


def _act(kept: bool, reduction: int) -> nn.Module:
    return PIReLU(inplace=True, reduction=reduction) if kept else nn.Identity()


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, add the shortcut, ReLU; either ReLU may be removed."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int, relu1: bool, relu2: bool, reduction: int,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(out_chs, **dd)
        self.act1 = _act(relu1, reduction)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd), nn.BatchNorm2d(out_chs, **dd))
        self.act2 = _act(relu2, reduction)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


def _block_relus(mode: str, thin_keep: str) -> tuple[bool, bool]:
    if mode == "all":
        return True, True
    if mode == "cull":
        return False, False
    return thin_keep == "first", thin_keep == "second"


class PIResNet(ClassifierHeadMixin, nn.Module):
    """BasicBlock ResNet for 32x32 / 64x64 inputs with per-stage ReLU control (see module docstring)."""

    def __init__(
            self,
            depths: Sequence[int] = (2, 2, 2, 2),
            base_width: int = 64,
            stage_factors: Sequence[float] = (2, 2, 2),
            channel_mult: float = 1.0,
            stem_stride: int = 1,
            stem_relu: bool = True,
            stage_relus: Sequence[str] = ("all", "all", "all", "all"),
            thin_keep: str = "first",
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            zero_init_last: bool = True,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)  # timm's factory arguments: build in place (e.g. on "meta")
        depths, stage_factors, stage_relus = tuple(depths), tuple(stage_factors), tuple(stage_relus)
        if len(depths) != 4 or any(int(d) < 1 for d in depths):
            raise ValueError(f"depths must be four stage depths >= 1, got {depths}")
        if len(stage_factors) != 3 or any(f <= 0 for f in stage_factors):
            raise ValueError(f"stage_factors must be three positive factors (alpha, beta, gamma), got {stage_factors}")
        if len(stage_relus) != 4 or any(m not in RELU_MODES for m in stage_relus):
            raise ValueError(f"stage_relus must be four of {RELU_MODES}, got {stage_relus}")
        if thin_keep not in ("first", "second"):
            raise ValueError(f"thin_keep must be 'first' or 'second', got {thin_keep!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2 (rho = 1 or 0.5), got {stem_stride}")
        if channel_mult <= 0:
            raise ValueError(f"channel_mult must be positive, got {channel_mult}")

        scale = [1.0, stage_factors[0], stage_factors[0] * stage_factors[1],
                 stage_factors[0] * stage_factors[1] * stage_factors[2]]
        widths = [int(round(base_width * s * channel_mult)) for s in scale]
        if min(widths) < 1:
            raise ValueError(f"stage widths {widths} must all be >= 1: raise base_width or channel_mult")

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.widths = widths
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=stem_stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(widths[0], **dd)
        self.act1 = _act(stem_relu, stem_stride)
        self.feature_info = [dict(num_chs=widths[0], reduction=stem_stride, module="act1")]

        in_chs, reduction = widths[0], stem_stride
        for i, (depth, width, mode) in enumerate(zip(depths, widths, stage_relus)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            relu1, relu2 = _block_relus(mode, thin_keep)
            blocks = []
            for j in range(int(depth)):
                blocks.append(BasicBlock(in_chs, width, stride if j == 0 else 1, relu1, relu2, reduction, **dd))
                in_chs = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"layer{i + 1}"))
        self.reduction = reduction

        self.num_features = widths[-1]
        self._init_head(num_classes, global_pool, **dd)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_image_batch(x, self.in_chans, self.reduction)
        x = self.act1(self.bn1(self.conv1(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
        return x



def with_finalize(model_cls: Callable[..., nn.Module],
                  finalize: Optional[Callable[[nn.Module], nn.Module]]) -> Callable[..., nn.Module]:
    """``model_cls``, or a constructor that applies ``finalize`` to each new model: timm then loads the
    weights into, and builds feature extractors (``features_only``) from, the finished network (Circa's
    conversion), not the one it was made from."""
    if finalize is None:
        return model_cls

    def build(**kwargs: Any) -> nn.Module:
        return finalize(model_cls(**kwargs))

    return build


def _create_pi_resnet(variant: str, pretrained: bool = False,
                      finalize: Optional[Callable[[nn.Module], nn.Module]] = None, **kwargs) -> PIResNet:
    return build_zoo_model(with_finalize(PIResNet, finalize), variant, pretrained, **kwargs)


def _entry(stem_relu: bool = True, **kwargs):
    convention = "stem ReLU kept" if stem_relu else "stem ReLU removed (SNL's resnet18_in)"
    return zoo_entry("baseline", "resnet", convention, **kwargs)


default_cfgs = zoo_cfgs({
    "pi_resnet18.c100": _entry(
        published_relus=557_056, published_source="derived from the architecture",
        description="ResNet18, CIFAR variant (3x3 stride-1 stem, no max-pool), all ReLUs."),
    "pi_resnet18.tin": _entry(
        published_relus=2_228_224, published_source="derived from the architecture",
        description="ResNet18, CIFAR variant (3x3 stride-1 stem, no max-pool), all ReLUs."),
    "pi_resnet18_nostem.c100": _entry(
        stem_relu=False, published_relus=491_520,
        published_source="derived; SNL's resnet18_in (code)",
        description="ResNet18 without the stem ReLU, SNL's starting point (SENet keeps it)."),
    "pi_resnet18_nostem.tin": _entry(
        stem_relu=False, published_relus=1_966_080, published_source="derived from the architecture",
        description="ResNet18 without the stem ReLU, SNL's starting point (SENet keeps it)."),
})


@register_model
def pi_resnet18(pretrained: bool = False, **kwargs) -> PIResNet:
    """ResNet18 (m=64; 2, 2, 2; depths 2, 2, 2, 2), stem ReLU kept: 557,056 ReLUs at 32x32."""
    return _create_pi_resnet("pi_resnet18", pretrained, **kwargs)


@register_model
def pi_resnet18_nostem(pretrained: bool = False, **kwargs) -> PIResNet:
    """ResNet18 without the stem ReLU (SNL's convention): 491,520 ReLUs at 32x32."""
    model_args = dict(stem_relu=False)
    return _create_pi_resnet("pi_resnet18_nostem", pretrained, **dict(model_args, **kwargs))
