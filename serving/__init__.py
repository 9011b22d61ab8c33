"""mlplat.serving: the model server (FastAPI + torch) with dynamic batching."""
