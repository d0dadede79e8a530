"""KFP pipelines: their definitions (``definitions``), the local runner (``local``), and what compiling,
submitting and scheduling them on Kubeflow Pipelines needs (``compile``, ``remote``, ``kfp_spec``)."""
