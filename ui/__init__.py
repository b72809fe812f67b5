"""The Gradio interface: one module per tab, shared widgets, and the light sketch canvas.

Gradio only: the UI is handed a `pipelines.Studio` and never touches tensors or imports torch.
"""

from ui.layout import build_app

__all__ = ["build_app"]
