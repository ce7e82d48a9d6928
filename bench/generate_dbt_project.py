"""Generate a layered synthetic dbt project of N models (DuckDB), for the dbt stage benchmark.

    python bench/generate_dbt_project.py --models 1000 --out .local/bench-dbt/synthetic_1000

Layer 0 models read a generated range; each model of layer k>0 reads one or two models of layer k-1.
Every model has a ``not_null`` test; views by default (``--tables`` makes the last layer tables). The
project ships its own ``profiles.yml`` (DuckDB file inside the project folder).
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path


def generate(out: Path, models: int, layers: int = 10, seed: int = 0, tables_last_layer: bool = True) -> Path:
    rng = random.Random(seed)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    (out / "dbt_project.yml").write_text(
        "name: synthetic\nversion: '1.0.0'\nprofile: synthetic\nmodel-paths: ['models']\n"
        "models:\n  synthetic:\n    +materialized: view\n    marts:\n      +materialized: "
        + ("table" if tables_last_layer else "view")
        + "\n"
    )
    (out / "profiles.yml").write_text(
        "synthetic:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: synthetic.duckdb\n      threads: 4\n"
    )
    per_layer = max(1, models // layers)
    names: list[list[str]] = []
    count = 0
    for layer in range(layers):
        n = per_layer if layer < layers - 1 else models - count
        folder = "marts" if layer == layers - 1 else f"layer_{layer:02d}"
        (out / "models" / folder).mkdir(exist_ok=True)
        current = []
        yml = ["models:"]
        for i in range(n):
            name = f"m{layer:02d}_{i:04d}"
            if layer == 0:
                sql = f"select range as id, range * {i + 1} as value from range(100)"
            else:
                parents = rng.sample(names[-1], k=min(2, len(names[-1])))
                sql = f"select a.id, a.value + 1 as value from {{{{ ref('{parents[0]}') }}}} a"
                if len(parents) > 1:
                    sql += f"\nwhere a.id in (select id from {{{{ ref('{parents[1]}') }}}})"
            (out / "models" / folder / f"{name}.sql").write_text(sql + "\n")
            yml += [f"  - name: {name}", "    columns:", "      - name: id", "        data_tests: [not_null]"]
            current.append(name)
        (out / "models" / folder / "_models.yml").write_text("\n".join(yml) + "\n")
        names.append(current)
        count += n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    generate(args.out, args.models, args.layers)
    print(f"generated {args.models} models in {args.layers} layers under {args.out}")


if __name__ == "__main__":
    main()
