"""Partial JPEG decoding (kdlab.data.jpeg_region) gives the pixels of a whole decode, only faster.

The reference for every box is a second, independent decoder run on the whole file:
torchvision's ``decode_jpeg`` at full size, PIL's draft mode at 1/2, 1/4, 1/8, cut to the box.
The images are smooth random textures with sharp edges, saved by PIL in each chroma layout
(4:4:4, 4:2:2, 4:2:0, greyscale, progressive) at odd sizes, so the upsampling at a box's edges
and the partial last block rows and columns are all exercised.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from kdlab.data import FileImageSet, jpeg_region
from kdlab.data.transforms import decode_tensor, draft_scale, load_sample, resized_crop_params

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
HEADERS = [Path("/usr/include/jpeglib.h"), Path("/usr/local/include/jpeglib.h")]
needs_ext = pytest.mark.skipif(not jpeg_region.available(), reason="kdlab.data._jpeg_region not built "
                               "(no libjpeg-turbo headers at install time)")


def _texture(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)).copy()
    img[h // 3:h // 3 + 5] = 255  # a sharp bar: chroma upsampling differs most at edges like it
    img[:, w // 2:w // 2 + 3, 0] = 0
    return Image.fromarray(img)


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def variants() -> dict[str, bytes]:
    img = _texture(301, 227, 0)
    return {"444": _jpeg(img, subsampling=0), "422": _jpeg(img, subsampling=1),
            "420": _jpeg(img, subsampling=2), "progressive": _jpeg(img, subsampling=2, progressive=True),
            "grey": _jpeg(img.convert("L")), "420-tall": _jpeg(_texture(133, 410, 1), subsampling=2)}


def _whole(data: bytes, scale: int) -> torch.Tensor:
    if scale == 1:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (im.width // scale, im.height // scale))
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def test_the_extension_is_built_where_libjpeg_turbo_headers_exist() -> None:
    if not any(p.exists() for p in HEADERS):
        pytest.skip("no jpeglib.h on this machine: the extension is optional")
    assert jpeg_region.available(), "setup.py did not build kdlab.data._jpeg_region; reinstall with pip -e ."


@needs_ext
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_region_equals_the_box_of_a_whole_decode(variants, scale) -> None:
    rng = np.random.default_rng(scale)
    for name, data in variants.items():
        whole = _whole(data, scale)
        sh, sw = whole.shape[-2:]
        assert jpeg_region.scaled_size(*Image.open(io.BytesIO(data)).size[::-1], scale) == (sh, sw)
        boxes = [(0, 0, sh, sw), (sh - 1, sw - 1, 1, 1)]
        for _ in range(25):
            h, w = int(rng.integers(1, sh + 1)), int(rng.integers(1, sw + 1))
            boxes.append((int(rng.integers(0, sh - h + 1)), int(rng.integers(0, sw - w + 1)), h, w))
        for top, left, h, w in boxes:
            got = jpeg_region.decode_region(data, scale, top, left, h, w)
            assert got is not None and got.shape == (3, h, w)
            assert torch.equal(got, whole[:, top:top + h, left:left + w]), (name, scale, (top, left, h, w))


@needs_ext
def test_a_box_outside_the_image_raises(variants) -> None:
    with pytest.raises(ValueError, match="outside the image"):
        jpeg_region.decode_region(variants["420"], 1, 200, 0, 28, 10)  # rows 200..227 of 227
    with pytest.raises(ValueError, match="outside the image"):
        jpeg_region.decode_region(variants["420"], 2, 0, 140, 10, 12)  # 151 columns at 1/2


@needs_ext
def test_cmyk_and_damaged_files_are_declined(variants) -> None:
    cmyk = _jpeg(_texture(64, 48, 2).convert("CMYK"))
    assert jpeg_region.decode_region(cmyk, 1, 0, 0, 48, 64) is None
    cut = variants["420"][: len(variants["420"]) // 2]  # libjpeg would warn and fill the rest grey
    assert jpeg_region.decode_region(cut, 1, 150, 0, 20, 20) is None
    assert jpeg_region.decode_region(b"\xff\xd8 not a jpeg", 1, 0, 0, 1, 1) is None


def test_draft_decode_uses_the_scale_asked_for_at_odd_sizes(variants) -> None:
    """500x375 at 1/2 is 250x188: PIL's draft picks the scale from floor divisions, so ask for w // s."""
    for scale in (2, 4, 8):
        img = decode_tensor(variants["420"], None, scale)
        assert tuple(img.shape[-2:]) == (-(-227 // scale), -(-301 // scale))


@needs_ext
def test_training_samples_are_the_same_with_and_without_the_extension(tmp_path, monkeypatch) -> None:
    paths = []
    for i, (w, h) in enumerate([(500, 375), (375, 500), (333, 517), (640, 480)]):
        paths.append(str(tmp_path / f"{i}.jpg"))
        _texture(w, h, i).save(paths[-1], "JPEG", quality=90)
    files = FileImageSet(tuple(paths), torch.zeros(len(paths), dtype=torch.int64), crop=(112, 112))
    calls, real, reduced = [], jpeg_region.decode_region, 0

    def counting(*args, **kw):
        calls.append(args[1])
        return real(*args, **kw)

    monkeypatch.setattr("kdlab.data.transforms.decode_region", counting)
    ours = [load_sample(p, files, train=True, flip=True, g=torch.Generator().manual_seed(s))
            for s in range(6) for p in paths]
    assert len(calls) == len(ours) and 2 in calls  # every crop went through it, some at 1/2
    monkeypatch.setattr(jpeg_region, "_jpeg_region", None)
    assert jpeg_region.decode_region(b"", 1, 0, 0, 1, 1) is None
    for k, (s, p) in enumerate((s, p) for s in range(6) for p in paths):
        assert torch.equal(ours[k], load_sample(p, files, train=True, flip=True, g=torch.Generator().manual_seed(s)))
        h, w = Image.open(p).size[::-1]
        top, left, ch, cw = resized_crop_params(h, w, torch.Generator().manual_seed(s))
        reduced += draft_scale((left, top, left + cw, top + ch), (112, 112)) > 1
    assert reduced >= 3  # the whole-decode fallback took PIL's draft path for some of them too
