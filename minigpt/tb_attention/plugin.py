"""The Attention tab's server side: a TensorBoard plugin that serves the attention weights a run logged.

TensorBoard finds it through the `tensorboard_plugins` entry point (pyproject.toml), calls
`AttentionLoader.fix_flags` to keep every logged step of this plugin's data (TensorBoard keeps 10
per tag by default, which would hide most evaluations), then `load` for the plugin. The plugin reads
through TensorBoard's own data provider, so it follows runs as they are written, and it serves the
one ES module the tab runs (static/index.js, shipped in the package: nothing comes from the network).

Routes, under data/plugin/minigpt_attention/ (GET; a bad query value answers 400 with one line):
    /runs                          runs, their probes, steps and shapes; runs without attention tensors
    /tokens?run=R&probe=P          the probe's tokens (display strings) and ids
    /attention?run=R&probe=P&step=S    float16 little-endian (n_layer, n_head, T, T), shape in X-Shape
    /roles?run=R&probe=P           head-role scores at every step, and the induction probe's copy losses

No torch here: TensorBoard imports this module when it starts.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard import context as tb_context
from tensorboard.backend import experiment_id as tb_experiment_id
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from minigpt.tb_attention.summary import ATTENTION_TAG, PLUGIN_NAME, ROLES_TAG, parse_content

STATIC = Path(__file__).resolve().parent / "static"
KEEP_ALL = 0  # in --samples_per_plugin, 0 keeps every sample
MAX_POINTS = 1_000_000  # what we ask the data provider for: all it kept
COPY_LOSS_TAGS = {"first_copy_loss": "loss/induction_first_copy", "second_copy_loss": "loss/induction_second_copy"}


class BadQuery(ValueError):
    """A query value the routes cannot answer: a 400 with this one-line message."""


class AttentionPlugin(base_plugin.TBPlugin):
    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self._provider = context.data_provider
        hints = context.sampling_hints or {}
        self._kept = hints.get(PLUGIN_NAME, 10)  # TensorBoard's default for a plugin it doesn't know
        # (experiment, run, tag) -> (the series' version, {step: array}); arrays are read once per version
        self._cache: dict[tuple[str, str, str], tuple[Any, dict[int, np.ndarray]]] = {}
        self._lock = threading.Lock()

    def get_plugin_apps(self) -> dict[str, Any]:
        return {
            "/index.js": self._serve_module,
            "/runs": self._route(self._runs),
            "/tokens": self._route(self._tokens),
            "/attention": self._route(self._attention),
            "/roles": self._route(self._roles),
        }

    def is_active(self) -> bool:
        return False  # active where a run has this plugin's data (data_plugin_names), not otherwise

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Attention")

    # -- the routes -----------------------------------------------------------------------------------

    def _route(self, handler):
        """A WSGI app answering handler(request) -> (content, content_type, headers); BadQuery -> 400."""

        @wrappers.Request.application
        def app(request: wrappers.Request) -> wrappers.Response:
            try:
                content, content_type, headers = handler(request)
            except BadQuery as e:
                return http_util.Respond(request, str(e), "text/plain", code=400)
            return http_util.Respond(request, content, content_type, headers=headers)

        return app

    @wrappers.Request.application
    def _serve_module(self, request: wrappers.Request) -> wrappers.Response:
        try:
            module = (STATIC / "index.js").read_bytes()
        except OSError:
            missing = "index.js is missing from minigpt's package; reinstall minigpt"
            return http_util.Respond(request, missing, "text/plain", code=404)
        return http_util.Respond(request, module, "text/javascript")

    def _runs(self, request: wrappers.Request):
        ctx, eid = _context(request)
        runs = []
        for run, tags in sorted(self._list(ctx, eid).items()):
            probes = []
            for tag in sorted((t for t in tags if t.startswith(ATTENTION_TAG)), key=_probe_order):
                steps = self._steps(ctx, eid, run, tag, tags[tag])
                if steps:
                    n_layer, n_head, T, _ = steps[max(steps)].shape
                    probe = {"probe": tag[len(ATTENTION_TAG) :], "steps": sorted(steps)}
                    probes.append(probe | {"n_layer": n_layer, "n_head": n_head, "T": T})
            if probes:
                runs.append({"run": run, "probes": probes})
        shown = {r["run"] for r in runs}
        empty = sorted(r.run_name for r in self._provider.list_runs(ctx, experiment_id=eid) if r.run_name not in shown)
        answer: dict[str, Any] = {"runs": runs, "empty_runs": empty}
        if self._kept != KEEP_ALL:
            answer["note"] = (
                f"TensorBoard keeps {self._kept} logged steps per probe (--samples_per_plugin "
                f"{PLUGIN_NAME}={self._kept}); start it without that setting to see every step"
            )
        return answer, "application/json", None

    def _tokens(self, request: wrappers.Request):
        ctx, eid = _context(request)
        run, probe = _arg(request, "run"), _arg(request, "probe")
        content = parse_content(self._series(ctx, eid, run, ATTENTION_TAG + probe).plugin_content)
        return {"tokens": content.get("tokens", []), "ids": content.get("ids", [])}, "application/json", None

    def _attention(self, request: wrappers.Request):
        ctx, eid = _context(request)
        run, probe, step = _arg(request, "run"), _arg(request, "probe"), _int_arg(request, "step")
        tag = ATTENTION_TAG + probe
        steps = self._steps(ctx, eid, run, tag, self._series(ctx, eid, run, tag))
        if step not in steps:
            logged = sorted(steps)
            raise BadQuery(f"step {step} is not logged for run {run!r}, probe {probe!r}; logged: {_preview(logged)}")
        weights = np.ascontiguousarray(steps[step], dtype="<f2")
        shape = ",".join(map(str, weights.shape))
        return weights.tobytes(), "application/octet-stream", [("X-Shape", shape), ("X-Step", str(step))]

    def _roles(self, request: wrappers.Request):
        """The roles logged with probe P, else those of the run's `text` probe (the training run logs every
        role, the induction score included, there), else none."""
        ctx, eid = _context(request)
        run, probe = _arg(request, "run"), _arg(request, "probe")
        tags = self._list(ctx, eid).get(run)
        if tags is None or (ATTENTION_TAG + probe not in tags and ROLES_TAG + probe not in tags):
            self._series(ctx, eid, run, ATTENTION_TAG + probe)  # raises the 400 that names what is missing
        source = next((p for p in (probe, "text") if ROLES_TAG + p in tags), None)
        answer: dict[str, Any] = {"probe": source, "roles": [], "steps": [], "scores": [], "uniform": {}}
        if source is not None:
            series = tags[ROLES_TAG + source]
            content = parse_content(series.plugin_content)
            steps = self._steps(ctx, eid, run, ROLES_TAG + source, series)
            uniform = content.get("uniform", {})  # NaN where the probe text has no repeated token: null
            answer["roles"] = content.get("roles", [])
            answer["uniform"] = {role: _finite([value])[0] for role, value in uniform.items()}
            answer["steps"] = sorted(steps)
            answer["scores"] = [_finite(steps[s]) for s in answer["steps"]]
        answer |= self._copy_losses(ctx, eid, run)
        return answer, "application/json", None

    # -- reading the data -----------------------------------------------------------------------------

    def _list(self, ctx, eid: str) -> dict[str, dict[str, provider.TensorTimeSeries]]:
        return self._provider.list_tensors(ctx, experiment_id=eid, plugin_name=PLUGIN_NAME)

    def _series(self, ctx, eid: str, run: str, tag: str) -> provider.TensorTimeSeries:
        """The series of run/tag, or BadQuery naming what is missing."""
        runs = self._list(ctx, eid)
        if run not in runs:
            known = sorted(runs)
            raise BadQuery(f"no run {run!r} with attention data; runs: {_preview(known) if known else 'none'}")
        if tag not in runs[run]:
            probes = sorted(t[len(ATTENTION_TAG) :] for t in runs[run] if t.startswith(ATTENTION_TAG))
            raise BadQuery(f"run {run!r} has no probe {tag.split('/', 1)[1]!r}; probes: {_preview(probes)}")
        return runs[run][tag]

    def _steps(self, ctx, eid: str, run: str, tag: str, series: provider.TensorTimeSeries) -> dict[int, np.ndarray]:
        """Every kept step of run/tag: step -> array, read again only when the series has changed."""
        key, version = (eid, run, tag), (series.max_step, series.max_wall_time)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        only = provider.RunTagFilter(runs=[run], tags=[tag])
        data = self._provider.read_tensors(
            ctx, experiment_id=eid, plugin_name=PLUGIN_NAME, downsample=MAX_POINTS, run_tag_filter=only
        )
        content = parse_content(series.plugin_content)  # TensorBoard keeps the metadata of a tag's first record
        # a later record of a step wins (a resumed run logs its steps again); one that does not fit the metadata
        # is left out (a malformed record, or a resume that changed log.probe_tokens: its tokens are not known)
        steps = {d.step: d.numpy for d in data.get(run, {}).get(tag, []) if _fits(d.numpy, content)}
        with self._lock:
            self._cache[key] = (version, steps)
        return steps

    def _copy_losses(self, ctx, eid: str, run: str) -> dict[str, list[list[float]]]:
        """The induction probe's first- and second-copy loss as [[step, nats], ...] (empty when not logged)."""
        only = provider.RunTagFilter(runs=[run], tags=list(COPY_LOSS_TAGS.values()))
        data = self._provider.read_scalars(
            ctx, experiment_id=eid, plugin_name="scalars", downsample=MAX_POINTS, run_tag_filter=only
        )
        tags = data.get(run, {})
        return {
            key: [[d.step, d.value] for d in tags.get(tag, []) if math.isfinite(d.value)]
            for key, tag in COPY_LOSS_TAGS.items()
        }


class AttentionLoader(base_plugin.TBLoader):
    """Keeps every logged step of the attention data, unless --samples_per_plugin names this plugin."""

    def fix_flags(self, flags: Any) -> None:
        hints = getattr(flags, "samples_per_plugin", None)
        if isinstance(hints, dict):  # TensorBoard parses the flag to {plugin: samples}
            hints.setdefault(PLUGIN_NAME, KEEP_ALL)

    def load(self, context: base_plugin.TBContext) -> AttentionPlugin | None:
        # TensorBoard's legacy modes have no data provider: then the tab is left out, not broken
        return AttentionPlugin(context) if context.data_provider is not None else None


def _fits(values: np.ndarray, content: dict[str, Any]) -> bool:
    """Whether a record has the shape its metadata describes: (n_layer, n_head, T, T) for T tokens, or
    (n_roles, n_layer, n_head) for the roles named."""
    shape = np.shape(values)
    if content.get("kind") == "roles":
        return len(shape) == 3 and shape[0] == len(content.get("roles", []))
    return len(shape) == 4 and shape[2] == shape[3] == len(content.get("tokens", []))


def _context(request: wrappers.Request) -> tuple[Any, str]:
    return tb_context.from_environ(request.environ), request.environ.get(tb_experiment_id.WSGI_ENVIRON_KEY, "")


def _arg(request: wrappers.Request, name: str) -> str:
    value = request.args.get(name)
    if not value:
        raise BadQuery(f"missing query value {name}=...")
    return value


def _int_arg(request: wrappers.Request, name: str) -> int:
    value = _arg(request, name)
    if not re.fullmatch(r"-?\d{1,18}", value):
        raise BadQuery(f"{name}={value[:40]!r} is not an integer")
    return int(value)


def _preview(values: list, n: int = 8) -> str:
    shown = ", ".join(map(str, values[:n]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


def _probe_order(tag: str) -> tuple:
    """text first, then induction, then the others with their numbers in order (prompt_2 before prompt_10)."""
    probe = tag[len(ATTENTION_TAG) :]
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", probe)]
    return (probe != "text", probe != "induction", [(isinstance(p, str), p) for p in natural])


def _finite(values: np.ndarray) -> list:
    """Nested lists of scores to 4 decimals (a third of the JSON) with NaN (an undefined score) as None: JSON
    has no NaN."""
    if np.ndim(values) > 1:
        return [_finite(v) for v in values]
    return [round(float(v), 4) if math.isfinite(v) else None for v in values]
