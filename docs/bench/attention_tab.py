"""How fast TensorBoard's Attention tab draws, measured in a real browser (headless Chromium).

    python docs/bench/attention_tab.py                       # a 12 x 12 run, 64-token probes, 20 steps
    python docs/bench/attention_tab.py --logdir runs --run NAME

Without --logdir it writes a run of GPT-2's shape (random causal attention; only the sizes matter to the
page) into a temporary folder. It starts TensorBoard on it, then, for each of 1 + N page loads, reads
the times the page itself marks (window.minigptAttention.marks, performance.now() of the tab's frame):

- navigation -> model view drawn: from the browser's navigation to TensorBoard (or to the tab's own
  page, data/plugin_entry.html, which is what the tab costs inside TensorBoard) until every head's map
  is drawn; the first load is cold (TensorBoard reads the tensors once, the browser caches nothing);
- one step on the slider: from the input event to the step redrawn, and to the next painted frame,
  once the page has prefetched the steps.

Needs Playwright's Python package and a Chromium (--chromium, default /usr/bin/chromium).
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from minigpt.tb_attention.summary import attention_summary, roles_summary

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TAB_PAGE = "data/plugin_entry.html?name=minigpt_attention"  # the page TensorBoard puts in the tab's frame
ROLES = ("previous_token", "first_token", "self", "duplicate_token", "induction")


def write_run(folder: Path, steps: int, n_layer: int, n_head: int, T: int) -> None:
    rng = np.random.default_rng(0)
    tokens = [" tok" + str(i) for i in range(T)]
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    writer = EventFileWriter(str(folder))
    for i in range(steps):
        scores = np.where(future, -np.inf, 2 * rng.standard_normal((n_layer, n_head, T, T)))
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        roles = {role: rng.random((n_layer, n_head)) for role in ROLES}
        for summary in (attention_summary(weights, tokens, list(range(T))), roles_summary(roles)):
            writer.add_event(event_pb2.Event(step=10 * i, wall_time=time.time(), summary=summary))
    writer.close()


def start_tensorboard(logdir: str, run: str) -> tuple[subprocess.Popen, str, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/data/plugin/minigpt_attention/runs", timeout=5) as response:
                runs = json.load(response)["runs"]
            probe = next(p for r in runs if r["run"] == run for p in r["probes"] if p["probe"] == "text")
            return process, url, probe
        except (OSError, StopIteration, KeyError):
            time.sleep(0.5)
    process.terminate()
    sys.exit(f"TensorBoard did not list run {run!r} with a text probe within 120 s")


def tab_frame(page, inside_tensorboard: bool):
    if not inside_tensorboard:
        return page.main_frame
    while True:
        for frame in page.frames:
            if "plugin_entry.html" in frame.url:
                return frame
        page.wait_for_timeout(20)


def load_times(browser, url: str, inside_tensorboard: bool, n: int) -> tuple[list[float], ...]:
    """ms from navigation to the model view drawn, from the top page's and from the tab frame's navigation,
    and from the top page's navigation to the tab frame's (TensorBoard's own start-up)."""
    from_top, from_frame, before_frame = [], [], []
    for _ in range(n):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        target = f"{url}/#minigpt_attention" if inside_tensorboard else f"{url}/{TAB_PAGE}"
        page.goto(target, wait_until="commit")
        frame = tab_frame(page, inside_tensorboard)
        frame.wait_for_function("window.minigptAttention?.marks.modelViewDrawn != null", timeout=60000, polling=10)
        origin, drawn = frame.evaluate("[performance.timeOrigin, window.minigptAttention.marks.modelViewDrawn]")
        top_origin = page.evaluate("performance.timeOrigin")
        from_top.append(origin + drawn - top_origin)
        from_frame.append(drawn)
        before_frame.append(origin - top_origin)
        page.close()
    return from_top, from_frame, before_frame


# one step back at a time through every step: until redrawn, and until the next frame is painted
SLIDER = """async () => {
    const slider = document.querySelector('#step');
    const out = [];
    for (let i = Number(slider.max) - 1; i >= 0; i--) {
        const t0 = performance.now();
        slider.value = String(i);
        slider.dispatchEvent(new Event('input'));
        while (window.minigptAttention.marks.redraws.at(-1).start < t0) await new Promise(r => setTimeout(r, 1));
        const drawn = performance.now();
        await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
        out.push([drawn - t0, performance.now() - t0]);
    }
    return out;
}"""


def slider_times(browser, url: str) -> list[tuple[float, float]]:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{url}/{TAB_PAGE}")
    page.wait_for_function("window.minigptAttention?.marks.modelViewDrawn != null", timeout=60000)
    # the page prefetches every step after the first draw; wait until it has
    page.wait_for_function(
        "performance.getEntriesByType('resource').filter(e => e.name.includes('/attention?')).length"
        " >= Number(document.querySelector('#step').max) + 1",
        timeout=60000,
    )
    moves = page.evaluate(SLIDER)
    page.close()
    return moves


def summary(name: str, values: list[float]) -> str:
    return f"{name}: median {statistics.median(values):.0f} ms, min {min(values):.0f}, max {max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", help="an existing log folder (default: write a run of GPT-2's shape)")
    parser.add_argument("--run", default="gpt2-shaped")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--loads", type=int, default=5, help="warm page loads after the cold one")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir
        if logdir is None:
            logdir = tmp
            write_run(Path(tmp) / args.run, args.steps, args.layers, args.heads, args.tokens)
        process, url, probe = start_tensorboard(logdir, args.run)
        try:
            shape = f"{probe['n_layer']} x {probe['n_head']} heads, {probe['T']} tokens"
            print(f"run {args.run}: {shape}, {len(probe['steps'])} steps")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                for inside, name in ((False, "the tab's page alone"), (True, "TensorBoard with the tab open")):
                    from_top, from_frame, before_frame = load_times(browser, url, inside, 1 + args.loads)
                    print(f"{name}, navigation -> model view drawn: first {from_top[0]:.0f} ms; then", end=" ")
                    print(summary("", from_top[1:])[2:])
                    if inside:
                        print(summary("  TensorBoard's own start, until it opens the tab's frame", before_frame[1:]))
                        print(summary("  the tab's frame, its own navigation -> drawn", from_frame[1:]))
                moves = slider_times(browser, url)
                print(summary(f"slider, one step ({len(moves)} moves), redrawn", [a for a, _ in moves]))
                print(summary("  to the next painted frame", [b for _, b in moves]))
                browser.close()
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
