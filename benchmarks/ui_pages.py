"""The web UI's page times and live-chart lag, in headless Chromium against a real server.

1. **Runs page with N runs** (default 100): a workspace of N run directories, each a copy
   of a real tiny run's summary.json, config.yaml and metrics.jsonl. Measured: the
   ``/api/runs`` answer, and the whole page in Chromium (navigation start until the table
   is drawn), median of ``--loads`` loads. Target (issue #19): under 300 ms.
2. **Live-chart lag**: a real run (tiny BERT, ~600 steps, a line every 2 steps) trains
   from the UI while its page is open. A thread polls metrics.jsonl every 5 ms and notes
   when each line appears; the page's EventSource notes when the line arrives. Lag = the
   arrival minus the line's appearance. Target: under 2 s.

Needs Debian's chromium and chromedriver (as the browser tests).

Usage:
  python benchmarks/ui_pages.py [--runs 100] [--loads 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from tunesmith.testing import wait_until, write_cls_recipe, write_tiny_bert
from tunesmith.ui.app import create_app, serve_in_thread
from tunesmith.ui.forms import recipe_to_values

TOKEN = "bench"
RECORD_RENDER = """
window.__rendered = null;
new MutationObserver(() => {
  if (document.body && document.body.dataset.page === "runs" && window.__rendered === null)
    window.__rendered = performance.now();
}).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-page"]});
"""
RECORD_ARRIVALS = """
window.__arrivals = [];
const add = EventSource.prototype.addEventListener;
EventSource.prototype.addEventListener = function (kind, fn, opts) {
  if (kind === "metrics") {
    const wrapped = (e) => { const t = Date.now(); JSON.parse(e.data).forEach((r) => window.__arrivals.push([r.step, t])); fn(e); };
    return add.call(this, kind, wrapped, opts);
  }
  return add.call(this, kind, fn, opts);
};
"""


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))


def run_once(client, ws: Path, name: str, epochs: int) -> None:
    raw = yaml.safe_load((ws / "recipe.yaml").read_text())
    raw.pop("output_dir")
    values = {**recipe_to_values(raw), "name": name, "train.epochs": str(epochs), "train.save_every": "100000"}
    assert client.post("/api/runs", json={"values": values}).status_code == 201


def status(client, name: str) -> str:
    return next(r["status"] for r in client.get("/api/runs").json()["runs"] if r["name"] == name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="ui-bench-"))
    write_cls_recipe(ws, write_tiny_bert(ws / "models" / "tiny-bert"))
    app, ctx = create_app(ws, token=TOKEN, with_playground=False)
    ctx.jobs.start()
    server, url = serve_in_thread(app)
    client = httpx.Client(base_url=url, headers={"X-Tunesmith-Token": TOKEN}, timeout=60)
    driver = chromium()
    try:
        run_once(client, ws, "seed-run", 3)
        wait_until(lambda: status(client, "seed-run") == "completed", 180)
        seed = ws / "runs" / "seed-run"
        for i in range(args.runs - 1):
            copy = ws / "runs" / f"run-{i:03d}"
            copy.mkdir()
            for name in ("summary.json", "config.yaml", "metrics.jsonl", "eval.jsonl"):
                shutil.copy(seed / name, copy / name)
        api_ms = []
        for _ in range(20):
            started = time.perf_counter()
            rows = client.get("/api/runs").json()["runs"]
            api_ms.append(1000 * (time.perf_counter() - started))
        assert len(rows) == args.runs
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_RENDER})
        page_ms = []
        for _ in range(args.loads):
            driver.get("about:blank")
            driver.get(url + "/#/runs")
            page_ms.append(wait_until(lambda: driver.execute_script("return window.__rendered"), 20))
            assert len(driver.find_elements("css selector", "tr[data-run]")) == args.runs

        # Live lag: a real run, its page open while it trains.
        appeared: dict[int, float] = {}
        metrics = ws / "runs" / "live-run" / "metrics.jsonl"
        stop = threading.Event()

        def poll():
            seen = 0
            while not stop.is_set():
                if metrics.is_file():
                    lines = metrics.read_text().splitlines()
                    now = time.time()
                    for line in lines[seen:]:
                        if line.endswith("}"):
                            appeared[yaml.safe_load(line)["step"]] = now
                    seen = len(lines)
                time.sleep(0.005)
        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_ARRIVALS})
        run_once(client, ws, "live-run", 60)
        driver.get("about:blank")
        driver.get(url + "/#/run/live-run")
        wait_until(lambda: status(client, "live-run") == "completed", 300)
        time.sleep(1)
        stop.set()
        arrivals = {step: t / 1000 for step, t in driver.execute_script("return window.__arrivals")}
        lags = [arrivals[s] - appeared[s] for s in appeared if s in arrivals]
    finally:
        driver.quit()
        server.should_exit = True
        ctx.jobs.close()
    print(f"machine: 2-core CPU (this benchmark), workspace of {args.runs} runs")
    print(f"/api/runs with {args.runs} runs: median {statistics.median(api_ms):.1f} ms, max {max(api_ms):.1f} ms (20 calls)")
    print(f"runs page in Chromium, navigation to drawn table: median {statistics.median(page_ms):.0f} ms, "
          f"max {max(page_ms):.0f} ms ({args.loads} loads); target 300 ms: "
          f"{statistics.median(page_ms) / 300:.2f} of it")
    if lags:
        print(f"live chart lag over {len(lags)} logged steps: median {1000 * statistics.median(lags):.0f} ms, "
              f"p95 {1000 * sorted(lags)[int(0.95 * (len(lags) - 1))]:.0f} ms, max {1000 * max(lags):.0f} ms; "
              f"target 2000 ms")
    else:
        print("live chart lag: no line arrived while the page was open", file=sys.stderr)
    shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
