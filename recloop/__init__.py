"""recloop: continuous training for recommender systems on Kubeflow.

TFRS 0.7.7 needs Keras 2 (tf-keras), so the switch is set here, once, before any
module of ours imports TensorFlow. Subprocess and component entry points import
``recloop`` first and inherit it.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # forced: with Keras 3, TFRS models break

__version__ = "0.1.0"
