"""`make bench`: every benchmark script in this folder, one after the other.

python benchmarks/run.py [--quick] [--device cuda]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
status = 0
for script in sorted(here.glob("bench_*.py")):
    print(f"\n$ python {script.relative_to(here.parent)} {' '.join(sys.argv[1:])}", flush=True)
    status |= subprocess.call([sys.executable, str(script), *sys.argv[1:]])
sys.exit(status)
