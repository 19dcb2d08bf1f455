"""The model zoo: one factory per ``model=`` option, named exactly as the option.

Every factory takes the option's config keys (see the ``*Conf`` schemas in :mod:`advlab.config`)
plus what the data decides at run time: ``in_channels``, ``image_size`` (H, W), ``num_classes`` and
the per-channel ``mean``/``std`` of the training split (pixel units in [0, 1]). Every model is an
``nn.Sequential`` whose first layer is :class:`~advlab.models.layers.Normalize`; it takes float
(N, C, H, W) pixels in [0, 1] and returns logits (N, num_classes) — never probabilities.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from advlab.errors import ConfigError
from advlab.models.layers import BasicBlock, Normalize

__all__ = ["perceptron", "course_cnn", "lenet5", "mnist_cnn", "vgg_small", "resnet_small"]


# ------------------------------------------------------------------------------------ helpers
def _check_common(
    name: str,
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    dropouts: dict[str, float],
) -> tuple[int, int]:
    """Validate the arguments every factory shares; return (H, W)."""
    if in_channels < 1:
        raise ConfigError(f"model={name}: in_channels={in_channels} must be >= 1")
    if num_classes < 2:
        raise ConfigError(f"model={name}: num_classes={num_classes} must be >= 2")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ConfigError(f"model={name}: image_size={tuple(image_size)} must be (H, W) >= 1")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ConfigError(
            f"model={name}: mean/std have {len(mean)}/{len(std)} values for "
            f"{in_channels} input channel(s)"
        )
    for key, value in dropouts.items():
        if not 0.0 <= float(value) < 1.0:
            raise ConfigError(f"model.{key}={value}: must be in [0, 1)")
    return int(image_size[0]), int(image_size[1])


def _too_small(name: str, image_size: Sequence[int], why: str) -> ConfigError:
    return ConfigError(f"model={name}: image_size={tuple(image_size)} is too small ({why})")


def _positive_ints(name: str, key: str, values: Sequence[int]) -> list[int]:
    out = [int(v) for v in values]
    if not out or min(out) < 1:
        raise ConfigError(f"model.{key}={list(values)}: must be a non-empty list of ints >= 1")
    return out


def _check_positive(key: str, value: int) -> int:
    if int(value) < 1:
        raise ConfigError(f"model.{key}={value}: must be >= 1")
    return int(value)


# ---------------------------------------------------------------------------------- factories
def perceptron(
    *,
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    hidden: int = 50,
    dropout: float = 0.0,
) -> nn.Module:
    """The course's first network: flatten -> Linear(C*H*W, hidden) -> sigmoid -> Linear(hidden, C).

    ``dropout`` (probability, default 0) sits before the output layer.
    """
    h, w = _check_common(
        "perceptron", in_channels, image_size, num_classes, mean, std, {"dropout": dropout}
    )
    hidden = _check_positive("hidden", hidden)
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean, std),
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_channels * h * w, hidden),
            sigmoid=nn.Sigmoid(),
            dropout=nn.Dropout(float(dropout)),
            fc2=nn.Linear(hidden, num_classes),
        )
    )


def course_cnn(
    *,
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    dropout: float = 0.0,
    filters: Sequence[int] = (3, 6, 12),
) -> nn.Module:
    """The course's CNN: for each of ``filters`` a 3x3 conv ('same' padding, stride 1) + ReLU +
    2x2 max-pool, then flatten -> dropout (``dropout``, default 0) -> Linear(., C).

    48x48 greyscale with filters (3, 6, 12): 48 -> 24 -> 12 -> 6, so 12*6*6 = 432 features.
    """
    h, w = _check_common(
        "course_cnn", in_channels, image_size, num_classes, mean, std, {"dropout": dropout}
    )
    filters = _positive_ints("course_cnn", "filters", filters)
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(mean, std))
    prev = in_channels
    for i, f in enumerate(filters, start=1):
        layers[f"conv{i}"] = nn.Conv2d(prev, f, kernel_size=3, stride=1, padding=1)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        prev = f
        h, w = h // 2, w // 2
        if min(h, w) < 1:
            raise _too_small("course_cnn", image_size, f"{len(filters)} 2x2 poolings")
    layers["flatten"] = nn.Flatten()
    layers["dropout"] = nn.Dropout(float(dropout))
    layers["fc"] = nn.Linear(prev * h * w, num_classes)
    return nn.Sequential(layers)


def lenet5(
    *,
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    dropout: float = 0.0,
) -> nn.Module:
    """LeNet-5 as in the course's Keras version (valid padding):
    conv 6@5x5 tanh -> maxpool 2 -> conv 16@5x5 tanh -> maxpool 2 -> flatten -> 120 tanh ->
    84 tanh -> dropout (``dropout``, default 0) -> C.
    """
    h, w = _check_common(
        "lenet5", in_channels, image_size, num_classes, mean, std, {"dropout": dropout}
    )
    for _ in range(2):
        h, w = (h - 4) // 2, (w - 4) // 2
        if min(h, w) < 1:
            raise _too_small("lenet5", image_size, "needs at least 16x16 for two 5x5 convs + pools")
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean, std),
            conv1=nn.Conv2d(in_channels, 6, kernel_size=5),
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
            fc3=nn.Linear(84, num_classes),
        )
    )


def mnist_cnn(
    *,
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    dropout: float = 0.5,
    conv_dropout: float = 0.25,
) -> nn.Module:
    """The course's Keras MNIST CNN: conv 32@3x3 ReLU -> conv 64@3x3 ReLU -> maxpool 2 ->
    dropout (``conv_dropout``) -> flatten -> 128 ReLU -> dropout (``dropout``) -> C.
    """
    h, w = _check_common(
        "mnist_cnn",
        in_channels,
        image_size,
        num_classes,
        mean,
        std,
        {"dropout": dropout, "conv_dropout": conv_dropout},
    )
    h, w = (h - 4) // 2, (w - 4) // 2
    if min(h, w) < 1:
        raise _too_small("mnist_cnn", image_size, "needs at least 6x6")
    return nn.Sequential(
        OrderedDict(
            normalize=Normalize(mean, std),
            conv1=nn.Conv2d(in_channels, 32, kernel_size=3),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(32, 64, kernel_size=3),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            conv_dropout=nn.Dropout(float(conv_dropout)),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64 * h * w, 128),
            relu3=nn.ReLU(),
            dropout=nn.Dropout(float(dropout)),
            fc2=nn.Linear(128, num_classes),
        )
    )


def vgg_small(
    *,
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
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
    h, w = _check_common(
        "vgg_small", in_channels, image_size, num_classes, mean, std, {"dropout": dropout}
    )
    widths = _positive_ints("vgg_small", "widths", widths)
    convs_per_stage = _check_positive("convs_per_stage", convs_per_stage)
    hidden = _check_positive("hidden", hidden)
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(mean, std))
    prev = in_channels
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
        h, w = h // 2, w // 2
        if min(h, w) < 1:
            raise _too_small("vgg_small", image_size, f"{len(widths)} 2x2 poolings")
    layers["flatten"] = nn.Flatten()
    layers["dropout1"] = nn.Dropout(float(dropout))
    layers["fc1"] = nn.Linear(prev * h * w, hidden)
    layers["relu_fc"] = nn.ReLU()
    layers["dropout2"] = nn.Dropout(float(dropout))
    layers["fc2"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(layers)


def resnet_small(
    *,
    in_channels: int,
    image_size: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    blocks_per_stage: int = 3,
    width: int = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """A CIFAR-style ResNet (He et al. 2016): 3x3 conv stem with ``width`` channels, three stages
    of ``blocks_per_stage`` basic blocks with ``width``, 2*``width``, 4*``width`` channels
    (stride 2 at the start of stages 2 and 3), global average pooling, dropout, Linear(., C).
    ``blocks_per_stage=3`` is ResNet-20 (0.27 M parameters at width 16).
    """
    h, w = _check_common(
        "resnet_small", in_channels, image_size, num_classes, mean, std, {"dropout": dropout}
    )
    blocks_per_stage = _check_positive("blocks_per_stage", blocks_per_stage)
    width = _check_positive("width", width)
    if min(h, w) < 4:
        raise _too_small("resnet_small", image_size, "needs at least 4x4 for two stride-2 stages")
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(mean, std))
    layers["conv1"] = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False)
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
    layers["fc"] = nn.Linear(prev, num_classes)
    model = nn.Sequential(layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            # He init, as in the ResNet paper (PyTorch's default is tuned for other nets).
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
