"""`python -m mlplat.serving.healthcheck`: exit 0 when the local server is live (the image's HEALTHCHECK).

Standard library only, so the probe costs milliseconds; it reads the port the server was given.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    """GET /v2/health/live on this container's server port; 0 if it answers 200, else 1."""
    port = os.environ.get("MLPLAT_SERVING_PORT", "8080")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not live: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
