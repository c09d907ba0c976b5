"""``python -m pipelines <command> --spec RUN_SPEC``: the Makefile's pipeline targets.

Commands: ``local`` (make run; with ``--image``, make run-containers), ``compile`` (make
pipeline-compile), ``run`` (make pipeline-run), ``schedule`` / ``unschedule`` (make pipeline-schedule /
pipeline-unschedule).
Exit codes as ``bpnet``: 0 success, 1 the work or the server failed, 2 a bad run spec, step spec or
setting ($BPNET_MODEL_KEY unset included); a bug is logged with its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bpnet.overrides import RunOverrides

log = logging.getLogger("pipelines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description="Run, compile, submit or schedule "
                                     "the BodyPoseNet Kubeflow pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in [("local", "run the whole DAG on this machine through kfp.local"),
                       ("compile", "write the compiled pipeline YAML"),
                       ("run", "upload the pipeline and start a run; print its URL"),
                       ("schedule", "create (or replace) the recurring run from the spec's schedule"),
                       ("unschedule", "delete the spec's recurring run")]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--spec", required=True, help="run spec (YAML), e.g. specs/pipeline/cluster.yaml")
        if name != "unschedule":
            p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="overrides",
                           help="a typed run parameter overriding the specs (repeatable): "
                           + "; ".join(f"{n} ({f.description})" for n, f in RunOverrides.model_fields.items()))
        if name == "local":
            p.add_argument("--image", help="run every step in its own container of this image (make "
                           "run-containers: bpnet-cpu:local), with the dataset and the release on a local S3 "
                           "server; default: every step as a process of this Python environment (make run)")
        if name in ("compile", "run", "schedule"):
            p.add_argument("--build_dir", default="build", help="where compiled YAML is written (default: build)")
        p.add_argument("-l", "--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from pipelines import submit
    from pipelines.arguments import load_run_spec, parse_overrides, pipeline_arguments

    spec = load_run_spec(args.spec)
    overrides = parse_overrides(getattr(args, "overrides", []))
    if args.command == "local":
        from pipelines.local_run import format_summary, run_local

        print(format_summary(run_local(args.spec, overrides, args.image)))
    elif args.command == "compile":
        path = submit.compile_pipeline(spec, f"{args.build_dir}/{spec.kfp.pipeline_name}.yaml",
                                       arguments=pipeline_arguments(spec, overrides))
        print(f"compiled pipeline: {path}")
    elif args.command == "run":
        print(f"run: {submit.submit_run(spec, args.build_dir, overrides)}")
    elif args.command == "schedule":
        url = submit.schedule(spec, args.build_dir, overrides)
        print(f"recurring run '{spec.schedule.name}' (cron {spec.schedule.cron}): {url}")
    else:
        print(f"removed {submit.unschedule(spec)} recurring run(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from bpnet.errors import BpnetError
    from bpnet.specs import SpecError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipelines.local_run import Interrupted

    try:
        return _dispatch(args)
    except Interrupted as exc:  # make run stopped by SIGINT/SIGTERM; its processes are already gone
        log.error("%s", exc)
        return exc.exit_code
    except SpecError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    except ApiException as exc:
        log.error("Kubeflow Pipelines said %s %s: %s", exc.status, exc.reason, (exc.body or "")[:500])
        return 1
    except HTTPError as exc:
        log.error("cannot reach Kubeflow Pipelines: %s: %s", type(exc).__name__, str(exc)[:300])
        return 1
    except BpnetError as exc:  # SubmitError included
        log.error("%s", exc)
        return exc.exit_code
    except OSError as exc:  # a path given cannot be read or written; the OS's message names it
        log.error("%s", exc)
        return 1
    except Exception:  # anything else is a bug: its traceback is what a report needs
        log.exception("python -m pipelines %s failed (a bug, not a data or settings problem)", args.command)
        return 1


if __name__ == "__main__":
    sys.exit(main())
