"""Contract rules: what rendered resources promise each other, checked offline by ``mlplat check``.

One module per family: :mod:`.references` (names resolve), :mod:`.scheduling` (pods fit nodes that admit them),
:mod:`.readiness` (awaited resources can become ready), :mod:`.runtime` (what the platform's software needs at run
time). :mod:`.graph` indexes the render once per run; :mod:`.tables` declares what charts and add-ons create.
"""

# The rules' shared types live in mlplat.infra.checks, which registers these rules in its RULES: load it first,
# so importing any module of this package (before or after checks) sees a consistent pair.
import mlplat.infra.checks  # noqa: F401
