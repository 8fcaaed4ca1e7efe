"""Former home of the model: ``coronet.model.build_model`` keeps working (it lives in ``coronet.models``)."""

from .models.coronet import CoroNet, WeightsError, build_model  # noqa: F401

__all__ = ["CoroNet", "WeightsError", "build_model"]
