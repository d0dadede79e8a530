"""Compiling recloop's pipelines to KFP IR YAML, every step on the image a cluster pulls.

The weekly and daily pipelines (``definitions``) are compiled by KFP's own compiler; a compiler warning is an
error here, since a spec that warned is not one to hand to a cluster. So is a spec without recloop's image: the
components name a placeholder (``IMAGE_UNSET``), replaced by ``image`` or $RECLOOP_IMAGE, one of which is
required. Each task's caching, retries, CPU and memory are the pipeline's (``definitions``, ``resources``), and so
is the Secret and ConfigMap its pod takes the object store's settings from (``definitions.ClusterEnv``): those go
into the IR's platform spec, a second YAML document. ``read_ir`` reads both documents back; ``task_order`` and
``images`` read the IR for the CLI's one-line summary and the tests.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from recloop.pipelines import kfp_spec
from recloop.pipelines.env import DEFAULT_ENV, ClusterEnv
from recloop.pipelines.resources import DEFAULTS, Resources

IMAGE_ENV = "RECLOOP_IMAGE"


class CompileError(RuntimeError):
    """Compiling warned: the issue's acceptance is a pipeline that compiles without warnings."""


def compile_pipeline(pipeline: str, out: str, image: str | None = None,
                     resources: Mapping[str, Resources] = DEFAULTS, env: ClusterEnv = DEFAULT_ENV) -> dict[str, Any]:
    """Compiles a recloop pipeline to KFP IR YAML at ``out``, every step on ``image`` (default: $RECLOOP_IMAGE).

    The image is set in the compiled PipelineSpec (``deploymentSpec.executors.*.container.image``) and the file
    written again by KFP's own writer: the same IR as components built on that image would give.

    Args:
      resources: each task's CPU and memory (``resources.load_resources`` reads a file of overrides).
      env: the Secret and ConfigMap every task's pod takes the object store's settings from.

    Returns:
      The IR as ``read_ir`` reads it.

    Raises:
      ValueError: an unknown pipeline, no image (neither ``image`` nor $RECLOOP_IMAGE), a malformed image, not
        a .yaml path. CompileError: compiling warned (``out`` is removed).
    """
    from kfp import compiler

    name = kfp_spec.pipeline_name(pipeline)
    image = _image(image)
    if not out.endswith((".yaml", ".yml")):
        raise ValueError(f"out: expected a .yaml path (KFP IR YAML), got {out!r}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from recloop.pipelines.definitions import PIPELINES

        func = PIPELINES[name](resources=resources, env=env)
        compiler.Compiler().compile(func, out)
        _write_with_image(func, out, image)
    if caught:
        Path(out).unlink(missing_ok=True)
        raise CompileError(f"compiling {name} warned (treated as an error): "
                           + "; ".join(f"{w.category.__name__}: {w.message}" for w in caught))
    return read_ir(out)


def read_ir(path: str | Path) -> dict[str, Any]:
    """A compiled IR file as a dict: the PipelineSpec, with the platform spec (the second YAML document, where the
    pipeline has one) under ``platforms``, e.g. ``platforms.kubernetes.deploymentSpec.executors``."""
    spec, *platform = yaml.safe_load_all(Path(path).read_text())
    return {**spec, **(platform[0] if platform else {})}


def _image(image: str | None) -> str:
    """The image every step runs on: ``image``, else $RECLOOP_IMAGE; never the placeholder, never none."""
    from recloop.components.definitions import IMAGE_UNSET  # imports kfp: not at the CLI's start

    where = "image"
    if image is None:
        image, where = os.environ.get(IMAGE_ENV) or None, f"${IMAGE_ENV}"
    if image is None:
        raise ValueError(f"image: no container image: pass --image or set ${IMAGE_ENV} to recloop's image (built "
                         f"from the Dockerfile and pushed to a registry the cluster pulls from)")
    if not image or any(c.isspace() for c in image):
        raise ValueError(f"{where}: expected a container image such as ghcr.io/org/recloop:1.2, got {image!r}")
    if image == IMAGE_UNSET:
        raise ValueError(f"{where}: {image!r} is the components' placeholder, not an image a cluster can pull")
    return image


def _write_with_image(func: Any, out: str, image: str) -> None:
    from kfp.compiler import pipeline_spec_builder
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineSpec()
    spec.CopyFrom(func.pipeline_spec)
    executors = spec.deployment_spec["executors"]
    for key in executors:
        container = executors[key]["container"]
        container["image"] = image
        # a task that starts pods of its own (train's TFJob workers) starts them on the image it runs on
        container["env"] = [{"name": IMAGE_ENV, "value": image}]
    pipeline_spec_builder.write_pipeline_spec_to_file(spec, func.description, func.platform_spec, out)


def task_order(ir: Mapping[str, Any]) -> list[str]:
    """The IR's root tasks, each after the tasks it depends on (ties by name)."""
    deps = {task: set(spec.get("dependentTasks", [])) for task, spec in ir["root"]["dag"]["tasks"].items()}
    order: list[str] = []
    while deps:
        task = min(t for t, d in deps.items() if d <= set(order))  # the compiler refuses cycles
        order.append(task)
        del deps[task]
    return order


def images(ir: Mapping[str, Any]) -> list[str]:
    """The container images of the IR's executors."""
    return sorted({e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()})
