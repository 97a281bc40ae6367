"""Tests for minigpt.metrics: attention statistics, token labels, heatmaps, TensorBoard events, progress."""

import io
import math
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from minigpt.metrics import (
    CARD_WIDTH_PX,
    MetricsLogger,
    Progress,
    TensorBoardLogger,
    _AttentionPainter,
    attention_stats,
    display_tokens,
    flatten_hparams,
    render_attention_grid,
    render_attention_png,
    save_attention_pngs,
)


def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    T = scores.size(-1)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


def random_attention(n_layer: int, n_head: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return causal_softmax(2 * torch.randn(n_layer, n_head, T, T, generator=g))


# -- attention_stats ----------------------------------------------------------------------------


def test_attention_stats_uniform_causal():
    T = 6
    weights = causal_softmax(torch.zeros(2, 3, T, T))  # row i: 1/(i+1) on keys 0..i
    entropy, distance = attention_stats(weights)
    assert entropy.shape == distance.shape == (2, 3)
    expected_entropy = sum(math.log(i + 1) for i in range(T)) / T
    expected_distance = sum(i / 2 for i in range(T)) / T  # mean of i - j over j <= i is i / 2
    torch.testing.assert_close(entropy, torch.full((2, 3), expected_entropy))
    torch.testing.assert_close(distance, torch.full((2, 3), expected_distance))


def test_attention_stats_diagonal_is_zero_and_previous_token_is_one_back():
    T = 5
    diagonal = torch.eye(T)
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    entropy, distance = attention_stats(torch.stack([diagonal, previous]))
    torch.testing.assert_close(entropy, torch.zeros(2))
    torch.testing.assert_close(distance, torch.tensor([0.0, (T - 1) / T]))


def test_attention_stats_rejects_non_square():
    with pytest.raises(ValueError, match=r"square \(T, T\)"):
        attention_stats(torch.zeros(2, 3, 4))


# -- display_tokens ----------------------------------------------------------------------------


def test_display_tokens_makes_whitespace_and_control_characters_visible():
    tokens = [" ", "\n", "\t", " the", "", "\x07", "\r", "$x$", "a" * 20, "中", "é"]
    assert display_tokens(tokens) == [
        "␣", "↵", "⇥", "␣the", "∅", "\\x07", "\\x0d", r"\$x\$", "a" * 9 + "…", "\\u4e2d", "é",
    ]  # fmt: skip


def test_labels_render_without_missing_glyph_warnings():
    tokens = [" ", "\n", "\t", "", "\x00", "中", "🙂", "$a$", "\ufffd", "—"]
    weights = causal_softmax(torch.zeros(len(tokens), len(tokens)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        png = render_attention_png(weights, tokens, "title")
    assert Image.open(io.BytesIO(png)).width == CARD_WIDTH_PX


# -- rendering ---------------------------------------------------------------------------------


def test_render_attention_png_and_grid_sizes():
    weights = random_attention(1, 4, 8)
    tokens = list("To be, o")
    image = Image.open(io.BytesIO(render_attention_png(weights[0, 0], tokens, "layer 0 · head 0")))
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.width == CARD_WIDTH_PX and image.height > 200
    grid = render_attention_grid(weights[0], tokens, "layer 0")
    assert grid.dtype == np.uint8 and grid.shape[1:] == (CARD_WIDTH_PX, 3)
    with pytest.raises(ValueError, match=r"\(T, T\) weights with T = len\(tokens\) = 7"):
        render_attention_png(weights[0, 0], tokens[:-1])


def test_heatmap_pixels_follow_the_weights():
    # Identity attention: bright diagonal, dark below it, grey (masked) above it.
    T = 8
    painter = _AttentionPainter(list("abcdefgh"))
    rgb = painter.head(np.eye(T), "")
    _, image, _ = painter._head_figs[0]
    x0, y0, x1, y1 = image.axes.bbox.extents  # pixels, origin bottom-left
    height = rgb.shape[0]
    cell = (x1 - x0) / T

    def pixel(row: int, col: int) -> np.ndarray:
        x = int(x0 + (col + 0.5) * cell)
        y = int(height - (y1 - (row + 0.5) * (y1 - y0) / T))
        return rgb[y, x].astype(int)

    diagonal, below, above = pixel(3, 3), pixel(5, 2), pixel(2, 5)
    assert diagonal.sum() > below.sum() + 200  # viridis: yellow vs dark purple
    assert above[0] == above[1] == above[2]  # grey


@pytest.mark.parametrize("T", [8, 32, 48, 64, 128])
@pytest.mark.parametrize("kind", ["chars", "words"])
def test_token_labels_never_overlap_and_stay_inside_the_image(T, kind):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 10
    tokens = list(text[:T]) if kind == "chars" else [" " + w for w in text.split()][:T]
    assert len(tokens) == T
    painter = _AttentionPainter(tokens)
    painter.head(random_attention(1, 1, T)[0, 0].numpy(), "layer 0 · head 0\nentropy 1.00 nats")
    blitter, image, _ = painter._head_figs[2]
    renderer = blitter.canvas.get_renderer()
    width, height = blitter.canvas.get_width_height()
    for axis in (image.axes.xaxis, image.axes.yaxis):
        boxes = [label.get_window_extent(renderer) for label in axis.get_ticklabels() if label.get_text()]
        assert boxes
        for a, b in zip(boxes, boxes[1:]):
            assert not a.overlaps(b), (a, b)
        for box in boxes:
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height
    if T <= 64:  # every query row is labeled up to 64 tokens
        assert len(image.axes.get_yticks()) == T


def test_save_attention_pngs(tmp_path):
    weights = random_attention(2, 2, 6)
    paths = save_attention_pngs(weights, list("hello!"), tmp_path / "maps")
    assert [p.name for p in paths] == [
        "layer_0_head_0.png", "layer_0_head_1.png", "layer_0_all_heads.png",
        "layer_1_head_0.png", "layer_1_head_1.png", "layer_1_all_heads.png",
    ]  # fmt: skip
    for path in paths:
        assert Image.open(path).width == CARD_WIDTH_PX


# -- loggers -----------------------------------------------------------------------------------


def test_base_logger_is_a_no_op():
    with MetricsLogger() as logger:
        logger.scalars({"loss/train": 1.0}, step=1)
        logger.text("sample", "hello", step=1)
        logger.attention(torch.zeros(1, 1, 2, 2), ["a", "b"], step=1)
        logger.hparams({"lr": 1e-3}, {"loss/val": 1.0})
        logger.flush()


def test_tensorboard_logger_writes_readable_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tokens = list("To be or")
    weights = random_attention(2, 2, len(tokens))
    with TensorBoardLogger(tmp_path / "run") as logger:
        for step in (0, 10):
            logger.scalars({"loss/train": 2.0 - step / 10, "lr": 1e-3}, step)
            logger.attention(weights, tokens, step)
            logger.text("sample", "ROMEO:\n*What* <b>light</b>", step)
        logger.hparams({"model": {"n_layer": 2, "bias": False}, "lr": 1e-3}, {"loss/val": 1.5}, step=10)
    with pytest.raises(ValueError, match=r"shape \(n_layer, n_head, T, T\)"):
        TensorBoardLogger(tmp_path / "other").attention(weights[0], tokens, 0)

    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for tag in [
        "loss/train", "lr", "final/loss/val",
        "attention_entropy/layer_0/head_0", "attention_entropy/layer_1/head_1",
        "attention_distance/layer_0/head_1", "attention_distance/layer_1/head_0",
    ]:  # fmt: skip
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("attention_entropy/layer_0/head_1")] == [0, 10]
    entropy, distance = attention_stats(weights)
    assert events.Scalars("attention_distance/layer_1/head_0")[0].value == pytest.approx(distance[1, 0].item())

    expected_images = {f"attention/layer_{l}/head_{h}" for l in range(2) for h in range(2)}
    expected_images |= {"attention/layer_0/all_heads", "attention/layer_1/all_heads"}
    assert set(tags["images"]) == expected_images
    for tag in expected_images:
        event = events.Images(tag)[-1]
        decoded = Image.open(io.BytesIO(event.encoded_image_string))
        assert decoded.size == (event.width, event.height)
        assert event.width == CARD_WIDTH_PX and decoded.mode == "RGB"

    assert "sample/text_summary" in tags["tensors"]
    text = events.Tensors("sample/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text == "    ROMEO:\n    *What* <b>light</b>"  # a markdown code block: shown verbatim
    hparams = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams).session_start_info
    assert start.hparams["model.n_layer"].number_value == 2
    assert start.hparams["model.bias"].string_value == "False"


def test_flatten_hparams():
    flat = flatten_hparams({"model": {"n_layer": 2, "dropout": 0.1}, "compile": True, "path": None, "x": [1]})
    assert flat == {"model.n_layer": 2, "model.dropout": 0.1, "compile": "True", "path": "None", "x": "[1]"}


# -- progress ----------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with Progress(total=100, stream=out, plain_every=25) as progress:
        for step in range(1, 101):
            progress.update(step, loss=3.0 - step / 100, lr=1e-3, tok_s=24_100.0)
            if step == 60:
                progress.write("step 60: val loss 2.4000")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" |")[0] for line in lines if line.startswith("iter")] == [
        "iter   1/100", "iter  25/100", "iter  50/100", "iter  75/100", "iter 100/100",
    ]  # fmt: skip
    assert "step 60: val loss 2.4000" in lines
    assert re.fullmatch(r"iter  50/100 \| loss 2\.5000 \| lr 1\.00e-03 \| 24\.1k tok/s \| eta \d+m\d\ds", lines[2])


def test_progress_bar_on_a_terminal_and_silence_when_disabled():
    tty = FakeTerminal()
    progress = Progress(total=10, stream=tty)
    for step in range(1, 11):
        progress.update(step, loss=1.25, lr=3e-4, tok_s=1.5e6)
    progress.write("eval done")
    progress.close()
    output = tty.getvalue()
    assert "\r" in output and "10/10" in output
    assert "loss 1.2500 | lr 3.00e-04 | 1.5M tok/s" in output
    assert "eval done\n" in output

    quiet = FakeTerminal()
    progress = Progress(total=10, stream=quiet, enabled=False)
    progress.update(5, loss=1.0)
    progress.write("not shown")
    progress.close()
    assert quiet.getvalue() == ""
