"""engine.preprocess: InputSpec round trips, and prepare_batch's shapes, values and augmentation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from engine.datasets import DATASETS
from engine.preprocess import InputSpec, _blur, _crop_flip, prepare_batch

STL10 = InputSpec.for_dataset(DATASETS["stl10"], 96)
MNIST = InputSpec.for_dataset(DATASETS["mnist"], 96)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _images(b: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, size, size), generator=g, dtype=torch.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- InputSpec --------------------------------------------------------------------------------


def test_input_spec_round_trips_through_json():
    spec = InputSpec(image_size=64, channels=3, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_input_spec_for_dataset_takes_channels_and_statistics():
    assert MNIST == InputSpec(96, 1, (0.1307,), (0.3081,))
    assert STL10.channels == 3 and STL10.mean == DATASETS["stl10"].mean


@pytest.mark.parametrize(
    "fields",
    [
        {"image_size": 0, "channels": 1, "mean": (0.5,), "std": (0.5,)},
        {"image_size": 8, "channels": 2, "mean": (0.5, 0.5), "std": (0.5, 0.5)},
        {"image_size": 8, "channels": 3, "mean": (0.5,), "std": (0.5,)},
        {"image_size": 8, "channels": 1, "mean": (0.5,), "std": (0.0,)},
    ],
    ids=["size", "channels", "mean-length", "zero-std"],
)
def test_input_spec_rejects_impossible_values(fields):
    with pytest.raises(ValueError):
        InputSpec(**fields)


# --- prepare_batch: shapes and values ---------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment", [False, True])
def test_output_is_float32_b3ss_on_the_input_device(device, augment):
    for images, spec in ((_images(4, 3, 96), STL10), (_images(4, 1, 28), MNIST)):
        out = prepare_batch(images.to(device), spec, augment=augment, generator=_gen(0))
        assert out.shape == (4, 3, 96, 96) and out.dtype == torch.float32
        assert out.device.type == device and out.is_contiguous()


def test_grey_becomes_three_equal_channels():
    out = prepare_batch(_images(3, 1, 28), MNIST)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_normalisation_maps_pixels_to_standard_scores():
    images = torch.full((2, 3, 96, 96), 200, dtype=torch.uint8)
    images[:, :, :, :48] = 0
    out = prepare_batch(images, STL10)
    for c, (m, s) in enumerate(zip(STL10.mean, STL10.std, strict=True)):
        assert torch.allclose(out[:, c, :, 48:], torch.tensor((200 / 255 - m) / s), atol=1e-5)
        assert torch.allclose(out[:, c, :, :48], torch.tensor(-m / s), atol=1e-5)


def test_mnist_statistics_normalise_real_scale_pixels():
    out = prepare_batch(torch.full((1, 1, 28, 28), 255, dtype=torch.uint8), MNIST)
    assert torch.allclose(out, torch.tensor((1 - 0.1307) / 0.3081), atol=1e-5)


def test_resize_is_bilinear_and_antialiased_only_when_shrinking():
    small, big = _images(2, 1, 28).float(), _images(2, 3, 128).float()
    up = prepare_batch(small.byte(), MNIST)
    want_up = F.interpolate(small, size=(96, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(up[:, :1], (want_up / 255 - 0.1307) / 0.3081, atol=1e-4)
    spec = InputSpec(32, 3, (0.0,) * 3, (1.0,) * 3)
    down = prepare_batch(big.byte(), spec)
    want_down = F.interpolate(big, size=(32, 32), mode="bilinear", antialias=True) / 255
    assert torch.allclose(down, want_down, atol=1e-5)


def test_a_single_image_of_any_size_is_accepted_for_prediction():
    images = torch.randint(0, 256, (1, 1, 50, 37), dtype=torch.uint8)
    assert prepare_batch(images, MNIST).shape == (1, 3, 96, 96)


def test_wrong_dtype_or_channel_count_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        prepare_batch(torch.zeros(1, 1, 28, 28), MNIST)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        prepare_batch(_images(1, 3, 28), MNIST)
    with pytest.raises(ValueError):
        prepare_batch(_images(1, 1, 28)[0], MNIST)


# --- prepare_batch: augmentation --------------------------------------------------------------


def test_without_augment_the_output_is_deterministic():
    images = _images(8, 3, 96)
    assert torch.equal(prepare_batch(images, STL10), prepare_batch(images, STL10))
    assert torch.equal(prepare_batch(images, STL10), prepare_batch(images, STL10, generator=_gen(1)))


def test_same_generator_seed_gives_the_same_augmented_batch():
    images = _images(16, 3, 96)
    a = prepare_batch(images, STL10, augment=True, generator=_gen(7))
    b = prepare_batch(images, STL10, augment=True, generator=_gen(7))
    c = prepare_batch(images, STL10, augment=True, generator=_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_each_sample_draws_its_own_augmentation():
    images = _images(1, 1, 28).expand(32, 1, 28, 28)
    out = prepare_batch(images, MNIST, augment=True, generator=_gen(0))
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) > 24  # 25x25 offsets x 2 flips x blur: repeats are rare


def test_augment_works_for_a_single_image_whatever_it_draws():
    images = _images(1, 1, 28)
    for seed in range(16):  # about half of these draw no blur, half no flip
        assert prepare_batch(images, MNIST, augment=True, generator=_gen(seed)).shape[0] == 1


def test_augment_does_not_modify_the_input():
    images = _images(8, 3, 96)
    before = images.clone()
    prepare_batch(images, STL10, augment=True, generator=_gen(0))
    assert torch.equal(images, before)


def test_horizontal_flip_flips_about_half_the_samples():
    images = torch.zeros(200, 1, 96, 96, dtype=torch.uint8)
    images[:, :, :, :40] = 255  # bright left part
    out = prepare_batch(images, InputSpec(96, 1, (0.0,), (1.0,)), augment=True, generator=_gen(0))
    flipped = out[:, 0, :, 48:].mean((1, 2)) > out[:, 0, :, :48].mean((1, 2))
    assert 70 <= int(flipped.sum()) <= 130


def test_crop_and_flip_equal_reflect_padding_then_cropping():
    x = _images(6, 3, 32).float()
    pad = 32 // 8
    shift = torch.tensor([[0, 0], [8, 8], [4, 4], [0, 8], [8, 0], [3, 5]])
    flip = torch.tensor([False, True, False, True, False, True])
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    for i, ((dy, dx), f) in enumerate(zip(shift.tolist(), flip.tolist(), strict=True)):
        want = padded[i, :, dy : dy + 32, dx : dx + 32]
        want = want.flip(-1) if f else want
        assert torch.equal(_crop_flip(x, shift, flip)[i], want)


def test_crop_and_flip_work_on_uint8():
    x = _images(2, 3, 16)
    centred = torch.full((2, 2), 16 // 8)
    out = _crop_flip(x, centred, torch.tensor([False, True]))
    assert out.dtype == torch.uint8
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))


def test_blur_keeps_constants_spreads_points_and_skips_unchosen():
    x = torch.zeros(3, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    out = _blur(x, torch.tensor([2.0, 0.1, 2.0]), torch.tensor([True, True, False]))
    assert out[0].sum().item() == pytest.approx(1.0, abs=1e-5) and out[0, 0, 10, 10] < 0.1
    assert torch.allclose(out[1], x[1], atol=1e-6)  # sigma 0.1: a point stays a point
    assert torch.equal(out[2], x[2])
    flat = _blur(torch.full((1, 3, 12, 12), 0.5), torch.tensor([1.5]))
    assert torch.allclose(flat, torch.tensor(0.5), atol=1e-6)


def test_the_cuda_path_blurs_exactly_the_samples_the_cpu_path_does():
    # CUDA blurs every sample (unchosen ones with a one-tap kernel); CPU indexes the chosen ones.
    x = torch.rand(4, 3, 24, 24)
    sigma, chosen = torch.tensor([0.5, 1.0, 1.5, 2.0]), torch.tensor([True, False, True, False])
    everything = _blur(x, sigma, chosen)
    subset = x.clone()
    subset[chosen] = _blur(x[chosen], sigma[chosen])
    assert torch.allclose(everything, subset, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_gives_the_same_batch_on_cpu_and_cuda():
    images = _images(8, 3, 96)
    cpu = prepare_batch(images, STL10, augment=True, generator=_gen(3))
    cuda = prepare_batch(images.cuda(), STL10, augment=True, generator=_gen(3))
    assert torch.allclose(cpu, cuda.cpu(), atol=1e-4)
