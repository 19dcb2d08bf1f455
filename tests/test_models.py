"""The model zoo: shapes, the course's architectures (parameter counts), Normalize, save/load."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from advlab.data.base import DataSplits, ImageSet
from advlab.errors import ConfigError, DataError
from advlab.models import InputSpec, build_model, count_params, layer_table, zoo
from advlab.models.io import load_model, save_model
from advlab.models.layers import Normalize
from tests.conftest import compose_config

OPTIONS = ["perceptron", "course_cnn", "lenet5", "mnist_cnn", "vgg_small", "resnet_small"]
SHAPES = [(1, 48, 48, 2), (3, 32, 32, 10), (1, 28, 28, 10)]  # gender, CIFAR-10, MNIST


def splits(c: int = 1, h: int = 48, w: int = 48, classes: int = 2, n: int = 8) -> DataSplits:
    rng = np.random.default_rng(0)

    def part(k: int) -> ImageSet:
        images = rng.integers(0, 256, (k, c, h, w), dtype=np.uint8)
        return ImageSet(images, rng.integers(0, classes, k).astype(np.int64))

    return DataSplits(
        name="synthetic",
        train=part(n),
        val=part(n),
        test=part(n),
        class_names=[f"c{i}" for i in range(classes)],
        mean=tuple(0.4 + 0.05 * i for i in range(c)),
        std=tuple(0.2 + 0.01 * i for i in range(c)),
    )


def input_spec(c: int, h: int, w: int, classes: int) -> InputSpec:
    return InputSpec(c, (h, w), classes, mean=(0.5,) * c, std=(0.25,) * c)


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_option_builds_from_config_and_returns_logits(compose_cfg, option, shape) -> None:
    c, h, w, classes = shape
    cfg = compose_cfg(f"model={option}")
    data = splits(c, h, w, classes)
    model = build_model(cfg.model, data)
    assert isinstance(model[0], Normalize), "Normalize must be the first layer"
    torch.testing.assert_close(model[0].mean.flatten(), torch.tensor(data.mean))
    torch.testing.assert_close(model[0].std.flatten(), torch.tensor(data.std))
    model.eval()
    out = model(torch.rand(5, c, h, w))
    assert out.shape == (5, classes)
    # logits, not probabilities: rows do not sum to one in general
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))
    assert count_params(model) > 0


@pytest.fixture(scope="module")
def compose_cfg():
    cache: dict[str, object] = {}

    def _compose(*overrides: str):
        key = " ".join(overrides)
        if key not in cache:
            cache[key] = compose_config(list(overrides))
        return cache[key]

    return _compose


def test_course_architectures_have_the_course_parameter_counts() -> None:
    # Hand-computed from the course's definitions (weights + biases).
    # course_cnn on 48x48 greyscale, 2 classes: 3x3 convs 1->3->6->12, pools 48->24->12->6.
    cnn = zoo.course_cnn(input_spec(1, 48, 48, 2))
    assert count_params(cnn) == (9 * 1 * 3 + 3) + (9 * 3 * 6 + 6) + (9 * 6 * 12 + 12) + (
        12 * 6 * 6 * 2 + 2
    )
    convs = [m for m in cnn if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [3, 6, 12]
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in convs)
    assert all(m.stride == (1, 1) for m in convs)
    # perceptron: 2304 -> 50 (sigmoid) -> 2
    perceptron = zoo.perceptron(input_spec(1, 48, 48, 2))
    assert count_params(perceptron) == 48 * 48 * 50 + 50 + 50 * 2 + 2
    assert any(isinstance(m, nn.Sigmoid) for m in perceptron)
    # LeNet-5 (Keras, valid padding) on 28x28: 24 -> 12 -> 8 -> 4
    lenet = zoo.lenet5(input_spec(1, 28, 28, 10))
    expected = (25 * 6 + 6) + (25 * 6 * 16 + 16) + (16 * 4 * 4 * 120 + 120) + (120 * 84 + 84)
    assert count_params(lenet) == expected + 84 * 10 + 10
    # The Keras MNIST CNN example has 1,199,882 parameters.
    assert count_params(zoo.mnist_cnn(input_spec(1, 28, 28, 10))) == 1_199_882
    # ResNet-20 has about 0.27 M parameters.
    resnet20 = zoo.resnet_small(input_spec(3, 32, 32, 10), blocks_per_stage=3, width=16)
    assert 260_000 < count_params(resnet20) < 280_000


@pytest.mark.parametrize(("channels", "expected"), [(1, 61_706), (3, 62_006)])
def test_lenet5_has_the_classic_parameter_count_on_32x32(channels, expected) -> None:
    # LeNet-5 (LeCun et al. 1998) on 32x32 input, 10 classes: conv 6@5x5 -> 28 -> pool 14 ->
    # conv 16@5x5 -> 10 -> pool 5, then 400 -> 120 -> 84 -> 10. The published count is 61,706
    # for greyscale; three input channels add 2 * 6 * 5 * 5 = 300 conv1 weights.
    assert count_params(zoo.lenet5(input_spec(channels, 32, 32, 10))) == expected


def test_vgg_small_options_change_the_architecture() -> None:
    with_bn = zoo.vgg_small(input_spec(3, 32, 32, 10), widths=[8, 16], convs_per_stage=1)
    no_bn = zoo.vgg_small(
        input_spec(3, 32, 32, 10), widths=[8, 16], convs_per_stage=1, batch_norm=False
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn)
    deeper = zoo.vgg_small(input_spec(3, 32, 32, 10), widths=[8, 16], convs_per_stage=3)
    assert sum(isinstance(m, nn.Conv2d) for m in deeper) == 6


@pytest.mark.parametrize("option", OPTIONS)
def test_dropout_is_active_in_train_mode_only(option) -> None:
    torch.manual_seed(0)
    kwargs = {"mnist_cnn": {"conv_dropout": 0.5}}.get(option, {})
    model = getattr(zoo, option)(input_spec(1, 28, 28, 10), dropout=0.5, **kwargs)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.modules())
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_normalize_standardises_per_channel() -> None:
    norm = Normalize([0.1, 0.5, 0.9], [0.2, 0.5, 0.1])
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.5, 0.1]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    assert "mean" in norm.state_dict() and not list(norm.parameters())  # buffers, never trained
    with pytest.raises(ConfigError, match="std"):
        Normalize([0.5], [0.0])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model=course_cnn", "model.dropout=1.0"], "model.dropout"),
        (["model=course_cnn", "model.filters=[]"], "model.filters"),
        (["model=vgg_small", "model.hidden=0"], "model.hidden"),
    ],
)
def test_build_model_checks_the_config_with_validate(compose_cfg, overrides, key) -> None:
    # build_model is a Python-API entry point: it refuses what validate refuses, in one line.
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=") as err:
        build_model(compose_cfg(*overrides).model, splits())
    assert "\n" not in str(err.value)


def test_bad_model_inputs_fail_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="too small"):
        zoo.lenet5(input_spec(1, 8, 8, 2))
    with pytest.raises(ConfigError, match="too small"):
        zoo.course_cnn(input_spec(1, 4, 4, 2))
    with pytest.raises(ConfigError, match="mean/std"):
        zoo.perceptron(InputSpec(3, (8, 8), 2, mean=(0.5,), std=(0.2,)))


def test_layer_table_lists_layers_shapes_and_params() -> None:
    model = zoo.course_cnn(input_spec(1, 48, 48, 2))
    model.train()
    table = layer_table(model, (1, 48, 48))
    assert model.training, "layer_table must restore the train/eval mode"
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "params"]
    conv3 = next(line for line in lines if line.startswith("conv3"))
    assert "Conv2d" in conv3 and "(12, 12, 12)" in conv3 and conv3.endswith("660")
    assert any(line.startswith("fc ") and "(2,)" in line for line in lines)
    assert lines[-1].startswith("total") and "1,724 trainable" in lines[-1]
    resnet = zoo.resnet_small(input_spec(3, 32, 32, 10), blocks_per_stage=1, width=8)
    rtable = layer_table(resnet, (3, 32, 32))
    assert "stage3.0" in rtable and "BasicBlock" in rtable and "(32, 8, 8)" in rtable


@pytest.mark.parametrize("option", ["course_cnn", "vgg_small", "resnet_small"])
def test_save_and_load_give_identical_predictions(compose_cfg, tmp_path: Path, option) -> None:
    cfg = compose_cfg(f"model={option}", "model.dropout=0.3")
    data = splits(3, 32, 32, 10)
    torch.manual_seed(1)
    model = build_model(cfg.model, data)
    # Change batch-norm running statistics too, so buffers are checked as well as weights.
    model.train()
    model(torch.rand(16, 3, 32, 32))
    model.eval()
    spec = {
        "in_channels": data.channels,
        "image_size": data.image_size,
        "num_classes": data.num_classes,
        "mean": data.mean,
        "std": data.std,
        "class_names": data.class_names,
    }
    path = tmp_path / "model" / "model.pt"
    save_model(path, model, cfg.model, spec)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"], "no temp file may remain"
    # The file holds only tensors and plain types.
    torch.load(path, weights_only=True)
    loaded, info = load_model(path)
    assert not loaded.training
    assert info["class_names"] == data.class_names
    assert info["image_size"] == (32, 32) and info["num_classes"] == 10
    assert info["model_cfg"]["dropout"] == 0.3
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)


def test_load_model_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="bad.pt"):
        load_model(bad)
