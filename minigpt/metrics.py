"""The training loop's logger interface, TensorBoard logging and attention heatmaps.

matplotlib and TensorBoard are imported lazily: importing this module stays cheap."""

from __future__ import annotations

import math
import threading
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch


class MetricsLogger(AbstractContextManager):
    """The logging interface of the training loop. This base class ignores everything (ranks other than 0,
    runs without TensorBoard use it), so the loop needs no `if tensorboard:` branch."""

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalars by tag, e.g. {"loss/train": 1.92, "lr": 3e-4}."""

    def text(self, tag: str, text: str, step: int) -> None:
        """Log a text verbatim (shown preformatted, not as markdown)."""

    def attention(
        self,
        weights: torch.Tensor,
        tokens: Sequence[str],
        step: int,
        probe: str = "text",
        ids: Sequence[int] | None = None,
    ) -> None:
        """Log the maps and per-head stats of (n_layer, n_head, T, T) attention weights (rows = queries) on a
        probe's tokens (and ids), and the weights themselves (attention_tensor)."""

    def attention_tensor(
        self, weights: torch.Tensor, tokens: Sequence[str], step: int, probe: str, ids: Sequence[int] | None = None
    ) -> None:
        """Log only the (n_layer, n_head, T, T) weights, for TensorBoard's Attention tab (minigpt.tb_attention)."""

    def roles(
        self,
        scores: Mapping[str, torch.Tensor],
        step: int,
        reference: Mapping[str, float] | None = None,
        probe: str = "text",
    ) -> None:
        """Log head-role scores, role -> (n_layer, n_head) (minigpt.roles), with their uniform-attention values."""

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """Log the run's hyperparameters (nested mappings are flattened) with its final metrics."""

    def flush(self) -> None:
        """Write buffered events to disk."""

    def close(self) -> None:
        """Flush and release files; further calls are ignored."""

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorBoardLogger(MetricsLogger):
    """Writes TensorBoard event files to `log_dir` (e.g. runs/<run-name>/).

    `attention()` writes per layer l and head h the images attention/layer_{l}/head_{h} and .../all_heads,
    and the scalars attention_entropy/layer_{l}/head_{h} (nats) and attention_distance/... (tokens).
    `roles()` writes per role r the scalars role_{r}/layer_{l}/head_{h}, the layer x head grid image
    roles/{r}, and the text roles/top_heads.
    With attention_tensors, `attention()` and `roles()` also write the weights and scores as tensor
    summaries minigpt_attention/{probe} and minigpt_attention_roles/{probe}, which the Attention tab
    reads (minigpt/tb_attention); the images and scalars stay for TensorBoard without it.
    `hparams()` also stores its final metrics as scalars under `final/{name}`.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None, attention_tensors: bool = True) -> None:
        from torch.utils.tensorboard import SummaryWriter

        threading.excepthook = _quiet_writer_thread
        # purge_step: on resume, hide events an interrupted run logged after its checkpoint
        self._writer = SummaryWriter(str(log_dir), flush_secs=30, purge_step=purge_step)
        self._heatmaps: _Heatmaps | None = None
        self._grids: dict[str, _RoleGrid] = {}
        self._tensors = attention_tensors

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, float(value), step)

    def text(self, tag: str, text: str, step: int) -> None:
        # TensorBoard renders text as markdown; an indented code block shows it exactly as written.
        self._writer.add_text(tag, "\n".join("    " + line for line in text.splitlines() or [""]), step)

    def attention(
        self,
        weights: torch.Tensor,
        tokens: Sequence[str],
        step: int,
        probe: str = "text",
        ids: Sequence[int] | None = None,
    ) -> None:
        if self._heatmaps is None or self._heatmaps.tokens != tuple(tokens):  # the probe rarely changes
            self._heatmaps = _Heatmaps(tokens)
        for name, rgb in self._heatmaps.images(weights):
            self._writer.add_image(f"attention/{name}", rgb, step, dataformats="HWC")
        for name, stat in zip(("entropy", "distance"), attention_stats(weights.float())):  # (n_layer, n_head) each
            for (layer, head), value in np.ndenumerate(stat.cpu().numpy()):
                self._writer.add_scalar(f"attention_{name}/layer_{layer}/head_{head}", float(value), step)
        self.attention_tensor(weights, tokens, step, probe, ids)

    def attention_tensor(
        self, weights: torch.Tensor, tokens: Sequence[str], step: int, probe: str, ids: Sequence[int] | None = None
    ) -> None:
        from minigpt.tb_attention.summary import attention_summary

        if self._tensors:
            w = torch.as_tensor(weights).detach().to("cpu", torch.float16).numpy()
            self._writer.file_writer.add_summary(attention_summary(w, tokens, ids, probe), step)

    def roles(
        self,
        scores: Mapping[str, torch.Tensor],
        step: int,
        reference: Mapping[str, float] | None = None,
        probe: str = "text",
    ) -> None:
        from minigpt.roles import format_roles
        from minigpt.tb_attention.summary import roles_summary

        if self._tensors:
            values = {role: torch.as_tensor(s).detach().cpu().numpy() for role, s in scores.items()}
            self._writer.file_writer.add_summary(roles_summary(values, reference, probe), step)

        for role, s in scores.items():
            values = torch.as_tensor(s).detach().cpu().numpy()  # (n_layer, n_head)
            for (layer, head), value in np.ndenumerate(values):
                self._writer.add_scalar(f"role_{role}/layer_{layer}/head_{head}", float(value), step)
            if self._grids.get(role) is None or self._grids[role].shape != values.shape:
                self._grids[role] = _RoleGrid(role, values.shape, reference.get(role) if reference else None)
            self._writer.add_image(f"roles/{role}", self._grids[role].draw(values), step, dataformats="HWC")
        self.text("roles/top_heads", format_roles(dict(scores), dict(reference) if reference else None), step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        final = {f"final/{name}": float(value) for name, value in metrics.items()}
        experiment, *session = hparams_summaries(flatten_hparams(hparams), final)
        # The HParams tab shows five columns at first: those marked "differs", then by name, which would be
        # data.cache_dir and the data.hf_* settings. Mark the ones that tell runs apart.
        content = experiment.value[0].metadata.plugin_data
        data = HParamsPluginData.FromString(content.content)
        for info in data.experiment.hparam_infos:
            info.differs = info.name in SHOWN_HPARAMS
        content.content = data.SerializeToString()
        # Into this run's own event file: SummaryWriter.add_hparams would open a timestamped sub-run.
        for summary in (experiment, *session):
            self._writer.file_writer.add_summary(summary, step)
        self.scalars(final, step)

    def flush(self) -> None:
        self._writer.flush()  # both are no-ops once closed

    def close(self) -> None:
        self._writer.close()


def _quiet_writer_thread(args: threading.ExceptHookArgs, default=threading.excepthook) -> None:
    """TensorBoard's writer thread re-raises its OSError (e.g. a full disk) in our next call, where
    it becomes one line; don't also print the thread's traceback."""
    if not (issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
        default(args)


SHOWN_HPARAMS = ("model.n_layer", "model.n_embd", "data.tokenizer", "train.lr", "train.batch_size")
"""The HParams tab's columns shown at first (TensorBoard shows five); the others are a click away."""


def flatten_hparams(hparams: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str]:
    """Flatten nested mappings to {"model.n_layer": 4, ...} with TensorBoard-safe values."""
    flat: dict[str, int | float | str] = {}
    for key, value in hparams.items():
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{prefix}{key}."))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
        else:  # TensorBoard takes numbers and strings; booleans would show as 0/1, None not at all
            flat[f"{prefix}{key}"] = str(value)
    return flat


def attention_stats(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head entropy and mean distance of attention maps, averaged over query rows.

    weights: (..., T, T) probabilities, row i = query i, column j = key j. Returns (entropy, distance), each
    (...): nats (0: each query looks at one key), and the look-back sum_j w_ij * (i - j) in tokens."""
    if weights.dim() < 2 or weights.size(-1) != weights.size(-2):
        raise ValueError(f"attention weights must end in a square (T, T) map; got shape {tuple(weights.shape)}")
    w = weights.detach().to(torch.float64)
    pos = torch.arange(w.size(-1), dtype=torch.float64, device=w.device)
    entropy = -torch.special.xlogy(w, w).sum(-1)  # (..., T); xlogy(0, 0) = 0
    distance = (w * (pos[:, None] - pos[None, :])).sum(-1)  # (..., T)
    return entropy.mean(-1).to(weights.dtype), distance.mean(-1).to(weights.dtype)


# drawn by DejaVu Sans, matplotlib's own font; a bare '$' would start mathtext
_SUBSTITUTES = {" ": "␣", "\n": "↵", "\t": "⇥", "$": r"\$"}


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """Make tokens readable as axis labels: ' ' -> '␣', '\\n' -> '↵', '\\t' -> '⇥', '' -> '∅', '$' -> '\\$';
    control characters and glyphs the font lacks -> \\xNN / \\uNNNN; over 10 characters cut with '…'."""
    from matplotlib import font_manager

    charmap = font_manager.get_font(font_manager.findfont("DejaVu Sans")).get_charmap()
    labels = []
    for token in tokens:
        parts = []
        for ch in token:
            if ch in _SUBSTITUTES:
                parts.append(_SUBSTITUTES[ch])
            elif unicodedata.category(ch).startswith("C") or ord(ch) not in charmap:
                parts.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
            else:
                parts.append(ch)
        label = "".join(parts) or "∅"
        labels.append(label if len(label) <= 10 else label[:9] + "…")
    return labels


# Heatmaps are 350 px wide at 100 dpi, so TensorBoard shows them pixel for pixel. A token label
# needs 12 px (13 px upright); when the T tokens don't fit, only every k-th one is labeled.
CARD_WIDTH_PX = 350
_DPI = 100
_ROW_PX, _CHAR_PX = 12, 13
_MAX_MAP_PX = 768  # the tallest map: 64 labeled rows
_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "figure.titlesize": 9,
    "axes.linewidth": 0.5,
    "xtick.major.size": 2,
    "ytick.major.size": 2,
    "xtick.major.pad": 1.5,
    "ytick.major.pad": 1.5,
    "xtick.major.width": 0.5,
    "ytick.major.width": 0.5,
}


class _Heatmaps:
    """Draws the attention maps of one probe: one figure per panel count, built once, then redrawn."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens, self.labels, self.T = tuple(tokens), display_tokens(tokens), len(tokens)
        self.rotation = 0 if max(map(len, self.labels), default=1) == 1 else 90  # chars stand, words turn
        self._figures: dict[int, tuple[Any, ...]] = {}  # panel count -> (fig, images, texts, background)

    def images(self, weights: torch.Tensor) -> Iterator[tuple[str, np.ndarray]]:
        """(n_layer, n_head, T, T) weights -> ("layer_{l}/head_{h}", image) per head, then
        ("layer_{l}/all_heads", image), per layer."""
        w = torch.as_tensor(weights).detach().to("cpu", torch.float32)
        if w.dim() != 4 or w.shape[2:] != (self.T, self.T) or not self.T:
            raise ValueError(
                f"attention weights must have shape (n_layer, n_head, T, T) with T = len(tokens) = {self.T} > 0; "
                f"got {tuple(w.shape)} (select one sequence of the batch first, e.g. w[:, 0])"
            )
        entropy, distance = (stat.tolist() for stat in attention_stats(w))  # (n_layer, n_head) each
        n_head = w.shape[1]
        sep = "  " if n_head <= 4 else "\n" if n_head <= 9 else None  # 3 columns: numbers on a 2nd line
        for layer, maps in enumerate(w.numpy()):
            H, d = entropy[layer], distance[layer]
            for h in range(n_head):
                caption = f"entropy {H[h]:.2f} nats · distance {d[h]:.1f} tokens"
                yield f"layer_{layer}/head_{h}", self.draw(maps[h][None], f"layer {layer} · head {h}", [caption])
            captions = [f"head {h}" + (f"{sep}H {H[h]:.2f}  d {d[h]:.1f}" if sep else "") for h in range(n_head)]
            yield f"layer_{layer}/all_heads", self.draw(maps, f"layer {layer}", captions)

    def figure(self, n: int) -> tuple[Any, list[Any]]:
        """The matplotlib figure that draw() paints n panels on, and its n images, once draw() has used it:
        where each map and label lies in the image."""
        fig, images, _, _ = self._figures[n]
        return fig, images

    def draw(self, weights: np.ndarray, title: str, captions: Sequence[str]) -> np.ndarray:
        """(n, T, T) weights -> RGB image (height, CARD_WIDTH_PX, 3) uint8 with n captioned panels."""
        if len(weights) not in self._figures:
            self._figures[len(weights)] = self._build(title, captions)
        fig, images, texts, background = self._figures[len(weights)]
        future = np.triu(np.ones((self.T, self.T), dtype=bool), k=1)
        for image, w in zip(images, weights):
            # grey upper triangle: the causal mask, unless the weights there are not zero
            image.set_data(w if w[future].any() else np.ma.masked_array(w, future))
        for text, caption in zip(texts, [title, *captions]):
            text.set_text(caption)
        fig.canvas.restore_region(background)
        for artist in [*images, *texts, *(spine for image in images for spine in image.axes.spines.values())]:
            fig.draw_artist(artist)
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    def _figure(self, captions: Sequence[str], widest: int) -> tuple[Any, int, int, float]:
        """An empty figure, CARD_WIDTH_PX wide, for one panel per caption: (fig, nrows, ncols, panel width in px)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        n = len(captions)
        ncols = math.ceil(math.sqrt(n))
        nrows = math.ceil(n / ncols)
        # Planned panels (px): square, or for a single map tall enough to label every row.
        label_px = 7 * len(self.labels[widest])
        width = (CARD_WIDTH_PX - label_px - 30 - 8 * (ncols - 1)) / ncols
        height = width if n > 1 else max(width, min(self.T * _ROW_PX, _MAX_MAP_PX))
        lines = max(caption.count("\n") + 1 for caption in captions)
        x_labels_px = 14 if self.rotation == 0 else label_px + 6
        fig_height = nrows * (height + 13 * lines + 10) + x_labels_px + 110  # + title, colorbar
        fig = Figure(figsize=(CARD_WIDTH_PX / _DPI, math.ceil(fig_height) / _DPI), dpi=_DPI, layout="constrained")
        fig.get_layout_engine().set(w_pad=4 / _DPI, h_pad=4 / _DPI)
        FigureCanvasAgg(fig)  # becomes fig.canvas
        return fig, nrows, ncols, width

    def _build(self, title: str, captions: Sequence[str]) -> tuple[Any, list[Any], list[Any], Any]:
        from matplotlib import colormaps, colors, rc_context

        n, widest = len(captions), max(range(self.T), key=lambda i: len(self.labels[i]))
        fig, nrows, ncols, width = self._figure(captions, widest)
        # A fixed 0..1 scale compares heads and steps; the square root keeps small weights visible.
        norm = colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
        cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
        smooth = width < self.T  # cells under a pixel wide: smoothed, instead of dropping columns
        with rc_context(_STYLE):
            axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).flatten()
            images = [
                ax.imshow(
                    np.zeros((self.T, self.T)),
                    cmap=cmap,
                    norm=norm,
                    aspect="auto",
                    interpolation="antialiased" if smooth else "nearest",
                )
                for ax in axes[:n]
            ]
            for i, ax in enumerate(axes[:n]):  # labels on the left column and under each column
                bottom, left = i + ncols >= n, i % ncols == 0
                ax.set_title(captions[i])
                ax.set_xlabel("key (attended to)" if n == 1 else "key" if bottom else "")
                ax.set_ylabel("query" if left else "")
                ax.tick_params(labelbottom=bottom, labelleft=left)
                ax.set_xticks([widest], [self.labels[widest]], rotation=self.rotation)  # to lay out margins
                ax.set_yticks([widest], [self.labels[widest]])
            for ax in axes[n:]:
                ax.set_axis_off()
            cbar = fig.colorbar(
                images[0],
                ax=axes,
                location="bottom",
                ticks=[0, 0.05, 0.25, 0.5, 1],
                aspect=50,
                shrink=0.9,
                format="{x:g}",
            )
            cbar.outline.set_linewidth(0.5)
            suptitle = fig.suptitle(title)
        # Lay out, measure the panels, and label every k-th token when they don't all fit.
        fig.get_layout_engine().execute(fig)
        x_stride = math.ceil(self.T * (_CHAR_PX if self.rotation == 0 else _ROW_PX) / axes[0].bbox.width)
        y_stride = math.ceil(self.T * _ROW_PX / axes[0].bbox.height)
        for ax in axes[:n]:
            ax.set_xticks(range(0, self.T, x_stride), self.labels[::x_stride], rotation=self.rotation)
            ax.set_yticks(range(0, self.T, y_stride), self.labels[::y_stride])
        # Blitting, matplotlib's fast redraw: labels and colorbar are drawn once, as a background;
        # draw() repaints only the heatmaps, titles and frames on top of it, far less than a full draw.
        texts = [suptitle, *(ax.title for ax in axes[:n])]
        for artist in [*images, *texts, *(spine for ax in axes[:n] for spine in ax.spines.values())]:
            artist.set_animated(True)  # left out of full draws
        fig.canvas.draw()
        fig.set_layout_engine("none")  # keep this layout
        return fig, images, texts, fig.canvas.copy_from_bbox(fig.bbox)


class _RoleGrid:
    """Draws one role's scores as a layer x head grid with the numbers in the cells: built once, then redrawn."""

    def __init__(self, role: str, shape: tuple[int, int], uniform: float | None) -> None:
        from matplotlib import colormaps, rc_context
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.shape = shape
        n_layer, n_head = shape
        cell = min(48, (CARD_WIDTH_PX - 60) // n_head)  # px per cell, so the card stays 350 px wide
        height = n_layer * cell + 70
        self.fig = Figure(figsize=(CARD_WIDTH_PX / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
        FigureCanvasAgg(self.fig)
        with rc_context(_STYLE):
            ax = self.fig.subplots()
            # the same fixed 0..1 scale at every step and for every role, so colours compare
            self.image = ax.imshow(
                np.zeros(shape),
                cmap=colormaps["viridis"].with_extremes(bad="#d9d9d9"),
                vmin=0.0,
                vmax=1.0,
                aspect="auto",
            )
            ax.set_xticks(range(n_head), [str(h) for h in range(n_head)])
            ax.set_yticks(range(n_layer), [str(layer) for layer in range(n_layer)])
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.tick_params(length=0)
            fontsize = 8 if n_head <= 8 else 6
            self.texts = [
                [ax.text(h, layer, "", ha="center", va="center", fontsize=fontsize) for h in range(n_head)]
                for layer in range(n_layer)
            ]
            self.fig.suptitle(
                role.replace("_", "-")
                + " score"
                + (f" (uniform attention: {uniform:.2f})" if uniform is not None else "")
            )
        # blitting, as in _Heatmaps: axes and labels are drawn once; draw() repaints the cells and numbers
        self.artists = [self.image, *(text for row in self.texts for text in row)]
        for artist in self.artists:
            artist.set_animated(True)
        self.fig.canvas.draw()
        self.fig.set_layout_engine("none")
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def draw(self, values: np.ndarray) -> np.ndarray:
        """(n_layer, n_head) scores in [0, 1] (NaN: undefined) -> RGB image (height, CARD_WIDTH_PX, 3) uint8."""
        self.image.set_data(np.ma.masked_invalid(values))
        for (layer, head), value in np.ndenumerate(values):
            text = self.texts[layer][head]
            text.set_text("–" if math.isnan(value) else f"{value:.2f}")
            # black on viridis' yellow-green and on the grey of an undefined score, white on its blue
            text.set_color("white" if value < 0.5 else "black")
        self.fig.canvas.restore_region(self.background)
        for artist in self.artists:
            self.fig.draw_artist(artist)
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()


def save_attention_pngs(weights: torch.Tensor, tokens: Sequence[str], out_dir: str | Path) -> list[Path]:
    """Write layer_{l}_head_{h}.png, then layer_{l}_all_heads.png, per layer of (n_layer, n_head, T, T) weights;
    return the paths in that order."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rgb in _Heatmaps(tokens).images(weights):
        paths.append(out / (name.replace("/", "_") + ".png"))
        Image.fromarray(rgb).save(paths[-1])
    return paths
