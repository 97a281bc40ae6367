"""The training engine: LR schedule, optimizer groups, checkpoints, NaN handling."""

import math
import os

import pytest
import torch

from minigpt.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from minigpt.model import GPT, ModelConfig
from minigpt.trainer import NonFiniteLossError, TrainConfig, Trainer, configure_optimizer, get_lr
from tests.fakes import FixedBatches

TINY = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def test_lr_schedule_key_points():
    kw = dict(lr=1e-3, min_lr=1e-4, warmup_iters=10, decay_iters=110)
    assert get_lr(0, **kw) == pytest.approx(1e-3 / 11)
    assert get_lr(9, **kw) == pytest.approx(1e-3 * 10 / 11)
    assert get_lr(10, **kw) == pytest.approx(1e-3)  # peak right after warmup
    assert get_lr(60, **kw) == pytest.approx((1e-3 + 1e-4) / 2)  # cosine midpoint
    assert get_lr(110, **kw) == pytest.approx(1e-4)
    assert get_lr(500, **kw) == pytest.approx(1e-4)  # flat floor afterwards
    lrs = [get_lr(i, **kw) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_weight_decay_only_on_weight_matrices():
    model = GPT(TINY.replace(tie_weights=False))
    opt = configure_optimizer(model, TrainConfig(weight_decay=0.1), "cpu")
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "h.0.attn.c_attn.weight" in decayed and "lm_head.weight" in decayed
    assert not any(n.endswith(".bias") or ".ln_" in n or n.startswith(("wte", "wpe")) for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_trainer_steps_reduce_loss_and_accumulate():
    torch.manual_seed(0)
    idx = torch.randint(0, 11, (4, 9))
    trainer = Trainer(GPT(TINY), TrainConfig(lr=1e-2, warmup_iters=0, max_iters=40, grad_accum=2),
                      FixedBatches(idx[:, :-1], idx[:, 1:]))
    first = trainer.step()
    for _ in range(39):
        last = trainer.step()
    assert trainer.iter == 40 and trainer.batches.step == 80  # 2 micro-batches per step
    assert last["loss"] < 0.5 * first["loss"]
    assert first["grad_norm"] > 0 and math.isfinite(first["grad_norm"])


def test_nan_loss_stops_with_clear_error():
    model = GPT(TINY)
    idx = torch.randint(0, 11, (2, 9))
    trainer = Trainer(model, TrainConfig(), FixedBatches(idx[:, :-1], idx[:, 1:]))
    with torch.no_grad():
        model.wte.weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="loss became nan at iter 0.*lower train.lr"):
        trainer.step()
    after = model.state_dict()
    assert all(torch.allclose(before[k], after[k], equal_nan=True) for k in before)  # no step taken
    assert trainer.iter == 0


def test_train_config_validation():
    with pytest.raises(ValueError, match="train.min_lr must be in"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="train.batch_size must be at least 1"):
        TrainConfig(batch_size=0)


def test_checkpoint_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {"a": 1}, "tokenizer": {"kind": "char"}})
    ck = load_checkpoint(path)
    assert torch.equal(ck["model"]["w"], torch.ones(3)) and ck["config"] == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp files left


def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "config": {}, "tokenizer": {}})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CheckpointWriteError, match="could not write .*disk full.*the last good checkpoint .* is untouched"):
        save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {}, "tokenizer": {}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_bad_checkpoints_are_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {}, "config": {}, "tokenizer": {}})
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable minigpt checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a minigpt checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a minigpt checkpoint: it is neither a PyTorch zip file nor a pickle"):
        load_checkpoint(text)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "minigpt-checkpoint", "version": 1, "model": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused .*posix.system, which could run code"):
        load_checkpoint(path)


def test_rng_state_roundtrip():
    import random

    state = rng_state()
    a = (random.random(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])
