"""A light drawing canvas built on gr.HTML, made for live sketch-to-image.

Why not gr.Sketchpad: after each stroke it exports its layers as images, uploads them as files and
only then starts the event, which costs about a second on a 2-core machine (measured in
ui/LATENCY.md). This canvas draws on one plain <canvas>, and on mouse-up sets its value to the
drawing as a PNG data URL; the value travels inside the event itself, with no upload.

The value is "" while the canvas is blank. An event may set it to another PNG data URL (an
uploaded sketch); the canvas then shows that image scaled to fit, ready to draw on.

The canvas draws at the source's native side (studio.limits.native_side) and refuses data larger
than the largest input side (studio.limits.max_input_side); the tabs pass both in. On screen it is
at least MIN_DISPLAY_SIDE pixels wide (where the page allows), so a small source's canvas (mini:
128 px) is scaled up to draw on rather than shown as a stamp.

A factory rather than a gr.HTML subclass: Gradio writes a .pyi stub beside every Component
subclass at import time.
"""

from __future__ import annotations

import base64
import binascii
import io

import gradio as gr
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.errors import InputError

PNG_DATA_URL = "data:image/png;base64,"
MAX_DATA_URL_CHARS = 8 * 1024 * 1024  # a 512x512 drawing is tens of kB; refuse anything absurd
MAX_UNDO = 30
MIN_DISPLAY_SIDE = 512  # CSS pixels

TEMPLATE = """
<div class="sketch-canvas">
  <div class="tools" role="toolbar" aria-label="Drawing tools">
    <button type="button" data-tool="brush" aria-label="Brush" aria-pressed="true">Brush</button>
    <button type="button" data-tool="eraser" aria-label="Eraser" aria-pressed="false">Eraser</button>
    <button type="button" data-action="undo" aria-label="Undo">Undo</button>
    <button type="button" data-action="clear" aria-label="Clear">Clear</button>
  </div>
  <canvas width="${side}" height="${side}" aria-label="Sketch canvas: draw with the mouse or a pen"></canvas>
</div>
"""

CSS = """
.sketch-canvas { display: flex; flex-direction: column; gap: 6px; padding-top: 26px; }
.tools { display: flex; gap: 6px; flex-wrap: wrap; align-items: center; }
.tools button { margin: 0; padding: 4px 12px; font: inherit; line-height: 1.4; border-radius: 6px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary);
  color: var(--body-text-color); cursor: pointer; }
.tools button[aria-pressed="true"] { background: var(--color-accent); color: white; }
canvas { width: 100%; max-width: ${display_side}px; aspect-ratio: 1; background: #fff; cursor: crosshair;
  border: 1px solid var(--border-color-primary); border-radius: 6px; touch-action: none; }
"""

# Runs once per page load with `element`, `props` and `watch` from gr.HTML. Setting props.value
# makes Gradio fire the component's change event. data-ready marks the canvas as listening.
JS = """
const canvas = element.querySelector('canvas');
const ctx = canvas.getContext('2d', { willReadFrequently: true });
const side = canvas.width;
const brushWidth = side / 128, eraserWidth = side / 16;
const history = [];
let tool = 'brush', last = null, published = '';

const whiten = () => { ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, side, side); };
const remember = () => {
  history.push(ctx.getImageData(0, 0, side, side));
  if (history.length > props.undo_depth) history.shift();
};
const isBlank = () => {
  const pixels = ctx.getImageData(0, 0, side, side).data;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i] < 250 || pixels[i + 1] < 250 || pixels[i + 2] < 250) return false;
  }
  return true;
};
const publish = () => {
  published = isBlank() ? '' : canvas.toDataURL('image/png');
  props.value = published;
};
const at = (event) => {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * side / box.width, (event.clientY - box.top) * side / box.height];
};
const segment = (from, to) => {
  ctx.strokeStyle = tool === 'brush' ? '#000' : '#fff';
  ctx.lineWidth = tool === 'brush' ? brushWidth : eraserWidth;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
};
const show = (url) => {
  whiten();
  published = url || '';
  if (!url) return;
  const image = new Image();
  image.onload = () => {
    const scale = Math.min(side / image.width, side / image.height);
    const width = image.width * scale, height = image.height * scale;
    ctx.drawImage(image, (side - width) / 2, (side - height) / 2, width, height);
  };
  image.src = url;
};

canvas.addEventListener('pointerdown', (event) => {
  if (event.button !== 0) return;
  canvas.setPointerCapture(event.pointerId);
  remember();
  last = at(event);
  segment(last, last);
});
canvas.addEventListener('pointermove', (event) => {
  if (last === null) return;
  const point = at(event);
  segment(last, point);
  last = point;
});
const finish = () => {
  if (last === null) return;
  last = null;
  publish();
};
canvas.addEventListener('pointerup', finish);
canvas.addEventListener('pointercancel', finish);

const buttons = element.querySelectorAll('.tools button');
const choose = (name) => {
  tool = name;
  buttons.forEach((button) => {
    if (button.dataset.tool) button.setAttribute('aria-pressed', String(button.dataset.tool === name));
  });
};
const actions = {
  undo: () => { if (history.length) { ctx.putImageData(history.pop(), 0, 0); publish(); } },
  clear: () => { remember(); whiten(); publish(); },
};
buttons.forEach((button) => button.addEventListener('click', () => {
  if (button.dataset.tool) choose(button.dataset.tool);
  else actions[button.dataset.action]();
}));

watch('value', () => { if (props.value !== published) show(props.value); });
show(props.value);
canvas.dataset.ready = 'true';
"""


def decode_drawing(payload: str, max_side: int) -> Image.Image:
    """The RGB image in a PNG data URL, at most max_side pixels a side; anything else is refused
    with an InputError."""
    if len(payload) > MAX_DATA_URL_CHARS:
        raise InputError(f"sketch data is {len(payload)} characters; at most {MAX_DATA_URL_CHARS} are accepted")
    if not payload.startswith(PNG_DATA_URL):
        raise InputError("sketch must be a PNG data URL (data:image/png;base64,...)")
    try:
        data = base64.b64decode(payload[len(PNG_DATA_URL):], validate=True)
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if max(image.size) > max_side:
                raise InputError(f"sketch is {image.width}x{image.height}; the largest side allowed is {max_side}")
            return image.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError) as error:
        raise InputError(f"sketch is not a readable PNG image ({error})") from error


def drawing_value(image: Image.Image, side: int) -> str:
    """The canvas value that shows `image`: a PNG data URL, flattened on white and scaled down to
    fit the canvas."""
    rgba = image.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    fitted = ImageOps.contain(flat, (side, side)) if max(flat.size) > side else flat
    buffer = io.BytesIO()
    fitted.save(buffer, format="PNG")
    return PNG_DATA_URL + base64.b64encode(buffer.getvalue()).decode("ascii")


def sketch_canvas(*, side: int, label: str = "Sketch", elem_id: str | None = None) -> gr.HTML:
    """Black brush on white, eraser, undo and clear. Its value is the drawing as a PNG data URL
    ("" when blank): read it with `drawing_from`, set it with `drawing_value`."""
    return gr.HTML(value="", label=label, show_label=True, container=True, html_template=TEMPLATE, css_template=CSS,
                   js_on_load=JS, side=side, display_side=max(side, MIN_DISPLAY_SIDE), undo_depth=MAX_UNDO,
                   elem_id=elem_id)


def drawing_from(value: str | None, max_side: int) -> Image.Image | None:
    """The canvas value as an RGB image, None when the canvas is blank; a malformed value is a gr.Error."""
    if not value:
        return None
    try:
        return decode_drawing(value, max_side)
    except InputError as error:
        raise gr.Error(str(error), print_exception=False) from error
