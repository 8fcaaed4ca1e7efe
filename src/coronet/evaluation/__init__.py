"""Layer 4, evaluation: pure metrics (``metrics``), bootstrap intervals (``bootstrap``), figures
(``figures``), the report (``report``), external evaluation (``evaluate``), the peer comparison
(``compare``), the shortcut audit (``audit``), the extra cohorts' test (``cohorttest``) and the per-source
figures (``sources``). May use every
layer below it: ``training`` (the audit retrains) and ``deploy`` (evaluation predicts as a user would)."""
