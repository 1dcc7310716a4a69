"""Print every K-th mutant name of one file, in the order of its mutmut .meta file.

Usage: python3 .ci/mutation/sample.py mutants/pipeline/encode.py.meta 30 > names
"""

import json
import sys
from pathlib import Path

meta, k = Path(sys.argv[1]), int(sys.argv[2])
names = list(json.loads(meta.read_text())["exit_code_by_key"])
print("\n".join(names[::k]))
