"""Attention weights and head-role scores as TensorBoard tensor summaries, for the Attention tab.

A tag `minigpt_attention/<probe>` holds one probe's weights at a step: float16, (n_layer, n_head, T, T),
rows = queries, columns = keys; its metadata carries the probe's tokens and ids as JSON. A tag
`minigpt_attention_roles/<probe>` holds the head-role scores: float32, (n_roles, n_layer, n_head).
Both belong to the plugin `minigpt_attention`, whose data TensorBoard keeps at every step (plugin.py).

Only numpy and TensorBoard's protobuf classes are used: the plugin imports this module when TensorBoard
starts, and torch would add seconds to that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorboard.compat.proto.summary_pb2 import DataClass, Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.types_pb2 import DT_FLOAT, DT_HALF

PLUGIN_NAME = "minigpt_attention"
ATTENTION_TAG = PLUGIN_NAME + "/"  # + probe name
ROLES_TAG = PLUGIN_NAME + "_roles/"  # + probe name
VERSION = 1


def attention_summary(
    weights: np.ndarray, tokens: Sequence[str], ids: Sequence[int] | None = None, probe: str = "text"
) -> Summary:
    """A summary of (n_layer, n_head, T, T) weights on T tokens (display strings, as decoded) with their ids."""
    w = np.asarray(weights)
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[3] != len(tokens):
        raise ValueError(
            f"attention weights must have shape (n_layer, n_head, T, T) with T = len(tokens) = {len(tokens)}; "
            f"got {w.shape}"
        )
    ids = [int(i) for i in ids] if ids is not None else []
    if ids and len(ids) != len(tokens):
        raise ValueError(f"got {len(ids)} ids for {len(tokens)} tokens")
    content = {"version": VERSION, "kind": "attention", "tokens": [str(t) for t in tokens], "ids": ids}
    # float16 keeps 3 significant digits, plenty to see a weight, at half float32's disk
    return _tensor_summary(ATTENTION_TAG + _check_probe(probe), w.astype("<f2"), DT_HALF, content)


def roles_summary(
    scores: Mapping[str, Any], reference: Mapping[str, float] | None = None, probe: str = "text"
) -> Summary:
    """A summary of head-role scores, role -> (n_layer, n_head), stacked in the order given (NaN: undefined),
    with each role's score under uniform attention."""
    if not scores:
        raise ValueError("no role scores to log")
    names = list(scores)
    values = np.stack([np.asarray(scores[role], dtype=np.float64) for role in names]).astype("<f4")
    if values.ndim != 3:
        raise ValueError(f"role scores must each be (n_layer, n_head); got {values.shape[1:]}")
    uniform = {role: float(reference[role]) for role in names if reference and role in reference}
    content = {"version": VERSION, "kind": "roles", "roles": names, "uniform": uniform}
    return _tensor_summary(ROLES_TAG + _check_probe(probe), values, DT_FLOAT, content)


def _check_probe(probe: str) -> str:
    # the probe becomes part of a tag and of the tab's URLs: keep it a plain name
    if not probe or not all(c.isalnum() or c in "_-." for c in probe):
        raise ValueError(f"probe name {probe!r}: use letters, digits, '_', '-' or '.'")
    return probe


def _tensor_summary(tag: str, values: np.ndarray, dtype: int, content: dict[str, Any]) -> Summary:
    shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=n) for n in values.shape])
    tensor = TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=values.tobytes())
    metadata = SummaryMetadata(
        # DATA_CLASS_TENSOR: without it TensorBoard's readers leave a tensor of an unknown plugin out
        data_class=DataClass.DATA_CLASS_TENSOR,
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=json.dumps(content).encode()),
    )
    return Summary(value=[Summary.Value(tag=tag, tensor=tensor, metadata=metadata)])


def parse_content(content: bytes) -> dict[str, Any]:
    """A summary's metadata content as a dict ({} when it is not ours or not readable)."""
    try:
        parsed = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
