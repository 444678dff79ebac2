"""``durableflow runs start | cancel | resume | delete``: acting on runs."""

from __future__ import annotations

import argparse
from typing import Any

from durableflow.cli.common import (
    EXIT_ERROR,
    EXIT_NO,
    EXIT_OK,
    add_connection_options,
    fail,
    noun,
    open_flow,
    parse_json_argument,
    print_json,
    visible,
)
from durableflow.cli.runs_cmd import RUNS_HELP
from durableflow.errors import RunActionRefused, RunNotFound, WorkflowFailed


def register(subparsers: Any) -> None:
    verbs = noun(subparsers, "runs", RUNS_HELP)

    start = verbs.add_parser(
        "start",
        help="start a run of a workflow of the app",
        description="Start a run of WORKFLOW (needs the app: -a package.module:flow) and print "
        "its id; --wait also waits for its result.",
    )
    start.add_argument("workflow", metavar="WORKFLOW")
    add_connection_options(start, app_required=True)
    start.add_argument("--input", default=None, metavar="JSON", help="the run's input, as JSON")
    start.add_argument("--queue", help="queue (default: default)")
    start.add_argument("--idempotency-key", help="the same key always returns the same run")
    start.add_argument("--correlation-id", help="recorded on the run and its log records")
    start.add_argument("--priority", type=int, default=0, help="higher is claimed first")
    start.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cancel the run (reason timeout) if it has not finished this many seconds from now",
    )
    start.add_argument(
        "--delay", type=float, default=0.0, metavar="SECONDS", help="due only this much later"
    )
    start.add_argument("--wait", action="store_true", help="wait for the run's result")
    start.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after this many seconds"
    )
    start.set_defaults(func=start_command)

    for name, handler, text in (
        ("cancel", cancel_command, "cancel runs that have not finished"),
        ("resume", resume_command, "queue failed, cancelled, dead or blocked runs again"),
        ("delete", delete_command, "delete finished runs and everything recorded for them"),
    ):
        action = verbs.add_parser(name, help=text, description=text)
        action.add_argument("run_ids", metavar="ID", nargs="+")
        add_connection_options(action)
        action.set_defaults(func=handler)
        if name == "cancel":
            action.add_argument("--reason", default="cancelled by an operator")
        elif name == "resume":
            action.add_argument(
                "--force",
                action="store_true",
                help="resume a blocked run even if no live worker runs its recorded code",
            )
        else:
            action.add_argument("--yes", action="store_true", help="really delete (required)")


async def start_command(args: argparse.Namespace) -> int:
    value = parse_json_argument(args.input, "--input") if args.input is not None else None
    async with open_flow(args) as flow:
        run_id = await flow.start(
            args.workflow,
            input=value,
            queue=args.queue,
            idempotency_key=args.idempotency_key,
            correlation_id=args.correlation_id,
            priority=args.priority,
            timeout=args.deadline,
            delay=args.delay,
        )
        if not args.wait:
            if args.json:
                print_json({"run_id": run_id})
            else:
                print(run_id)
            return EXIT_OK
        try:
            await flow.result(run_id, timeout=args.timeout)
        except WorkflowFailed as exc:
            detail = await flow.describe_run(run_id)
            if args.json:
                print_json({"run_id": run_id, "status": detail.status, "error": detail.error})
            else:
                print(run_id)
                fail(str(exc))
            return EXIT_NO
        detail = await flow.describe_run(run_id)
    if args.json:
        print_json({"run_id": run_id, "status": detail.status, "output": detail.output})
    else:
        print(run_id)
        print_json(detail.output)
    return EXIT_OK


async def _each(args: argparse.Namespace, act: Any) -> int:
    """Apply ``act(flow, run_id)`` to each id; report each; exit 1 if any was not done."""
    results: list[dict[str, Any]] = []
    async with open_flow(args) as flow:
        for run_id in args.run_ids:
            try:
                done, message = await act(flow, run_id)
            except (RunNotFound, RunActionRefused) as exc:
                done, message = False, str(exc)
            results.append({"run_id": run_id, "ok": done, "message": message})
    if args.json:
        print_json(results)
    else:
        for result in results:
            if result["ok"]:
                print(f"{result['run_id']}: {visible(result['message'])}")
            else:
                fail(f"{result['run_id']}: {result['message']}")
    return EXIT_OK if all(result["ok"] for result in results) else EXIT_NO


async def cancel_command(args: argparse.Namespace) -> int:
    async def cancel(flow: Any, run_id: str) -> tuple[bool, str]:
        if await flow.cancel(run_id, args.reason):
            return True, "cancelled"
        status = (await flow.describe_run(run_id)).status
        return False, f"not cancelled: it is already {status}"

    return await _each(args, cancel)


async def resume_command(args: argparse.Namespace) -> int:
    async def resume(flow: Any, run_id: str) -> tuple[bool, str]:
        await flow.resume(run_id, force=args.force)
        return True, "queued again"

    return await _each(args, resume)


async def delete_command(args: argparse.Namespace) -> int:
    if not args.yes:
        fail("runs delete removes runs and their history for good; pass --yes to confirm")
        return EXIT_ERROR

    async def delete(flow: Any, run_id: str) -> tuple[bool, str]:
        await flow.delete(run_id)
        return True, "deleted"

    return await _each(args, delete)
