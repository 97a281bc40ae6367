"""The training switches of "A CPU speedrun": Muon, the wsd schedule, the batch-size ramp, evaluation cost,
max_seconds and stop_loss. Each is off by default; each is checked for what its --help promises."""

import io
import math
from pathlib import Path

import pytest
import torch

from minigpt import hf
from minigpt import trainer as trainer_module
from minigpt.checkpoint import CheckpointError, load_checkpoint, load_model
from minigpt.config import TrainConfig
from minigpt.model import GPT, ModelConfig
from minigpt.run import main, report, resolve, train
from minigpt.trainer import (
    Muon,
    Trainer,
    batch_size_at,
    configure_muon,
    configure_optimizer,
    get_lr,
    hidden_matrices,
)
from tests.fakes import FixedBatches

TINY = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


# --- the schedule's shape ---------------------------------------------------------------------------------


def test_wsd_schedule_key_points():
    kw = dict(lr=1e-3, min_lr=1e-4, warmup_iters=10, decay_iters=110, schedule="wsd", decay_frac=0.2)
    assert get_lr(0, **kw) == pytest.approx(1e-3 / 11)  # the same warmup as cosine
    assert get_lr(10, **kw) == get_lr(50, **kw) == get_lr(88, **kw) == 1e-3  # stable until the last 22 steps
    assert get_lr(99, **kw) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway down the linear tail
    assert get_lr(109, **kw) == pytest.approx(1e-4 + 9e-4 / 22)
    assert get_lr(110, **kw) == get_lr(500, **kw) == 1e-4
    tail = [get_lr(i, **kw) for i in range(88, 111)]
    steps = [a - b for a, b in zip(tail, tail[1:])]
    assert all(s == pytest.approx(9e-4 / 22) for s in steps)  # linear: equal steps down


def test_cosine_stays_the_default_schedule():
    kw = dict(lr=1e-3, min_lr=1e-4, warmup_iters=10, decay_iters=110)
    assert all(get_lr(i, **kw) == get_lr(i, **kw, schedule="cosine", decay_frac=0.5) for i in range(120))
    assert TrainConfig().lr_schedule == "cosine"


# --- the batch-size ramp ----------------------------------------------------------------------------------


def test_batch_size_ramp_key_points():
    kw = dict(batch_size=32, start=8, ramp_iters=12)
    assert [batch_size_at(i, **kw) for i in (0, 1, 6, 11, 12, 1000)] == [8, 10, 20, 30, 32, 32]
    assert batch_size_at(0, batch_size=32, start=0, ramp_iters=12) == 32  # off


def _batches(seed=0, rows=4):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 11, (rows, 9), generator=g)
    return FixedBatches(idx[:, :-1], idx[:, 1:])


def test_batch_ramp_trains_on_the_first_rows():
    torch.manual_seed(0)
    batches = _batches(rows=4)
    cfg = TrainConfig(batch_size=4, batch_size_start=1, batch_ramp_iters=3, warmup_iters=0)
    trainer = Trainer(GPT(TINY), cfg, batches)
    seen = []
    model_forward = trainer.train_model.forward
    trainer.train_model.forward = lambda x, y: (seen.append(x.shape[0]), model_forward(x, y))[1]
    stats = [trainer.step() for _ in range(4)]
    assert seen == [1, 2, 3, 4] and [s["rows"] for s in stats] == [1, 2, 3, 4]
    assert batches.step == 4  # one draw per step however many rows are used: the sampler resumes as before


# --- Muon -------------------------------------------------------------------------------------------------


def _newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Our own float64 copy of the quintic iteration Muon uses (Jordan et al., 2024): X <- aX + (bA + cA^2)X
    with A = XX^T, from X = G / |G|_F. Its fixed points push every singular value towards 1."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double() / g.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x


def _spread_gradient() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (8, 24) gradient u diag(s) v^T with singular values s from 1 down to 0.01, and its u (8, 8), v (24, 8)."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(8, 8))
    v, _ = torch.linalg.qr(torch.randn(24, 8))
    return u @ torch.diag(torch.logspace(0, -2, 8)) @ v.T, u, v


@pytest.mark.parametrize("muon_class, tolerance", [(Muon, 1e-5), (torch.optim.Muon, 0.03)])  # torch's: bfloat16
def test_muons_update_is_the_orthogonalised_gradient(muon_class, tolerance):
    grad, u, v = _spread_gradient()
    for shape in ("wide", "tall"):  # (8, 24) and its transpose (24, 8): NS works on the smaller Gram matrix
        g = grad if shape == "wide" else grad.T.contiguous()
        weight = torch.nn.Parameter(torch.zeros_like(g))
        opt = muon_class([weight], lr=0.1, weight_decay=0.0, momentum=0.95, adjust_lr_fn="original")
        weight.grad = g.clone()
        opt.step()
        scale = 1.0 if shape == "wide" else math.sqrt(3)  # original: sqrt(max(1, rows / cols))
        update = -weight.detach() / (0.1 * scale)
        # from zero momentum the (Nesterov) update is a multiple of the gradient, and NS ignores the scale
        expected = _newton_schulz(grad).float()
        torch.testing.assert_close(update, expected if shape == "wide" else expected.T, atol=tolerance, rtol=0)
        sv = torch.linalg.svdvals(update)
        assert sv.min() > 0.6 and sv.max() < 1.3  # the 100x spread of the gradient's singular values is gone
        rotated = u.T @ (update if shape == "wide" else update.T) @ v  # (8, 8) in the gradient's own directions
        assert (rotated - torch.diag(torch.diagonal(rotated))).abs().max() < 0.03  # so nearly diagonal


def test_our_muon_follows_torchs_over_steps():
    """Our float32 Newton-Schulz against torch.optim.Muon's bfloat16 one: momentum, weight decay and the
    match_rms_adamw scale agree over several steps, within bfloat16's precision."""
    torch.manual_seed(0)
    start = torch.randn(16, 48)
    grads = [torch.randn(16, 48) for _ in range(4)]
    weights = []
    for muon_class in (Muon, torch.optim.Muon):
        w = torch.nn.Parameter(start.clone())
        opt = muon_class([w], lr=0.01, weight_decay=0.1, momentum=0.9, adjust_lr_fn="match_rms_adamw")
        for g in grads:
            w.grad = g.clone()
            opt.step()
        weights.append(w.detach())
    moved = (weights[1] - start).abs().max()
    assert moved > 0.01  # match_rms_adamw: an RMS of 0.2 x lr per step, like AdamW's
    torch.testing.assert_close(weights[0], weights[1], atol=0.02 * moved, rtol=0)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = GPT(TINY.replace(tie_weights=False))
    cfg = TrainConfig(optimizer="muon")
    names = {id(p): n for n, p in model.named_parameters()}
    muon = configure_muon(model, cfg)
    in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    in_adamw = {names[id(p)] for g in configure_optimizer(model, cfg, "cpu").param_groups for p in g["params"]}
    assert in_muon == {
        f"h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert not in_muon & in_adamw and in_muon | in_adamw == set(names.values())
    assert {"lm_head.weight", "wte.weight", "wpe.weight", "h.0.ln_1.weight"} <= in_adamw
    assert {id(p) for p in hidden_matrices(model)} == {id(p) for g in muon.param_groups for p in g["params"]}
    fewer = configure_muon(model, TrainConfig(muon_ns_steps=3))
    assert muon.param_groups[0]["ns_steps"] == 5 and fewer.param_groups[0]["ns_steps"] == 3
    # the default run has one AdamW over every parameter, as before
    adamw = configure_optimizer(model, TrainConfig(), "cpu")
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(names)


def test_one_schedule_scales_both_optimizers():
    torch.manual_seed(0)
    cfg = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02, warmup_iters=4, max_iters=20)
    trainer = Trainer(GPT(TINY), cfg, _batches())
    adamw, muon = trainer.optimizers
    assert isinstance(muon, torch.optim.Muon)
    for _ in range(3):
        stats = trainer.step()
        ratio = stats["lr"] / cfg.lr  # the schedule's multiplier at this step
        assert all(g["lr"] == stats["lr"] for g in adamw.param_groups)
        assert all(g["lr"] == pytest.approx(0.02 * ratio) for g in muon.param_groups)
    # muon_lr=0 means train.lr
    trainer = Trainer(GPT(TINY), TrainConfig(optimizer="muon", warmup_iters=0), _batches())
    trainer.step()
    assert trainer.optimizers[1].param_groups[0]["lr"] == trainer.optimizers[0].param_groups[0]["lr"]


def test_muon_trains():
    torch.manual_seed(0)
    trainer = Trainer(GPT(TINY), TrainConfig(optimizer="muon", lr=1e-2, warmup_iters=0, max_iters=40), _batches())
    first = trainer.step()["loss"]
    for _ in range(39):
        last = trainer.step()["loss"]
    assert last < 0.5 * first


# --- evaluation cost, max_seconds, stop_loss (the Trainer's loop) ----------------------------------------------


def _trainer(tmp_path: Path | None = None, **kw) -> tuple[Trainer, io.StringIO]:
    torch.manual_seed(0)
    batches = _batches()
    eval_sets = {"train": [(batches.x, batches.y)], "val": [(batches.x, batches.y)]}
    cfg = TrainConfig(**{"lr": 1e-2, "warmup_iters": 0, "max_iters": 12, "eval_interval": 2, **kw})
    out = io.StringIO()
    trainer = Trainer(GPT(TINY), cfg, batches, eval_sets=eval_sets, out=out, run_dir=tmp_path)
    return trainer, out


def _evaluated_iters(out: io.StringIO) -> list[int]:
    return [int(line.split(":")[0].split()[1]) for line in out.getvalue().splitlines() if line.startswith("iter")]


def test_eval_start_skips_the_early_evaluations():
    trainer, out = _trainer(eval_start=7)
    trainer.fit()
    assert _evaluated_iters(out) == [8, 10, 12]  # none at 0, 2, 4, 6; the final one always
    trainer, out = _trainer()
    trainer.fit()
    assert _evaluated_iters(out) == [0, 2, 4, 6, 8, 10, 12]  # the default: every eval_interval from step 0


def test_eval_train_off_evaluates_val_only():
    trainer, out = _trainer(eval_train=False)
    assert set(trainer.evaluate()) == {"val"}
    trainer.fit()
    assert "val loss" in out.getvalue() and "train loss" not in out.getvalue()
    trainer, _ = _trainer()
    assert set(trainer.evaluate()) == {"train", "val"}


class _Clock:
    """A fake time.perf_counter: one second per call, so max_seconds stops at a known step."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_max_seconds_stops_evaluates_saves_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "time", _Clock())
    trainer, out = _trainer(tmp_path, max_seconds=9.0, eval_interval=100)
    result = trainer.fit()
    assert result["limit"] == "max_seconds" and result["stopped_by"] is None
    stop = result["iter"]
    assert 0 < stop < 12 and _evaluated_iters(out) == [0, stop]  # a final evaluation where it stopped
    ckpt = torch.load(tmp_path / "ckpt_latest.pt", weights_only=True)
    assert ckpt["iter"] == stop and ckpt["evaluated_at"] == stop and ckpt["seconds"] >= 9.0
    # the budget counts over resumes: the same budget ends at once, a bigger one goes on
    again, out = _trainer(tmp_path, max_seconds=9.0, eval_interval=100)
    again.load_state_dict(ckpt)
    assert again.fit()["iter"] == stop and _evaluated_iters(out) == []
    more, _ = _trainer(tmp_path, max_seconds=1000.0, eval_interval=100)
    more.load_state_dict(ckpt)
    assert more.fit()["iter"] == 12


def test_stop_loss_stops_at_the_first_evaluation_at_or_below():
    trainer, out = _trainer()  # a reference run: its evaluations' val losses, step by step
    trainer.fit()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("iter")]
    losses = {int(line.split()[1][:-1]): float(line.split("val loss ")[1].split()[0]) for line in lines}
    target = losses[6] + 1e-4  # printed with 4 decimals: a hair above the loss at step 6
    first = min(i for i, v in losses.items() if v <= target)
    stopped, out = _trainer(stop_loss=target)
    result = stopped.fit()
    assert result["limit"] == "stop_loss" and result["iter"] == first <= 6
    assert _evaluated_iters(out) == [i for i in sorted(losses) if i <= first]
    # resuming a run that reached its target does not train on
    again, _ = _trainer(stop_loss=target)
    again.load_state_dict(stopped.state_dict())
    assert again.fit()["iter"] == first


# --- whole runs: exact resume with the switches, the final line, errors ---------------------------------------


def _args(corpus, root, *extra):
    paths = [f"--data.path={corpus}", f"--data.cache_dir={root / 'cache'}", f"--train.out_dir={root / 'runs'}"]
    tiny = """--train.run_name=r --model.n_layer=2 --model.n_head=2 --model.n_embd=32 --model.block_size=16
        --model.dropout=0.1 --train.batch_size=4 --train.max_iters=12 --train.eval_interval=4 --train.eval_iters=2
        --train.warmup_iters=2 --log.sample_tokens=0 --log.no_tensorboard --log.no_progress --log.no_head_roles
        --log.no_attention_maps --train.device=cpu"""
    return [*paths, *tiny.split(), *extra]


SWITCHES = """--train.optimizer=muon --train.muon_lr=0.01 --train.lr_schedule=wsd --train.lr_decay_frac=0.5
    --train.batch_size_start=1 --train.batch_ramp_iters=8 --train.eval_start=5 --train.no_eval_train""".split()


def _run(corpus, root, *extra, resume=None, stop_at=None):
    args = _args(corpus, root, *extra) + (["--resume", str(resume)] if resume else [])
    return train(*resolve(args), stop_at=stop_at, out=io.StringIO())


def test_switched_on_run_resumes_exactly(corpus, tmp_path):
    full = _run(corpus, tmp_path / "a", *SWITCHES)
    part = _run(corpus, tmp_path / "b", *SWITCHES, stop_at=6)
    resumed = _run(corpus, tmp_path / "b", resume=tmp_path / "b/runs/r")
    assert part["iter"] == 6 and part["history"] + resumed["history"] == full["history"]
    assert resumed["losses"] == full["losses"] and set(full["losses"]) == {"val"}
    a = load_checkpoint(tmp_path / "a/runs/r/ckpt_latest.pt")
    b = load_checkpoint(tmp_path / "b/runs/r/ckpt_latest.pt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for name, state in a["optimizer"]["state"].items():  # Muon's momentum and AdamW's moments alike
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][name][key]), (name, key)
    assert "momentum_buffer" in a["optimizer"]["state"]["h.0.attn.c_attn.weight"]
    assert "exp_avg" in a["optimizer"]["state"]["wte.weight"]
    # training switches leave a plain GPT-2-shaped model: it exports, and the export gives the same logits
    assert hf.main(["--run", str(tmp_path / "a/runs/r")]) == 0
    model, _, _ = load_model(tmp_path / "a/runs/r/ckpt_latest.pt", "cpu")
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf.load(str(tmp_path / "a/runs/r/hf"))(ids)[0], model.eval()(ids)[0])


def test_resume_refuses_another_optimizer(corpus, tmp_path):
    _run(corpus, tmp_path, "--train.max_iters=4")
    with pytest.raises(CheckpointError, match="train.optimizer is 'adamw' in the checkpoint but 'muon' now"):
        resolve(_args(corpus, tmp_path, "--train.optimizer=muon", "--resume", str(tmp_path / "runs/r")))


def test_train_py_stops_at_stop_loss_with_a_clear_final_line(corpus, tmp_path, capsys):
    code = main(_args(corpus, tmp_path, "--train.stop_loss=50", "--train.eval_start=3"))
    printed = capsys.readouterr().out
    assert code == 0
    assert "done: 4 iters in " in printed and "(val loss reached train.stop_loss)" in printed
    assert load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")["iter"] == 4  # a normal checkpoint to resume


def test_report_names_the_limit(tmp_path):
    result = {
        "stopped_by": None,
        "iter": 7,
        "seconds": 3.0,
        "losses": {"val": 2.0},
        "best_val_loss": 2.0,
        "sample": "",
        "run_dir": tmp_path,
        "limit": "max_seconds",
    }
    assert "done: 7 iters in 3 s (train.max_seconds reached); val loss 2.0000" in report(result)
    assert "reached" not in report({**result, "limit": None})


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(optimizer="sgd"), "train.optimizer must be 'adamw' or 'muon'"),
        (dict(optimizer="muon", parallel="fsdp"), "train.optimizer='muon' needs whole weight matrices.*ddp"),
        (dict(muon_lr=-1.0), "train.muon_lr must be at least 0"),
        (dict(muon_ns_steps=0), "train.muon_ns_steps must be at least 1"),
        (dict(muon_ns_steps=50), "train.muon_ns_steps must be at most 20"),
        (dict(muon_momentum=1.0), r"train.muon_momentum must be in \[0, 1\)"),
        (dict(muon_adjust_lr="auto"), "train.muon_adjust_lr must be"),
        (dict(lr_schedule="linear"), "train.lr_schedule must be 'cosine' or 'wsd'"),
        (dict(lr_decay_frac=0.0), r"train.lr_decay_frac must be in \(0, 1\]"),
        (dict(batch_size=8, batch_size_start=9, batch_ramp_iters=5), "train.batch_size_start must be at most"),
        (dict(batch_size_start=4), "train.batch_size_start needs train.batch_ramp_iters"),
        (dict(eval_start=-1), "train.eval_start must be at least 0"),
        (dict(max_seconds=-1.0), "train.max_seconds must be at least 0"),
        (dict(max_seconds=math.inf), "train.max_seconds must be a finite number"),
        (dict(stop_loss=-0.5), "train.stop_loss must be at least 0"),
    ],
)
def test_switch_validation_is_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        TrainConfig(**kw)
    assert "\n" not in str(e.value)
