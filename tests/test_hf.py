"""Hugging Face GPT-2 in and out, offline: small random transformers models saved to temporary folders."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")  # in the dev extra, so CI runs these

from minigpt import hf  # noqa: E402
from minigpt.checkpoint import load_model  # noqa: E402
from minigpt.config import ModelConfig  # noqa: E402
from minigpt.generate import generate_ids  # noqa: E402
from minigpt.model import GPT  # noqa: E402
from minigpt.tokenizer import CharTokenizer, GPT2Tokenizer  # noqa: E402

SHAPES = {
    "d_head 8": dict(n_embd=32, n_head=4, n_layer=2, n_positions=24, vocab_size=97),
    # 3 heads of 16: n_head does not divide 64; an MLP width other than 4 * n_embd; exact GELU
    "3 heads": dict(n_embd=48, n_head=3, n_layer=3, n_positions=20, vocab_size=101, n_inner=80, activation_function="gelu"),
    "unscaled": dict(n_embd=40, n_head=5, n_layer=1, n_positions=16, vocab_size=50, scale_attn_weights=False),
}


def hf_gpt2(shape: dict, folder, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**shape, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 starts its LayerNorms at 1 and 0; random values test the copy of them too
        for name, p in model.named_parameters():
            if "ln" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    model.save_pretrained(folder)
    return model


@pytest.fixture(params=list(SHAPES), scope="module")
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    theirs = hf_gpt2(SHAPES[request.param], folder)
    return theirs, hf.load(str(folder)), folder


def ids_for(model, n: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(model.config.vocab_size, (2, n), generator=torch.Generator().manual_seed(seed))


def test_loaded_gpt2_gives_transformers_logits_and_attention(pair):
    theirs, ours, _ = pair
    ids = ids_for(ours)
    with torch.no_grad():
        expected = theirs(ids, output_attentions=True)
        logits, _, attention = ours(ids, return_attention=True)
    torch.testing.assert_close(logits, expected.logits, atol=1e-5, rtol=0)
    assert len(attention) == len(expected.attentions)
    for a, b in zip(attention, expected.attentions):  # (B, nh, T, T) per layer
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generation_matches_transformers(pair, use_cache):
    theirs, ours, _ = pair
    prompt = ids_for(ours, n=4)[:1]
    n_new = ours.config.block_size - 4  # up to the full context
    expected = theirs.generate(prompt, max_new_tokens=n_new, do_sample=False, pad_token_id=0, eos_token_id=None,
                               attention_mask=torch.ones_like(prompt))  # fmt: skip
    got = generate_ids(ours, prompt, n_new, temperature=0, use_cache=use_cache)
    assert got.tolist() == expected.tolist()


def test_block_size_crops_the_positions_and_is_checked(pair):
    _, ours, folder = pair
    short = hf.load(str(folder), block_size=8)
    assert short.config.block_size == 8 and short.wpe.weight.shape[0] == 8
    torch.testing.assert_close(short.wpe.weight, ours.wpe.weight[:8])
    with pytest.raises(hf.HFError, match=f"longer than the {ours.config.block_size} positions GPT-2 learned"):
        hf.load(str(folder), block_size=ours.config.block_size + 1)


def test_shape_and_activation_come_from_config_json(pair):
    _, ours, folder = pair
    shape = json.loads((folder / "config.json").read_text())
    c = ours.config
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size) == (shape["n_layer"], shape["n_head"], shape["n_embd"], shape["vocab_size"])
    assert c.ff_dim == (shape["n_inner"] or 4 * shape["n_embd"])
    assert c.activation == ("gelu" if shape["activation_function"] == "gelu" else "gelu_tanh")
    assert c.attn_score == ("scaled_dot" if shape["scale_attn_weights"] else "dot")


def test_pytorch_model_bin_loads_without_running_code(tmp_path):
    theirs = hf_gpt2(SHAPES["d_head 8"], tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(theirs.state_dict(), tmp_path / "pytorch_model.bin")
    ids = ids_for(theirs)
    with torch.no_grad():
        torch.testing.assert_close(hf.load(str(tmp_path))(ids)[0], theirs(ids).logits, atol=1e-5, rtol=0)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(hf.HFError, match="has no model.safetensors or pytorch_model.bin"):
        hf.load(str(tmp_path))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_export_loads_in_transformers_with_equal_logits(tmp_path, activation):
    torch.manual_seed(0)
    ours = GPT(ModelConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, activation=activation)).eval()
    tokenizer = CharTokenizer("".join(chr(33 + i) for i in range(65)))
    out = hf.export(ours, tokenizer, tmp_path / "export")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = ids_for(ours)
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids)[0], atol=1e-5, rtol=0)
    chars = json.loads((out / "minigpt_tokenizer.json").read_text())["chars"]  # how a char vocabulary travels
    assert [chars.index(c) for c in "ABC"] == tokenizer.encode("ABC")
    with pytest.raises(hf.HFError, match="already exists"):
        hf.export(ours, tokenizer, out)


@pytest.mark.parametrize("setting, expected", [
    (dict(attn_score="additive"), "model.attn_score='additive'"),
    (dict(attn_window=4), "model.attn_window=4"),
    (dict(tie_weights=False), "model.tie_weights=false"),
    (dict(d_head=8), "model.n_head \\* model.d_head = 16 != model.n_embd = 32"),
])  # fmt: skip
def test_export_refuses_what_gpt2_cannot_express(tmp_path, setting, expected):
    model = GPT(ModelConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, **setting))
    with pytest.raises(hf.HFError, match=f"GPT-2's format cannot express {expected}"):
        hf.export(model, CharTokenizer("ab"), tmp_path / "x")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_gpt2_tokenizer_files_match_minigpt_bpe(tmp_path):
    model = GPT(ModelConfig(vocab_size=50257, block_size=8, n_layer=1, n_head=2, n_embd=16))
    out = hf.export(model, GPT2Tokenizer(), tmp_path / "bpe")
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    text = "First Citizen:\nBefore we proceed any further, hear me speak.  Ünïcödé 🙂 12345\r\n\t'tis"
    assert theirs.encode(text) == GPT2Tokenizer().encode(text)
    assert theirs.eos_token_id == theirs.convert_tokens_to_ids("<|endoftext|>") == GPT2Tokenizer().eot_id


def test_hub_name_offline_and_not_cached_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(hf.HFError) as e:
        hf.find("gpt2")
    assert "\n" not in str(e.value)
    assert "is not in the Hugging Face cache and could not be downloaded" in str(e.value)
    assert "run once with network access" in str(e.value)
    with pytest.raises(hf.HFError, match="no folder ./missing; give a Hugging Face model folder or a hub name"):
        hf.find("./missing")


def test_foreign_configs_are_refused(tmp_path):
    hf_gpt2(SHAPES["d_head 8"], tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "scale_attn_by_inverse_layer_idx": True}))
    with pytest.raises(hf.HFError, match="sets scale_attn_by_inverse_layer_idx=True, which minigpt's GPT does not"):
        hf.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(hf.HFError, match="holds a 'llama' model"):
        hf.load(str(tmp_path))


def test_params_table_of_a_loaded_gpt2(tmp_path, capsys):
    from minigpt import params_cli

    hf_gpt2(SHAPES["3 heads"], tmp_path)
    assert params_cli.main(["--model.init_from", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    stored = sum(p.numel() for p in hf.load(str(tmp_path)).parameters())
    assert f"{tmp_path}: {stored:,} parameters stored in its weights file, equal to the count below" in out
    assert f"Parameters of {tmp_path}\n" in out and "3 heads x d_head 16" in out


@pytest.fixture(scope="module")
def gpt2_vocab_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2-tiny")
    hf_gpt2(dict(n_embd=16, n_head=2, n_layer=2, n_positions=32, vocab_size=50257), folder)
    return folder


def test_sample_py_samples_and_probes_a_gpt2(gpt2_vocab_folder, tmp_path, capsys):
    from minigpt import sample_cli

    args = ["--hf", str(gpt2_vocab_folder), "--prompt", "Hello world", "--seed", "3", "--temperature", "0"]
    assert sample_cli.main([*args, "--max_new_tokens", "5"]) == 0
    out, err = capsys.readouterr()
    expected = generate_ids(hf.load(str(gpt2_vocab_folder)), GPT2Tokenizer().encode("Hello world"), 5, temperature=0)
    assert out == GPT2Tokenizer().decode(expected[0].tolist()) + "\n"
    assert f"weights: {gpt2_vocab_folder} (--hf; pretrained)" in err
    assert sample_cli.main([*args, "--attention", "--attention_png", str(tmp_path / "png"), "--runs_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "attention maps: 2 tokens, 2 layers x 2 heads" in out
    assert (tmp_path / f"hf-{gpt2_vocab_folder.name}/attention_probe/probes.jsonl").is_file()
    assert len(list((tmp_path / "png").glob("*.png"))) == 2 * 2 + 2  # each head, and each layer's all-heads view


def test_train_py_fine_tunes_a_gpt2_and_resumes_from_its_own_checkpoint(gpt2_vocab_folder, tmp_path, monkeypatch):
    import io

    from minigpt import runtime
    from minigpt.run import build_model, resolve, train
    from tests.test_run import ROOT

    corpus = tmp_path / "c.txt"
    corpus.write_text((ROOT / "data/shakespeare/input.txt").read_text()[:20_000])
    args = [f"--data.path={corpus}", f"--data.cache_dir={tmp_path / 'cache'}", f"--train.out_dir={tmp_path / 'runs'}",
            "--train.run_name=ft", f"--model.init_from={gpt2_vocab_folder}", "--model.block_size=16",
            "--train.batch_size=2", "--train.eval_iters=1",
            "--train.max_iters=2", "--train.eval_interval=2", "--log.sample_tokens=0", "--log.no_tensorboard",
            "--log.no_progress", "--train.device=cpu"]  # fmt: skip
    cfg, _, _ = resolve(args)
    assert cfg.data.tokenizer == "gpt2"  # the default run says char; GPT-2's weights need its own tokenizer
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (2, 16, 16)  # config.json's shape, cropped
    model, _ = build_model(cfg, runtime.setup("cpu", "float32"), pretrained=True)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(gpt2_vocab_folder).eval()
    ids = torch.randint(50257, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids)[0], theirs(ids).logits, atol=1e-5, rtol=0)
    assert train(cfg, out=io.StringIO())["iter"] == 2

    def no_download(*args, **kwargs):
        raise AssertionError("a resume must continue from its checkpoint, not from GPT-2 again")

    monkeypatch.setattr(hf, "read_weights", no_download)
    cfg, ckpt, path = resolve(args[:-5] + ["--train.max_iters=4", "--log.no_progress", "--resume", str(tmp_path / "runs/ft")])
    assert train(cfg, ckpt, path, out=io.StringIO())["iter"] == 4
    # ... and the fine-tuned run exports back to transformers, tokenizer included
    assert hf.main(["--run", str(tmp_path / "runs/ft"), "--out", str(tmp_path / "export")]) == 0
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    tuned, _, _ = load_model(tmp_path / "runs/ft/ckpt_latest.pt", "cpu")
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, tuned(ids)[0], atol=1e-5, rtol=0)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "export").encode("Hi") == GPT2Tokenizer().encode("Hi")


def test_sample_py_refuses_a_gpt2_without_gpt2_vocabulary(pair, capsys):
    from minigpt import sample_cli

    _, _, folder = pair
    assert sample_cli.main(["--hf", str(folder), "--max_new_tokens", "2"]) == 2
    assert "has a vocabulary of" in capsys.readouterr().err
