"""``dbt ls`` on a preloaded manifest, run as a script in dbt's own Python (never in an Airflow process).

    python dbt_ls.py --manifest M --out OUT.json -- <dbt ls arguments>

Reads ``manifest.json`` into dbt's :class:`~dbt.contracts.graph.manifest.Manifest` and passes it to
``dbtRunner(manifest=...)``, so dbt selects without parsing the project again (about a second where a
parse of a large project takes minutes). Writes ``{"unique_ids": [...], "unmatched": [...], "error":
str | null}`` to ``OUT.json``: ``unmatched`` are the criteria dbt warned match nothing
(``NoNodesForSelectionCriteria``). Imports nothing from airflow_retrain, so it runs unchanged in a
separate dbt environment (``RETRAIN_DBT_EXECUTABLE``).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("dbt_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    dbt_args = args.dbt_args[1:] if args.dbt_args[:1] == ["--"] else args.dbt_args
    out: dict = {"unique_ids": [], "unmatched": [], "error": None}
    try:
        from dbt.cli.main import dbtRunner
        from dbt.contracts.graph.manifest import Manifest, WritableManifest

        manifest = Manifest.from_writable_manifest(WritableManifest.read_and_check_versions(args.manifest))

        def on_event(event) -> None:
            if event.info.name == "NoNodesForSelectionCriteria":
                out["unmatched"].append(event.data.spec_raw)

        result = dbtRunner(manifest=manifest, callbacks=[on_event]).invoke(
            ["ls", "--output", "json", "--output-keys", "unique_id", "--log-level", "none", *dbt_args]
        )
        if result.success:
            out["unique_ids"] = sorted(json.loads(line)["unique_id"] for line in result.result or [])
        else:
            out["error"] = " ".join(str(result.exception or "dbt ls failed").split())
    except Exception as e:  # noqa: BLE001 -- reported to the caller as the selection's error
        out["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
    with open(args.out, "w") as handle:
        json.dump(out, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
