"""Layer 2, models: CoroNet (the paper's Table II, ``coronet``), the DarkCovidNet-style peer
(``darkcovidnet``), and the model directory with its card (``modeldir``). Imports only ``data`` below it."""
