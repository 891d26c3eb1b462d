"""Real-photo inversion: projection into W/W+ and pivotal tuning, ready for dragging (see `api.invert`)."""

from .align import FaceAlignmentUnavailable, align_face, face_alignment_available
from .api import InversionResult, PreparedImage, invert, prepare, prepare_image, psnr
from .config import InversionCancelled, InversionConfig, InversionProgress
from .losses import LPIPS, LPIPS_NAME, PIXEL_NAME, load_lpips, make_loss, multiscale_pixel_loss

__all__ = ["FaceAlignmentUnavailable", "InversionCancelled", "InversionConfig", "InversionProgress",
           "InversionResult", "LPIPS", "LPIPS_NAME", "PIXEL_NAME", "align_face", "face_alignment_available",
           "invert", "load_lpips", "make_loss", "multiscale_pixel_loss", "prepare", "prepare_image", "PreparedImage", "psnr"]
