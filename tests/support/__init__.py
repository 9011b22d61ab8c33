"""Helpers shared by the test suites, imported as ``support.<module>`` (``from support.serving import ...``).

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject's ``[tool.pytest.ini_options]``), so this
package is importable in every test run; ``tests/support`` itself is never on the path (``support.secrets`` must
not shadow the standard library's ``secrets``). A subprocess that imports a helper (a pickled model class from
``support.serving``, a builder that a training config names as ``support.training_builders:<fn>``) needs
:data:`TESTS_DIR` on its ``PYTHONPATH``.
"""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
"""The folder that holds this package: what a child process needs on ``PYTHONPATH`` to import ``support``."""
