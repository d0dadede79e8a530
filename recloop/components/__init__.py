"""KFP components of the weekly and daily runs (``definitions``), the steps they call (``steps``) and what
they publish to the Kubeflow UI (``publish``). ``steps`` and ``publish`` do not import KFP."""
