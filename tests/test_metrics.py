"""Tests for minigpt.metrics: attention statistics, token labels, heatmaps and TensorBoard events."""

import io
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from minigpt.metrics import (
    CARD_WIDTH_PX,
    MetricsLogger,
    TensorBoardLogger,
    _Heatmaps,
    attention_stats,
    display_tokens,
    flatten_hparams,
    save_attention_pngs,
)

SHAKESPEARE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 10
MASK_GREY = (217, 217, 217)  # "#d9d9d9", the causal mask's empty upper triangle


def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    T = scores.size(-1)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


def random_attention(n_layer: int, n_head: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return causal_softmax(2 * torch.randn(n_layer, n_head, T, T, generator=g))


def map_pixel(heatmaps: _Heatmaps, rgb: np.ndarray, n: int, panel: int, row: int, col: int) -> tuple[int, ...]:
    """The colour at the centre of cell (row, col) of one panel of a drawn heatmap image."""
    _, images = heatmaps.figure(n)
    x0, y0, x1, y1 = images[panel].axes.bbox.extents  # pixels, origin bottom-left
    x = int(x0 + (col + 0.5) * (x1 - x0) / heatmaps.T)
    y = int(rgb.shape[0] - (y1 - (row + 0.5) * (y1 - y0) / heatmaps.T))
    return tuple(int(c) for c in rgb[y, x])


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


def test_labels_render_without_missing_glyph_warnings(tmp_path):
    tokens = [" ", "\n", "\t", "", "\x00", "中", "🙂", "$a$", "\ufffd", "—"]
    weights = causal_softmax(torch.zeros(1, 1, len(tokens), len(tokens)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        paths = save_attention_pngs(weights, tokens, tmp_path)
    assert Image.open(paths[0]).width == CARD_WIDTH_PX


# -- heatmaps ----------------------------------------------------------------------------------


def test_save_attention_pngs(tmp_path):
    weights = random_attention(2, 2, 6)
    paths = save_attention_pngs(weights, list("hello!"), tmp_path / "maps")
    assert [p.name for p in paths] == [
        "layer_0_head_0.png", "layer_0_head_1.png", "layer_0_all_heads.png",
        "layer_1_head_0.png", "layer_1_head_1.png", "layer_1_all_heads.png",
    ]  # fmt: skip
    for path in paths:
        image = Image.open(path)
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.width == CARD_WIDTH_PX and image.height > 200
    with pytest.raises(ValueError, match=r"\(n_layer, n_head, T, T\) with T = len\(tokens\) = 5"):
        save_attention_pngs(weights, list("hello"), tmp_path)
    with pytest.raises(ValueError, match=r"select one sequence of the batch"):
        save_attention_pngs(weights[0], list("hello!"), tmp_path)


@pytest.mark.parametrize("n", [1, 4])
def test_heatmap_pixels_follow_the_weights_and_the_causal_triangle_is_grey(n):
    # Identity attention: bright diagonal, dark below it, grey (masked) above it.
    T = 8
    heatmaps = _Heatmaps(list("abcdefgh"))
    rgb = heatmaps.draw(np.stack([np.eye(T)] * n), "title", ["caption"] * n)
    assert rgb.dtype == np.uint8 and rgb.shape[1:] == (CARD_WIDTH_PX, 3)
    for panel in range(n):
        diagonal, below = map_pixel(heatmaps, rgb, n, panel, 3, 3), map_pixel(heatmaps, rgb, n, panel, 5, 2)
        assert sum(diagonal) > sum(below) + 200  # viridis: yellow vs dark purple
        assert map_pixel(heatmaps, rgb, n, panel, 2, 5) == MASK_GREY
    # Weights above the diagonal are shown, not hidden: those maps are not causal.
    full = heatmaps.draw(np.stack([np.full((T, T), 1 / T)] * n), "title", ["caption"] * n)
    assert map_pixel(heatmaps, full, n, 0, 2, 5) != MASK_GREY


def test_redrawn_figures_match_fresh_ones():
    # Figures are kept and only their heatmaps and titles redrawn: that must look like a fresh draw.
    tokens = list("To be, or not")
    first, second = random_attention(1, 4, len(tokens), seed=1)[0], random_attention(1, 4, len(tokens), seed=2)[0]
    reused = _Heatmaps(tokens)
    reused.draw(first.numpy(), "layer 0", ["head 0", "head 1", "head 2", "head 3"])
    redrawn = reused.draw(second.numpy(), "layer 1", ["head 4", "head 5", "head 6", "head 7"])
    fresh = _Heatmaps(tokens).draw(second.numpy(), "layer 1", ["head 4", "head 5", "head 6", "head 7"])
    np.testing.assert_array_equal(redrawn, fresh)


@pytest.mark.parametrize(
    "kind, T, n",
    [("chars", 32, 1), ("chars", 128, 1), ("chars", 64, 4), ("chars", 8, 12),
     ("words", 8, 1), ("words", 64, 1), ("words", 128, 6), ("words", 32, 12)],
)  # fmt: skip
def test_token_labels_never_overlap_and_stay_inside_the_image(kind, T, n):
    tokens = list(SHAKESPEARE[:T]) if kind == "chars" else [" " + w for w in SHAKESPEARE.split()][:T]
    assert len(tokens) == T
    heatmaps = _Heatmaps(tokens)
    heatmaps.draw(random_attention(1, n, T)[0].numpy(), "layer 0", [f"head {h}" for h in range(n)])
    fig, images = heatmaps.figure(n)
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    assert width == CARD_WIDTH_PX
    for axis in (images[0].axes.yaxis, images[-1].axes.xaxis):  # labeled: left column, bottom row
        boxes = [label.get_window_extent(renderer) for label in axis.get_ticklabels() if label.get_visible()]
        assert boxes
        for a, b in zip(boxes, boxes[1:]):
            assert not a.overlaps(b), (a, b)
        for box in boxes:
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height
    if n == 1 and T <= 64:  # a single head's map labels every query row up to 64 tokens
        assert len(images[0].axes.get_yticks()) == T
    if n == 1 and kind == "chars" and T <= 32:  # and at least every other key
        assert len(images[0].axes.get_xticks()) >= T // 2


# -- loggers -----------------------------------------------------------------------------------


def test_importing_metrics_loads_neither_matplotlib_nor_tensorboard():
    code = "import sys, minigpt.metrics; print(sorted(m for m in ('matplotlib', 'tensorboard') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_base_logger_is_a_no_op():
    with MetricsLogger() as logger:
        logger.scalars({"loss/train": 1.0}, step=1)
        logger.text("sample", "hello", step=1)
        logger.attention(torch.zeros(1, 1, 2, 2), ["a", "b"], step=1)
        logger.hparams({"lr": 1e-3}, {"loss/val": 1.0}, step=1)
        logger.flush()


def test_tensorboard_logger_writes_readable_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tokens = list("To be or")
    weights = random_attention(2, 2, len(tokens))
    probe = random_attention(1, 2, 12, seed=3)
    with TensorBoardLogger(tmp_path / "run") as logger:
        for step in (0, 10):
            logger.scalars({"loss/train": 2.0 - step / 10, "lr": 1e-3}, step)
            logger.attention(weights, tokens, step)
            logger.text("sample", "ROMEO:\n*What* <b>light</b>", step)
        logger.attention(probe, list("Hello, world"), 20)  # a new probe
        logger.hparams({"model": {"n_layer": 2, "bias": False}, "lr": 1e-3}, {"loss/val": 1.5}, step=10)
    logger.flush()  # after close: ignored
    logger.close()
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
    assert [e.step for e in events.Scalars("attention_entropy/layer_0/head_1")] == [0, 10, 20]
    assert [e.step for e in events.Scalars("attention_entropy/layer_1/head_1")] == [0, 10]
    assert [e.value for e in events.Scalars("loss/train")] == pytest.approx([2.0, 1.0])
    entropy, distance = attention_stats(weights)
    assert events.Scalars("attention_distance/layer_1/head_0")[0].value == pytest.approx(distance[1, 0].item())
    assert events.Scalars("attention_entropy/layer_0/head_1")[1].value == pytest.approx(entropy[0, 1].item())
    probe_entropy, _ = attention_stats(probe)
    assert events.Scalars("attention_entropy/layer_0/head_1")[2].value == pytest.approx(probe_entropy[0, 1].item())

    expected_images = {f"attention/layer_{l}/head_{h}" for l in range(2) for h in range(2)}
    expected_images |= {"attention/layer_0/all_heads", "attention/layer_1/all_heads"}
    assert set(tags["images"]) == expected_images
    for tag in expected_images:
        event = events.Images(tag)[-1]
        decoded = Image.open(io.BytesIO(event.encoded_image_string))
        assert decoded.size == (event.width, event.height)
        assert event.width == CARD_WIDTH_PX and decoded.mode == "RGB"
    assert [e.step for e in events.Images("attention/layer_1/all_heads")] == [0, 10]
    assert [e.step for e in events.Images("attention/layer_0/all_heads")] == [0, 10, 20]
    head = np.asarray(Image.open(io.BytesIO(events.Images("attention/layer_0/head_0")[0].encoded_image_string)))
    assert (head == MASK_GREY).all(-1).mean() > 0.1  # the blank upper triangle is a good part of the image

    assert "sample/text_summary" in tags["tensors"]
    text = events.Tensors("sample/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text == "    ROMEO:\n    *What* <b>light</b>"  # a markdown code block: shown verbatim
    hparams = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams).session_start_info
    assert start.hparams["model.n_layer"].number_value == 2
    assert start.hparams["model.bias"].string_value == "False"


def test_flatten_hparams():
    flat = flatten_hparams({"model": {"n_layer": 2, "dropout": 0.1, "rope": {"base": 1e4}}, "compile": True,
                            "path": None, "x": [1]})  # fmt: skip
    assert flat == {"model.n_layer": 2, "model.dropout": 0.1, "model.rope.base": 1e4, "compile": "True",
                    "path": "None", "x": "[1]"}  # fmt: skip


def test_tensorboard_logger_writes_role_scalars_grids_and_table(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minigpt.roles import ROLES

    scores = {role: torch.full((2, 3), 0.1, dtype=torch.float64) for role in ROLES}
    scores["induction"][1, 2] = 0.75
    scores["duplicate_token"][:] = float("nan")  # a probe without repeated tokens
    with TensorBoardLogger(tmp_path / "run") as logger:
        for step in (0, 100):
            logger.roles(scores, step, reference={role: 0.05 for role in ROLES})
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    scalar_tags = {f"role_{role}/layer_{l}/head_{h}" for role in ROLES for l in range(2) for h in range(3)}
    assert scalar_tags <= set(tags["scalars"])
    assert [e.value for e in events.Scalars("role_induction/layer_1/head_2")] == [0.75, 0.75]
    assert [e.step for e in events.Scalars("role_self/layer_0/head_0")] == [0, 100]
    assert set(tags["images"]) == {f"roles/{role}" for role in ROLES}
    grids = {}
    for role in ("induction", "self"):
        event = events.Images(f"roles/{role}")[-1]
        grids[role] = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        assert event.width == CARD_WIDTH_PX and 100 < event.height < 400
    assert not np.array_equal(grids["induction"], grids["self"])  # the 0.75 cell and the title differ
    duplicate = np.asarray(Image.open(io.BytesIO(events.Images("roles/duplicate_token")[-1].encoded_image_string)))
    assert (duplicate[..., :3] == MASK_GREY).all(-1).mean() > 0.2  # undefined scores: grey cells
    assert "roles/top_heads/text_summary" in tags["tensors"]
    table = events.Tensors("roles/top_heads/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "induction" in table and "L1 H2  0.75" in table


def test_hparams_tab_shows_the_settings_that_tell_runs_apart_first(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from minigpt import cli
    from minigpt.config import RunConfig
    from minigpt.metrics import SHOWN_HPARAMS

    with TensorBoardLogger(tmp_path) as logger:
        logger.hparams(cli.to_dict(RunConfig()), {"val_loss": 1.5}, step=5)
    (events,) = tmp_path.glob("events.out.tfevents.*")
    values = [value for event in EventFileLoader(str(events)).Load() for value in event.summary.value]
    (experiment,) = [v.metadata.plugin_data.content for v in values if v.tag == "_hparams_/experiment"]
    infos = HParamsPluginData.FromString(experiment).experiment.hparam_infos
    assert set(SHOWN_HPARAMS) <= {i.name for i in infos}  # every shown column is a real setting
    # TensorBoard (2.21) sorts by "differs", then by name, and shows the first five
    shown = [i.name for i in sorted(infos, key=lambda i: (not i.differs, i.name))][:5]
    assert sorted(shown) == sorted(SHOWN_HPARAMS) and not any(n.startswith("data.hf_") for n in shown)
