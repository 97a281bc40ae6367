"""Metrics: TensorBoard logging (scalars, text, attention maps, hparams) and a console progress bar.

The training loop talks to one tiny interface, `MetricsLogger`, whose base class does nothing;
`TensorBoardLogger` implements it. Ranks other than 0, or runs without TensorBoard, get the base
class, so the loop never needs an `if tensorboard:` branch.

Attention maps are rendered with matplotlib's object-oriented API on the Agg canvas (no pyplot,
no global backend switch), sized for TensorBoard's image card, which shows every image 350 CSS
pixels wide unless the user asks for the actual size. matplotlib and TensorBoard are imported
lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import io
import math
import sys
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

__all__ = [
    "MetricsLogger",
    "TensorBoardLogger",
    "Progress",
    "attention_images",
    "attention_stats",
    "display_tokens",
    "flatten_hparams",
    "render_attention",
    "render_attention_grid",
    "render_attention_png",
    "save_attention_pngs",
]

# ----------------------------------------------------------------------------------------------
# Loggers


class MetricsLogger:
    """The logging interface of the training loop. This base class ignores everything."""

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalars by tag, e.g. {"loss/train": 1.92, "lr": 3e-4}."""

    def text(self, tag: str, text: str, step: int) -> None:
        """Log a text verbatim (shown preformatted, not as markdown)."""

    def attention(
        self,
        weights: torch.Tensor,
        tokens: Sequence[str],
        step: int,
        prefix: str = "attention",
    ) -> None:
        """Log attention maps and per-head statistics for one probe text.

        weights: (n_layer, n_head, T, T) attention probabilities of one sequence, rows = queries.
        tokens: the probe's T tokens as strings (they label both axes).
        """

    def hparams(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        """Log the run's hyperparameters (nested mappings are flattened) with its final metrics."""

    def flush(self) -> None:
        """Write buffered events to disk."""

    def close(self) -> None:
        """Flush and release files; further calls are ignored."""

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorBoardLogger(MetricsLogger):
    """Writes TensorBoard event files to `log_dir` (e.g. runs/<run-name>/).

    Tags written by `attention(weights, tokens, step, prefix)`, for every layer l and head h:
      {prefix}/layer_{l}/head_{h}            heatmap image, probe tokens on both axes
      {prefix}/layer_{l}/all_heads           all heads of layer l side by side
      {prefix}_entropy/layer_{l}/head_{h}    mean attention entropy of the head (nats)
      {prefix}_distance/layer_{l}/head_{h}   mean query-key distance of the head (tokens)
    `hparams()` stores its final metrics as scalars under `final/{name}`.
    """

    def __init__(self, log_dir: str | Path, flush_secs: int = 30, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy import: only when used

        self.log_dir = Path(log_dir)
        # purge_step: on resume, hide events an interrupted run logged after its checkpoint
        self._writer: Any = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs, purge_step=purge_step)
        self._painter: _AttentionPainter | None = None
        self._closed = False

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, float(value), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._writer.add_text(tag, _markdown_verbatim(text), step)

    def attention(
        self,
        weights: torch.Tensor,
        tokens: Sequence[str],
        step: int,
        prefix: str = "attention",
    ) -> None:
        # The probe is the same at every evaluation: keep its laid-out figures between calls.
        if self._painter is None or self._painter.tokens != tuple(tokens):
            self._painter = _AttentionPainter(tokens)
        for name, rgb in attention_images(weights, tokens, self._painter):
            self._image(f"{prefix}/{name}", rgb, step)
        entropy, distance = attention_stats(_check_attention(weights, tokens))
        for (layer, head), value in np.ndenumerate(entropy.numpy()):
            self._writer.add_scalar(f"{prefix}_entropy/layer_{layer}/head_{head}", float(value), step)
        for (layer, head), value in np.ndenumerate(distance.numpy()):
            self._writer.add_scalar(f"{prefix}_distance/layer_{layer}/head_{head}", float(value), step)

    def _image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        # Like SummaryWriter.add_image, minus its float round trip and slow default PNG compression.
        from tensorboard.compat.proto.summary_pb2 import Summary

        height, width, channels = rgb.shape
        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=_png_bytes(rgb))
        self._writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def hparams(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        final = {f"final/{name}": float(value) for name, value in metrics.items()}
        # Written into this run's own event file (SummaryWriter.add_hparams would open a new
        # sub-run named by a timestamp), so the HParams tab lists the run under its real name.
        for summary in hparams_summaries(flatten_hparams(hparams), final):
            self._writer.file_writer.add_summary(summary, step)
        self.scalars(final, 0 if step is None else step)

    def flush(self) -> None:
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._writer.close()
            self._closed = True


def _markdown_verbatim(text: str) -> str:
    # TensorBoard renders text summaries as markdown; an indented code block keeps samples,
    # tables and TOML exactly as written (newlines, '*', '#', '<' included).
    lines = text.splitlines() or [""]
    return "\n".join("    " + line for line in lines)


def flatten_hparams(hparams: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str]:
    """Flatten nested mappings / dataclasses to {"model.n_layer": 4, ...} with TensorBoard-safe values."""
    if dataclasses.is_dataclass(hparams) and not isinstance(hparams, type):
        hparams = dataclasses.asdict(hparams)
    flat: dict[str, int | float | str] = {}
    for key, value in hparams.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{name}."))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            flat[name] = value
        else:  # TensorBoard takes numbers and strings; booleans would show as 0/1, None not at all
            flat[name] = str(value)
    return flat


# ----------------------------------------------------------------------------------------------
# Attention statistics


def attention_stats(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head entropy and mean distance of attention maps, averaged over query rows.

    weights: (..., T, T) attention probabilities, row i = query i, column j = key j.
    Returns (entropy, mean_distance), each of shape (...): entropy in nats (0 when every query
    looks at one key, ln(i+1) for row i of uniform causal attention) and the expected distance
    sum_j w_ij * (i - j) in tokens (0 = attend to yourself, large = look far back).
    """
    if weights.dim() < 2 or weights.size(-1) != weights.size(-2):
        raise ValueError(f"attention weights must end in a square (T, T) map; got shape {tuple(weights.shape)}")
    w = weights.detach().to(torch.float64)
    T = w.size(-1)
    entropy = -torch.special.xlogy(w, w).sum(-1)  # (..., T); xlogy(0, 0) = 0
    pos = torch.arange(T, dtype=torch.float64, device=w.device)
    offset = pos[:, None] - pos[None, :]  # (T, T): i - j
    distance = (w * offset).sum(-1)  # (..., T)
    return entropy.mean(-1).to(weights.dtype), distance.mean(-1).to(weights.dtype)


def _check_attention(weights: torch.Tensor, tokens: Sequence[str]) -> torch.Tensor:
    shape = tuple(weights.shape)
    if weights.dim() != 4 or shape[2] != shape[3] or shape[3] != len(tokens):
        raise ValueError(
            f"attention weights must have shape (n_layer, n_head, T, T) with T = len(tokens) = "
            f"{len(tokens)}; got {shape} (select one sequence of the batch first, e.g. w[:, 0])"
        )
    return weights.detach().to("cpu", torch.float32)


def _head_title(layer: int, head: int, entropy: float, distance: float) -> str:
    return f"layer {layer} · head {head}\nentropy {entropy:.2f} nats · distance {distance:.1f} tokens"


# ----------------------------------------------------------------------------------------------
# Token labels

FONT_FAMILY = "DejaVu Sans"  # ships with matplotlib, so every machine draws the same glyphs

# Visible stand-ins for whitespace and line breaks (all present in DejaVu Sans).
_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥"}
_MAX_LABEL_CHARS = 10


@lru_cache(maxsize=1)
def _font_charmap() -> frozenset[int]:
    from matplotlib import font_manager

    path = font_manager.findfont(font_manager.FontProperties(family=FONT_FAMILY))
    return frozenset(font_manager.get_font(path).get_charmap())


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """Make tokens readable as axis labels.

    Space becomes '␣', newline '↵', tab '⇥'; other control characters and characters the label
    font cannot draw become \\xNN / \\uNNNN escapes; an empty token becomes '∅', and labels
    longer than 10 characters are cut with '…'.
    """
    charmap = _font_charmap()
    labels = []
    for token in tokens:
        parts = []
        for ch in token:
            if ch in _VISIBLE:
                parts.append(_VISIBLE[ch])
            elif unicodedata.category(ch).startswith("C") or ord(ch) not in charmap:
                parts.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
            elif ch == "$":
                parts.append(r"\$")  # matplotlib would start mathtext at a '$'
            else:
                parts.append(ch)
        label = "".join(parts) or "∅"
        if len(label) > _MAX_LABEL_CHARS:
            label = label[: _MAX_LABEL_CHARS - 1] + "…"
        labels.append(label)
    return labels


# ----------------------------------------------------------------------------------------------
# Attention heatmaps
#
# Laid out in pixels (at DPI = 100) for TensorBoard's Images tab, which draws every image exactly
# 350 px wide with nearest-neighbour ("pixelated") scaling: an image of exactly that width shows
# pixel for pixel, crisp. Its height is free, so query rows get the height their labels need
# (every token labeled up to ~64 tokens), while key columns share the width; key labels are
# thinned out when they would overlap (column j is the same token as row j, see the diagonal).

CARD_WIDTH_PX = 350
_DPI = 100
_LABEL_PX = 10  # token label font size (7.2 pt): the smallest that stays easy to read on screen
_ROW_PX = 11  # vertical room one label needs
_MAX_MAP_HEIGHT_PX = 720  # beyond this (> 65 tokens) query labels are thinned out too
_MAX_CELL_PX = 24
_CMAP = "viridis"
_MASKED_RGB = "#d9d9d9"  # the causal mask's empty upper triangle
_CBAR_TICKS = (0.0, 0.05, 0.25, 0.5, 1.0)


def _pt(px: float) -> float:
    return px * 72 / _DPI


@lru_cache(maxsize=4096)
def _text_width_px(text: str, px: int) -> float:
    """Width of `text` drawn in the label font at `px` pixels (matplotlib's own text metrics)."""
    from matplotlib import font_manager
    from matplotlib.textpath import TextToPath

    prop = font_manager.FontProperties(family=FONT_FAMILY, size=_pt(px))
    width, _, _ = TextToPath().get_text_width_height_descent(text.replace(r"\$", "$"), prop, ismath=False)
    return width * _DPI / 72


def _cell_px(room_px: float, T: int) -> float:
    """Whole pixels per token (crisp cells) while they fit, else the fraction that does."""
    if room_px < T:  # very long probes: columns thinner than a pixel, drawn smoothed
        return room_px / T
    return min(_MAX_CELL_PX, int(room_px // T))


def _stride(room_px: float, cell_px: float) -> int:
    """Label every k-th cell so that each label gets `room_px`."""
    return max(1, math.ceil(room_px / cell_px))


def _side_by_side_stride(widths: list[float], cell_px: float, gap_px: float = 2.0) -> int:
    """Smallest k such that labels of every k-th cell, centred on their cells, do not touch."""
    for k in range(1, len(widths) + 1):
        shown = widths[::k]
        if all((a + b) / 2 + gap_px <= k * cell_px for a, b in zip(shown, shown[1:])):
            return k
    return len(widths)


@dataclasses.dataclass(frozen=True)
class _HeadLayout:
    """Pixel geometry of one labeled heatmap; origin at the figure's bottom-left."""

    width: int
    height: int
    map_box: tuple[float, float, float, float]  # left, bottom, width, height of the heatmap
    cbar_box: tuple[float, float, float, float]
    x_stride: int
    x_rotation: int
    y_stride: int

    @staticmethod
    def build(labels: list[str], title_lines: int) -> _HeadLayout:
        T = len(labels)
        widths = [_text_width_px(label, _LABEL_PX) for label in labels]
        widest = max(widths)
        # Horizontal: y labels and the "query" axis name on the left, the map fills the rest.
        left = widest + 4 + _LABEL_PX + 8
        cell_w = _cell_px(CARD_WIDTH_PX - left - 8, T)
        spare = CARD_WIDTH_PX - left - cell_w * T
        left += spare / 2  # centre the map in the card
        # Vertical: rows at least one label tall, unless that makes the map very tall.
        cell_h = max(cell_w, min(_ROW_PX, _MAX_MAP_HEIGHT_PX // T))
        y_stride = _stride(_ROW_PX, cell_h)
        if widest <= 1.5 * _LABEL_PX:  # short labels (characters) stand upright
            x_rotation, x_stride, x_extent = 0, _side_by_side_stride(widths, cell_w), _LABEL_PX + 2
        else:  # longer labels (BPE tokens) turn vertical
            x_rotation, x_stride, x_extent = 90, _stride(_ROW_PX, cell_w), widest + 2
        # Bottom-up: colorbar with its tick labels, x axis name, x labels, the map, the title.
        cbar_h, cbar_bottom = 6, 4 + _LABEL_PX + 2
        map_bottom = cbar_bottom + cbar_h + 8 + _LABEL_PX + 4 + x_extent + 4
        title_h = title_lines * round(_LABEL_PX * 1.3 + 1) + 8 if title_lines else 6
        height = math.ceil(map_bottom + cell_h * T + title_h)
        map_box = (left, map_bottom, cell_w * T, cell_h * T)
        cbar_box = (left, cbar_bottom, cell_w * T, cbar_h)
        return _HeadLayout(CARD_WIDTH_PX, height, map_box, cbar_box, x_stride, x_rotation, y_stride)


class _Blitter:
    """A figure whose static parts (labels, colorbar) are drawn once; `render()` redraws only the
    animated artists (heatmaps, titles) over that background: matplotlib's blitting."""

    def __init__(self, fig: Any, animated: list[Any]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.fig, self.animated = fig, animated
        for artist in animated:
            artist.set_animated(True)
        self.canvas = FigureCanvasAgg(fig)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(fig.bbox)

    def render(self) -> np.ndarray:
        """RGB image (height, width, 3) uint8 of the figure's current state."""
        self.canvas.restore_region(self.background)
        for artist in self.animated:
            self.fig.draw_artist(artist)
        for artist in self.animated:  # heatmaps must not hide their frames
            if hasattr(artist, "axes") and artist.axes is not None:
                for spine in artist.axes.spines.values():
                    self.fig.draw_artist(spine)
        rgba = np.asarray(self.canvas.buffer_rgba())  # (height, width, 4), opaque
        return rgba[..., :3].copy()


class _AttentionPainter:
    """Draws the attention maps of one probe.

    Laying out and drawing labels costs far more than drawing a heatmap, so each figure is built
    and drawn once, then only its heatmaps and titles are redrawn per head.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if len(tokens) == 0:
            raise ValueError("cannot draw an attention map for an empty probe; give at least one token")
        self.tokens = tuple(tokens)
        self.labels = display_tokens(tokens)
        self.T = len(self.labels)
        self._future = np.triu(np.ones((self.T, self.T), dtype=bool), k=1)  # the causal mask
        self._head_figs: dict[int, tuple[_Blitter, Any, Any]] = {}  # title lines -> (fig, image, title)
        self._grid_figs: dict[int, tuple[_Blitter, Any, list[Any], list[Any]]] = {}  # n_head -> ...

    def head(self, weights: np.ndarray, title: str = "") -> np.ndarray:
        """(T, T) weights -> RGB image (height, CARD_WIDTH_PX, 3) uint8 with labeled axes."""
        lines = title.count("\n") + 1 if title else 0
        if lines not in self._head_figs:
            self._head_figs[lines] = self._build_head(_HeadLayout.build(self.labels, lines))
        blitter, image, title_text = self._head_figs[lines]
        image.set_data(self._masked(weights))
        title_text.set_text(title)
        return blitter.render()

    def grid(
        self,
        weights: np.ndarray,
        title: str = "",
        entropy: Sequence[float] | None = None,
        distance: Sequence[float] | None = None,
    ) -> np.ndarray:
        """(n_head, T, T) weights -> RGB image (height, CARD_WIDTH_PX, 3) uint8, one panel per head."""
        n_head = weights.shape[0]
        if n_head not in self._grid_figs:
            self._grid_figs[n_head] = self._build_grid(n_head)
        blitter, title_text, images, captions = self._grid_figs[n_head]
        title_text.set_text(title)
        for head in range(n_head):
            images[head].set_data(self._masked(weights[head]))
            caption = f"head {head}"
            if entropy is not None and distance is not None and images[head].axes.bbox.width >= 110:
                caption += f"  H {entropy[head]:.2f}  d {distance[head]:.1f}"
            captions[head].set_text(caption)
        return blitter.render()

    def _masked(self, weights: np.ndarray) -> np.ndarray:
        """Hide the upper triangle (shown grey) when it is all zero, i.e. really the causal mask."""
        weights = np.asarray(weights)
        return weights if weights[self._future].any() else np.ma.masked_array(weights, self._future)

    # -- figure construction ---------------------------------------------------------------

    def _build_head(self, layout: _HeadLayout) -> tuple[_Blitter, Any, Any]:
        from matplotlib.figure import Figure

        W, H = layout.width, layout.height
        fig = Figure(figsize=(W / _DPI, H / _DPI), dpi=_DPI, facecolor="white")

        def frac(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
            return box[0] / W, box[1] / H, box[2] / W, box[3] / H  # pixels -> figure fractions

        ax = fig.add_axes(frac(layout.map_box))
        image = _imshow(ax, np.zeros((self.T, self.T)), smooth=layout.map_box[2] < self.T)
        xs = list(range(0, self.T, layout.x_stride))
        ys = list(range(0, self.T, layout.y_stride))
        font = dict(family=FONT_FAMILY, fontsize=_pt(_LABEL_PX))
        ax.set_xticks(xs, [self.labels[i] for i in xs], rotation=layout.x_rotation, **font)
        ax.set_yticks(ys, [self.labels[i] for i in ys], **font)
        ax.tick_params(length=2, pad=1.5, width=0.5)
        ax.set_xlabel("key (attended to)", labelpad=2, **font)
        ax.set_ylabel("query", labelpad=2, **font)
        for spine in ax.spines.values():
            spine.set_linewidth(0.5)
        title = fig.text(0.5, 1 - 5 / H, "", ha="center", va="top", linespacing=1.3, **font)
        cax = fig.add_axes(frac(layout.cbar_box))
        cbar = fig.colorbar(image, cax=cax, orientation="horizontal", ticks=list(_CBAR_TICKS))
        cbar.ax.set_xticks(list(_CBAR_TICKS), [f"{t:g}" for t in _CBAR_TICKS], family=FONT_FAMILY)
        cbar.ax.tick_params(labelsize=_pt(_LABEL_PX - 1), length=2, pad=1, width=0.5)
        cbar.outline.set_linewidth(0.5)
        return _Blitter(fig, [image, title]), image, title

    def _build_grid(self, n_head: int) -> tuple[_Blitter, Any, list[Any], list[Any]]:
        from matplotlib.figure import Figure

        ncols = math.ceil(math.sqrt(n_head))
        nrows = math.ceil(n_head / ncols)
        gap, margin, caption_h, title_h = 10, 6, _LABEL_PX + 5, _LABEL_PX + 12
        cell = _cell_px((CARD_WIDTH_PX - 2 * margin - (ncols - 1) * gap) / ncols, self.T)
        side = cell * self.T
        W = CARD_WIDTH_PX
        x_start = (W - ncols * side - (ncols - 1) * gap) / 2
        H = title_h + nrows * (caption_h + side) + (nrows - 1) * gap + margin
        fig = Figure(figsize=(W / _DPI, H / _DPI), dpi=_DPI, facecolor="white")
        title = fig.text(0.5, 1 - 5 / H, "", ha="center", va="top", family=FONT_FAMILY, fontsize=_pt(_LABEL_PX))
        images, captions = [], []
        for head in range(n_head):
            row, col = divmod(head, ncols)
            x0 = x_start + col * (side + gap)
            y0 = H - title_h - row * (caption_h + side + gap) - caption_h - side
            ax = fig.add_axes((x0 / W, y0 / H, side / W, side / H))
            images.append(_imshow(ax, np.zeros((self.T, self.T)), smooth=cell < 1))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_linewidth(0.5)
            captions.append(ax.set_title("", family=FONT_FAMILY, fontsize=_pt(_LABEL_PX - 1), pad=2))
        return _Blitter(fig, [title, *images, *captions]), title, images, captions


def _imshow(ax: Any, weights: np.ndarray, smooth: bool = False) -> Any:
    from matplotlib import colormaps
    from matplotlib.colors import PowerNorm

    cmap = colormaps[_CMAP].with_extremes(bad=_MASKED_RGB)
    # A fixed 0..1 scale compares across heads and steps; the square root keeps the small weights
    # of broad heads visible (uniform attention over 40 keys is 0.025 each).
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    interpolation = "antialiased" if smooth else "nearest"  # smooth only when cells < 1 pixel
    return ax.imshow(weights, cmap=cmap, norm=norm, interpolation=interpolation, aspect="auto")


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # Level 1: several times faster than the default 6, and flat heatmaps compress well anyway.
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_attention(weights_2d: torch.Tensor | np.ndarray, tokens: Sequence[str], title: str = "") -> np.ndarray:
    """One labeled heatmap: (T, T) weights -> RGB image array (height, width, 3) uint8."""
    weights = _as_numpy(weights_2d)
    if weights.ndim != 2 or weights.shape != (len(tokens), len(tokens)):
        raise ValueError(f"expected (T, T) weights with T = len(tokens) = {len(tokens)}; got shape {weights.shape}")
    return _AttentionPainter(tokens).head(weights, title)


def render_attention_png(weights_2d: torch.Tensor | np.ndarray, tokens: Sequence[str], title: str = "") -> bytes:
    """One labeled heatmap as PNG bytes; see `render_attention`."""
    return _png_bytes(render_attention(weights_2d, tokens, title))


def render_attention_grid(weights_3d: torch.Tensor | np.ndarray, tokens: Sequence[str], title: str = "") -> np.ndarray:
    """All heads of one layer: (n_head, T, T) weights -> RGB image array (height, width, 3) uint8."""
    weights = _as_numpy(weights_3d)
    if weights.ndim != 3 or weights.shape[1:] != (len(tokens), len(tokens)):
        raise ValueError(
            f"expected (n_head, T, T) weights with T = len(tokens) = {len(tokens)}; got shape {weights.shape}"
        )
    return _AttentionPainter(tokens).grid(weights, title)


def save_attention_pngs(weights: torch.Tensor, tokens: Sequence[str], out_dir: str | Path) -> list[Path]:
    """Write layer_{l}_head_{h}.png and layer_{l}_all_heads.png for (n_layer, n_head, T, T) weights.

    Returns the written paths, heads before the layer's grid, layer by layer.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rgb in attention_images(weights, tokens):
        path = out / (name.replace("/", "_") + ".png")
        path.write_bytes(_png_bytes(rgb))
        paths.append(path)
    return paths


def attention_images(
    weights: torch.Tensor, tokens: Sequence[str], painter: _AttentionPainter | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ("layer_{l}/head_{h}", image) per head, then ("layer_{l}/all_heads", grid), layer by layer.

    weights: (n_layer, n_head, T, T); images are RGB arrays (height, CARD_WIDTH_PX, 3) uint8.
    """
    w = _check_attention(torch.as_tensor(weights), tokens)
    entropy, distance = (stat.tolist() for stat in attention_stats(w))  # (n_layer, n_head) each
    w = w.numpy()
    painter = painter or _AttentionPainter(tokens)
    for layer in range(w.shape[0]):
        for head in range(w.shape[1]):
            title = _head_title(layer, head, entropy[layer][head], distance[layer][head])
            yield f"layer_{layer}/head_{head}", painter.head(w[layer, head], title)
        yield f"layer_{layer}/all_heads", painter.grid(w[layer], f"layer {layer}", entropy[layer], distance[layer])


def _as_numpy(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        return weights.detach().to("cpu", torch.float64).numpy()
    return np.asarray(weights, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Console progress


class Progress:
    """Training progress: a tqdm bar on a terminal, periodic plain lines otherwise (CI logs).

    `update(step, ...)` takes the number of finished iterations (absolute, not a delta) and the
    latest loss / learning rate / throughput; values not given keep their last shown value.
    Disabled (e.g. on ranks other than 0) it prints nothing at all, `write` included.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        plain_every: int | None = None,
        desc: str = "train",
    ) -> None:
        self.total, self.step, self.enabled = total, initial, enabled
        self.stream = sys.stdout if stream is None else stream
        # ~20 lines per run by default; a line every step would flood CI logs.
        self.plain_every = max(1, plain_every if plain_every is not None else total // 20)
        self._values: dict[str, float] = {}
        self._rate_start: tuple[float, int] | None = None  # (time, step) of the first update
        self._bar: Any = None
        self._printed_any = False
        self.interactive = enabled and _isatty(self.stream)
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, file=self.stream, unit="it",
                dynamic_ncols=True, leave=True,
            )  # fmt: skip

    def update(
        self, step: int, *, loss: float | None = None, lr: float | None = None, tok_s: float | None = None
    ) -> None:
        """Advance to `step` finished iterations and show the given values."""
        if not self.enabled:
            return
        for name, value in (("loss", loss), ("lr", lr), ("tok_s", tok_s)):
            if value is not None:
                self._values[name] = float(value)
        previous, self.step = self.step, step
        if self._rate_start is None:  # the first step is slow (warm-up, compile): time from after it
            self._rate_start = (time.perf_counter(), step)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(step - self._bar.n)
            return
        first = not self._printed_any
        crossed = step // self.plain_every > previous // self.plain_every
        if first or crossed or step == self.total > previous:
            self._printed_any = True
            self._print(self._plain_line())

    def write(self, msg: str) -> None:
        """Print a message on its own line, above the bar when there is one."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            self._print(msg)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _postfix(self) -> str:
        parts = []
        if "loss" in self._values:
            parts.append(f"loss {self._values['loss']:.4f}")
        if "lr" in self._values:
            parts.append(f"lr {self._values['lr']:.2e}")
        if "tok_s" in self._values:
            parts.append(f"{_si(self._values['tok_s'])} tok/s")
        return " | ".join(parts)

    def _plain_line(self) -> str:
        width = len(str(self.total))
        parts = [f"iter {self.step:>{width}}/{self.total}"]
        postfix = self._postfix()
        if postfix:
            parts.append(postfix)
        if self._rate_start is not None and self.step < self.total:
            start_time, start_step = self._rate_start
            if self.step > start_step:
                per_step = (time.perf_counter() - start_time) / (self.step - start_step)
                parts.append(f"eta {_duration(per_step * (self.total - self.step))}")
        return " | ".join(parts)

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _si(value: float) -> str:
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.1f}{suffix}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
