"""``nni-bio search CONFIG.yml``: run an NNI experiment, wait for it, print the best architecture."""

from __future__ import annotations

import argparse
import json

from nni_bio.candidates import parse_candidate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="launch an nnictl experiment, follow it, print the best architecture")
    parser.add_argument("config", help="experiment YAML, e.g. examples/digits.yml")
    parser.add_argument("--port", type=int, default=None, help="web UI / REST port (default: first free from 8080)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the experiment")
    parser.add_argument("--stop-when-done", action="store_true", help="stop the experiment (and its web UI) at the end")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--update-space", action="store_true",
                        help="rewrite the config's searchSpaceFile when it is not the space its trialCommand builds "
                             "(e.g. after adding a plugin rule to --space-args), instead of refusing to start")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from nni_bio import experiment as ex

    config = ex.load_config(args.config)
    # Before launching: the search-space file must be the space the trials build (same rules), or
    # every trial would fail. Refuses with the export-space command, or rewrites it (--update-space).
    if ex.check_search_space(args.config, config, update=getattr(args, "update_space", False)) == "updated":
        print(f"updated {config['searchSpaceFile']} to the space the trial command builds")
    port = args.port or ex.free_port()
    ex.create(args.config, port)
    client = ex.RestClient(port)
    exp_id = client.experiment_id()
    print(f"experiment {exp_id} started: {config.get('experimentName', '')}")
    print(f"web UI: http://127.0.0.1:{port}   (stop it with: nnictl stop {exp_id})", flush=True)
    try:
        trials = ex.wait(client, config.get("maxTrialNumber"), args.timeout, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the experiment goes on. Stop it with: nnictl stop {exp_id}")
        return 130
    succeeded = sum(t.status == "SUCCEEDED" for t in trials)
    print(f"{len(trials)} trials: {succeeded} succeeded, {sum(t.status == 'FAILED' for t in trials)} failed")
    best = ex.best_trial(trials)
    if best is None:
        print("no trial succeeded; look at the trial logs in the web UI (Trials detail -> Log) or with "
              f"`nnictl log trial {exp_id}`")
        code = 1
    else:
        # A one-shot trial (python -m nni_bio.oneshot) reports its derived architecture as the final
        # metric "sample" (a JSON string), and says in "default_metric" what its default is; its
        # parameters only name the strategy.
        oneshot = "sample" in (best.final or {})
        if oneshot:
            from nni_bio.oneshot import describe_final

            first, *rest = describe_final(best.final)
            print(f"best trial {best.id}: {first}", *rest, sep="\n")
        else:
            print(f"best trial {best.id}: validation accuracy {best.score:.4f}")
        architecture = json.loads(best.final["sample"]) if oneshot else best.parameters
        if architecture is not best.parameters:
            print(f"derived by one-shot strategy {best.final.get('strategy', '?')} (parameters: {best.parameters})")
        print("architecture (slot: op @ learning rule):")
        for label, value in sorted(architecture.items()):
            op, rule = parse_candidate(str(ex.unwrap_choice(value)))
            print(f"  {label:<24} {op}" + (f"  @ {rule}" if rule else ""))
        code = 0
    if args.stop_when_done:
        ex.stop(exp_id)
        print(f"experiment {exp_id} stopped")
    else:
        print(f"the web UI stays up at http://127.0.0.1:{port}; stop it with: nnictl stop {exp_id}")
    return code
