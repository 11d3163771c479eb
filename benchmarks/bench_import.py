"""What ``import sharedstate`` adds to a bare interpreter start (target: at most 30 ms).

    python benchmarks/bench_import.py              # 30 interleaved rounds
    python benchmarks/bench_import.py --rounds 60 --module sharedstate.flask

Each round starts ``python -c "pass"`` and ``python -c "import sharedstate"`` once each, in
alternating order; the result is the difference of the medians. Bytecode is compiled first into a
private cache (``PYTHONPYCACHEPREFIX``), as an installed package has it: with
``PYTHONDONTWRITEBYTECODE`` every start would compile the sources, which no installed app pays.
``--no-bytecode`` measures that case too. For where the time goes:
``python -X importtime -c "import sharedstate"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 30.0
SRC = str(Path(__file__).resolve().parent.parent / "src")


def start_ms(env: dict[str, str], code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--module", default="sharedstate")
    parser.add_argument("--no-bytecode", action="store_true", help="compile the sources on every start")
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as cache:
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
        importing = f"import {args.module}"
        start_ms(env, importing)  # compiles the bytecode (unless --no-bytecode)
        bare: list[float] = []
        loaded: list[float] = []
        for i in range(args.rounds):
            order = [(bare, "pass"), (loaded, importing)]
            for samples, code in order if i % 2 else order[::-1]:
                samples.append(start_ms(env, code))
    added = statistics.median(loaded) - statistics.median(bare)
    spread = statistics.quantiles(loaded, n=4)
    print(f"python -c 'pass'              median {statistics.median(bare):6.1f} ms")
    print(
        f"python -c '{importing}'  median {statistics.median(loaded):6.1f} ms "
        f"(quartiles {spread[0]:.1f} / {spread[2]:.1f})"
    )
    verdict = "met" if added <= TARGET_MS else "NOT met"
    print(
        f"added by the import: {added:.1f} ms (target <= {TARGET_MS:.0f} ms: {verdict}; "
        f"{args.rounds} interleaved rounds, {'no bytecode' if args.no_bytecode else 'bytecode cached'})"
    )


if __name__ == "__main__":
    main()
