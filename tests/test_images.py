"""Odd image modes become the RGB the docstring of imagesearchtr/images.py promises."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imagesearchtr import images as images_mod
from imagesearchtr.images import ImageLoadError, open_image


def saved(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img, dtype=np.int16)


def test_what_is_not_an_image_input_is_a_type_error_and_a_bytearray_is_bytes():
    for not_an_image in (None, 3, np.zeros((4, 4, 3), dtype=np.uint8)):
        with pytest.raises(TypeError, match="an image must be a file path, bytes or a PIL image"):
            open_image(not_an_image)
    data = saved(Image.new("RGB", (4, 4), (1, 2, 3)), "PNG")
    assert (pixels(open_image(bytearray(data))) == [1, 2, 3]).all()


def test_an_image_of_no_pixels_is_refused_by_name():
    for size in [(0, 0), (0, 5), (5, 0)]:  # PIL makes them; the image processor divides by 0
        with pytest.raises(ImageLoadError, match=r"<PIL image RGB .*: the image has no pixels"):
            open_image(Image.new("RGB", size))


def test_greyscale_and_palette_become_rgb():
    grey = Image.new("L", (8, 8), 77)
    assert (pixels(open_image(saved(grey, "PNG"))) == 77).all()
    palette = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert (pixels(open_image(saved(palette, "PNG"))) == [10, 200, 30]).all()


def test_transparency_is_composited_on_white_not_black():
    # Fully transparent pixels hiding black: the encoder must see white, not black.
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 4, 8))
    out = pixels(open_image(saved(rgba, "PNG")))
    assert (out[:, :4] == [255, 0, 0]).all()
    assert (out[:, 4:] == [255, 255, 255]).all()
    la = Image.new("LA", (4, 4), (0, 0))
    assert (pixels(open_image(la)) == 255).all()
    assert (pixels(open_image(la.convert("La"))) == 255).all()  # premultiplied alpha
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert (pixels(open_image(saved(pal, "PNG", transparency=0))) == 255).all()


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = pixels(open_image(saved(cmyk, "JPEG", quality=100)))
    assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


def test_a_float_image_within_0_and_1_is_read_as_such():
    mid = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F")
    assert abs(int(pixels(open_image(mid))[0, 0, 0]) - 128) <= 1  # not 0.5 of 255: black
    eight_bit = Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32), mode="F")
    assert int(pixels(open_image(eight_bit))[0, 0, 0]) == 200


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    array = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    img16 = Image.fromarray(array)
    out = pixels(open_image(saved(img16, "PNG")))
    assert abs(int(out[0, 0, 0]) - 128) <= 1  # Pillow's plain convert would give 255
    # A 32-bit "I" image holding 16-bit values is rescaled the same way, not clipped to white.
    img32 = Image.fromarray(np.full((8, 8), 32768, dtype=np.int32))
    assert img32.mode == "I"
    assert abs(int(pixels(open_image(img32))[0, 0, 0]) - 128) <= 1


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # red on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = open_image(saved(img, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)  # portrait once rotated
    top, bottom = pixels(out)[5, 10], pixels(out)[35, 10]
    assert top[0] > 200 and bottom[2] > 200  # red ended up on top


def test_truncated_and_non_image_files_are_named(tmp_path):
    data = saved(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg: broken or truncated"):
        open_image(truncated)
    text = tmp_path / "readme.png"
    text.write_text("hello")
    with pytest.raises(ImageLoadError, match=r"readme\.png: not an image"):
        open_image(text)
    with pytest.raises(ImageLoadError, match="0 bytes"):
        open_image(b"")
    with pytest.raises(ImageLoadError, match="a folder, not an image file") as err:
        open_image(tmp_path)  # (was "no such file", for a folder that is there)
    assert err.value.kind == "not_an_image"


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    # A real bomb is slow to make; lower the limit instead and feed a modest image.
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 100 * 100)
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(big)
    with pytest.raises(ImageLoadError, match=r"big\.png: 200x200 pixels is over"):
        open_image(big)


def test_a_pil_image_over_the_limit_is_refused_before_it_is_converted(tiny_encoder):
    # A caller's PIL image (Searcher.search_image, encode_images) was converted whole: one of
    # 144 MP became a 432 MB RGB copy. Refused as a file of that size is (kind too_large, which
    # the app words in Turkish); a one-bit image keeps the test's own memory small.
    big = Image.new("1", (8001, 8000))
    said = r"<PIL image 1 \(8001, 8000\)>: 8001x8000 pixels is over the 64,000,000-pixel limit"
    with pytest.raises(ImageLoadError, match=said) as err:
        open_image(big)
    assert err.value.kind == "too_large"
    with pytest.raises(ImageLoadError, match="over the 64,000,000-pixel limit"):
        tiny_encoder.encode_images([big])


def test_an_image_past_twice_the_limit_is_refused_naming_the_limit(monkeypatch):
    # Pillow raises its own error past twice its limit, naming that (128,000,000 pixels).
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 100 * 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageLoadError, match="over the 10,000-pixel limit") as err:
        open_image(saved(Image.new("1", (300, 300)), "PNG"))
    assert err.value.kind == "too_large" and "20000" not in str(err.value)


def test_every_sixteen_bit_value_becomes_its_nearest_eight_bit_level():
    import io

    from PIL import Image

    from imagesearchtr.images import open_image

    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    out = np.asarray(open_image(buf.getvalue()))[..., 0]
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert (out == expected).all(), int((out != expected).sum())


def test_an_image_of_exactly_max_pixels_is_opened(tmp_path, monkeypatch):
    # The limit is the most pixels accepted, not the first refused.
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 100 * 100)
    edge = tmp_path / "edge.png"
    Image.new("RGB", (100, 100), (1, 2, 3)).save(edge)
    assert open_image(edge).size == (100, 100)


def test_an_eight_bit_i_image_whose_brightest_pixel_is_255_stays_eight_bit():
    # "I" values up to 255 are 8-bit data: white stays white, not 255/65535 of it (black).
    img = Image.fromarray(np.array([[0, 128, 255]] * 4, dtype=np.int32))
    assert img.mode == "I"
    assert pixels(open_image(img))[0, :, 0].tolist() == [0, 128, 255]
