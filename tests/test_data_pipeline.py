"""The ImageNet-style file pipeline against torchvision's reference transforms, on real JPEGs.

The JPEGs are Tiny-ImageNet photos upscaled to ImageNet's common sizes (500x375, 375x500, ...)
and re-encoded (``pipeline_jpegs``), so they exercise the real decoders with real content.

Tolerances, and why:
* evaluation, full-size decode: <= 1 grey level. torchvision's ``Resize`` + ``CenterCrop`` on a
  PIL image runs PIL's antialiased bilinear filter; kdlab runs torch's uint8 port of the same
  filter (same taps, same fixed-point weights), on the image libjpeg-turbo decodes bit-identically
  (PIL and torchvision.io link the same library); the two round their fixed-point sums apart by
  at most one level.
* training: the crop box is *identical* (same draws from a generator seeded as torch's global RNG
  is), the pixels within 1 level for the reason above.
* reduced-size decode (1/2, 1/4 DCT scaling in libjpeg-turbo, then the same resize): mean
  absolute difference < 1 level and max <= 16 against full decode + resize: the DCT-domain
  downscale is a box filter over 8x8 blocks rather than the bilinear filter's triangle, which
  shows at sharp edges only. Training crops: mean < 2.5, max <= 48, because the box is also
  rounded to whole pixels of the reduced image (a shift of up to scale/2 original pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_jpegs import realistic_jpegs
from scipy import stats
from torchvision import transforms as T1
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from kdlab.data import FileImageSet
from kdlab.data.sample_rng import sample_seed, sample_seeds
from kdlab.data.transforms import draft_scale, eval_box, load_sample, resized_crop_params

pytestmark = pytest.mark.shared  # the JPEGs are made from ../shared's Tiny-ImageNet
BIG = [(1600, 1200), (1200, 1600), (2000, 1333)]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[str]:
    return realistic_jpegs(tmp_path_factory.mktemp("jpegs"), 10)


@pytest.fixture(scope="module")
def big_jpegs(tmp_path_factory) -> list[str]:
    return realistic_jpegs(tmp_path_factory.mktemp("big"), 3, BIG)


def _files(paths: list[str], reduced: bool = False) -> FileImageSet:
    return FileImageSet(tuple(paths), torch.zeros(len(paths), dtype=torch.int64), reduced_decode=reduced)


def _pil(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    d = (a.int() - b.int()).abs()
    return int(d.max()), float(d.float().mean())


def test_eval_transform_matches_torchvision(jpegs):
    ref = T.Compose([T.Resize(256), T.CenterCrop(224)])
    files = _files(jpegs)
    for path in jpegs:
        ours = load_sample(path, files, train=False, flip=False, g=None)
        theirs = TF.pil_to_tensor(ref(_pil(path)))
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert _diff(ours, theirs)[0] <= 1, path


def test_eval_box_is_what_the_centre_crop_keeps():
    # 500x375 (W x H): Resize(256) -> 341x256, CenterCrop(224) keeps x 58..282, y 16..240
    left, top, right, bottom = eval_box(375, 500, 256, (224, 224))
    sx, sy = 500 / 341, 375 / 256
    assert (left, top, right, bottom) == pytest.approx((58 * sx, 16 * sy, 282 * sx, 240 * sy))
    assert draft_scale((left, top, right, bottom), (224, 224)) == 1  # 328 px tall: no 1/2 decode at 224


def test_crop_box_equals_random_resized_crop_for_the_same_draw(jpegs):
    img = _pil(jpegs[0])
    for s in range(300):
        torch.manual_seed(s)
        theirs = T1.RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        assert resized_crop_params(img.height, img.width, torch.Generator().manual_seed(s)) == theirs


def test_fallback_box_equals_torchvision():
    # a 20:1 strip: every draw is rejected and both fall back to the central crop
    img = Image.new("RGB", (400, 20))
    for s in range(5):
        torch.manual_seed(s)
        theirs = T1.RandomResizedCrop.get_params(img, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        assert resized_crop_params(20, 400, torch.Generator().manual_seed(s)) == theirs


def test_train_sample_equals_torchvision_pipeline_for_the_same_draw(jpegs):
    ref = T1.Compose([T1.RandomResizedCrop(224), T1.RandomHorizontalFlip()])
    files = _files(jpegs)
    flips = 0
    for s, path in enumerate(jpegs * 2):
        torch.manual_seed(s)
        theirs = TF.pil_to_tensor(ref(_pil(path)))
        ours = load_sample(path, files, train=True, flip=True, g=torch.Generator().manual_seed(s))
        assert _diff(ours, theirs)[0] <= 1, (path, s)
        torch.manual_seed(s)
        T1.RandomResizedCrop.get_params(_pil(path), [0.08, 1.0], [3 / 4, 4 / 3])
        flips += bool(torch.rand(1) < 0.5)
    assert 0 < flips < 20  # both branches of the flip were compared


def test_crop_distribution_matches_torchvision():
    """Scale (area fraction) and log aspect ratio of 4000 draws: independent streams, same law."""
    h, w = 375, 500
    ours = [resized_crop_params(h, w, torch.Generator().manual_seed(sample_seed(7, 1, i))) for i in range(4000)]
    torch.manual_seed(12345)
    img = Image.new("RGB", (w, h))
    theirs = [T1.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]

    def scale_ratio(boxes):
        b = np.asarray(boxes, dtype=float)
        return b[:, 2] * b[:, 3] / (h * w), np.log(b[:, 3] / b[:, 2])

    (s1, r1), (s2, r2) = scale_ratio(ours), scale_ratio(theirs)
    assert stats.ks_2samp(s1, s2).pvalue > 0.001 and stats.ks_2samp(r1, r2).pvalue > 0.001
    assert abs(s1.mean() - s2.mean()) < 4 * s2.std() / np.sqrt(2000)
    assert s1.min() >= 0.08 * 0.9 and s1.max() <= 1.0 and np.abs(r1).max() <= np.log(4 / 3) + 0.05


def test_reduced_size_decode_is_close_to_full_decode(big_jpegs):
    full, reduced = _files(big_jpegs), _files(big_jpegs, reduced=True)
    used = train_used = 0
    for path in big_jpegs:
        a = load_sample(path, full, train=False, flip=False, g=None)
        b = load_sample(path, reduced, train=False, flip=False, g=None)
        mx, mean = _diff(a, b)
        assert mx <= 16 and mean < 1.0, (path, mx, mean)
        with Image.open(path) as im:
            h, w = im.height, im.width
        used += draft_scale(eval_box(h, w, 256, (224, 224)), (224, 224)) > 1
        for s in range(20):  # training crops: those large enough are decoded at 1/2 .. 1/8
            g1, g2 = (torch.Generator().manual_seed(s) for _ in range(2))
            mx, mean = _diff(load_sample(path, full, train=True, flip=True, g=g1),
                             load_sample(path, reduced, train=True, flip=True, g=g2))
            assert mx <= 48 and mean < 2.5, (path, s, mx, mean)
            top, left, ch, cw = resized_crop_params(h, w, torch.Generator().manual_seed(s))
            train_used += draft_scale((left, top, left + cw, top + ch), (224, 224)) > 1
    assert used == len(big_jpegs)  # every evaluation above really took the reduced path
    assert train_used >= 10  # and so did a good part of the training crops


def test_sample_seeds_are_splitmix_of_seed_epoch_index():
    m = (1 << 64) - 1

    def mix(z: int) -> int:
        z = (z + 0x9E3779B97F4A7C15) & m
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    for seed, epoch, index in [(0, 1, 0), (3, 7, 123456), (2**40, 2, 5)]:
        assert sample_seed(seed, epoch, index) == mix(mix(mix(seed) ^ epoch) ^ index) >> 1
    seeds = sample_seeds(0, 1, torch.arange(1000))
    assert seeds.unique().numel() == 1000 and int(seeds.min()) >= 0


def test_jpeg_size_reads_the_frame_header_as_pil_does(jpegs, tmp_path) -> None:
    from kdlab.data.transforms import jpeg_size
    for path in jpegs:
        with Image.open(path) as im:
            w, h = im.size
        assert jpeg_size(Path(path).read_bytes()) == (h, w)
    prog = tmp_path / "progressive.jpg"  # SOF2, after EXIF-free APP0, DQT and DHT segments
    _pil(jpegs[0]).save(prog, "JPEG", progressive=True, quality=80)
    with Image.open(prog) as im:
        assert jpeg_size(prog.read_bytes()) == (im.size[1], im.size[0])
    png = tmp_path / "x.png"
    _pil(jpegs[0]).save(png)
    assert jpeg_size(png.read_bytes()) is None  # not a JPEG: PIL reads the header instead
    assert jpeg_size(Path(jpegs[0]).read_bytes()[:20]) is None  # header cut before the frame
    assert jpeg_size(b"\xff\xd8\xff\xda\x00\x02") is None  # a scan before any frame header
