"""`reslab`: the one command-line entry point. It parses arguments and calls the parts.

Exit codes: 0 success, 1 an SLO or tolerance breached, 2 bad input (nothing started),
3 infrastructure failure (staging, Toxiproxy).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_BREACHED = 1
EXIT_BAD_INPUT = 2
EXIT_INFRASTRUCTURE = 3


def _policy_explain(args: argparse.Namespace) -> int:
    from engine.policy import explain
    from engine.policyfile import DEFAULT_POLICY, PolicyFileError, load_policy

    try:
        config = load_policy(args.policy)
        baseline = load_policy(DEFAULT_POLICY) if args.diff else None
    except PolicyFileError as error:
        print(f"reslab: bad policy: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = explain(config)
    if args.json:
        print(
            json.dumps({"policy": config.name, "rows": [row.to_dict() for row in rows]}, indent=2)
        )
        return EXIT_OK
    base_rows = {row.open_breakers: row for row in explain(baseline)} if baseline else {}
    print(f"policy: {config.name} ({args.policy or DEFAULT_POLICY})")
    header = f"{'open':<28} {'score':>6}  {'level':<10} {'on':>3} {'fallback':>8} {'off':>4}"
    if base_rows:
        header += "   vs default"
    print(header)
    print("-" * len(header))
    for row in rows:
        line = (
            f"{row.label:<28} {row.score:>6g}  {row.level.name:<10} {len(row.served):>3} "
            f"{len(row.fallback):>8} {len(row.off):>4}"
        )
        base = base_rows.get(row.open_breakers)
        if base is not None and (base.score, base.level) != (row.score, row.level):
            line += f"   was {base.score:g} {base.level.name}"
        print(line)
    if args.verbose:
        for row in rows:
            print(f"\n[{row.label}] {row.level.name}")
            print(f"  served:   {', '.join(row.served) or '-'}")
            print(f"  fallback: {', '.join(row.fallback) or '-'}")
            print(f"  off:      {', '.join(row.off) or '-'}")
    return EXIT_OK


def _scenario_validate(args: argparse.Namespace) -> int:
    from scenarios.loader import validate_files

    failures = 0
    for path, error in validate_files([Path(each) for each in args.files]):
        if error is None:
            print(f"ok    {path}")
        else:
            failures += 1
            print(f"error {error}", file=sys.stderr)
    return EXIT_BAD_INPUT if failures else EXIT_OK


def _staging(args: argparse.Namespace) -> int:
    from chaos.staging import staging_main

    return staging_main([args.staging_action, *args.staging_args])


def _simulate(args: argparse.Namespace) -> int:
    from engine.policyfile import PolicyFileError
    from scenarios import ScenarioError
    from sim import format_summary, run_simulation

    try:
        run_dir = run_simulation(
            args.scenario,
            replications=args.replications,
            jobs=args.jobs,
            policy_path=args.policy,
            calibration_path=args.calibration,
            out_dir=args.out,
            progress=not args.quiet,
        )
    except (ScenarioError, PolicyFileError) as error:
        print(f"reslab: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as error:  # an unreadable or malformed calibration file
        print(f"reslab: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
        print(f"reslab: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    print(format_summary(summary))
    print(f"\nrun folder: {run_dir}")
    return EXIT_OK


def _calibrate(args: argparse.Namespace) -> int:
    from sim.calibrate import calibrate_run, describe_fit

    try:
        path = calibrate_run(args.run_dir, args.out)
    except (OSError, ValueError) as error:  # not a run folder, or nothing to fit
        print(f"reslab: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(describe_fit(json.loads(path.read_text(encoding="utf-8"))))
    print(f"\ncalibration: {path}")
    return EXIT_OK


def _chaos(args: argparse.Namespace) -> int:
    from chaos.rollback import chaos_main

    return chaos_main([args.chaos_action, *args.chaos_args])


def _campaign(args: argparse.Namespace) -> int:
    from chaos.campaign import CampaignOptions, format_result, run_campaign

    result = run_campaign(
        CampaignOptions(
            scenario=args.scenario,
            replications=args.replications,
            workers=args.workers,
            predict=not args.no_predict,
            staging_file=args.staging,
            out_dir=args.out,
            sim_replications=args.sim_replications,
            policy=args.policy,
            duration_override=args.duration,
        )
    )
    print(format_result(result), file=sys.stderr if result.exit_code else sys.stdout)
    return result.exit_code


def _load(args: argparse.Namespace) -> int:
    from loadtests.runner import load_main

    return load_main(args.load_args)


def _nightly(args: argparse.Namespace) -> int:
    from chaos.nightly import nightly_main

    return nightly_main([args.suite])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslab",
        description="Retail Resilience Lab: predict, then verify, how a retail service "
        "behaves when its dependencies fail.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    policy = commands.add_parser("policy", help="inspect a resilience policy")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    explain = policy_commands.add_parser(
        "explain", help="score, level and features for every combination of open breakers"
    )
    explain.add_argument("--policy", help="policy file (default: policies/default.yaml)")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.add_argument(
        "--diff", action="store_true", help="show where it differs from the default"
    )
    explain.add_argument("-v", "--verbose", action="store_true", help="list the features per row")
    explain.set_defaults(handler=_policy_explain)

    scenario = commands.add_parser("scenario", help="scenario files")
    scenario_commands = scenario.add_subparsers(dest="scenario_command", required=True)
    validate = scenario_commands.add_parser("validate", help="check scenario files")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(handler=_scenario_validate)

    simulate = commands.add_parser(
        "simulate", help="predict a scenario with the SimPy model (replications, intervals)"
    )
    simulate.add_argument("scenario", help="scenario file or catalog name")
    simulate.add_argument("--replications", type=int, default=10)
    simulate.add_argument("--jobs", type=int, default=None, help="parallel processes")
    simulate.add_argument("--policy", help="policy file (default: policies/default.yaml)")
    simulate.add_argument("--calibration", help="calibration.json from `reslab calibrate`")
    simulate.add_argument("--out", help="folder for run folders (default: runs/)")
    simulate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(handler=_simulate)

    calibrate = commands.add_parser(
        "calibrate", help="fit the simulator's parameters to a measured run folder"
    )
    calibrate.add_argument("run_dir", type=Path)
    calibrate.add_argument("--out", type=Path, help="where to write calibration.json")
    calibrate.set_defaults(handler=_calibrate)

    campaign = commands.add_parser(
        "campaign", help="run a scenario for real against staging, predict it, compare"
    )
    campaign.add_argument("scenario", help="scenario file or catalog name")
    campaign.add_argument("--replications", type=int, default=1, help="measured runs")
    campaign.add_argument("--workers", type=int, default=0, help="Locust worker processes")
    campaign.add_argument("--no-predict", action="store_true", help="measure only")
    campaign.add_argument("--staging", type=Path, help="staging.json of a running stack")
    campaign.add_argument("--out", type=Path, default=Path("runs"), help="run folders' root")
    campaign.add_argument("--sim-replications", type=int, default=10)
    campaign.add_argument("--policy", type=Path, help="policy file for the prediction")
    campaign.add_argument("--duration", type=float, help="override the load's length (s)")
    campaign.set_defaults(handler=_campaign)

    load = commands.add_parser(
        "load",
        help="run a scenario's load only (Locust, headless), recording every request",
        add_help=False,
    )
    load.add_argument("load_args", nargs=argparse.REMAINDER, help="see `reslab load --help`")
    load.set_defaults(handler=_load)

    nightly = commands.add_parser("nightly", help="a suite of campaigns → JUnit XML + JSON")
    nightly.add_argument("suite", help="suite YAML file")
    nightly.set_defaults(handler=_nightly)

    chaos = commands.add_parser(
        "chaos", help="faults left in Toxiproxy: list them, or clear every toxic and proxy"
    )
    chaos.add_argument("chaos_action", choices=["list", "clear"])
    chaos.add_argument(
        "chaos_args",
        nargs=argparse.REMAINDER,
        help="--staging FILE | --toxiproxy URL, --lock FILE, --json",
    )
    chaos.set_defaults(handler=_chaos)

    staging = commands.add_parser("staging", help="the local staging stack")
    staging.add_argument("staging_action", choices=["up", "down", "status", "env"])
    staging.add_argument("staging_args", nargs=argparse.REMAINDER)
    staging.set_defaults(handler=_staging)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["load"]:
        # The load runner owns its options (and its --help): pass them through untouched.
        from loadtests.runner import load_main

        return load_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
