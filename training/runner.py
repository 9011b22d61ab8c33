"""Run a training job from a config file and turn its outcome into the documented exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mlplat.contracts.exit_codes import (
    EXIT_CONFIG_INVALID,
    EXIT_DATA_INVALID,
    EXIT_DIVERGED,
    EXIT_GATE_REJECTED,
    EXIT_OK,
    EXIT_PREEMPTED,
)
from mlplat.contracts.training_config import ConfigError, load_config

log = logging.getLogger("mlplat.training")


def configure_logging(rank: int) -> None:
    """Log lines tagged with the rank; ranks other than 0 only report warnings and errors."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_training(config_path: str | Path, overrides: Sequence[str] = ()) -> int:
    """Load the config, train, and return an exit code from :mod:`mlplat.contracts.exit_codes`."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The trainer retries the tracking server itself, with backoff in a budget (retry.*): MLflow's own retries
    # (7 by default, minutes of backoff per call) would stall the loop and blur that budget.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    rank = int(os.environ.get("RANK", "0"))
    configure_logging(rank)
    try:
        config = load_config(config_path, overrides)
    except ConfigError as error:
        if rank == 0:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG_INVALID

    from mlplat.training.faults import TransientFault
    from mlplat.training.loop import NonFiniteLoss, Preempted
    from mlplat.training.trainer import GateRejected, train
    from mlplat.training.validation import DataValidationError

    try:
        result = train(config)
    except ConfigError as error:  # a builder that cannot be imported or called, or a lineage mismatch
        if rank == 0:
            print(f"error: {error}", file=sys.stderr)
            log.error("%s (exit %d)", error, EXIT_CONFIG_INVALID)
        return EXIT_CONFIG_INVALID
    except DataValidationError as error:
        log.error("%s", error.report.render())
        return EXIT_DATA_INVALID
    except Preempted as error:
        log.warning("%s (exit %d)", error, EXIT_PREEMPTED)
        return EXIT_PREEMPTED
    except TransientFault as error:
        log.error(
            "%s (exit %d: the Job retries, and the retry resumes from the last checkpoint)", error, EXIT_PREEMPTED
        )
        return EXIT_PREEMPTED
    except NonFiniteLoss as error:
        log.error("%s (exit %d)", error, EXIT_DIVERGED)
        return EXIT_DIVERGED
    except GateRejected as error:
        log.error("nothing registered: %s", error.decision.render())
        return EXIT_GATE_REJECTED
    if rank == 0:
        final = result.history[-1] if result.history else {}
        log.info(
            "done: step %d, val_accuracy %.4f, test %s, registered version %s",
            result.final_step,
            final.get("val_accuracy", float("nan")),
            result.test_metrics,
            result.registered_version or "-",
        )
    return EXIT_OK
