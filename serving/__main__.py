"""`python -m mlplat.serving`: serve the model named by `MLPLAT_SERVING_MODEL_URI` (settings from the environment)."""

from mlplat.serving.server import main

if __name__ == "__main__":
    main()
