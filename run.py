#!/usr/bin/env python3
"""splitbed entry point: python run.py TOPOLOGY.yaml [--out DIR] [--set key.path=value ...]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testbed.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
