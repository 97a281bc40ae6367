"""The Attention tab ("Attention you can touch"): raw attention in the event files, and the TensorBoard
plugin that serves it, tested through TensorBoard's own WSGI app over its own data provider."""

import importlib.metadata
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard import program
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.core import core_plugin
from tensorboard.util import tensor_util
from werkzeug.test import Client

from minigpt.metrics import TensorBoardLogger
from minigpt.roles import ROLES
from minigpt.tb_attention import plugin
from minigpt.tb_attention.summary import PLUGIN_NAME, attention_summary, roles_summary

ROOT = Path(__file__).resolve().parents[1]
ROUTES = f"/data/plugin/{PLUGIN_NAME}"
TOKENS = ["F", "i", "r", " ", "\n", "$"]  # raw: a space and a newline stay themselves in the tensor's metadata


def random_attention(n_layer: int, n_head: int, T: int, seed: int) -> torch.Tensor:
    """Causal attention probabilities: (n_layer, n_head, T, T), each row sums to 1 over keys j <= i."""
    scores = torch.randn(n_layer, n_head, T, T, generator=torch.Generator().manual_seed(seed)) * 3
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
    return torch.softmax(scores, dim=-1)


def write_run(run_dir: Path, steps, n_layer=2, n_head=3, tokens=TOKENS, probe="text") -> dict[int, torch.Tensor]:
    """Log the tensors alone (no PNGs: fast) at each step; returns step -> the weights logged."""
    logged = {}
    with TensorBoardLogger(run_dir) as logger:
        for step in steps:
            logged[step] = random_attention(n_layer, n_head, len(tokens), seed=step)
            logger.attention_tensor(logged[step], tokens, step, probe, ids=list(range(len(tokens))))
    return logged


class Board:
    """TensorBoard's WSGI app on a logdir, set up as `tensorboard --logdir` does (flags through the
    plugin's loader, the local data provider), without a server; reload() reads new events."""

    def __init__(self, logdir: Path, **flags) -> None:
        tb = program.TensorBoard(plugins=[core_plugin.CorePluginLoader(), plugin.AttentionLoader()])
        tb.configure(logdir=str(logdir), load_fast="false", **flags)
        self.logdir, self.flags = logdir, tb.flags
        ingester = data_ingester.LocalDataIngester(tb.flags)
        self.multiplexer = ingester.deprecated_multiplexer
        self.reload()
        provider, loaders = ingester.data_provider, tb.plugin_loaders
        self.client = Client(application.TensorBoardWSGIApp(tb.flags, loaders, provider, None, self.multiplexer))

    def reload(self) -> None:
        self.multiplexer.AddRunsFromDirectory(str(self.logdir))
        self.multiplexer.Reload()

    def get(self, route: str, **query):
        return self.client.get(ROUTES + route, query_string=query)

    def json(self, route: str, **query):
        response = self.get(route, **query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def attention(self, run: str, probe: str, step: int) -> np.ndarray:
        response = self.get("/attention", run=run, probe=probe, step=step)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "application/octet-stream"
        shape = tuple(int(n) for n in response.headers["X-Shape"].split(","))
        return np.frombuffer(response.data, dtype="<f2").reshape(shape)


def probes_of(runs: dict, run: str) -> dict[str, dict]:
    return {p["probe"]: p for r in runs["runs"] if r["run"] == run for p in r["probes"]}


# -- the summaries in the event file ---------------------------------------------------------------


def test_logged_tensors_round_trip_through_the_event_file(tmp_path):
    weights = random_attention(2, 3, len(TOKENS), seed=1)
    scores = {role: torch.rand(2, 3, dtype=torch.float64) for role in ROLES}
    scores["duplicate_token"][0, 1] = float("nan")  # an undefined score stays undefined
    uniform = {role: 0.1 * i for i, role in enumerate(ROLES)}
    with TensorBoardLogger(tmp_path) as logger:
        logger.attention(weights, TOKENS, 7, ids=[5, 6, 7, 8, 9, 10])
        logger.roles(scores, 7, uniform)
    acc = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    [event] = acc.Tensors(f"{PLUGIN_NAME}/text")
    got = tensor_util.make_ndarray(event.tensor_proto)
    assert event.step == 7 and got.dtype == np.float16 and got.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(got, weights.half().numpy())  # float16 is the only rounding
    np.testing.assert_allclose(got, weights.numpy(), rtol=1e-3, atol=1e-4)
    meta = acc.SummaryMetadata(f"{PLUGIN_NAME}/text")
    assert meta.plugin_data.plugin_name == PLUGIN_NAME
    content = json.loads(meta.plugin_data.content)
    assert content == {"version": 1, "kind": "attention", "tokens": TOKENS, "ids": [5, 6, 7, 8, 9, 10]}
    [event] = acc.Tensors(f"{PLUGIN_NAME}_roles/text")
    roles = tensor_util.make_ndarray(event.tensor_proto)
    assert roles.shape == (len(ROLES), 2, 3) and np.isnan(roles[ROLES.index("duplicate_token"), 0, 1])
    np.testing.assert_allclose(roles[ROLES.index("induction")], scores["induction"].numpy(), rtol=1e-6)
    content = json.loads(acc.SummaryMetadata(f"{PLUGIN_NAME}_roles/text").plugin_data.content)
    assert content["roles"] == list(ROLES) and content["uniform"] == pytest.approx(uniform)
    # TensorBoard without the plugin still shows the maps, the stats and the role grids
    assert "attention/layer_1/head_2" in acc.Tags()["images"] and "roles/induction" in acc.Tags()["images"]
    assert "attention_entropy/layer_0/head_0" in acc.Tags()["scalars"]


def test_attention_tensors_can_be_switched_off(tmp_path):
    with TensorBoardLogger(tmp_path, attention_tensors=False) as logger:
        logger.attention(random_attention(1, 2, 6, seed=0), TOKENS, 0)
        logger.roles({"induction": torch.rand(1, 2)}, 0)
    acc = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    assert not [t for t in acc.Tags()["tensors"] if t.startswith(PLUGIN_NAME)]
    assert "attention/layer_0/head_1" in acc.Tags()["images"]


def test_summaries_reject_what_the_tab_could_not_show():
    weights = np.zeros((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"T = len\(tokens\) = 2"):
        attention_summary(weights, ["a", "b"])
    with pytest.raises(ValueError, match="got 2 ids for 3 tokens"):
        attention_summary(weights, ["a", "b", "c"], ids=[1, 2])
    with pytest.raises(ValueError, match="probe name 'my probe'"):
        attention_summary(weights, ["a", "b", "c"], probe="my probe")
    with pytest.raises(ValueError, match=r"each be \(n_layer, n_head\)"):
        roles_summary({"self": np.zeros(3)})


# -- the plugin's routes ---------------------------------------------------------------------------


def test_routes_serve_what_was_logged(tmp_path):
    logged = write_run(tmp_path / "a", [0, 10, 20])
    with TensorBoardLogger(tmp_path / "a") as logger:  # roles at two of the steps, and the copy losses
        for step in (0, 10):
            scores = {role: torch.full((2, 3), 0.1 * step + i / 10) for i, role in enumerate(ROLES)}
            scores["duplicate_token"][1, 2] = float("nan")
            logger.roles(scores, step, {role: 0.05 for role in ROLES} | {"duplicate_token": float("nan")})
            logger.scalars({"loss/induction_first_copy": 4.0, "loss/induction_second_copy": 4.0 - step / 10}, step)
    board = Board(tmp_path)
    runs = board.json("/runs")
    assert runs["empty_runs"] == [] and "note" not in runs
    assert probes_of(runs, "a") == {"text": {"probe": "text", "steps": [0, 10, 20], "n_layer": 2, "n_head": 3, "T": 6}}
    assert board.json("/tokens", run="a", probe="text") == {"tokens": TOKENS, "ids": [0, 1, 2, 3, 4, 5]}
    for step, weights in logged.items():
        np.testing.assert_array_equal(board.attention("a", "text", step), weights.half().numpy())
    roles = board.json("/roles", run="a", probe="text")
    assert roles["roles"] == list(ROLES) and roles["steps"] == [0, 10] and roles["probe"] == "text"
    assert roles["uniform"] == {role: pytest.approx(0.05) for role in ROLES} | {"duplicate_token": None}
    assert np.array(roles["scores"], dtype=float).shape == (2, len(ROLES), 2, 3)
    assert roles["scores"][1][ROLES.index("induction")][0][0] == pytest.approx(1.0 + 0.4)
    assert roles["scores"][0][ROLES.index("duplicate_token")][1][2] is None  # NaN is not JSON: null
    assert roles["second_copy_loss"] == [[0, 4.0], [10, 3.0]] and roles["first_copy_loss"] == [[0, 4.0], [10, 4.0]]
    # TensorBoard lists the tab, with its one ES module
    listing = board.client.get("/data/plugins_listing").get_json()[PLUGIN_NAME]
    assert listing["enabled"] and listing["tab_name"] == "Attention"
    assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{ROUTES}/index.js"}


def test_roles_of_a_probe_without_its_own_come_from_the_text_probe(tmp_path):
    write_run(tmp_path / "a", [0], probe="induction")
    board = Board(tmp_path)
    assert board.json("/roles", run="a", probe="induction")["roles"] == []  # none logged: empty, not an error
    with TensorBoardLogger(tmp_path / "a") as logger:
        logger.roles({"induction": torch.full((2, 3), 0.5)}, 0)
    board.reload()
    roles = board.json("/roles", run="a", probe="induction")
    assert roles["probe"] == "text" and roles["roles"] == ["induction"] and roles["scores"] == [[[[0.5] * 3] * 2]]


def test_every_one_of_31_logged_steps_is_reachable(tmp_path):
    steps = [100 * i for i in range(31)]
    logged = write_run(tmp_path / "long", steps, n_layer=1, n_head=1)
    board = Board(tmp_path)
    assert board.flags.samples_per_plugin[PLUGIN_NAME] == 0  # the loader asked TensorBoard to keep all
    assert probes_of(board.json("/runs"), "long")["text"]["steps"] == steps
    for step in steps:
        np.testing.assert_array_equal(board.attention("long", "text", step), logged[step].half().numpy())
    # TensorBoard's default of 10 per tag is what that avoids; a user's own setting is kept and explained
    sampled = Board(tmp_path, samples_per_plugin={PLUGIN_NAME: 10})
    runs = sampled.json("/runs")
    assert len(probes_of(runs, "long")["text"]["steps"]) == 10
    assert f"--samples_per_plugin {PLUGIN_NAME}=10" in runs["note"]


@pytest.mark.parametrize(
    "query, fragment",
    [
        ({"run": "nope", "probe": "text", "step": "0"}, "no run 'nope' with attention data; runs: a"),
        ({"run": "a", "probe": "nope", "step": "0"}, "run 'a' has no probe 'nope'; probes: text"),
        ({"run": "a", "probe": "text", "step": "5"}, "step 5 is not logged for run 'a', probe 'text'; logged: 0, 10"),
        ({"run": "a", "probe": "text", "step": "1.5"}, "step='1.5' is not an integer"),
        ({"run": "a", "probe": "text", "step": "ten"}, "step='ten' is not an integer"),
        ({"run": "a", "probe": "text", "step": "99999999999999999999999"}, "is not an integer"),
        ({"run": "a", "probe": "text"}, "missing query value step=..."),
        ({"probe": "text", "step": "0"}, "missing query value run=..."),
    ],
)
def test_bad_query_values_are_400_with_one_line(tmp_path, query, fragment):
    write_run(tmp_path / "a", [0, 10])
    board = Board(tmp_path)
    response = board.get("/attention", **query)
    text = response.get_data(as_text=True)
    assert response.status_code == 400 and response.mimetype == "text/plain"
    assert fragment in text and "\n" not in text.strip()
    if fragment.startswith(("no run", "run 'a'", "missing query value run")):  # the other routes say the same
        for route in ("/tokens", "/roles"):
            response = board.get(route, **query)
            assert response.status_code == 400 and fragment in response.get_data(as_text=True)


def test_a_run_without_attention_tensors_is_named_not_broken(tmp_path):
    write_run(tmp_path / "with", [0])
    with TensorBoardLogger(tmp_path / "without", attention_tensors=False) as logger:
        logger.scalars({"loss/train": 2.0}, 0)
    board = Board(tmp_path)
    runs = board.json("/runs")
    assert [r["run"] for r in runs["runs"]] == ["with"] and runs["empty_runs"] == ["without"]
    response = board.get("/attention", run="without", probe="text", step=0)
    assert response.status_code == 400 and "no run 'without' with attention data" in response.get_data(as_text=True)
    # a logdir with nothing at all in it
    empty = Board(tmp_path / "nothing")
    assert empty.json("/runs") == {"runs": [], "empty_runs": []}


def test_a_half_written_event_file_shows_the_complete_steps(tmp_path):
    with TensorBoardLogger(tmp_path / "a") as logger:
        for step in (0, 10, 20):
            weights = random_attention(2, 3, len(TOKENS), seed=step)
            logger.attention_tensor(weights, TOKENS, step, "text")
            logger.flush()
            if step == 10:
                kept = weights
                [events] = (tmp_path / "a").glob("events.out.tfevents.*")
                whole = events.stat().st_size
    size = events.stat().st_size
    os.truncate(events, whole + (size - whole) // 2)  # half of step 20's record, as a writer killed midway leaves it
    board = Board(tmp_path)
    assert probes_of(board.json("/runs"), "a")["text"]["steps"] == [0, 10]
    np.testing.assert_array_equal(board.attention("a", "text", 10), kept.half().numpy())
    response = board.get("/attention", run="a", probe="text", step=20)
    assert response.status_code == 400 and "logged: 0, 10" in response.get_data(as_text=True)


def test_a_run_being_written_updates_on_reload(tmp_path):
    logged = write_run(tmp_path / "live", [0, 10])
    board = Board(tmp_path)
    assert probes_of(board.json("/runs"), "live")["text"]["steps"] == [0, 10]
    np.testing.assert_array_equal(board.attention("live", "text", 10), logged[10].half().numpy())
    logged |= write_run(tmp_path / "live", [20, 30])  # the run goes on (a new event file, as after a resume)
    write_run(tmp_path / "new", [0])  # and a new run starts
    board.reload()
    runs = board.json("/runs")
    assert probes_of(runs, "live")["text"]["steps"] == [0, 10, 20, 30] and probes_of(runs, "new")
    np.testing.assert_array_equal(board.attention("live", "text", 30), logged[30].half().numpy())


def test_steps_of_another_probe_length_are_left_out(tmp_path):
    """A resume may change log.probe_tokens; TensorBoard keeps the tokens of a tag's first record only, so the
    steps that those tokens do not describe are not served."""
    logged = write_run(tmp_path / "a", [0, 10])
    write_run(tmp_path / "a", [20], tokens=TOKENS[:4])
    board = Board(tmp_path)
    probe = probes_of(board.json("/runs"), "a")["text"]
    assert probe["steps"] == [0, 10] and probe["T"] == 6
    np.testing.assert_array_equal(board.attention("a", "text", 10), logged[10].half().numpy())
    assert board.get("/attention", run="a", probe="text", step=20).status_code == 400


def test_the_es_module_is_served_from_the_package(tmp_path, monkeypatch):
    board = Board(tmp_path)
    response = board.get("/index.js")
    if (plugin.STATIC / "index.js").exists():
        assert response.status_code == 200 and response.mimetype == "text/javascript"
        assert response.data == (plugin.STATIC / "index.js").read_bytes()
    monkeypatch.setattr(plugin, "STATIC", tmp_path / "nowhere")
    response = board.get("/index.js")
    assert response.status_code == 404 and "reinstall minigpt" in response.get_data(as_text=True)


def test_the_plugin_opens_no_socket(tmp_path, monkeypatch):
    write_run(tmp_path / "a", [0])
    board = Board(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the plugin opened a network connection")

    for name in ("bind", "connect", "connect_ex", "listen"):
        monkeypatch.setattr(socket.socket, name, refuse)
    assert board.json("/runs")["runs"] and board.attention("a", "text", 0).shape == (2, 3, 6, 6)
    assert board.json("/roles", run="a", probe="text")["steps"] == []
    assert board.get("/index.js").status_code in (200, 404)


def test_tensorboard_itself_serves_all_31_steps(tmp_path):
    """`tensorboard --logdir`, as users start it: the plugin found through its entry point, the data read
    by TensorBoard's default reader (its Rust data server where it runs, else Python)."""
    steps = list(range(0, 310, 10))
    logged = write_run(tmp_path / "logs/long", steps, n_layer=1, n_head=2)
    with socket.socket() as s:  # a free port for TensorBoard to bind
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logdir = str(tmp_path / "logs")
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)]
    # started outside the repository, so the installed package (and its entry point) is what it finds
    server = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}{ROUTES}"
    try:
        deadline, runs = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                runs = json.load(urllib.request.urlopen(url + "/runs", timeout=10))
                if runs["runs"]:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        assert runs and runs["runs"], server.stderr.read1().decode() if server.poll() is not None else "no answer"
        assert probes_of(runs, "long")["text"]["steps"] == steps
        with urllib.request.urlopen(url + "/attention?run=long&probe=text&step=300", timeout=10) as answer:
            got = np.frombuffer(answer.read(), dtype="<f2").reshape(1, 2, len(TOKENS), len(TOKENS))
        np.testing.assert_array_equal(got, logged[300].half().numpy())
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(url + "/attention?run=long&probe=text&step=ten", timeout=10)
        assert bad.value.code == 400 and bad.value.read().decode() == "step='ten' is not an integer"
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- installing and importing ----------------------------------------------------------------------


def test_tensorboard_finds_the_plugin_through_its_entry_point():
    [entry] = [e for e in importlib.metadata.entry_points(group="tensorboard_plugins") if e.name == PLUGIN_NAME]
    assert entry.load() is plugin.AttentionLoader


def test_importing_the_plugin_does_not_import_torch():
    code = (
        "import sys, time; t = time.perf_counter(); import minigpt.tb_attention.plugin; "
        "print(time.perf_counter() - t); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    seconds, torch_modules = done.stdout.splitlines()
    assert torch_modules == "[]"
    assert float(seconds) < 10  # ~0.3 s on 2 cores (docs/benchmarks.md); torch alone takes seconds


# -- what train.py and sample.py write -------------------------------------------------------------


def test_a_training_run_logs_the_text_and_induction_probes(tmp_path):
    from minigpt.run import resolve, train

    corpus = tmp_path / "small.txt"
    corpus.write_text((ROOT / "data/shakespeare/input.txt").read_text()[:20_000])
    places = [f"--data.path={corpus}", f"--data.cache_dir={tmp_path / 'cache'}", f"--train.out_dir={tmp_path / 'runs'}"]
    model = ["--model.n_layer=2", "--model.n_head=2", "--model.n_embd=16", "--model.block_size=16"]
    steps = ["--train.batch_size=2", "--train.max_iters=4", "--train.eval_interval=2", "--train.eval_iters=1"]
    log = ["--train.run_name=r", "--log.sample_tokens=0", "--log.no_progress", "--train.device=cpu"]
    cfg, _, _ = resolve([*places, *model, *steps, *log])
    train(cfg, out=io.StringIO())
    board = Board(tmp_path / "runs")
    probes = probes_of(board.json("/runs"), "r")
    assert set(probes) == {"text", "induction"}
    for probe in probes.values():  # T: the 16-token context; the induction probe is 8 tokens twice
        assert probe["steps"] == [0, 2, 4] and (probe["n_layer"], probe["n_head"], probe["T"]) == (2, 2, 16)
    ids = board.json("/tokens", run="r", probe="induction")["ids"]
    assert len(ids) == 16 and ids[:8] == ids[8:]
    weights = board.attention("r", "induction", 4).astype(np.float32)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-2)  # rows of probabilities
    assert not np.triu(weights, k=1).any()  # causal
    roles = board.json("/roles", run="r", probe="text")
    assert roles["roles"] == list(ROLES) and roles["steps"] == [0, 2, 4]
    assert [s for s, _ in roles["second_copy_loss"]] == [0, 2, 4]


def test_sample_attention_writes_a_probe_per_text(tmp_path, capsys):
    from minigpt import sample_cli
    from minigpt.config import ModelConfig
    from minigpt.tokenizer import CharTokenizer
    from tests.test_sample import write_checkpoint

    tok = CharTokenizer.from_text((ROOT / "data/shakespeare/input.txt").read_text()[:20_000])
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32)
    write_checkpoint(tmp_path / "runs/r/ckpt_best.pt", cfg, tok)
    for text in ("First Citizen", "Before we"):
        code = sample_cli.main(["--run", str(tmp_path / "runs/r"), "--attention", "--prompt", text])
        assert code == 0, capsys.readouterr()
    board = Board(tmp_path / "runs")
    probes = probes_of(board.json("/runs"), "r/attention_probe")
    assert list(probes) == ["prompt_0", "prompt_1"] and probes["prompt_1"]["steps"] == [1]
    assert board.json("/tokens", run="r/attention_probe", probe="prompt_0")["tokens"] == list("First Citizen")
    assert board.attention("r/attention_probe", "prompt_1", 1).shape == (2, 2, 9, 9)
    assert board.json("/roles", run="r/attention_probe", probe="prompt_1")["probe"] == "prompt_1"


def test_sample_hf_attention_writes_the_same_probe(tmp_path, capsys):
    pytest.importorskip("transformers")
    from minigpt import sample_cli
    from minigpt.tokenizer import GPT2Tokenizer
    from tests.test_hf import hf_gpt2

    shape = {"n_embd": 24, "n_head": 3, "n_layer": 2, "n_positions": 32, "vocab_size": GPT2Tokenizer().vocab_size}
    hf_gpt2(shape, tmp_path / "tiny-gpt2")
    text = "Mr and Mrs Dursley, of number four"
    argv = ["--hf", str(tmp_path / "tiny-gpt2"), "--attention", "--prompt", text, "--runs_dir", str(tmp_path / "runs")]
    assert sample_cli.main(argv) == 0, capsys.readouterr()
    board = Board(tmp_path / "runs")
    probe = probes_of(board.json("/runs"), "hf-tiny-gpt2/attention_probe")["prompt_0"]
    tokens = board.json("/tokens", run="hf-tiny-gpt2/attention_probe", probe="prompt_0")
    assert tokens["ids"] == GPT2Tokenizer().encode(text) and "".join(tokens["tokens"]) == text
    assert (probe["n_layer"], probe["n_head"], probe["T"]) == (2, 3, len(tokens["ids"]))
