"""Give each mutated module the test files chosen for it, and attach the publish functions that
run only inside `python -m pipeline` subprocesses to the tests that run them.

Reads and rewrites mutants/mutmut-stats.json (written by a first `mutmut run`): mutmut records
every selected test that called a function, and sees no call made in a subprocess.
"""

import json
from pathlib import Path

PIPELINE_TESTS = ("tests/test_pipeline.py", "tests/test_faults.py", "tests/test_reliability.py")
SCOPE = {
    "imagesearchtr.multiembedtr.": ("tests/test_encoder.py",),
    "imagesearchtr.searcher.": ("tests/test_searcher.py", "tests/test_search_paths.py"),
    "pipeline.encode.": PIPELINE_TESTS,
    "pipeline.publish.": PIPELINE_TESTS,
}
HUB_ONLY = [
    "x_publish_to_hub",
    "x__publish_through_pr",
    "x__commit_with_retries",
    "x__landed",
    "x__changes",
    "x__remote_files",
    "x__same",
    "x__download",
    "x_hub_error_text",
]
PATH = Path("mutants/mutmut-stats.json")

stats = json.loads(PATH.read_text())
tests = stats["tests_by_mangled_function_name"]
cli_tests = [t for t in stats["duration_by_test"] if t.startswith("tests/test_faults.py::")]
cli_tests.append("tests/test_reliability.py::test_publish_through_resets_mid_upload_and_a_timeout")
for name in HUB_ONLY:
    key = "pipeline.publish." + name
    tests[key] = sorted(set(tests.get(key, [])) | set(cli_tests))
for key in list(tests):
    for prefix, files in SCOPE.items():
        if key.startswith(prefix):
            tests[key] = sorted(t for t in tests[key] if t.startswith(files))
PATH.write_text(json.dumps(stats, indent=2))
for key, value in sorted(tests.items()):
    if any(key.startswith(p) for p in SCOPE):
        seconds = sum(stats["duration_by_test"].get(t, 0) for t in value)
        print(len(value), round(seconds, 1), key)
