"""The local platform demo (`mlplat demo`, :mod:`mlplat.demo.platform`) and the local services it and the tests
start on loopback (:mod:`mlplat.demo.services`: MLflow, PostgreSQL, an S3-compatible endpoint)."""
