"""``python -m advlab.search``: the most robust setting, found by an Optuna study over config keys.

- :mod:`~advlab.search.space`: ``search.space`` read, checked and sampled.
- :mod:`~advlab.search.trial`: one trial, an ordinary advlab run per seed.
- :mod:`~advlab.search.study`: the study's storage and sampler, which trials count, dead trials.
- :mod:`~advlab.search.parent`: the search's MLflow run, parent of every trial's runs.
- :mod:`~advlab.search.worker`: the ask / run / tell loop any number of workers share.
- :mod:`~advlab.search.run`: the whole command: checks, study, search run, workers, report.
- :mod:`~advlab.search.summary`, :mod:`~advlab.search.report`, :mod:`~advlab.search.pdf`: what
  the search found, and where it is written (PDF, search run, console).
"""
