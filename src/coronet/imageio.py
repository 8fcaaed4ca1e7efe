"""Former home of the image reader: ``coronet.imageio.read_image`` and ``resize_square`` keep working (they
live in ``coronet.data.imageio``)."""

from .data.imageio import ImageReadError, read_image, resize_square  # noqa: F401

__all__ = ["ImageReadError", "read_image", "resize_square"]
