"""``recloop``: one command line for the whole loop.

Each command parses its options, calls one library function and prints what it did; each command group
lives in a module of its own beside this one, which only registers them.
"""

from __future__ import annotations

import typer

import recloop  # noqa: F401  sets TF_USE_LEGACY_KERAS before anything imports TensorFlow
from recloop.cli import (
    demo,
    evaluate,
    ingest,
    kubeflow,
    registry,
    report,
    run,
    serve,
    simulate,
    train,
    validation,
)

app = typer.Typer(
    help="recloop: continuous training for recommender systems (logs -> Beam -> TFDV -> TFRS -> KServe).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    """recloop: continuous training for recommender systems."""


# in the order --help lists them: the loop's stages, then serving and the registry, then runs and the demo
COMMANDS = (simulate.simulate, ingest.ingest, validation.validate, validation.monitor, validation.anomalies,
            train.train, evaluate.evaluate, serve.serve, serve.infra_validate, registry.push, registry.models,
            registry.rollback, registry.promote, run.run, report.report, kubeflow.compile, kubeflow.submit,
            kubeflow.schedule, demo.demo)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}  # ingest hands Beam what it does not know
for command in COMMANDS:
    app.command(name=command.__name__.replace("_", "-"),
                context_settings=PASS_THROUGH if command is ingest.ingest else None)(command)

if __name__ == "__main__":
    app()
