"""The README's screenshot: the app on the mini models, the Sketch tab after its first example and Generate.

    .venv/bin/python scripts/screenshot.py [--model-dir assets/mini] [--out assets/screenshot.png]

Serves the app as app.py does (the mini source on the CPU), opens it in Debian's headless chromium
(Playwright), clicks the Sketch tab's first example row, waits for its live preview, then clicks
Generate and waits for that render: the image on the page is the model's real output for that
sketch and prompt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from pipelines import Studio  # noqa: E402
from tests.conftest import CHROMIUM, free_port, wait_for_new_image  # noqa: E402
from ui import build_app  # noqa: E402

WAIT_MS = 180_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "assets" / "mini")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshot.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    studio = Studio.load("mini", model_dir=args.model_dir, device="cpu")
    demo = build_app(studio, queue_size=4, preview_side=app.preview_side(studio, None))
    served = app.serve(demo, host="127.0.0.1", port=free_port())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(served.local_url)
            page.wait_for_selector("#banner", timeout=WAIT_MS)
            page.get_by_role("tab", name="Sketch to image").click()
            page.locator("#sketch-examples tbody tr").first.click()
            shown = wait_for_new_image(page, "sketch-output", None, WAIT_MS)  # the live preview of the example
            page.locator("#sketch-generate").click()
            wait_for_new_image(page, "sketch-output", shown, WAIT_MS)  # Generate's render of the full drawing
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(1000)  # let the canvas and slider settle
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        demo.close()
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
