"""The reference schema: inferred by TFDV on a first run, then curated from the feature spec.

Versions live in the run-state folder (``schemas/v001.pbtxt``, ...): the first run
with a state folder keeps its curated schema there, later runs validate against
the newest version, and accepting a real shift means saving a new one.

The spec knows what inference cannot: the vocabulary of a categorical feature
(so ``Android`` or ``boxing`` is out of domain), the expected range of a number
(so durations in seconds are out of range), which features may be missing, and
how each is compared across spans. The curated schema is written with the run
and can be pinned with ``--schema`` from then on.
"""

from __future__ import annotations

import re

import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from recloop import storage
from recloop.features.examples import LABEL_COLUMNS
from recloop.features.spec import FEATURES
from recloop.validation.config import FeatureRule, ValidationConfig
from recloop.validation.stats import LOGGED


def curated_schema(stats: statistics_pb2.DatasetFeatureStatisticsList, config: ValidationConfig) -> schema_pb2.Schema:
    """TFDV's inferred schema for ``stats``, with domains, presence and comparators from the spec and config."""
    schema = tfdv.infer_schema(stats)
    del schema.string_domain[:]  # inferred vocabularies are whatever one week happened to contain
    for f in FEATURES:
        feature = tfdv.get_feature(schema, f.name)
        feature.ClearField("domain_info")
        if f.vocabulary:
            feature.string_domain.value.extend(f.vocabulary)
        elif f.value_range and f.dtype is int:
            feature.int_domain.CopyFrom(schema_pb2.IntDomain(min=int(f.value_range[0]), max=int(f.value_range[1])))
        elif f.value_range:
            feature.float_domain.CopyFrom(schema_pb2.FloatDomain(min=f.value_range[0], max=f.value_range[1]))
        if f.max_length is not None:  # a list: empty for a member with nothing to list yet, at most max_length
            feature.ClearField("shape")
            feature.value_count.CopyFrom(schema_pb2.ValueCount(min=0, max=f.max_length))
    schema.default_environment.extend(["TRAINING", "SERVING"])
    for name in LABEL_COLUMNS:  # outcomes are logged after serving, never with the request
        feature = tfdv.get_feature(schema, name)
        feature.not_in_environment.append("SERVING")
        feature.int_domain.CopyFrom(schema_pb2.IntDomain(min=0, max=1))
    _logging_domains(schema, stats)
    apply_rules(schema, config)
    return schema


def _logging_domains(schema: schema_pb2.Schema, stats: statistics_pb2.DatasetFeatureStatisticsList) -> None:
    """Domains of the logging fields (``LOGGED``): a score and a propensity are in [0, 1] (the contract;
    a propensity is also > 0 there) and ``explored`` is 0/1. A model version and a row name have no
    vocabulary: every push brings a new version, and a page's rows are its deployment's (the bootstrap
    recommender's differ from the server's). None gets a distance comparator: they move with the serving
    model, so ``validation.logged`` compares them within one version, the rows too."""
    present = {f.path.step[-1]: f for f in stats.datasets[0].features}
    for name in ("score", "propensity"):
        if name in present:
            tfdv.get_feature(schema, name).float_domain.CopyFrom(schema_pb2.FloatDomain(min=0.0, max=1.0))
    if "explored" in present:
        tfdv.get_feature(schema, "explored").int_domain.CopyFrom(schema_pb2.IntDomain(min=0, max=1))
    for name in ("model_version", "row"):
        if name in present:
            tfdv.get_feature(schema, name).ClearField("domain_info")


def add_logging_fields(schema: schema_pb2.Schema, stats: statistics_pb2.DatasetFeatureStatisticsList) -> list[str]:
    """Adds the logging fields ``stats`` describes and ``schema`` lacks (one kept before they were described),
    typed as TFDV infers them and with their curated domains, so upgrading does not block the next run on
    new columns. Returns the names added."""
    present = {f.path.step[-1] for f in stats.datasets[0].features}
    missing = [n for n in LOGGED if n in present and n not in {f.name for f in schema.feature}]
    if missing:
        inferred = tfdv.infer_schema(stats)
        for name in missing:
            schema.feature.add().CopyFrom(tfdv.get_feature(inferred, name))
        _logging_domains(schema, stats)
    return missing


def apply_rules(schema: schema_pb2.Schema, config: ValidationConfig) -> None:
    """Sets presence limits and skew/drift comparators from the config (on a pinned schema too)."""
    for name, rule in config.features.items():
        feature = next((f for f in schema.feature if f.name == name), None)
        if feature is None:
            continue
        if rule.max_null_share is not None:
            feature.presence.min_fraction = 1.0 - rule.max_null_share
        _comparator(feature.skew_comparator, rule, rule.skew)
        _comparator(feature.drift_comparator, rule, rule.drift)


def _comparator(comparator: schema_pb2.FeatureComparator, rule: FeatureRule, threshold: float | None) -> None:
    comparator.Clear()
    if threshold is None or rule.measure == "RATE_CHANGE":  # not a TFDV comparator: checks.py measures it
        return
    if rule.measure == "L_INFTY":
        comparator.infinity_norm.threshold = threshold
    else:
        comparator.jensen_shannon_divergence.threshold = threshold


_VERSION = re.compile(r"v(\d{3})\.pbtxt")


def latest_version(state_dir: str) -> str | None:
    """The URI of the newest curated schema kept in a run state (``schemas/vNNN.pbtxt``), or None."""
    versions = [n for n in storage.listdir(storage.join(state_dir, "schemas")) if _VERSION.fullmatch(n)]
    return storage.join(state_dir, "schemas", versions[-1]) if versions else None


def save_version(schema: schema_pb2.Schema, state_dir: str) -> str:
    """Keeps ``schema`` as the next version in the run state; earlier versions stay as they were.

    Raises:
      storage.StorageError: another run saved that version first (versions are never overwritten).
    """
    latest = latest_version(state_dir)
    number = int(_VERSION.fullmatch(latest.rsplit("/", 1)[-1]).group(1)) + 1 if latest else 1
    path = storage.join(state_dir, "schemas", f"v{number:03d}.pbtxt")
    if not storage.create(path, text_format.MessageToString(schema).encode("utf-8")):
        raise storage.StorageError(f"{path}: another run saved this schema version first")
    return path


def write(schema: schema_pb2.Schema, uri: str) -> None:
    """Writes ``schema`` as text (what ``tfdv.write_schema_text`` writes) to ``uri``, whole."""
    storage.write_text(uri, text_format.MessageToString(schema))


def read(uri: str) -> schema_pb2.Schema:
    """The schema in text format at ``uri``."""
    return text_format.Parse(storage.read_text(uri), schema_pb2.Schema())
