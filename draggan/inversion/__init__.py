"""Real-photo inversion: projection into W/W+ and pivotal tuning, ready for dragging (see `api.invert`)."""

from .api import InversionResult, invert, prepare_image, psnr
from .config import InversionCancelled, InversionConfig, InversionProgress
from .losses import LPIPS, LPIPS_NAME, PIXEL_NAME, load_lpips, make_loss, multiscale_pixel_loss

__all__ = ["InversionCancelled", "InversionConfig", "InversionProgress", "InversionResult", "LPIPS", "LPIPS_NAME",
           "PIXEL_NAME", "invert", "load_lpips", "make_loss", "multiscale_pixel_loss", "prepare_image", "psnr"]
