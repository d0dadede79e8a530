"""Every location a user passes, as a URI: the one storage layer of recloop.

Logs, the item feed, the registry, the run state, configs, the outputs of a remote run and the
server's request log are URIs: a local path in a quick try, ``s3://`` (S3, or MinIO, which
Kubeflow ships as its artifact store) or ``gs://`` on a cluster. Everything goes through fsspec
(s3fs, gcsfs); credentials and endpoints come from the environment the SDKs read
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, workload identity, ...), never from code or
arguments. ``objects`` reads and writes whole objects; ``local`` gives the libraries that only take
local paths (TensorFlow, TFDV) a local view of a URI.
"""

from recloop.storage.local import local_file, local_view, local_views
from recloop.storage.objects import (
    StorageError,
    create,
    download,
    exists,
    filesystem,
    is_local,
    join,
    listdir,
    read_bytes,
    read_json,
    read_text,
    remove,
    upload,
    write_bytes,
    write_json,
    write_text,
)

__all__ = ["S3_CONFIG_ENV", "S3_SECRET_ENV", "StorageError", "create", "download", "exists", "filesystem", "is_local",
           "join", "listdir", "local_file", "local_view", "local_views", "read_bytes", "read_json", "read_text",
           "remove", "upload", "write_bytes", "write_json", "write_text"]

# On a cluster, the environment s3fs and boto3 read comes from Kubernetes objects: the keys of Kubeflow's MinIO
# artifact Secret (mlpipeline-minio-artifact) -> the variables, and the site ConfigMap's keys (manifests/recloop.env)
# under their own names. The server's manifests and the pipeline's tasks (pipelines.definitions) both use these.
S3_SECRET_ENV = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
S3_CONFIG_ENV = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
