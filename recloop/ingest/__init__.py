"""Ingest: logged requests + events -> labelled training examples (an Apache Beam job, in progress).

``labels`` holds the per-request labelling rules as plain functions; the Beam
pipeline (next) groups lines by request id and calls them.
"""
