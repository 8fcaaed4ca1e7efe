"""Layer 3, deployment (beside training): prediction from files (``predict``), Grad-CAM (``explain``),
ONNX export (``export``), the runtimes and the measured choice among them (``runtimes/``, below ``predict``),
and the web service with its page (``serve``, ``static/``). Imports only ``data`` and ``models``."""
