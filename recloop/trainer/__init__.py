"""TFRS two-tower retrieval and DCN multi-task ranking: fit, evaluate offline, export.

``train.run`` is the entry point (``recloop train``); the modules below it each do
one job: ``data`` reads ingest outputs, ``towers``/``retrieval``/``ranking`` are
the models, ``fit`` trains them, ``metrics``/``evaluate`` measure them against
the popularity baseline, ``checks`` fails a run on leaks and bad scores,
``export`` writes the SavedModels and the index, ``tables`` the serving tables.
"""
