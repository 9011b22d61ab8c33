"""MLflow authentication bootstrap: the platform's users, passwords and grants, before MLflow serves a request.

The :class:`~mlplat.components.tracking.Tracking` component runs this file in an init container of every MLflow
pod, ahead of ``mlflow server --app-name basic-auth``. It runs in the tracking image (mlflow and psycopg2, no
mlplat), so it imports only the standard library and MLflow; the component ships its source in a ConfigMap.

Every run converges the auth store on what the Secrets say, so it is safe on a first deploy and on every restart:

1. the auth schema is created or migrated (MLflow's own migrations, version table ``alembic_version_auth``);
2. the admin user exists with the admin password from the environment (``MLFLOW_AUTH_ADMIN_PASSWORD``);
3. each writer (trainer, pipeline) and reader (model servers) exists, is not an admin, and has the password in
   ``<passwords dir>/<username>`` (a projected Secret volume);
4. writers hold EDIT on every experiment and every registered model (create runs, log, register versions,
   move aliases); readers hold no grant there, so MLflow's ``default_permission`` (READ) is all they get;
5. the platform's registered models exist, so no other identity can create one first and own it (MLflow gives
   the creator MANAGE), and any grant a reader holds on one of them is revoked.

Runs against PostgreSQL are serialized with an advisory lock, so MLflow replicas starting together do not race.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PERMISSION = "READ"
"""What every authenticated identity may do without a grant: read. MLflow lets any of them create experiments
and registered models of their own, but not change anyone else's."""
ACCEPTED_DEFAULTS = ("READ", "NO_PERMISSIONS")
"""``default_permission`` values this bootstrap accepts: anything higher would let every identity write."""
WRITER_PERMISSION = "EDIT"
WRITER_RESOURCE_TYPES = ("experiment", "registered_model")
"""Writers' wildcard grants: runs, logged models and artifacts inherit the experiment's; model versions and
aliases the registered model's (mlflow.server.auth requirements fall back to the parent)."""
PASSWORDS_DIR = "/etc/mlflow-users"
MIN_PASSWORD_LENGTH = 12  # MLflow refuses shorter ones (mlflow.utils.validation._validate_password)
ADVISORY_LOCK_KEY = 0x6D6C706C6174  # "mlplat": one bootstrap at a time per database

log = logging.getLogger("mlplat.mlflow_auth_bootstrap")


class BootstrapError(RuntimeError):
    """The bootstrap cannot proceed; the message names what to fix."""


@dataclass(frozen=True)
class Plan:
    """What the auth store must hold: identities, their passwords and the platform's registered models."""

    writers: Sequence[str]
    readers: Sequence[str]
    passwords: dict[str, str]
    models: Sequence[str] = ()


def read_passwords(directory: Path, usernames: Sequence[str]) -> dict[str, str]:
    """The password of each user from ``directory/<username>`` (trailing newline stripped)."""
    passwords: dict[str, str] = {}
    for user in usernames:
        path = directory / user
        if not path.is_file():
            raise BootstrapError(
                f"no password for MLflow user {user!r}: {path} does not exist (mount the user's "
                f"Secret's 'password' key there)"
            )
        password = path.read_text().rstrip("\n")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise BootstrapError(
                f"the password of MLflow user {user!r} in {path} has {len(password)} characters; "
                f"MLflow needs at least {MIN_PASSWORD_LENGTH}"
            )
        passwords[user] = password
    return passwords


@contextmanager
def serialized(database_uri: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock (session level) for the block; other databases run as they are."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(database_uri)
    try:
        if engine.dialect.name != "postgresql":
            yield
            return
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
    finally:
        engine.dispose()


def _ensure_user(store: Any, username: str, password: str, *, admin: bool) -> str:
    """Create ``username`` or bring its password and admin flag in line; returns what was done."""
    if not store.has_user(username, use_primary=True):
        store.create_user(username, password, is_admin=admin)
        return "created"
    changes: dict[str, Any] = {}
    if not store.authenticate_user(username, password, use_primary=True):
        changes["password"] = password
    if store.get_user(username).is_admin != admin:
        changes["is_admin"] = admin
    if changes:
        store.update_user(username, **changes)
        return "updated " + " and ".join(sorted(changes))
    return "unchanged"


def _revoke(store: Any, username: str, resource_type: str, resource_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        store.revoke_user_resource_permission(username, resource_type, resource_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True


def _ensure_registered_model(registry: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        registry.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return False
    return True


def bootstrap(plan: Plan, backend_store_uri: str | None) -> list[str]:
    """Converge MLflow's auth store (and the registry's platform models) on ``plan``; returns what it did.

    The auth settings (database, admin, default permission) are MLflow's own: ``read_auth_config`` reads
    ``MLFLOW_AUTH_CONFIG_PATH`` and ``MLFLOW_AUTH_ADMIN_*`` exactly as ``mlflow server`` will.
    """
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    config = read_auth_config()
    if config.default_permission not in ACCEPTED_DEFAULTS:
        where = os.environ.get("MLFLOW_AUTH_CONFIG_PATH", "the auth config")
        raise BootstrapError(
            f"default_permission = {config.default_permission} in {where} lets every authenticated "
            f"identity write; the platform needs one of {', '.join(ACCEPTED_DEFAULTS)}"
        )
    if not config.admin_username or not config.admin_password:
        raise BootstrapError(
            "the MLflow admin needs a username (admin_username) and a password (MLFLOW_AUTH_ADMIN_PASSWORD)"
        )
    names = [config.admin_username, *plan.writers, *plan.readers]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise BootstrapError(f"MLflow users {twice} are named more than once among admin, writers and readers")
    if plan.models and not backend_store_uri:
        raise BootstrapError("registered models to create, but MLFLOW_BACKEND_STORE_URI is not set")

    done: list[str] = []
    with serialized(config.database_uri):
        store = SqlAlchemyStore()
        store.init_db(config.database_uri)  # creates or migrates the auth tables
        done.append(
            f"admin {config.admin_username}: "
            f"{_ensure_user(store, config.admin_username, config.admin_password, admin=True)}"
        )
        for user in [*plan.writers, *plan.readers]:
            done.append(f"user {user}: {_ensure_user(store, user, plan.passwords[user], admin=False)}")
        for user in plan.writers:
            for resource_type in WRITER_RESOURCE_TYPES:
                store.grant_user_permission(user, resource_type, "*", WRITER_PERMISSION)  # an upsert
            done.append(f"writer {user}: {WRITER_PERMISSION} on every {' and every '.join(WRITER_RESOURCE_TYPES)}")
        if plan.models:
            from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore

            registry = RegistryStore(backend_store_uri)
            for name in plan.models:
                done.append(
                    f"registered model {name}: {'created' if _ensure_registered_model(registry, name) else 'exists'}"
                )
        for user in plan.readers:
            # A reader never holds a wildcard grant, nor one on a platform model (MANAGE, had it created one first).
            targets = [(t, "*") for t in WRITER_RESOURCE_TYPES] + [("registered_model", m) for m in plan.models]
            revoked = [f"{t} {r}" for t, r in targets if _revoke(store, user, t, r)]
            done.append(f"reader {user}: {'revoked ' + ', '.join(revoked) if revoked else 'no grants'}")
    return done


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--writer", action="append", default=[], help="a user that registers and moves aliases")
    parser.add_argument("--reader", action="append", default=[], help="a read-only user")
    parser.add_argument("--model", action="append", default=[], help="a registered model to create if missing")
    parser.add_argument("--passwords-dir", default=PASSWORDS_DIR, help="one file per user, named after it")
    args = parser.parse_args(argv)
    if not args.writer:
        parser.error("at least one --writer is needed (the trainer)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        users = list(dict.fromkeys([*args.writer, *args.reader]))
        plan = Plan(
            writers=args.writer,
            readers=args.reader,
            models=args.model,
            passwords=read_passwords(Path(args.passwords_dir), users),
        )
        for line in bootstrap(plan, os.environ.get("MLFLOW_BACKEND_STORE_URI")):
            log.info("%s", line)
    except BootstrapError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
