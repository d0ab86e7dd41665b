"""What ``spgim matte --preview`` costs the job: frames per second with no preview, with the page served and no
client, and with the page open in headless chromium, on the same clip.

The three cases are run ``--rounds`` times, alternated (the order turns each round), so that load from other work
on a shared machine falls on all of them alike; each run is :func:`spgim.streaming.job.matte_video` on the whole
clip with one model opened once, writing an H.264 composite, its frames per second the job's own. The page is
opened in chromium (Debian's ``chromium`` and ``chromium-driver``, through selenium) as soon as the job's server
listens, before the first frame, and stays open to the end. Writes JSON: every run, the median frames per
second per case, and each case's ratio to no preview.

    .venv/bin/python scripts/bench_preview.py --model /tmp/live/model --json preview-cost.json
    .venv/bin/python scripts/bench_preview.py --model exported --frames 48 --size 320x192 --rounds 1 \\
        --screenshot /tmp/preview-shot.png

Without ``--clip`` a clip of ``--frames`` frames at ``--size`` is rendered (``spgim data clip``'s).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spgim.machine import flags_line, machine_facts
from spgim.sizes import parse_size
from spgim.streaming.job import matte_video
from spgim.streaming.options import (
    LOCAL_ENGINE,
    EngineOptions,
    MattingOptions,
    Outputs,
    PreviewAddress,
    PreviewOptions,
    open_local_matter,
)

CASES = ("off", "served", "page")  # no preview; the page served, no client; the page open in chromium
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BROWSER_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
ANY_PORT = PreviewOptions(PreviewAddress("127.0.0.1", 0))


def open_browser() -> Any:
    """Headless chromium whose ``get`` returns once the page's document is read, not waiting for its pictures."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.page_load_strategy = "eager"  # the MJPEG pictures never finish loading
    for argument in BROWSER_ARGS:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(1280, 900)
    return driver


def _opening_page(browser: Any, then: Callable[[], None] | None = None) -> Callable[[str], None]:
    """A job's log that opens its preview page in ``browser`` as soon as the job says where it is (and calls
    ``then`` in a thread of its own)."""

    def log(message: str) -> None:
        found = re.match(r"preview on (\S+)", message)
        if found:
            browser.get(found.group(1))
            if then is not None:
                threading.Thread(target=then, daemon=True).start()

    return log


def run(clip: Path, matter: Any, engine: EngineOptions, case: str, browser: Any, folder: Path) -> dict[str, Any]:
    """One job on ``clip`` in ``case``: its frames per second, frames and wall time."""
    result = matte_video(
        clip,
        Outputs(composite=folder / f"{case}.mp4"),
        matter=matter,
        engine=engine,
        preview=None if case == "off" else ANY_PORT,
        progress=False,
        log=_opening_page(browser) if case == "page" else lambda message: None,
    )
    if case == "page":
        browser.get("about:blank")
    return {"case": case, "fps": result.fps, "frames": result.frames_out, "wall_s": result.wall_s}


def screenshot(clip: Path, matter: Any, engine: EngineOptions, browser: Any, folder: Path, path: Path) -> None:
    """One more job, not timed, with the page open: a screenshot of the page once a third of the clip is out."""
    from selenium.webdriver.common.by import By

    def shoot() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            frames = browser.find_element(By.ID, "frames").text.split(" ")[0]
            if frames.isdigit() and int(frames) >= total // 3:
                browser.save_screenshot(str(path))
                return
            time.sleep(0.1)

    total = _frame_count(clip)
    matte_video(
        clip,
        Outputs(composite=folder / "screenshot.mp4"),
        matter=matter,
        engine=engine,
        preview=ANY_PORT,
        progress=False,
        log=_opening_page(browser, shoot),
    )


def _frame_count(clip: Path) -> int:
    import av

    with av.open(str(clip)) as container:
        return container.streams.video[0].frames or sum(1 for _ in container.decode(video=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="spgim export folder")
    parser.add_argument("--clip", type=Path, help="a video file (default: rendered)")
    parser.add_argument("--frames", type=int, default=300, help="frames of the rendered clip (default 300)")
    parser.add_argument("--size", default="640x360", help="WxH of the rendered clip (default 640x360)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case, alternated (default 3)")
    EngineOptions.add_arguments(parser, only=LOCAL_ENGINE)
    MattingOptions.add_arguments(parser)
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the open page here (an untimed run)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    engine, matting = EngineOptions.from_args(args), MattingOptions.from_args(args)
    matter = open_local_matter(args.model, engine, matting)
    browser = open_browser()
    try:
        with tempfile.TemporaryDirectory(prefix="spgim-bench-preview-") as temporary:
            folder = Path(temporary)
            clip = args.clip
            if clip is None:
                from spgim.train.data.clips import render_clip

                height, width = parse_size(args.size, multiple=1)
                clip = render_clip(folder / "clip.mp4", frames=args.frames, size=(width, height)).path
            run(clip, matter, engine, "off", browser, folder)  # warm-up, not counted: caches, the first page
            runs = []
            for round_ in range(args.rounds):
                order = CASES[round_ % len(CASES) :] + CASES[: round_ % len(CASES)]
                for case in order:
                    runs.append(run(clip, matter, engine, case, browser, folder))
                    print(f"{case:7s} {runs[-1]['fps']:7.2f} frames/s", file=sys.stderr)
            if args.screenshot is not None:
                screenshot(clip, matter, engine, browser, folder, args.screenshot)
    finally:
        browser.quit()
    fps = {case: statistics.median(r["fps"] for r in runs if r["case"] == case) for case in CASES}
    report = {
        "clip": str(args.clip or f"rendered {args.size}, {args.frames} frames"),
        "backend": matter.backend_name,
        "work_size": matter.work_size,
        "rounds": args.rounds,
        "fps": fps,
        "ratio": {case: fps[case] / fps["off"] for case in CASES if case != "off"},
        "runs": runs,
        "machine": machine_facts(),
        "cpu_flags_line": flags_line(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
