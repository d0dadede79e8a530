"""The front door: the ``recloop`` CLI (and, later, the KFP pipelines it compiles and runs)."""
