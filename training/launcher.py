"""`mlplat train --nproc-per-node N`: start the workers with torchrun, in this process.

torchrun itself exits 1 whatever its workers returned and, when it receives SIGTERM, forwards it to the
workers and dies of it. Running torchrun's launcher in-process lets this wrapper map the outcome back to
the trainer's exit codes, so the TrainingJob's podFailurePolicy sees :data:`EXIT_PREEMPTED` for a spot
interruption and the real code (data invalid, gate rejected, ...) otherwise.

Multi-node settings come from torchrun's own ``PET_*`` environment variables (``PET_NNODES``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``, or ``PET_RDZV_ENDPOINT``); in an Indexed Job
``JOB_COMPLETION_INDEX`` stands in for the node rank. Without them the job is single-node (standalone).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from mlplat.contracts.exit_codes import EXIT_PREEMPTED

log = logging.getLogger("mlplat.training")
# Workers that were still running when a sibling stopped get these signals from torchrun.
_SIGNALLED = {-signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT}


def torchrun_args(config_path: str | Path, overrides: Sequence[str], nproc_per_node: str) -> list[str]:
    """torchrun's command line for this job (multi-node settings are read by torchrun from PET_*)."""
    args = ["--nproc-per-node", nproc_per_node]
    multi_node = os.environ.get("PET_NNODES", "1") not in ("1", "1:1")
    if multi_node:
        if "PET_NODE_RANK" not in os.environ and "JOB_COMPLETION_INDEX" in os.environ:
            args += ["--node-rank", os.environ["JOB_COMPLETION_INDEX"]]
    elif "PET_RDZV_ENDPOINT" not in os.environ and "PET_MASTER_ADDR" not in os.environ:
        args.append("--standalone")
    args += ["-m", "mlplat.training", "--config", str(config_path)]
    args += [f"--set={override}" for override in overrides]
    return args


def exit_code_of(worker_codes: Sequence[int]) -> int:
    """One exit code for the job from its failed workers' codes (negative: killed by that signal).

    A worker's own non-zero code wins over a preemption (a real failure must not be retried forever);
    preempted workers, and siblings torchrun signalled as a consequence, give EXIT_PREEMPTED.
    """
    own = [code for code in worker_codes if code > 0 and code != EXIT_PREEMPTED]
    if own:
        return own[0]
    if EXIT_PREEMPTED in worker_codes or any(code in _SIGNALLED for code in worker_codes):
        return EXIT_PREEMPTED
    return 1


def launch(config_path: str | Path, overrides: Sequence[str], nproc_per_node: str) -> int:
    """Run torchrun with the trainer as its workers; return the job's exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(torchrun_args(config_path, overrides, nproc_per_node))
    try:
        run(args)
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        code = exit_code_of(codes)
        log.error("workers failed with exit codes %s: exiting %d", codes, code)
        return code
    except SignalException as error:
        # torchrun forwarded the signal and gave the workers its shutdown timeout to checkpoint.
        log.warning("launcher got %s: workers were asked to checkpoint; exiting %d", error.sigval, EXIT_PREEMPTED)
        return EXIT_PREEMPTED
    return 0
