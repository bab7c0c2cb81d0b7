"""The Sound-of-Pixels image network: a dilated ResNet-18 over a source's frames, pooled into its k-dim query.

Each frame goes through a ResNet-18 trunk (torchvision's layout, its classifier removed) whose last stage trades
its stride for dilation, so the feature map keeps 1/16 of the frame size (14 x 14 for 224-pixel frames); a 3 x 3
convolution maps the 512 channels to k, and one max over frames, rows and columns gives the source's k logits.
A sigmoid of them is the query vector q in (0, 1)^k that mixes the U-Net's k masks (the separator's
``query_type: frames``). The network trains jointly with the separator; ImageNet weights for the trunk load
from a local torchvision ``resnet18`` state-dict file when the user has one.

Reference:
    H. Zhao, C. Gan, A. Rouditchenko, C. Vondrick, J. McDermott, A. Torralba, "The Sound of Pixels",
    ECCV 2018; released code github.com/hangzhaomit/Sound-of-Pixels: ``models/vision_net.py``
    (``ResnetDilated``: torchvision resnet18 without avgpool/fc, ``dilate_scale=16`` un-strides layer4 and
    dilates its 3 x 3 convolutions by 2, ``fc`` = Conv2d(512, fc_dim, 3, padding=1), ``forward_multiframe``
    pools over time and space), ``scripts/train_MUSIC.sh`` (``--arch_frame resnet18dilated --img_pool maxpool
    --num_channels 32 --num_frames 3``), ``arguments.py`` (``--img_activation sigmoid``) and
    ``dataset/base.py`` (frames normalised with the ImageNet mean and standard deviation).
"""

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from typeguard import typechecked

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "POOL_TYPES", "TORCHVISION_WIDTH", "SOPImageNet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOL_TYPES = ("max", "avg")
DILATE_SCALES = (8, 16, 32)
TORCHVISION_WIDTH = 64  # channels of torchvision's resnet18 stem; its stages have 64, 128, 256, 512


def _resnet18_trunk(width: int) -> torch.nn.Sequential:
    """ResNet-18 without average pooling and classifier, with torchvision's module names and initialisation.

    ``width`` scales every stage (torchvision: 64); built from torchvision's own ``BasicBlock`` so that, at width
    64, a torchvision ``resnet18`` state dict (less ``fc.*``) loads key for key.
    """
    from torchvision.models.resnet import BasicBlock

    def stage(inplanes: int, planes: int, stride: int) -> torch.nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = torch.nn.Sequential(
                torch.nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                torch.nn.BatchNorm2d(planes),
            )
        return torch.nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))

    w = width
    trunk = torch.nn.Sequential(
        OrderedDict(
            conv1=torch.nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False),
            bn1=torch.nn.BatchNorm2d(w),
            relu=torch.nn.ReLU(inplace=True),
            maxpool=torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            layer1=stage(w, w, 1),
            layer2=stage(w, 2 * w, 2),
            layer3=stage(2 * w, 4 * w, 2),
            layer4=stage(4 * w, 8 * w, 2),
        )
    )
    for m in trunk.modules():  # torchvision's ResNet initialisation (zero_init_residual off)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return trunk


def _trade_stride_for_dilation(stage: torch.nn.Module, dilation: int) -> None:
    """Make a ResNet stage keep its input resolution, widening its 3 x 3 convolutions instead.

    The stage's strided convolutions get stride 1 (a strided 3 x 3 one dilation ``dilation // 2``, as it sees the
    previous resolution); every other 3 x 3 convolution gets dilation ``dilation``. Padding follows dilation, so
    a 3 x 3 map size is unchanged. Reference: Sound-of-Pixels ``ResnetDilated._nostride_dilate``.
    """
    for m in stage.modules():
        if not isinstance(m, torch.nn.Conv2d):
            continue
        if m.stride == (2, 2):
            m.stride = (1, 1)
            d = dilation // 2
        else:
            d = dilation
        if m.kernel_size == (3, 3):
            m.dilation, m.padding = (d, d), (d, d)


class SOPImageNet(torch.nn.Module):
    """Frames -> k query logits: dilated ResNet-18, a convolution to k channels, pooling over time and space.

    Args:
        num_channels: k, the number of U-Net masks the query mixes (SOP ``--num_channels 32``).
        width: Stem width of the ResNet-18; its stages have ``width * (1, 2, 4, 8)`` channels. 64 is
            torchvision's (and the only width ImageNet weights fit); smaller widths make tiny CPU models.
        image_size: Side of the square frames the network sees; frames of another size are resized to it
            (bilinear, antialiased) before the trunk.
        dilate_scale: Output stride of the trunk: 16 (SOP: layer4 dilated), 8 (layer3 and layer4 dilated) or 32
            (plain ResNet-18).
        fc_kernel: Kernel size of the convolution to k channels (SOP: 3, same padding).
        pool: ``max`` (SOP ``--img_pool maxpool``) or ``avg`` over frames, rows and columns.
        pretrained: Optional local file with a torchvision ``resnet18`` state dict (e.g. ImageNet weights saved
            with ``torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), path)``); its ``fc.*``
            classifier is ignored. Needs ``width: 64``. None: random initialisation (logged). The file is read
            whenever the model is built, so also when inference rebuilds it from ``config.yaml`` (the trained
            weights then replace it): a model meant to travel can train with ``pretrained: null`` and ESPnet's
            ``--init_param <file>::separator.image_net.trunk:fc`` instead, which loads the same tensors once.
    """

    @typechecked
    def __init__(
        self,
        num_channels: int = 32,
        width: int = 64,
        image_size: int = 224,
        dilate_scale: int = 16,
        fc_kernel: int = 3,
        pool: str = "max",
        pretrained: Optional[str] = None,
    ):
        super().__init__()
        if num_channels < 1 or width < 1 or image_size < 1:
            raise ValueError("SOPImageNet: num_channels, width and image_size must be positive")
        if dilate_scale not in DILATE_SCALES:
            raise ValueError(f"SOPImageNet: dilate_scale must be one of {DILATE_SCALES}, got {dilate_scale}")
        if fc_kernel < 1 or fc_kernel % 2 == 0:
            raise ValueError(f"SOPImageNet: fc_kernel must be odd and positive, got {fc_kernel}")
        if pool not in POOL_TYPES:
            raise ValueError(f"SOPImageNet: pool must be one of {POOL_TYPES}, got {pool!r}")
        if pretrained is not None and width != TORCHVISION_WIDTH:
            raise ValueError(
                f"SOPImageNet: pretrained {pretrained}: torchvision's resnet18 weights have width "
                f"{TORCHVISION_WIDTH} and cannot apply to width {width} (set width: {TORCHVISION_WIDTH}, or "
                "pretrained: null for a random initialisation)"
            )
        self.image_size = image_size
        self.dilate_scale = dilate_scale
        self.pool = pool
        self.trunk = _resnet18_trunk(width)
        if dilate_scale <= 16:
            _trade_stride_for_dilation(self.trunk.layer4, 2 if dilate_scale == 16 else 4)
        if dilate_scale == 8:
            _trade_stride_for_dilation(self.trunk.layer3, 2)
        self.fc = torch.nn.Conv2d(8 * width, num_channels, kernel_size=fc_kernel, padding=fc_kernel // 2)
        # Not in the state dict: constants, and a trained model stays loadable if they are ever refined.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if pretrained is None:
            logging.info("SOP image network: random init (no ImageNet weights)")
        else:
            self.load_torchvision_weights(pretrained)
            logging.info("SOP image network: ImageNet weights from %s", pretrained)

    def load_torchvision_weights(self, path: str) -> None:
        """Load a torchvision ``resnet18`` state dict (``fc.*`` ignored) into the trunk.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: one line naming the file: not a state dict, or not resnet18's layout (missing,
                unexpected or differently shaped tensors).
        """
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: ImageNet weights file not found (SOP image network, pretrained)")
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle, zip or weights_only refusals all mean: not a plain state dict
            raise ValueError(f"{file}: not a readable torch state dict ({err.__class__.__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{file}: expected a torchvision resnet18 state dict (name -> tensor)")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.trunk.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            what = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
            what += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
            raise ValueError(f"{file}: not torchvision's resnet18 layout: {', '.join(what)} tensors")
        for key, value in state.items():
            if value.shape != own[key].shape:
                raise ValueError(
                    f"{file}: not torchvision's resnet18 layout: {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(own[key].shape)}"
                )
        self.trunk.load_state_dict(state, strict=True)

    def feature_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame k-channel maps before pooling.

        Args:
            frames: ``(B, Q, H, W, 3)`` RGB pixel values in [0, 255] (uint8 or float), Q frames per example.

        Returns:
            ``(B, Q, k, H', W')``, ``H' = W'`` about ``image_size / dilate_scale`` (14 for 224 at stride 16).
        """
        if frames.dim() != 5 or frames.shape[-1] != 3:
            raise ValueError(f"SOPImageNet expects frames (B, Q, H, W, 3), got {tuple(frames.shape)}")
        batch, num = frames.shape[:2]
        x = frames.reshape(batch * num, *frames.shape[2:]).permute(0, 3, 1, 2).to(self.mean.dtype)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        x = (x / 255.0 - self.mean) / self.std
        x = self.fc(self.trunk(x))
        return x.reshape(batch, num, *x.shape[1:])

    def pooled_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid query ``(B, k)``: the maps pooled over frames, rows and columns."""
        maps = self.feature_maps(frames)
        if self.pool == "max":
            return maps.amax(dim=(1, 3, 4))
        return maps.mean(dim=(1, 3, 4))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Query vector q in (0, 1)^k of each example.

        Args:
            frames: ``(B, Q, H, W, 3)`` RGB pixel values in [0, 255].

        Returns:
            ``(B, k)``: sigmoid of :meth:`pooled_logits` (SOP ``--img_activation sigmoid``).
        """
        return torch.sigmoid(self.pooled_logits(frames))
