"""Foreign and broken files given to sample.py and train.py: Hugging Face folders, checkpoints, prompt files,
and sizes no machine holds. Each is one line `error: ...` with exit code 2, says what the file is, and never
advises loading a file unsafely (Faults, round two)."""

import json
import os
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")  # in the dev extra, so CI runs these

from minigpt import cli, generate, hf, sample_cli  # noqa: E402
from minigpt.checkpoint import save_checkpoint  # noqa: E402
from minigpt.config import ModelConfig, RunConfig  # noqa: E402
from minigpt.model import GPT  # noqa: E402
from minigpt.run import main as train_main  # noqa: E402
from minigpt.tokenizer import CharTokenizer  # noqa: E402
from tests.test_run import tiny_args  # noqa: E402


def one_line_error(code: int, err: str, *fragments: str) -> str:
    """Assert err is one `error: ...` line with exit code 2 naming every fragment, and no unsafe advice."""
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and "weights_only" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def sample(capsys, *argv) -> tuple[int, str]:
    code = sample_cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def train(capsys, *argv) -> tuple[int, str]:
    code = train_main([str(a) for a in argv])
    return code, capsys.readouterr().err


# -- Hugging Face folders --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 with GPT-2's vocabulary, as transformers saves it (config.json, model.safetensors)."""
    folder = tmp_path_factory.mktemp("gpt2") / "tiny"
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=16, n_head=2, n_layer=2, n_positions=32, vocab_size=50257)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def broken(gpt2_folder, tmp_path, edit=None, files=None) -> str:
    """A copy of the tiny GPT-2 with config.json edited by edit(dict) and files {name: bytes} replaced."""
    folder = shutil.copytree(gpt2_folder, tmp_path / "broken")
    if edit is not None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(edit(config)))
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    return str(folder)


def without(key):
    return lambda config: {k: v for k, v in config.items() if k != key}


def llama_weights() -> dict[str, bytes]:
    from safetensors.torch import save

    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"]
    return {"model.safetensors": save({name: torch.zeros(4, 4) for name in names})}


DAMAGED = {"model.safetensors": b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1'}  # its header is cut short

# case -> (how config.json is edited, the files replaced, what the message says)
CASES = {
    "no n_layer": (without("n_layer"), None, ["config.json has no n_layer"]),
    "no vocab_size": (without("vocab_size"), None, ["config.json has no vocab_size"]),
    "a list": (lambda c: [c], None, ["config.json holds a JSON array, not an object of settings"]),
    "garbage JSON": (None, {"config.json": b"{not json"}, ["config.json is not valid JSON"]),
    "nested JSON": (None, {"config.json": b"[" * 100_000}, ["config.json is not valid JSON (nested too deeply)"]),
    "a string n_layer": (lambda c: {**c, "n_layer": "2"}, None, ["n_layer must be a positive integer (got '2')"]),
    "n_head=3": (lambda c: {**c, "n_head": 3}, None, ["n_embd=16 is not divisible by n_head=3, so no GPT-2"]),
    "n_embd": (lambda c: {**c, "n_embd": 32}, None, ["wte.weight is 50257 x 16 but the config asks for 50257 x 32"]),
    "n_layer": (lambda c: {**c, "n_layer": 3}, None, ["it holds layers h.0 to h.1 but the config says n_layer=3"]),
    "n_positions": (lambda c: {**c, "n_positions": 16}, None, ["wpe.weight is 32 x 16 but the config asks for 16 x"]),
    "Llama weights": (None, llama_weights(), ["none of its 3 tensors has a GPT-2 name (model.embed_tokens.weight"]),
    "damaged safetensors": (None, DAMAGED, ["model.safetensors is damaged or not a safetensors file"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_hf_folder_is_one_line_in_sample_and_train(gpt2_folder, tmp_path, corpus, capsys, case):
    edit, files, fragments = CASES[case]
    folder = broken(gpt2_folder, tmp_path, edit, files)
    one_line_error(*sample(capsys, "--hf", folder, "--prompt", "Hi", "--max_new_tokens", 2), folder, *fragments)
    # train.py refuses it while resolving the settings: before any data is prepared or model built
    one_line_error(*train(capsys, *tiny_args(corpus, tmp_path, f"--model.init_from={folder}")), folder, *fragments)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_a_pickled_os_system_is_refused_and_never_called_unsafe(gpt2_folder, tmp_path, corpus, capsys):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = broken(gpt2_folder, tmp_path)
    os.remove(f"{folder}/model.safetensors")
    torch.save({"transformer.wte.weight": Evil()}, f"{folder}/pytorch_model.bin")
    why = ["refused", "pytorch_model.bin: it asks to load the Python object posix.system, which could run code"]
    one_line_error(*sample(capsys, "--hf", folder, "--prompt", "Hi", "--max_new_tokens", 2), *why)
    one_line_error(*train(capsys, *tiny_args(corpus, tmp_path, f"--model.init_from={folder}")), *why)
    assert not marker.exists()  # no code ran


def test_a_char_level_export_is_no_gpt2_to_fine_tune(tmp_path, corpus, capsys):
    chars = "".join(chr(33 + i) for i in range(58))
    model = GPT(ModelConfig(vocab_size=58, block_size=16, n_layer=1, n_head=2, n_embd=16))
    folder = hf.export(model, CharTokenizer(chars), tmp_path / "char-export")
    why = ["has a vocabulary of 58 tokens, not GPT-2's 50257", "exported from a char-level minigpt run"]
    one_line_error(*train(capsys, *tiny_args(corpus, tmp_path, f"--model.init_from={folder}")), *why)
    one_line_error(*sample(capsys, "--hf", folder, "--prompt", "Hi", "--max_new_tokens", 2), *why)


def test_hf_weights_that_are_not_finite_are_refused(gpt2_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = broken(gpt2_folder, tmp_path)
    state = load_file(f"{folder}/model.safetensors")
    state["transformer.h.1.mlp.c_fc.bias"][3] = float("nan")
    save_file(state, f"{folder}/model.safetensors")
    with pytest.raises(hf.HFError, match="transformer.h.1.mlp.c_fc.bias holds NaN or inf"):
        hf.load(folder)


# -- checkpoints -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    """A finished tiny run: runs/r with ckpt_latest.pt (iter 4)."""
    root = tmp_path_factory.mktemp("run")
    assert train_main(tiny_args(corpus, root, "--train.max_iters=4")) == 0
    return root / "runs/r"


def edited_copy(run_dir, tmp_path, edit):
    """A copy of the run whose ckpt_latest.pt was loaded, edited by edit(ckpt) and saved again."""
    copy = shutil.copytree(run_dir, tmp_path / "runs/r")
    ckpt = torch.load(copy / "ckpt_latest.pt", weights_only=True)
    edit(ckpt)
    save_checkpoint(copy / "ckpt_latest.pt", ckpt)
    return copy


def set_n_embd(ckpt):
    ckpt["config"]["model"]["n_embd"] = 64


def set_nan(ckpt):
    ckpt["model"]["h.1.ln_2.bias"][0] = float("nan")


def shrink_moment(ckpt):
    ckpt["optimizer"]["state"]["wpe.weight"]["exp_avg"] = torch.zeros(3)


def drop_sampler(ckpt):
    del ckpt["sampler"]


def text_iter(ckpt):
    ckpt["iter"] = "4"


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (set_n_embd, ["the weights do not fit its model config: wte.weight is", "but the config asks for"]),
        (set_nan, ["its weights are broken: h.1.ln_2.bias holds NaN or inf"]),
        (shrink_moment, ["the optimizer's exp_avg of wpe.weight does not fit the weights"]),
        (drop_sampler, ["has no sampler, so training cannot continue from it"]),
        (text_iter, ["its iter is not what minigpt's trainer writes"]),
    ],
)
def test_resume_from_a_checkpoint_that_does_not_fit_is_one_line(run_dir, corpus, tmp_path, capsys, edit, fragments):
    copy = edited_copy(run_dir, tmp_path, edit)
    before = (copy / "ckpt_latest.pt").read_bytes()
    args = tiny_args(corpus, tmp_path, "--train.max_iters=8", "--resume", str(copy))
    one_line_error(*train(capsys, *args), "ckpt_latest.pt", *fragments)
    assert (copy / "ckpt_latest.pt").read_bytes() == before  # nothing lost
    if edit in (set_n_embd, set_nan):  # sample.py says the same of the same file
        one_line_error(*sample(capsys, "--ckpt", copy / "ckpt_latest.pt"), *fragments)


def test_random_bytes_and_legacy_pickles_are_named_for_what_they_are(run_dir, corpus, tmp_path, capsys):
    copy = shutil.copytree(run_dir, tmp_path / "runs/r")
    (copy / "ckpt_latest.pt").write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    why = ["ckpt_latest.pt is not a minigpt checkpoint: it is neither a PyTorch zip file nor a pickle"]
    one_line_error(*train(capsys, *tiny_args(corpus, tmp_path, "--resume", str(copy))), *why)
    one_line_error(*sample(capsys, "--ckpt", copy / "ckpt_latest.pt"), *why)
    # PyTorch's legacy format (a pickle, as before 1.6), with a minigpt payload: sample.py maps files (mmap),
    # which torch refuses for this format with advice about torch.save; the message says what the file is
    payload = torch.load(run_dir / "ckpt_latest.pt", weights_only=True)
    torch.save(payload, copy / "ckpt_latest.pt", _use_new_zipfile_serialization=False)
    code, err = sample(capsys, "--ckpt", copy / "ckpt_latest.pt")
    one_line_error(code, err, "is not a minigpt checkpoint: it is a Python pickle", "legacy format")
    assert "mmap" not in err
    one_line_error(*train(capsys, *tiny_args(corpus, tmp_path, "--resume", str(copy))), "legacy format")


# -- sampling sizes and prompt files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = CharTokenizer.from_text("abcdefgh\n")
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    payload = {"model": GPT(cfg).state_dict(), "config": cli.to_dict(RunConfig(model=cfg)), "tokenizer": tok.to_dict()}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", payload)


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "flag, value, fragments",
    [
        ("--max_new_tokens", HUGE, [f"1 sample(s) of 1 prompt + {HUGE} new tokens need about", "EiB of memory"]),
        ("--num_samples", "10000000000", ["10000000000 sample(s) of 1 prompt + 500 new tokens need about"]),
        ("--seed", HUGE, ["seed must be in [0, 2**64)"]),
        ("--threads", HUGE, [f"threads={HUGE} is more than the", "CPU cores"]),
    ],
)
def test_sizes_no_machine_holds_are_refused_before_allocating(ckpt, capsys, flag, value, fragments):
    code, err = sample(capsys, "--ckpt", ckpt, flag, value)
    one_line_error(code, err, *fragments)
    if flag in ("--max_new_tokens", "--num_samples"):
        assert "of memory, and this machine has" in err and "iB free (cpu)" in err


def test_the_memory_check_counts_what_generate_allocates(monkeypatch):
    model = GPT(ModelConfig(vocab_size=9, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    need = generate.memory_needed(model, batch=3, prompt_len=2, max_new_tokens=5)
    # the token buffer (3 x 7 int64), the KV cache (2 x 1 layer x 3 x 2 heads x 6 x 8 floats), one forward
    assert need == 3 * 7 * 8 + 2 * 3 * 2 * 6 * 8 * 4 + 3 * 7 * (9 + 2 * 7 + 64 + 64) * 4
    monkeypatch.setattr(generate, "memory_free", lambda device: need - 1)
    with pytest.raises(ValueError, match=f"need about {need / 1024:.1f} KiB of memory, and this machine has"):
        generate.generate(model, [1, 2], 5, num_samples=3)
    monkeypatch.setattr(generate, "memory_free", lambda device: need)
    assert len(list(generate.generate(model, [1, 2], 5, num_samples=3))) == 5


def test_a_model_whose_scores_overflow_is_one_error_not_a_sampling_crash():
    model = GPT(ModelConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        model.wte.weight.fill_(1e37)  # finite, but the tied head's scores overflow to inf, softmax's to NaN
    tokens = generate.generate(model, [1, 2], 3, temperature=1.0)
    with pytest.raises(ValueError, match="the model's scores for the prompt are NaN or inf"):
        next(tokens)


def test_weights_too_big_for_float16_are_refused_not_sampled_as_nan():
    model = GPT(ModelConfig(vocab_size=9, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        model.h[0].mlp.c_fc.weight[0, 0] = 1e6  # a diverged run's weight: finite in float32, inf in float16
    with pytest.raises(ValueError, match="the weights do not fit in float16: h.0.mlp.c_fc.weight holds values"):
        model.for_decoding(torch.float16)


def test_prompt_files_that_cannot_be_read_are_bad_input(ckpt, tmp_path, capsys, monkeypatch):
    one_line_error(*sample(capsys, "--ckpt", ckpt, "--prompt_file", tmp_path), "cannot read it (Is a directory)")
    monkeypatch.setattr(sample_cli, "PROMPT_FILE_LIMIT", 1000)  # /dev/zero never ends
    one_line_error(*sample(capsys, "--ckpt", ckpt, "--prompt_file", "/dev/zero"), "holds more than 1,000 characters")
