"""The Attention tab in a real browser: TensorBoard with the plugin, driven by headless Chromium.

The tests write tiny runs (2 layers x 2 heads, 8 tokens, 3 steps), start TensorBoard on them, open the
tab, and check what a learner sees against the tensors in the event file: the weights listed for a
hovered token, after moving the step slider and after clicking a model-view cell, the role badges, play,
a step written while the tab is open, and the message for runs without attention. They need
Playwright's Python package and a Chromium (Debian's `chromium`; Playwright's own browser download is
not reachable offline) and skip, saying which is missing, without them.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

CANDIDATES = (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"))
CHROMIUM = next((path for path in CANDIDATES if path and os.path.exists(path)), None)
if CHROMIUM is None:
    pytest.skip("no Chromium found (apt-get install chromium, or set CHROMIUM=/path)", allow_module_level=True)

from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from minigpt.tb_attention.summary import attention_summary, roles_summary  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKENS = ["To", " be", ",", " or", "\n", "not", "\t", " be"]
STEPS = [0, 10, 20]
N_LAYER, N_HEAD, T = 2, 2, len(TOKENS)
TAG = "minigpt_attention/text"
ROLES = ("previous_token", "first_token", "induction")
UNIFORM = {"induction": 0.3}


def causal_softmax(scores: np.ndarray) -> np.ndarray:
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    scores = np.where(future, -np.inf, scores)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def scalar(tag: str, value: float) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])


def write_run(folder: Path, steps: list[int] = STEPS) -> None:
    """Evaluations of attention and role scores, and the induction probe's second-copy loss."""
    writer = EventFileWriter(str(folder))
    rng = np.random.default_rng(0)
    for step in steps:
        weights = causal_softmax(3 * rng.standard_normal((N_LAYER, N_HEAD, T, T)))
        scores = {role: rng.random((N_LAYER, N_HEAD)) for role in ROLES}
        loss = scalar("loss/induction_second_copy", 4.0 - step / 10)
        for summary in (attention_summary(weights, TOKENS, list(range(T))), roles_summary(scores, UNIFORM), loss):
            writer.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=summary))
    writer.close()


def logged(folder: Path, tag: str) -> dict[int, np.ndarray]:
    """What the event file holds, read back by TensorBoard's own reader: step -> array."""
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return {event.step: tensor_util.make_ndarray(event.tensor_proto) for event in accumulator.Tensors(tag)}


def expected_badges(scores: np.ndarray) -> str:
    """Each head's badge as the model view draws it: the role furthest above uniform attention, where
    first_token (the attention sink) counts only if no other role is 0.1 above uniform; and its score."""
    lift = scores - np.array([UNIFORM.get(role, 0.0) for role in ROLES])[:, None, None]
    badges = []
    for layer in range(N_LAYER):
        for head in range(N_HEAD):
            others = [r for r in range(len(ROLES)) if ROLES[r] != "first_token"]
            best = max(others, key=lambda r: lift[r, layer, head])
            if lift[best, layer, head] < 0.1:
                best = int(lift[:, layer, head].argmax())
            badges.append(f"{layer},{head},{ROLES[best]},{scores[best, layer, head]:.3f}")
    return ";".join(badges)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard_on(logdir: Path, ready: bytes):
    """TensorBoard on a free port, once its runs route answers with `ready` in it; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    # --reload_interval 1: a step written during a test is read within a second, not five
    command += ["--port", str(port), "--reload_interval", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"TensorBoard exited: {process.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/data/plugin/minigpt_attention/runs", timeout=2) as response:
                    if ready in response.read():
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.time() > deadline:
                pytest.fail("TensorBoard did not list the runs within 30 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def write_run_without_attention(folder: Path) -> None:
    writer = EventFileWriter(str(folder))
    writer.add_event(event_pb2.Event(step=0, summary=scalar("loss/val", 1.0)))
    writer.close()


@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    write_run(logdir / "tiny")
    write_run(logdir / "written_now")  # gains a step during a test
    write_run_without_attention(logdir / "no_attention")
    with tensorboard_on(logdir, b'"written_now"') as url:
        yield url, logdir, logged(logdir / "tiny", TAG), logged(logdir / "tiny", "minigpt_attention_roles/text")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def plugin_frame(page):
    """The tab's iframe, once its page has drawn a step."""
    deadline = time.time() + 15
    while time.time() < deadline:
        for frame in page.frames:
            if "plugin_entry.html" in frame.url and "minigpt_attention" in frame.url:
                frame.wait_for_function("document.body.dataset.step !== undefined", timeout=15000)
                return frame
        page.wait_for_timeout(100)
    pytest.fail("the Attention tab's iframe did not appear")


def shown_weights(frame, query: int) -> list[tuple[int, int, float]]:
    """Hover a query token; the weights the side list shows: (head, key, weight)."""
    frame.hover(f"#queries .tok[data-i='{query}']")
    frame.wait_for_selector(f"#weights .row[data-key='{query}'], #weights .row")
    rows = frame.eval_on_selector_all(
        "#weights .row",
        "rows => rows.map(r => [Number(r.dataset.head), Number(r.dataset.key), r.querySelector('.value').textContent])",
    )
    return [(head, key, float(value)) for head, key, value in rows]


def assert_weights_match(shown, logged: np.ndarray, layer: int, query: int, heads: set[int]) -> None:
    assert shown, "no weights listed for the hovered token"
    assert {head for head, _, _ in shown} == heads
    for head, key, value in shown:
        assert key <= query, "a key after the query: the causal mask is broken"
        # the page prints 3 decimals of the float16 value it received
        assert value == pytest.approx(float(logged[layer, head, query, key]), abs=5.1e-4)
    for head in heads:  # the strongest key of each head comes first
        first = next(key for h, key, _ in shown if h == head)
        assert logged[layer, head, query, first] == logged[layer, head, query].max()


def test_attention_tab_shows_the_logged_weights_and_follows_the_slider_and_the_grid(tensorboard, browser):
    url, _, logged, roles = tensorboard
    assert sorted(logged) == sorted(roles) == STEPS
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{url}/#minigpt_attention")
    frame = plugin_frame(page)

    # the first run's newest step first, with every logged step on the slider and the tokens readable
    assert frame.locator("#run").input_value() == "tiny"
    assert frame.evaluate("document.body.dataset.step") == "20"
    assert frame.locator("#step").get_attribute("max") == str(len(STEPS) - 1)
    queries = frame.locator("#queries .tok").all_text_contents()
    assert queries == ["To", "\u2423be", ",", "\u2423or", "\u21b5", "not", "\u21e5", "\u2423be"]
    assert frame.locator("#run option[disabled]").all_text_contents() == ["no_attention (no attention tensors)"]
    assert frame.locator(".cell").count() == N_LAYER * N_HEAD
    assert frame.locator("#grid-canvas").get_attribute("data-badges") == expected_badges(roles[20])

    query = 6
    assert_weights_match(shown_weights(frame, query), logged[20], layer=0, query=query, heads={0})

    # one step back on the slider: the head view shows that step's weights
    frame.locator("#step").fill("1")
    frame.wait_for_function("document.body.dataset.step === '10'")
    assert "step 10" in frame.locator("#step-label").text_content()
    assert frame.locator("#grid-canvas").get_attribute("data-badges") == expected_badges(roles[10])
    assert frame.locator("#chart-legend .v").last.text_content() == "3.000"  # the second-copy loss at step 10
    assert_weights_match(shown_weights(frame, query), logged[10], layer=0, query=query, heads={0})

    # a model-view cell opens its layer and head in the head view
    frame.click(".cell[data-layer='1'][data-head='1']")
    assert frame.locator("#layer").input_value() == "1"
    assert frame.locator(".headchip:not(.off)").all_text_contents() == ["1"]
    assert "L1 H1" in frame.locator("#side h2").last.text_content()  # the role chart follows too
    assert_weights_match(shown_weights(frame, query), logged[10], layer=1, query=query, heads={1})

    # a second head added by its chip is listed next to the first
    frame.click(".headchip[data-head='0']")
    assert_weights_match(shown_weights(frame, query), logged[10], layer=1, query=query, heads={0, 1})
    assert errors == []
    page.close()


def test_play_runs_through_the_steps_and_reload_picks_up_a_new_one(tensorboard, browser):
    url, logdir, _, _ = tensorboard
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{url}/#minigpt_attention")
    frame = plugin_frame(page)
    frame.select_option("#run", "written_now")
    frame.wait_for_function("document.body.dataset.step === '20'")
    frame.locator("#step").fill("0")
    frame.wait_for_function("document.body.dataset.step === '0'")
    frame.click("#play")
    frame.wait_for_function("document.body.dataset.step === '20'", timeout=10000)
    assert frame.locator("#play").text_content() == "\u25b6"  # stopped at the newest step

    # the run gains an evaluation while the tab is open: the reload button shows it, and moves there
    write_run(logdir / "written_now", [30])
    deadline = time.time() + 15
    while frame.locator("#step").get_attribute("max") != str(len(STEPS)):
        assert time.time() < deadline, "the new step did not appear"
        frame.click("#reload")
        page.wait_for_timeout(500)
    frame.wait_for_function("document.body.dataset.step === '30'")
    assert "(4 / 4)" in frame.locator("#step-label").text_content()
    page.close()


def test_a_logdir_without_attention_says_so_and_how_to_fix_it(tmp_path, browser):
    write_run_without_attention(tmp_path / "old_run")
    with tensorboard_on(tmp_path, b'"old_run"') as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/data/plugin_entry.html?name=minigpt_attention")  # the tab's own page
        message = page.locator("#message")
        message.get_by_text("No attention tensors in these runs").wait_for()
        assert "old_run" in message.text_content()
        assert "python train.py" in message.text_content()
        assert page.locator("#main, .main").is_hidden()
        assert errors == []
        page.close()
