"""What a reviewer of an infrastructure change reads: `mlplat diff` (:mod:`mlplat.review.diff`, replacement
cascades from :mod:`mlplat.review.replacements`, the report in :mod:`mlplat.review.diff_report`) and
`mlplat cost` (:mod:`mlplat.review.cost`, the dated price table ``prices.json``)."""
