"""The simulator backend plugin: ``--backend sim --scenario FILE``."""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.target import BackendInfo, BackendOption, OpenRequest, Target


def open_sim(request: OpenRequest) -> Target:
    """Build the scenario's machine and return it as a target."""
    from gdbext_sim.scenario import load_scenario  # here: listing the backends needs none of it

    return load_scenario(request.option("scenario")).to_target()


@hookimpl
def gdbext_backends() -> Sequence[BackendInfo]:
    return [
        BackendInfo(
            name="sim",
            summary="in-memory simulator: page tables built from a JSON scenario",
            open=open_sim,
            options=[BackendOption("scenario", "FILE", "JSON scenario to build", required=True)],
        )
    ]
