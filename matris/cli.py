"""`matris-model`: model utilities (parameter counts)."""

from __future__ import annotations

import argparse
import sys

from matris.config import OFFICIAL_PARAMS, PRESETS, MatrisConfigError, preset


def _count(name: str) -> int:
    from matris.moe import count_parameters
    from matris.nn.moe import moe_layers_run

    config = preset(name)
    breakdown = count_parameters(config)  # exact, without building every expert
    width = max(len(k) for k in breakdown)
    print(f"preset {name}: {config.num_blocks} blocks, width {config.width}, "
          f"cutoffs {config.cutoff}/{config.three_body_cutoff} Å")
    moe = config.moe_config
    if moe is not None:
        print(f"  MoE: {moe.num_experts} experts, top-{moe.top_k}"
              f"{' + shared expert' if moe.shared_expert else ''}, {moe.router} router, "
              f"{moe_layers_run(config)} MoE layers run per forward, roles "
              f"{', '.join(moe.roles)}")
    for key, value in breakdown.items():
        print(f"  {key:<{width}}  {value:>12,}")
    if name in OFFICIAL_PARAMS:
        ref = OFFICIAL_PARAMS[name]
        total = breakdown["total"]
        print(f"  {'official':<{width}}  {ref:>12,}  ({100 * (total - ref) / ref:+.3f}%: "
              f"our bases have fixed frequencies and reference energies are a buffer)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="matris-model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    count = sub.add_parser("count", help="print parameter counts of a preset (total and, "
                           "for MoE presets, active per row)")
    count.add_argument("preset", help=f"one of {sorted(PRESETS)}")
    args = parser.parse_args(argv)
    try:
        if args.command == "count":
            return _count(args.preset)
    except MatrisConfigError as exc:
        print(f"matris-model: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
