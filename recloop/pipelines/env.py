"""Where every task's pod takes the object store's settings from on a cluster: a compile-time setting, light to
import (no kfp), used by ``definitions`` and ``compile`` and the CLI's options."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ClusterEnv:
    """The object store settings every task's pod gets as environment variables on a cluster, the same the server
    gets (manifests/inferenceservice.yaml): s3fs and boto3 read them; recloop passes no endpoint or key itself.

    ``credentials_secret``: a Secret with keys ``accesskey`` and ``secretkey`` (Kubeflow's MinIO artifact Secret,
    which KFP's profile controller copies into each profile namespace) -> AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
    ``config_map``: the site ConfigMap (manifests/recloop.env) -> AWS_ENDPOINT_URL, AWS_DEFAULT_REGION. None leaves
    either out: gs:// with Workload Identity needs neither. Both must exist with those keys, or the pods do not
    start. Set at compile time (kfp-kubernetes writes them into the IR's platform spec; kfp.local ignores them).
    """

    credentials_secret: str | None = "mlpipeline-minio-artifact"
    config_map: str | None = "recloop-config"


DEFAULT_ENV = ClusterEnv()  # Kubeflow's MinIO Secret and manifests/recloop.env's ConfigMap
