"""Serving: the model registry (format and reader), the funnel (retrieval -> ranking -> rows).

The KServe model server, feature logging, hot reload and infra validation build
on these (issue [serving]).
"""
