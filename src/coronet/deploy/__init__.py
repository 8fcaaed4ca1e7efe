"""Layer 3, deployment (beside training): prediction from files (``predict``), Grad-CAM (``explain``),
ONNX export (``export``), and the web service with its page (``serve``, ``static/``). Imports only
``data`` and ``models``."""
