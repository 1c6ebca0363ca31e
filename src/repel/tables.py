"""The stages that read tables and write tables (the command line's aggregate, aggregate-landscape,
ensembles and claims): no network runs in them."""

from __future__ import annotations

import json
from pathlib import Path


def json_arg(text: str):
    """JSON text, or a .json file holding it."""
    return json.loads(Path(text).read_text() if text.endswith(".json") else text)


def ensembles(args) -> None:
    from .aggregate import aggregate_ensembles

    aggregate_ensembles(args.predictions, args.member_landscapes, Path(args.out_dir))
    print(f"evaluated {len(args.predictions)} ensembles -> {args.out_dir}")


def aggregate_landscape(args) -> None:
    from .aggregate import aggregate_landscapes

    aggregate_landscapes(args.landscapes, args.out)
    print(f"aggregated {len(args.landscapes)} landscapes -> {args.out}")


def aggregate(args) -> None:
    from .aggregate import aggregate as combine_runs

    combine_runs(args.runs, json_arg(args.labels) if args.labels else {}, Path(args.out_dir))
    print(f"aggregated {len(args.runs)} runs -> {args.out_dir}")


def claims(args) -> None:
    from . import claims as verdicts
    from . import storage

    if bool(args.ensembles) != bool(args.pairs):
        raise ValueError("give --ensembles and --pairs together (ensembles.parquet and ensemble_pairs.parquet)")
    table = verdicts.evaluate(
        storage.read_parquet(args.metrics, "aggregated metrics"),
        json_arg(args.families),
        storage.read_parquet(args.ensembles, "ensemble curves") if args.ensembles else None,
        storage.read_parquet(args.pairs, "ensemble pairs") if args.pairs else None,
        json_arg(args.settings) if args.settings else None,
        landscape=storage.read_parquet(args.landscape, "aggregated landscape") if args.landscape else None,
        shift=storage.read_parquet(args.shift, "ensemble shift table") if args.shift else None,
        ood=storage.read_parquet(args.ood, "ensemble OOD table") if args.ood else None,
    )
    out = Path(args.out_dir)
    storage.save_parquet(table, out / "claims.parquet")
    storage.save_text(table.to_csv(index=False), out / "claims.csv")
    storage.save_text(verdicts.markdown(table), out / "claims.md")
    counts = table["verdict"].value_counts()
    print(f"{len(table)} claim rows ({', '.join(f'{n} {v}' for v, n in counts.items())}) -> {out}")
