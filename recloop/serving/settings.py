"""What the server is told (``ServeSettings``) and the version labels it answers with when no model serves.

``recloop serve`` builds the settings; ``Service`` reads them. The two labels are
the ``model_version`` of pages the heuristic serves, in answers and in the request
log, so the simulator and the loop's reports can tell the groups apart.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recloop.serving.ann import ANN_MIN_ITEMS
from recloop.serving.rows import RowsConfig

FALLBACK_VERSION = "heuristic-fallback"  # model_version of pages served without a model
HOLDOUT_VERSION = "heuristic-holdout"  # model_version of the holdout's pages (simulator.served keeps a copy)


class ServeSettings(BaseModel):
    """What ``recloop serve`` is told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: str | None = None  # watch this registry's pointer ...
    model: str | None = None  # ... or serve this one version (KServe mounts it at /mnt/models)
    catalog: str  # the item feed: a root with catalog/dt=YYYY-MM-DD/ folders, or one items file
    rows: RowsConfig = RowsConfig()
    poll_s: float = Field(2.0, gt=0)
    fallback_pool: int = Field(500, gt=0)
    holdout: float = Field(0.0, ge=0.0, lt=1.0)  # share of members always served by the heuristic
    replica: str | None = None  # this server's name in the registry's serving reports (default: the host)
    report_s: float = Field(60.0, gt=0)  # a serving report at least this often (replicas.FRESH must exceed it)
    # what evaluates the query tower and the ranker: "numpy" where the export has their plain form and it agrees
    # with the SavedModel (``plain``), else TensorFlow; "tensorflow" always the SavedModels
    runtime: Literal["numpy", "tensorflow"] = "numpy"
    ann_min_items: int = Field(ANN_MIN_ITEMS, gt=0)  # from this many released items retrieval uses a ScaNN index
