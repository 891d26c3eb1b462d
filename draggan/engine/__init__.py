"""DragGAN drag engine: per-user sessions that move handle points to targets by optimising the latent."""

from .config import DragConfig
from .render_policy import RenderPolicy
from .session import DragSession
from .step import StepResult

__all__ = ["DragConfig", "DragSession", "RenderPolicy", "StepResult"]
