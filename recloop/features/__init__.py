"""The log contract: feature spec, log record types, partitions, tf.Example encoding.

Everything that crosses a process boundary in recloop (the server's request log,
client events, ingest's training examples) is defined here, once, from the feature
declaration (``declaration``: ``features.yaml`` or ``RECLOOP_FEATURES``). This
package imports nothing else of recloop's but ``storage``. ``examples`` imports
TensorFlow and is not re-exported, so reading logs stays cheap.
"""

from recloop.features.records import (
    EVENT_TYPES,
    Context,
    EventRecord,
    Impression,
    ItemFeatures,
    MemberFeatures,
    RecordError,
    RequestRecord,
    parse_event,
    parse_request,
)
from recloop.features.spec import FEATURES, LABELS, Feature, feature, features_for

__all__ = [
    "EVENT_TYPES",
    "FEATURES",
    "LABELS",
    "Context",
    "EventRecord",
    "Feature",
    "Impression",
    "ItemFeatures",
    "MemberFeatures",
    "RecordError",
    "RequestRecord",
    "feature",
    "features_for",
    "parse_event",
    "parse_request",
]
