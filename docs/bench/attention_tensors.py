"""What the Attention tab's tensors cost a training run: time per evaluation, and bytes in the event file.

    python docs/bench/attention_tensors.py                     # per-evaluation cost on the default run's model
    python docs/bench/attention_tensors.py runs/A runs/B       # also: an event file's bytes by kind of record

The per-evaluation cost is what `train.py`'s on_eval adds with `log.attention_tensors` on, on the default
run's model (nano: 4 layers x 4 heads, block 64, a char vocabulary), one thread: the text probe's tensor,
the induction probe's maps (one extra forward pass of 64 tokens) and tensor, the role tensor. For wall
time, run the default `python train.py` with and without `--log.no_attention_tensors` side by side
(docs/benchmarks.md, "Attention you can touch (#24)").
"""

import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from minigpt.config import ModelConfig
from minigpt.metrics import TensorBoardLogger
from minigpt.model import GPT
from minigpt.roles import head_roles, induction_probe, uniform_scores

REPS = 15


def per_evaluation() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0)).eval()
    text, induction = torch.randint(65, (32,)), induction_probe(None, 65, 32)
    scores, uniform = head_roles(model, text, induction), uniform_scores(text, 32)
    weights, first = model.attention_maps(text), induction[0]
    labels = [chr(65 + int(i) % 26) for i in text]
    times, forward = [], []
    with tempfile.TemporaryDirectory() as d, TensorBoardLogger(d) as logger:
        logger.roles(scores, 0, uniform)  # the role grids' figures are built once, outside the timing
        for step in range(REPS):
            t0 = time.perf_counter()
            logger.attention_tensor(weights, labels, step, "text", text.tolist())
            t1 = time.perf_counter()
            maps = model.attention_maps(first)
            forward.append(time.perf_counter() - t1)
            logger.attention_tensor(maps, [chr(65 + int(i) % 26) for i in first], step, "induction", first.tolist())
            logger._writer.file_writer.add_summary(_roles_summary(scores, uniform), step)
            logger.flush()
            times.append(time.perf_counter() - t0)
    ms = [t * 1000 for t in times]
    print(f"extra per evaluation: median {statistics.median(ms):.1f} ms ({min(ms):.1f}-{max(ms):.1f}, {REPS} reps, "
          f"1 thread), of which the induction probe's forward pass {statistics.median(forward) * 1000:.1f} ms")


def _roles_summary(scores, uniform):
    from minigpt.tb_attention.summary import roles_summary

    return roles_summary({role: s.numpy() for role, s in scores.items()}, uniform, "text")


def bytes_by_kind(run_dir: Path) -> None:
    """Bytes of each kind of record in a run folder's event files (TFRecord framing included)."""
    sizes, steps = collections.Counter(), collections.defaultdict(set)
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for raw in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(raw)
            for value in event.summary.value or [None]:
                if value is None:
                    kind = "other events"
                elif value.tag.startswith("minigpt_attention"):
                    kind = value.tag.split("/")[0] + " tensors"
                else:
                    kind = "images" if value.HasField("image") else (value.WhichOneof("value") or "metadata")
                sizes[kind] += len(raw) + 16  # a record is framed by its length and two checksums
                steps[kind].add(event.step)
    print(run_dir)
    for kind, n in sizes.most_common():
        print(f"  {kind:34s} {n:>12,} bytes at {len(steps[kind])} steps")


if __name__ == "__main__":
    per_evaluation()
    for arg in sys.argv[1:]:
        bytes_by_kind(Path(arg))
