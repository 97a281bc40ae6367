"""Every setting of minigpt as frozen dataclasses: one per concern, and one per entry point grouping them.

The string under each field is its --help text; each class checks its values in __post_init__ and names
the field it rejects. minigpt.config_io reads and writes them as TOML; minigpt.cli fills them from flags.
This module imports nothing from minigpt.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

import tyro

TOKENIZERS = ("char", "gpt2", "bpe")
DEVICES = Literal["auto", "cpu", "cuda", "mps"]
DTYPES = Literal["auto", "float32", "bfloat16", "float16"]


@cache
def _choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """Field name -> allowed values, for each Literal-typed field of a config class."""
    hints = typing.get_type_hints(cls)
    return {name: typing.get_args(tp) for name, tp in hints.items() if typing.get_origin(tp) is Literal}


def _check_fields(cfg: Any, section: str, **minimum: int) -> None:
    """Reject a non-finite float (inf or nan, in any field), a Literal field outside its choices, or a
    number below its minimum (None passes)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{section}{f.name} must be a finite number (got {value}); give a plain number")
    for name, choices in _choices(type(cfg)).items():
        if getattr(cfg, name) not in choices:
            allowed = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"
            raise ValueError(f"{section}{name} must be {allowed} (got {getattr(cfg, name)!r})")
    for name, least in minimum.items():
        if getattr(cfg, name) is not None and getattr(cfg, name) < least:
            raise ValueError(f"{section}{name} must be at least {least} (got {getattr(cfg, name)})")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 65  # Number of token ids; set from the tokenizer when training (65 for char-level Shakespeare).
    block_size: int = 256  # Context length: the most tokens the model sees at once (n_ctx in the GPT-3 paper).
    n_layer: int = 4  # Number of transformer blocks.
    n_head: int = 4  # Attention heads per block.
    n_embd: int = 128  # Model width (d_model).
    d_head: int | None = None  # Size of each head; None means n_embd // n_head. n_head * d_head may differ from n_embd.
    d_ff: int | None = None  # Hidden width of the MLP; None means 4 * n_embd.
    dropout: float = 0.0  # Dropout on attention weights, residual branches and embeddings, in [0, 1).
    bias: bool = True  # Biases in Linear layers and LayerNorms (GPT-2 and GPT-3 have them).
    tie_weights: bool = True  # Share the LM head's weight with the token embedding (GPT-2).
    # MLP nonlinearity: exact GELU, GPT-2's tanh approximation, or relu2 = relu(x)^2 (So et al., 2021, Primer).
    activation: Literal["gelu", "gelu_tanh", "relu2"] = "gelu"
    # manual: the hand-written math (gives attention maps); sdpa: torch's fused kernel.
    attn_impl: Literal["manual", "sdpa"] = "manual"
    # q.k/sqrt(d_head), plain q.k, or additive w^T tanh(W_q q + W_k k).
    attn_score: Literal["scaled_dot", "dot", "additive"] = "scaled_dot"
    attn_window: int | None = None  # Each query sees only the last attn_window positions; None: dense.
    # Banded layers: all, or alternate (odd banded, even dense: GPT-3).
    attn_window_layers: Literal["all", "alternate"] = "alternate"
    # Switches of "A CPU speedrun", all off by default (GPT-2 export refuses all but zero_init_proj; see
    # attention.py and model.py for what each does and why).

    # learned: GPT-2's wpe table; rotary: rotate each head's q and k by position (Su et al., 2021), no wpe.
    pos_emb: Literal["learned", "rotary"] = "learned"
    qk_norm: bool = False  # RMS-normalise each head's q and k before the scores (Henry et al., 2020).
    value_embeds: bool = False  # One more token embedding per layer, added to the attention values.
    zero_init_proj: bool = False  # Attention and MLP output projections start at zero: each block starts as identity.
    preset: str | None = None  # A size from minigpt/presets.toml (e.g. gpt2); other model keys override it.
    # Start from Hugging Face GPT-2 weights: a hub name (gpt2, gpt2-medium, ...) or an HF folder.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in load_presets():
            raise ValueError(f"model.preset={self.preset!r} is unknown; valid presets: {', '.join(load_presets())}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer (got {value!r})")
        for name in ("d_head", "d_ff", "attn_window"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"model.{name} must be a positive integer or None (got {value!r})")
        if self.d_head is None and self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}; "
                f"pick n_head dividing n_embd or set model.d_head explicitly"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1) (got {self.dropout})")
        _check_fields(self, "model.")
        if self.attn_impl == "sdpa" and self.attn_score == "additive":
            raise ValueError("model.attn_score='additive' has no fused kernel; use model.attn_impl='manual'")
        if self.pos_emb == "rotary" and self.head_size % 2:
            raise ValueError(
                f"model.pos_emb='rotary' rotates pairs of dimensions, so the head size must be even "
                f"(got {self.head_size}); pick an even model.d_head or another model.n_head"
            )

    @property
    def head_size(self) -> int:
        """d_head, derived from n_embd // n_head unless set."""
        return self.d_head if self.d_head is not None else self.n_embd // self.n_head

    @property
    def attn_dim(self) -> int:
        """Width of the concatenated heads, n_head * d_head (d_attn in Kaplan et al.)."""
        return self.n_head * self.head_size

    @property
    def ff_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.n_embd

    def window_for_layer(self, layer_idx: int) -> int | None:
        """The attention band of one layer (None = dense causal attention)."""
        if self.attn_window_layers == "alternate" and layer_idx % 2 == 0:
            return None
        return self.attn_window

    def not_in_gpt2(self) -> list[str]:
        """The switches that are on and that GPT-2's format has no place for (export refuses them by name)."""
        switches = {
            "model.pos_emb='rotary'": self.pos_emb == "rotary",
            "model.qk_norm": self.qk_norm,
            "model.value_embeds": self.value_embeds,
            "model.activation='relu2'": self.activation == "relu2",
        }
        return [name for name, on in switches.items() if on]

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named model size from minigpt/presets.toml, optionally with fields replaced."""
        preset = load_presets().get(name, {"model": {}})  # an unknown name fails in __post_init__
        return cls(**{**preset["model"], "preset": name, **overrides})

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


@cache
def load_presets() -> dict[str, dict[str, Any]]:
    """Preset name -> {"model": fields, "published_params": int | None, "source": str}."""
    text = resources.files("minigpt").joinpath("presets.toml").read_text(encoding="utf-8")
    presets = {}
    for name, entry in tomllib.loads(text)["preset"].items():
        meta = {"published_params": entry.pop("published_params", None), "source": entry.pop("source", "")}
        presets[name] = {"model": entry, **meta}
    return presets


@dataclass(frozen=True)
class DataConfig:
    """Where the training text comes from and how it is tokenized."""

    # A UTF-8 text file, or a folder whose files matching data.glob (sorted) are the documents.
    path: str = "data/shakespeare/input.txt"
    # Which files of a folder data.path are documents (** recurses), e.g. '**/*.py'; binary files are skipped.
    glob: str = "**/*.txt"
    # char: one token per character of the corpus; gpt2: GPT-2 BPE (50,257 tokens); bpe: a byte-level BPE
    # trained on this corpus's train split, of data.vocab_size tokens (docs/data.md).
    tokenizer: Literal["char", "gpt2", "bpe"] = "char"
    # Tokens of the bpe vocabulary (used only by data.tokenizer=bpe): 256 bytes + <|endoftext|> + learned merges,
    # so at least 257. 4096 keeps the default model's embedding below half its parameters (docs/data.md).
    vocab_size: int = 4096
    hf_dataset: str | None = None  # A Hugging Face hub dataset (e.g. roneneldan/TinyStories), read instead of path.
    hf_config: str | None = None  # Configuration of the hub dataset, if it has several (e.g. wikitext-2-raw-v1).
    hf_split: str = "train"  # Split of the hub dataset to read; minigpt cuts its own train/val from it.
    hf_text_column: str = "text"  # Column of the hub dataset that holds the text.
    val_fraction: float = 0.1  # Fraction of the characters, from the end, held out for validation.
    cache_dir: str = "data/cache"  # Folder for prepared token files (one subfolder per source and tokenizer).
    workers: int = 0  # Processes that tokenize a large corpus (over 64M characters); 0 means one per CPU core.

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            choices = ", ".join(TOKENIZERS)
            raise ValueError(f"data.tokenizer={self.tokenizer!r} is not a tokenizer; choose one of {choices}")
        _check_fields(self, "data.")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 257:
            raise ValueError(
                f"data.vocab_size={self.vocab_size!r} is too small: a byte-level BPE holds the 256 bytes and "
                "<|endoftext|>, so at least 257; try data.vocab_size=4096"
            )
        if not isinstance(self.val_fraction, (int, float)) or not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"data.val_fraction={self.val_fraction!r} must be between 0 and 1 (exclusive); "
                "try data.val_fraction=0.1"
            )
        if self.hf_dataset is None and not self.path:
            raise ValueError(
                "data.path is empty; pass a text file or folder, e.g. data.path=data/shakespeare/input.txt"
            )
        if self.hf_dataset is not None:
            for name in ("hf_dataset", "hf_split", "hf_text_column"):
                if not str(getattr(self, name)).strip():
                    raise ValueError(f"data.{name} is empty; give a value or leave data.hf_dataset unset")
        if not self.cache_dir:
            raise ValueError("data.cache_dir is empty; pass a folder, e.g. data.cache_dir=data/cache")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(
                f"data.workers={self.workers!r} must be 0 (one per CPU core) or a positive number of processes"
            )


@dataclass(frozen=True)
class TrainConfig:
    """How to train: device, batch, optimizer, schedule, evaluation and checkpoints."""

    out_dir: str = "runs"  # Folder that holds one sub-folder per run (TensorBoard logs, checkpoints, config).
    run_name: str = ""  # Name of this run's folder under out_dir; empty: <corpus>-<tokenizer>-<date>-<time>.
    seed: int = 1337  # Seed for initialisation, batch sampling and dropout.
    device: DEVICES = "auto"  # Where to train; auto picks CUDA, then Apple MPS, then CPU.
    dtype: DTYPES = "auto"  # Autocast dtype; auto: bfloat16 on CUDA (float16 where missing), float32 elsewhere.
    compile: bool = False  # Compile the model with torch.compile (slow start, faster steps on GPU).
    # CPU threads for torch; 0 keeps torch's default (one per core). train.py makes waiting threads sleep after a
    # short spin, so this suits a shared CPU too; 1 if steps stay slow.
    threads: int = 0
    batch_size: int = 32  # Sequences per micro-batch, per process.
    grad_accum: int = 1  # Micro-batches per optimizer step, over all processes (divided among DDP ranks).
    max_iters: int = 2000  # Optimizer steps in the whole run.
    lr: float = 1e-3  # Peak learning rate, reached after warmup.
    min_lr: float = 1e-4  # Learning-rate floor at the end of the cosine decay.
    warmup_iters: int = 100  # Steps of linear warmup from 0 to lr.
    lr_decay_iters: int = 0  # Step at which the cosine decay reaches min_lr; 0 means max_iters.
    weight_decay: float = 0.1  # AdamW weight decay, applied to weight matrices only (not biases, norms or embeddings).
    beta1: float = 0.9  # AdamW beta1.
    beta2: float = 0.99  # AdamW beta2.
    grad_clip: float = 1.0  # Clip the global gradient norm to this value; 0 disables clipping.
    eval_interval: int = 250  # Evaluate, log attention maps and save checkpoints every this many steps.
    eval_iters: int = 20  # Fixed batches per split for each evaluation.
    # Several processes: ddp replicates the model; fsdp shards weights, grads, optimizer.
    parallel: Literal["ddp", "fsdp"] = "ddp"
    # adamw for every parameter; muon: Muon (torch.optim.Muon) for the hidden weight matrices (attention and MLP
    # linear layers), AdamW for the rest (embeddings, LM head, biases, norm gains). docs/training.md.
    optimizer: Literal["adamw", "muon"] = "adamw"
    muon_lr: float = 0.0  # Muon's peak learning rate (scaled by the same schedule as lr); 0: train.lr.
    muon_momentum: float = 0.95  # Muon's (Nesterov) momentum.
    # Newton-Schulz steps per Muon update: each costs three matrix products per weight matrix, which on a CPU at a
    # small batch is a large part of the step; fewer leave the update less orthogonal.
    muon_ns_steps: int = 5
    # How Muon scales its orthogonal update per matrix: match_rms_adamw (0.2 sqrt(max(rows, cols)), so AdamW's
    # lr and weight_decay carry over) or original (Keller Jordan's sqrt(max(1, rows / cols)), needs lr near 0.02).
    muon_adjust_lr: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    # Shape of the schedule after warmup: cosine decay to min_lr, or wsd (warmup-stable-decay): constant lr, then a
    # linear decay to min_lr over the last lr_decay_frac of lr_decay_iters.
    lr_schedule: Literal["cosine", "wsd"] = "cosine"
    lr_decay_frac: float = 0.2  # With lr_schedule=wsd: the fraction of lr_decay_iters spent on the linear decay.
    # Batch-size warmup: the first steps train on this many sequences of each micro-batch, growing linearly to
    # batch_size over batch_ramp_iters steps; 0: batch_size from the start.
    batch_size_start: int = 0
    batch_ramp_iters: int = 0  # Steps over which the batch grows from batch_size_start to batch_size.
    # No evaluation before this step (nor at step 0) but the final one: a speedrun evaluates often near its target only.
    eval_start: int = 0
    eval_train: bool = True  # Also evaluate the train split; --train.no_eval_train halves the cost (val only).
    # Stop at the first step past this many seconds of training (counted over resumes), then evaluate and save as at
    # max_iters; 0: no time limit.
    max_seconds: float = 0.0
    # Stop at the first evaluation whose val loss is at or below this (the speedrun's target, 1.886); 0: never.
    stop_loss: float = 0.0

    def __post_init__(self) -> None:
        _check_fields(self, "train.", batch_size=1, grad_accum=1, max_iters=1, eval_interval=1, eval_iters=1,
                      warmup_iters=0, lr_decay_iters=0, weight_decay=0, grad_clip=0, threads=0, muon_lr=0,
                      muon_ns_steps=1, batch_size_start=0, batch_ramp_iters=0, eval_start=0, max_seconds=0, stop_loss=0)
        if self.optimizer == "muon" and self.parallel == "fsdp":
            raise ValueError("train.optimizer='muon' needs whole weight matrices, which fsdp shards; "
                             "use train.parallel='ddp'")
        if self.muon_ns_steps > 20:
            raise ValueError(f"train.muon_ns_steps must be at most 20 (got {self.muon_ns_steps}); Muon uses 5")
        if not 0 <= self.muon_momentum < 1:
            raise ValueError(f"train.muon_momentum must be in [0, 1) (got {self.muon_momentum})")
        if not 0 < self.lr_decay_frac <= 1:
            raise ValueError(f"train.lr_decay_frac must be in (0, 1] (got {self.lr_decay_frac})")
        if self.batch_size_start > self.batch_size:
            raise ValueError(f"train.batch_size_start must be at most train.batch_size={self.batch_size} "
                             f"(got {self.batch_size_start})")
        if self.batch_size_start and not self.batch_ramp_iters:
            raise ValueError("train.batch_size_start needs train.batch_ramp_iters, the steps of the ramp; set both")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be positive (got {self.lr})")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"train.min_lr must be in [0, train.lr={self.lr}] (got {self.min_lr})")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be in [0, 1) (got {getattr(self, name)})")
        if "/" in self.run_name or self.run_name in (".", ".."):
            raise ValueError(f"train.run_name must be a plain folder name (got {self.run_name!r})")


@dataclass(frozen=True)
class LogConfig:
    """What a run logs: TensorBoard scalars, attention maps, samples, progress."""

    tensorboard: bool = True  # TensorBoard event files in the run folder (tensorboard --logdir runs).
    progress: bool = True  # Show a tqdm progress bar on a terminal (in a log file only the evaluation lines print).
    log_interval: int = 10  # Log training scalars to TensorBoard every this many steps.
    attention_maps: bool = True  # At each evaluation, log every layer's and head's attention map on a fixed probe text.
    probe_tokens: int = 32  # Length of the probe text (from the start of the validation split) for attention maps.
    attention_tensors: bool = True  # Also log the raw weights (float16) of the probes for TensorBoard's Attention tab.
    # At each evaluation, score each head's role: previous-token, induction, ... (docs/attention.md).
    head_roles: bool = True
    sample_tokens: int = 200  # Tokens of text to generate at each evaluation and at the end (0: none).

    def __post_init__(self) -> None:
        _check_fields(self, "log.", log_interval=1, probe_tokens=2, sample_tokens=0)


@dataclass(frozen=True)
class RunConfig:
    """Train a GPT: python train.py [CONFIG.toml] [--section.key=value ...] [--resume [RUN_DIR]]"""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass(frozen=True)
class PrepareConfig:
    """Tokenize a corpus into data/cache/ once, ahead of training (train.py also does this on its own)."""

    data: DataConfig = field(default_factory=DataConfig)
    quiet: bool = False  # No progress bars.


@dataclass(frozen=True)
class SampleConfig:
    """Generate text from a trained checkpoint or a pretrained GPT-2, or log its attention maps on a text."""

    ckpt: str | None = None  # A checkpoint file, e.g. runs/NAME/ckpt_latest.pt.
    hf: str | None = None  # A Hugging Face GPT-2 instead: a hub name (gpt2, gpt2-medium, ...) or an HF folder.
    run: str | None = None  # A run folder: its ckpt_best.pt, else ckpt_latest.pt. None: the newest under runs_dir.
    runs_dir: str = "runs"  # Where to look for the newest run.
    prompt: str | None = None  # Text to continue. None: a newline, or <|endoftext|> for GPT-2 BPE.
    prompt_file: str | None = None  # Read the prompt from this UTF-8 file instead.
    num_samples: int = 1  # Independent samples to draw.
    max_new_tokens: int = 500  # Tokens to generate per sample.
    temperature: float = 0.8  # 0 is greedy, 1 the model's own distribution.
    top_k: int | None = None  # Sample among the k most likely tokens only.
    top_p: float | None = None  # Nucleus sampling: keep the most likely tokens up to probability p, in (0, 1].
    seed: int | None = None  # Same seed, same text. None: a random seed, printed on stderr.
    slide: int | None = None  # Past block_size, move the context window by this many tokens. None: block_size // 2.
    kv_cache: bool = True  # Reuse keys and values of earlier tokens; --no_kv_cache recomputes the whole context (slow).
    device: DEVICES = "auto"  # Where to run; auto picks CUDA, then Apple MPS, then CPU.
    # Weights' dtype; float16 halves the bytes a token reads. auto: bfloat16 on CUDA, else float32.
    dtype: DTYPES = "auto"
    threads: int = 1  # CPU threads: more help big models on an idle CPU, but are far slower on cores other jobs share.
    attention: bool = False  # Instead of sampling, log the prompt's attention maps to TensorBoard (attention_probe/).
    attention_generate: int = 0  # With attention: first generate this many tokens and include them in the maps.
    attention_png: str | None = None  # With attention: also write the maps as PNG files into this folder.

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.ckpt, self.run, self.hf)) > 1:
            raise ValueError("give one of ckpt, run and hf, not several")
        if self.prompt is not None and self.prompt_file is not None:
            raise ValueError("give prompt or prompt_file, not both")
        _check_fields(self, "", num_samples=1, max_new_tokens=1, threads=1, attention_generate=0)
        if not self.attention and (self.attention_png is not None or self.attention_generate):
            raise ValueError("attention_png and attention_generate only apply with attention; add it or drop them")
        if self.attention and self.num_samples != 1:
            raise ValueError("num_samples does not apply to attention (one text is probed)")
        if self.attention and self.prompt is None and self.prompt_file is None and not self.attention_generate:
            raise ValueError("attention needs a text: give prompt, prompt_file or attention_generate")


@dataclass(frozen=True)
class ParamsConfig:
    """Count a model's parameters, training FLOPs and memory from its config: --model.preset NAME, a run's
    CONFIG.toml, or --model.* flags (over the model defaults below). With no arguments: the presets only."""

    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 1  # Sequences per batch, for the memory estimate.
    seq_len: int | None = None  # Sequence length for FLOPs and memory. None: model.block_size.

    def __post_init__(self) -> None:
        _check_fields(self, "", batch_size=1, seq_len=1)


@dataclass(frozen=True)
class BenchConfig:
    """Benchmarks: training-step throughput, attention cost by context length, generation speed, a profile."""

    what: Annotated[
        Literal["train", "attention", "generate", "profile", "decode", "dtypes", "prepare", "all"], tyro.conf.Positional
    ] = "train"
    """Which benchmark to run."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig.from_preset("nano"))
    batch_size: int = 12  # Sequences per training step.
    # Attention paths to time in `train` and `attention`.
    attn: tuple[Literal["manual", "sdpa"], ...] = ("manual", "sdpa")
    # Time `train` without torch.compile, with it, or both; `decode` also compiled (on or both).
    compile: Literal["off", "on", "both"] = "off"
    device: DEVICES = "auto"  # Where to run; auto picks CUDA, then Apple MPS, then CPU.
    dtype: DTYPES = "auto"  # Autocast dtype; auto: bfloat16 on CUDA, float32 elsewhere.
    steps: int = 20  # Timed steps per repeat.
    warmup: int = 5  # Untimed steps before timing.
    repeats: int = 3  # Repeats; the median is reported.
    block_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)  # Context lengths for `attention`.
    new_tokens: tuple[int, ...] = (100, 500)  # Generated lengths for `generate`; `decode` times the longest.
    # For decode: the sampling dtypes to time.
    weights: tuple[Literal["float32", "float16", "bfloat16"], ...] = ("float32", "float16")
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default.
    markdown: bool = False  # Print Markdown tables.
    json: str | None = None  # Also write the rows as JSON to this file.
    ckpt: str | None = None  # For dtypes: the checkpoint to compare. None: the newest run's best under runs/.
    # For prepare: sizes of synthetic corpora in GB, written to the temp folder, then deleted.
    corpus_gb: tuple[float, ...] = (0.2,)
    corpus_files: int = 1  # For prepare: write each corpus as a folder of this many .txt files (1: one file).
    # For prepare: the tokenizer (data.tokenizer): char, gpt2, or bpe:N, a byte-level BPE of N tokens trained on
    # the corpus first (e.g. bpe:8192).
    tokenizer: str = "gpt2"
    workers: int = 0  # For prepare: tokenizing processes (data.workers); 0 means one per CPU core.

    def __post_init__(self) -> None:
        _check_fields(self, "", batch_size=1, steps=1, repeats=1, warmup=0, threads=0, corpus_files=1, workers=0)
        if not self.corpus_gb or min(self.corpus_gb) <= 0:
            raise ValueError(f"corpus_gb must be positive sizes in GB (got {self.corpus_gb})")
        for name in ("block_sizes", "new_tokens"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive integers (got {getattr(self, name)})")


@dataclass(frozen=True)
class ExportConfig:
    """Export a minigpt run as a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer files)."""

    out: str = ""  # The new folder to write; empty: hf/ inside the run folder.
    run: str | None = None  # A run folder: its ckpt_best.pt, else ckpt_latest.pt. None: the newest under runs/.
    ckpt: str | None = None  # A checkpoint file instead of a run folder.
