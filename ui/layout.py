"""The whole page: a banner saying which weights are live, then the four tabs, on one queue."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr

from ui import edit_tab, sketch_tab, text_tab, translate_tab

if TYPE_CHECKING:
    from pipelines import Studio

TITLE = "One-step image studio"
DELETE_CACHE = (900, 1800)  # every 15 minutes, drop generated files older than 30 minutes
BANNER_CSS = """
.banner-body { padding: 10px 14px; border-radius: 8px; border: 1px solid var(--border-color-primary); }
.banner-body.not-meaningful { border-color: #d97706; background: rgba(217, 119, 6, 0.08); }
h1 { font-size: 1.4em; margin: 0 0 4px 0; }
p { margin: 2px 0; }
"""


def banner_html(studio: Studio) -> str:
    """Title, the live weights (with how to get the real ones when they are tiny), and any task
    whose weights could not be loaded, with the reason."""
    source = studio.source
    lines = [f"<h1>{html.escape(TITLE)}</h1>", f'<p class="weights">{html.escape(source.describe())}</p>']
    for task, reason in studio.unavailable_tasks.items():
        name = task.replace("_", " ").capitalize()
        lines.append(f'<p class="unavailable">{html.escape(name)} is unavailable: {html.escape(reason)}</p>')
    kind = "meaningful" if source.meaningful else "not-meaningful"
    return f'<div class="banner-body {kind}" data-source="{source.active}">{"".join(lines)}</div>'


def build_app(studio: Studio, *, queue_size: int, preview_side: int | None = None) -> gr.Blocks:
    """The Blocks app on its queue: at most queue_size waiting requests, and every model call in
    the one GPU concurrency group, one at a time. Live sketch previews run on the drawing scaled
    to fit preview_side pixels (the model's cost grows with the pixel count); default: the
    source's default for the Studio's device (studio.limits.default_preview_side)."""
    if preview_side is None:
        preview_side = studio.limits.default_preview_side(studio.device.type)
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE) as demo:
        gr.HTML(banner_html(studio), css_template=BANNER_CSS, js_on_load=None, elem_id="banner")
        with gr.Tabs():
            text_tab.build(studio)
            sketch_tab.build(studio, preview_side=preview_side)
            translate_tab.build(studio)
            edit_tab.build(studio)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo
