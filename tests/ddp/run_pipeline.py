"""Run ``multifeat pipeline`` with the write probe of ``run_ddp.py`` installed, and record per process
what it wrote (used by ``test_ddp.py`` to run the pipeline with ``trainer.devices=2`` under DDP).

Usage::

    python tests/ddp/run_pipeline.py OUT_DIR PIPELINE_ARGS...

The pipeline's run folder must lie under ``OUT_DIR``. Each process writes
``OUT_DIR/ranks/pid<pid>.json``: ``{"rank": <global rank from the environment>, "exit": <code>,
"error": <exception text or null>, "writes": [paths relative to OUT_DIR]}``; every process first
writes ``canary-pid<pid>.txt`` itself, which shows that the probe records its writes. Lightning's ``ddp``
strategy starts rank 1 by running this script again with the same arguments.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_ddp  # noqa: E402  (the write probe)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    run_ddp.install_probe(out)
    with open(out / f"canary-pid{os.getpid()}.txt", "w") as f:  # shows the probe works in this process
        f.write("probe check\n")
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    code, error = 1, None
    try:
        from multifeat.commands import pipeline

        code = pipeline.main(sys.argv[2:])
    except BaseException as e:  # noqa: BLE001 - recorded for the test, then re-raised
        error = "".join(traceback.format_exception_only(type(e), e)).strip()
        raise
    finally:
        run_ddp.install_probe.restore()
        ranks = out / "ranks"
        ranks.mkdir(exist_ok=True)
        record = {"rank": rank, "exit": code, "error": error, "writes": sorted(set(run_ddp._WRITES))}
        (ranks / f"pid{os.getpid()}.json").write_text(json.dumps(record, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
