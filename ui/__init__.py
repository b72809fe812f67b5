"""The Gradio interface: one module per tab, shared widgets, and the light sketch canvas.

Gradio only: the UI is handed a `pipelines.Studio` and never touches tensors or imports torch.
"""

from ui.layout import build_app
from ui.widgets import PAGE_CSS

__all__ = ["PAGE_CSS", "build_app"]
