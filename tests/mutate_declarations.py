"""Mutation testing of module-level declarations: ``python -m tests.mutate_declarations``.

mutmut mutates function bodies only; the rules that live in declarations (the query's
banned characters, the ``Field`` limits, bucket boundaries, status lists) need mutating
too. Each mutation below is applied to the source alone, the tests that state the rule
run, and the mutation must make them fail. A survivor means a rule nothing checks.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = "tests/app/api/test_validation.py"
STREAM = "tests/app/api/test_stream.py"
CONTRACT = "tests/otel/test_metrics_contract.py"
REPLAY_CAP = "tests/app/pipeline/test_replay_cap.py"
EVENT_IDS_TESTS = "tests/app/pipeline/test_event_ids.py"
ERRORS_TESTS = "tests/app/api/test_errors.py"
ORIGINS_TESTS = "tests/app/api/test_origins.py"
SERVER_GUARDS = "tests/app/test_server_guards.py"


@dataclass(frozen=True)
class Mutation:
    path: str
    old: str
    new: str
    what: str
    tests: tuple[str, ...]
    #: Why it cannot be told apart from the original, if it cannot.
    equivalent: str | None = None


MODELS = "app/models.py"
METRICS = "otel/metrics.py"
MUTATIONS = [
    Mutation(MODELS, r"\x00-\x08", r"\x01-\x08", "NUL allowed in a query", (VALIDATION,)),
    Mutation(MODELS, r"\x0e-\x1f", r"\x0e-\x1a\x1c-\x1f", "ESC allowed", (VALIDATION,)),
    Mutation(MODELS, r"\x0b\x0c", r"\x0b", "form feed allowed", (VALIDATION,)),
    Mutation(MODELS, r"\x7f", "", "DEL allowed", (VALIDATION,)),
    Mutation(MODELS, r"\u202a-\u202e", r"\u202a-\u202d", "RLO allowed", (VALIDATION,)),
    Mutation(MODELS, r"\u2066-\u2069", r"\u2066-\u2068", "PDI allowed", (VALIDATION,)),
    Mutation(
        MODELS,
        r"\ud800-\udfff",
        r"\ud800-\udbff",
        "low surrogates allowed",
        (VALIDATION,),
        equivalent="pydantic's str type refuses every lone surrogate before this check runs "
        "(string_unicode); the range stays for the documented pattern",
    ),
    Mutation(MODELS, "max_length=2000", "max_length=2001", "2,001 characters", (VALIDATION,)),
    Mutation(MODELS, "max_length=2000", "max_length=1999", "2,000 refused", (VALIDATION,)),
    Mutation(MODELS, "min_length=1", "min_length=0", "an empty query", (VALIDATION,)),
    Mutation(MODELS, "strip_whitespace=True", "strip_whitespace=False", "no trim", (VALIDATION,)),
    Mutation(MODELS, "{1,128}", "{1,129}", "129-character session id", (VALIDATION,)),
    Mutation(MODELS, "{1,128}", "{1,127}", "128 refused", (VALIDATION,)),
    Mutation(MODELS, "{1,128}", "{0,128}", "empty session id", (VALIDATION,)),
    Mutation(MODELS, "[A-Za-z0-9._:-]", "[A-Za-z0-9._:/-]", "'/' in a session id", (VALIDATION,)),
    Mutation(MODELS, "[A-Za-z0-9._:-]", "[A-Za-z0-9.:-]", "'_' refused", (VALIDATION,)),
    Mutation(MODELS, 'extra="forbid"', 'extra="ignore"', "unknown fields ignored", (VALIDATION,)),
    Mutation(
        MODELS, "bool = Field(True", "bool = Field(False", "no thoughts by default", (STREAM,)
    ),
    Mutation(METRICS, '"timeout", "cancelled"]', '"cancelled"]', "no timeout status", (CONTRACT,)),
    Mutation(
        METRICS,
        'CallStatus = Literal["success", "error"]',
        'CallStatus = Literal["success"]',
        "no error status",
        (CONTRACT,),
    ),
    Mutation(
        METRICS,
        "(1, 5, 10, 30, 60, 120, 300, 600)",
        "(1, 5, 10, 30, 60, 120, 300)",
        "request buckets",
        (CONTRACT,),
    ),
    Mutation(
        METRICS,
        "(0.1, 0.5, 1, 2, 5, 10, 30, 60)",
        "(0.1, 0.5, 1, 2, 5, 10, 30)",
        "phase buckets",
        (CONTRACT,),
    ),
    Mutation(METRICS, "(0.5, 1, 2, 5, 10, 30)", "(1, 2, 5, 10, 30)", "LLM buckets", (CONTRACT,)),
    Mutation(METRICS, "(0.005, 0.01,", "(0.01,", "first-event buckets", (CONTRACT,)),
    Mutation(METRICS, "(0.05, 0.1, 0.25,", "(0.1, 0.25,", "search buckets", (CONTRACT,)),
    Mutation(METRICS, "    81.92,\n", "", "GenAI duration buckets", (CONTRACT,)),
    Mutation(METRICS, "    67108864,\n", "", "GenAI token buckets", (CONTRACT,)),
]

REPLAY = "app/pipeline/replay.py"
EVENT_IDS = "app/pipeline/event_ids.py"
ERRORS = "app/api/errors.py"
ORIGINS = "app/api/origins.py"
SERVER = "app/host_names.py"
MUTATIONS += [
    Mutation(
        REPLAY, "_COMPACT_AFTER = 64", "_COMPACT_AFTER = 65", "compacted later", (REPLAY_CAP,)
    ),
    Mutation(EVENT_IDS, "KEY_BYTES = 12", "KEY_BYTES = 9", "12-character keys", (EVENT_IDS_TESTS,)),
    Mutation(EVENT_IDS, '= ".end"', '= ".END"', "another terminal suffix", (EVENT_IDS_TESTS,)),
    Mutation(EVENT_IDS, "{16})", "{15,16})", "15-character key read", (EVENT_IDS_TESTS,)),
    Mutation(EVENT_IDS, "{1,9}", "{1,10}", "10-digit sequence read", (EVENT_IDS_TESTS,)),
    Mutation(ERRORS, ', "Last-Event-ID"}', "}", "Last-Event-ID unnamed", (ERRORS_TESTS,)),
    Mutation(
        ERRORS, '= "(unknown field)"', '= "(unknown)"', "unknown fields' name", (ERRORS_TESTS,)
    ),
    Mutation(ERRORS, "CHARS = 200", "CHARS = 201", "201-character messages", (ERRORS_TESTS,)),
    Mutation(ERRORS, '"POST", "PUT")', '"PUT")', "POST never in Allow", (ERRORS_TESTS,)),
    Mutation(ERRORS, '    413: "PAYLOAD_TOO_LARGE",\n', "", "413 as HTTP_ERROR", (ERRORS_TESTS,)),
    Mutation(ORIGINS, "(the server's ALLOWED_ORIGINS)", "", "403's message", (ORIGINS_TESTS,)),
    Mutation(SERVER, '"", "0.0.0.0", "::"', '"", "::"', "0.0.0.0 as a Host", (SERVER_GUARDS,)),
]


def killed(mutation: Mutation) -> bool:
    path = ROOT / mutation.path
    source = path.read_text()
    assert source.count(mutation.old) == 1, f"{mutation.what}: {mutation.old!r} not found once"
    path.write_text(source.replace(mutation.old, mutation.new))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        return result.returncode != 0
    finally:
        path.write_text(source)


def main() -> int:
    survivors = []
    for mutation in MUTATIONS:
        outcome = killed(mutation)
        label = "killed  " if outcome else "equal   " if mutation.equivalent else "SURVIVED"
        note = f" ({mutation.equivalent})" if mutation.equivalent and not outcome else ""
        print(f"{label} {mutation.path}: {mutation.what}{note}", flush=True)
        if not outcome and not mutation.equivalent:
            survivors.append(mutation)
    done = len(MUTATIONS) - len(survivors)
    print(f"{done} of {len(MUTATIONS)} declaration mutants killed or equivalent")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
