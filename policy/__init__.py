"""mlplat's guardrails: the rules ``mlplat check`` runs offline and the CrossGuard pack enforces in ``pulumi up``.

:mod:`.framework` (what a rule sees and returns, and the levels it is enforced at), :mod:`.rules` (the rules, one
module per domain, and the contract rules between resources), :mod:`.check` (running them over a render and
reporting the findings) and :mod:`.pack` (the same rules as CrossGuard policies; ``__main__`` serves them to
Pulumi, ``pulumi preview --policy-pack policy``).
"""
