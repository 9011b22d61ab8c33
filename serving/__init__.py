"""mlplat.serving: the model server (FastAPI + torch) with dynamic batching.

Run it with `mlplat serve --model <uri>` or `python -m mlplat.serving`; build the ASGI app yourself with
:func:`mlplat.serving.app.create_app`. The drift contract for trainers is in :mod:`mlplat.serving.drift`.
Imports here stay light: torch and FastAPI load with the submodules that need them.
"""
