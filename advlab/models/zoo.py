"""The model zoo: one factory per ``model=`` option, named exactly as the option.

Every factory takes an :class:`InputSpec` (what the data decides at run time: ``in_channels``,
``image_size`` (H, W), ``num_classes`` and the per-channel ``mean``/``std`` of the training split,
pixel units in [0, 1]) plus the option's config keys (see the ``*Conf`` schemas in
:mod:`advlab.config`). The config values are trusted: :func:`advlab.validate.check_model` has
checked them (:func:`advlab.models.build_model` calls it). Every model is an ``nn.Sequential``
whose first layer is :class:`~advlab.models.layers.Normalize`; it takes float (N, C, H, W) pixels
in [0, 1] and returns logits (N, spec.num_classes) — never probabilities.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from advlab.errors import ConfigError
from advlab.models.layers import BasicBlock, Normalize

__all__ = [
    "InputSpec",
    "perceptron",
    "course_cnn",
    "lenet5",
    "mnist_cnn",
    "vgg_small",
    "resnet_small",
]


@dataclass(frozen=True)
class InputSpec:
    """What the data decides about a model: input channels, image size (H, W) in pixels, class
    count, and the training split's per-channel mean/std (pixel units in [0, 1])."""

    in_channels: int
    image_size: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # Plain Python numbers whatever the source (NumPy shapes and stats, lists from a file).
        set_field = object.__setattr__  # the dataclass is frozen
        set_field(self, "in_channels", int(self.in_channels))
        set_field(self, "image_size", tuple(int(s) for s in self.image_size))
        set_field(self, "num_classes", int(self.num_classes))
        set_field(self, "mean", tuple(float(m) for m in self.mean))
        set_field(self, "std", tuple(float(s) for s in self.std))


# ------------------------------------------------------------------------------------ helpers
def _image_hw(name: str, spec: InputSpec) -> tuple[int, int]:
    """Check that ``spec`` describes a classification input model ``name`` can take; (H, W)."""
    if spec.in_channels < 1:
        raise ConfigError(f"model={name}: in_channels={spec.in_channels} must be >= 1")
    if spec.num_classes < 2:
        raise ConfigError(f"model={name}: num_classes={spec.num_classes} must be >= 2")
    if len(spec.image_size) != 2 or min(spec.image_size) < 1:
        raise ConfigError(f"model={name}: image_size={spec.image_size} must be (H, W) >= 1")
    if len(spec.mean) != spec.in_channels or len(spec.std) != spec.in_channels:
        raise ConfigError(
            f"model={name}: mean/std have {len(spec.mean)}/{len(spec.std)} values for "
            f"{spec.in_channels} input channel(s)"
        )
    return spec.image_size[0], spec.image_size[1]


def _pooled(
    name: str, spec: InputSpec, hw: tuple[int, int], *, crop: int, why: str
) -> tuple[int, int]:
    """(H, W) after 'valid' convolutions that crop ``crop`` pixels, then a 2x2 max-pool; a
    ConfigError saying ``why`` the image is too small when nothing is left."""
    h, w = (hw[0] - crop) // 2, (hw[1] - crop) // 2
    if min(h, w) < 1:
        raise ConfigError(f"model={name}: image_size={spec.image_size} is too small ({why})")
    return h, w


# ---------------------------------------------------------------------------------- factories
def perceptron(spec: InputSpec, *, hidden: int = 50, dropout: float = 0.0) -> nn.Module:
    """The course's first network: flatten -> Linear(C*H*W, hidden) -> sigmoid -> Linear(hidden, C).

    ``dropout`` (probability, default 0) sits before the output layer.
    """
    h, w = _image_hw("perceptron", spec)
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(spec.mean, spec.std),
            flatten=nn.Flatten(),
            fc1=nn.Linear(spec.in_channels * h * w, hidden),
            sigmoid=nn.Sigmoid(),
            dropout=nn.Dropout(float(dropout)),
            fc2=nn.Linear(hidden, spec.num_classes),
        )
    )


def course_cnn(
    spec: InputSpec,
    *,
    dropout: float = 0.0,
    filters: Sequence[int] = (3, 6, 12),
) -> nn.Module:
    """The course's CNN: for each of ``filters`` a 3x3 conv ('same' padding, stride 1) + ReLU +
    2x2 max-pool, then flatten -> dropout (``dropout``, default 0) -> Linear(., C).

    48x48 greyscale with filters (3, 6, 12): 48 -> 24 -> 12 -> 6, so 12*6*6 = 432 features.
    """
    h, w = _image_hw("course_cnn", spec)
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(spec.mean, spec.std))
    prev = spec.in_channels
    for i, f in enumerate(filters, start=1):
        layers[f"conv{i}"] = nn.Conv2d(prev, f, kernel_size=3, stride=1, padding=1)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        prev = f
        h, w = _pooled("course_cnn", spec, (h, w), crop=0, why=f"{len(filters)} 2x2 poolings")
    layers["flatten"] = nn.Flatten()
    layers["dropout"] = nn.Dropout(float(dropout))
    layers["fc"] = nn.Linear(prev * h * w, spec.num_classes)
    return nn.Sequential(layers)


def lenet5(spec: InputSpec, *, dropout: float = 0.0) -> nn.Module:
    """LeNet-5 as in the course's Keras version (valid padding):
    conv 6@5x5 tanh -> maxpool 2 -> conv 16@5x5 tanh -> maxpool 2 -> flatten -> 120 tanh ->
    84 tanh -> dropout (``dropout``, default 0) -> C.
    """
    h, w = _image_hw("lenet5", spec)
    for _ in range(2):  # a 5x5 'valid' conv (crops 4 pixels), then a 2x2 pool
        h, w = _pooled(
            "lenet5", spec, (h, w), crop=4, why="needs at least 16x16 for two 5x5 convs + pools"
        )
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(spec.mean, spec.std),
            conv1=nn.Conv2d(spec.in_channels, 6, kernel_size=5),
            tanh1=nn.Tanh(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 16, kernel_size=5),
            tanh2=nn.Tanh(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * h * w, 120),
            tanh3=nn.Tanh(),
            fc2=nn.Linear(120, 84),
            tanh4=nn.Tanh(),
            dropout=nn.Dropout(float(dropout)),
            fc3=nn.Linear(84, spec.num_classes),
        )
    )


def mnist_cnn(spec: InputSpec, *, dropout: float = 0.5, conv_dropout: float = 0.25) -> nn.Module:
    """The course's Keras MNIST CNN: conv 32@3x3 ReLU -> conv 64@3x3 ReLU -> maxpool 2 ->
    dropout (``conv_dropout``) -> flatten -> 128 ReLU -> dropout (``dropout``) -> C.
    """
    # Two 3x3 'valid' convs (crop 4 pixels), then a 2x2 pool.
    h, w = _pooled(
        "mnist_cnn", spec, _image_hw("mnist_cnn", spec), crop=4, why="needs at least 6x6"
    )
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(spec.mean, spec.std),
            conv1=nn.Conv2d(spec.in_channels, 32, kernel_size=3),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(32, 64, kernel_size=3),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            conv_dropout=nn.Dropout(float(conv_dropout)),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64 * h * w, 128),
            relu3=nn.ReLU(),
            dropout=nn.Dropout(float(dropout)),
            fc2=nn.Linear(128, spec.num_classes),
        )
    )


def vgg_small(
    spec: InputSpec,
    *,
    widths: Sequence[int] = (32, 64, 128),
    convs_per_stage: int = 2,
    batch_norm: bool = True,
    hidden: int = 256,
    dropout: float = 0.0,
) -> nn.Module:
    """VGG-style network: per entry of ``widths`` a stage of ``convs_per_stage`` 3x3 'same' convs
    (+ batch norm when ``batch_norm``) with ReLU, then a 2x2 max-pool; then flatten ->
    dropout -> Linear(., hidden) -> ReLU -> dropout -> Linear(hidden, C).
    """
    h, w = _image_hw("vgg_small", spec)
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(spec.mean, spec.std))
    prev = spec.in_channels
    for s, width in enumerate(widths, start=1):
        for c in range(1, convs_per_stage + 1):
            # A conv followed by batch norm needs no bias: BN's shift replaces it.
            layers[f"conv{s}_{c}"] = nn.Conv2d(
                prev, width, kernel_size=3, padding=1, bias=not batch_norm
            )
            if batch_norm:
                layers[f"bn{s}_{c}"] = nn.BatchNorm2d(width)
            layers[f"relu{s}_{c}"] = nn.ReLU()
            prev = width
        layers[f"pool{s}"] = nn.MaxPool2d(2)
        h, w = _pooled("vgg_small", spec, (h, w), crop=0, why=f"{len(widths)} 2x2 poolings")
    layers["flatten"] = nn.Flatten()
    layers["dropout1"] = nn.Dropout(float(dropout))
    layers["fc1"] = nn.Linear(prev * h * w, hidden)
    layers["relu_fc"] = nn.ReLU()
    layers["dropout2"] = nn.Dropout(float(dropout))
    layers["fc2"] = nn.Linear(hidden, spec.num_classes)
    return nn.Sequential(layers)


def resnet_small(
    spec: InputSpec,
    *,
    blocks_per_stage: int = 3,
    width: int = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """A CIFAR-style ResNet (He et al. 2016): 3x3 conv stem with ``width`` channels, three stages
    of ``blocks_per_stage`` basic blocks with ``width``, 2*``width``, 4*``width`` channels
    (stride 2 at the start of stages 2 and 3), global average pooling, dropout, Linear(., C).
    ``blocks_per_stage=3`` is ResNet-20 (0.27 M parameters at width 16).
    """
    h, w = _image_hw("resnet_small", spec)
    if min(h, w) < 4:
        raise ConfigError(
            f"model=resnet_small: image_size={spec.image_size} is too small "
            "(needs at least 4x4 for two stride-2 stages)"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(spec.mean, spec.std))
    layers["conv1"] = nn.Conv2d(spec.in_channels, width, kernel_size=3, padding=1, bias=False)
    layers["bn1"] = nn.BatchNorm2d(width)
    layers["relu1"] = nn.ReLU()
    prev = width
    for stage, mult in enumerate((1, 2, 4), start=1):
        out = width * mult
        blocks = [
            BasicBlock(prev if b == 0 else out, out, stride=2 if (b == 0 and stage > 1) else 1)
            for b in range(blocks_per_stage)
        ]
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
        prev = out
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["dropout"] = nn.Dropout(float(dropout))
    layers["fc"] = nn.Linear(prev, spec.num_classes)
    model = nn.Sequential(layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            # He init, as in the ResNet paper (PyTorch's default is tuned for other nets).
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
