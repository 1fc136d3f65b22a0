"""`dsc serve FILE.ds --target T`: one prefill step and one decode step of a service compiled
and simulated, composed into the figures operators quote (runtime/serving.py)."""
from __future__ import annotations

import json
import sys

from compiler.cli.output import Progress, write_outputs
from compiler.errors import DscError


def add_serve_command(sub, sets_help: str) -> None:
    p = sub.add_parser("serve", help="simulate a service (a prefill and a decode cluster) and "
                       "report TTFT, TPOT, throughput, nodes and cost")
    p.add_argument("model", help="a .ds file with a serve description")
    p.add_argument("--target", required=True, help="builtin target name or a .toml file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=sets_help)
    p.add_argument("--json", metavar="FILE", help="write the JSON report (- for stdout)")
    p.add_argument("--html", metavar="FILE", help="write the serving report as HTML")
    p.add_argument("--ignore-capacity", action="store_true",
                   help="simulate a step whose weights, caches or activations do not fit")
    p.set_defaults(func=cmd_serve, outputs=(("--json", "json"), ("--html", "html")))


def cmd_serve(args) -> None:
    from compiler.cli.main import _report_notes, _sets
    from compiler.frontend import load_model
    from compiler.frontend.serve import load_service
    from compiler.stats import stats_of_model
    from compiler.tpot_bound import tpot_bound
    from runtime.report.deployment import tokens_per_step
    from runtime.report.serving import serving_html, serving_text
    from runtime.serving import service_dict
    service = load_service(args.model, _sets(args.set))
    runs = {}
    for phase in (service.prefill, service.decode):
        runs[phase.name], compiled = _step(service, phase, args, _report_notes)
    decode_graph = load_model(service.decode.model, service.phase_sizes(service.decode))
    dep = runs["decode"].program.deployment
    tokens = tokens_per_step(runs["decode"]) * dep.replicas / dep.devices
    try:
        bound = tpot_bound(decode_graph, compiled.graph, compiled.target, tokens)
    except DscError:
        bound = None                     # a dense model or one device: no all-to-all to bound
    sizes = service.phase_sizes(service.decode)      # KV bytes a token adds (a window: none)
    kv = stats_of_model(service.decode.model, sizes).kv_cache_bytes_per_token
    report = service_dict(service, runs["prefill"], runs["decode"], kv, bound)
    files = []
    if args.json:
        files.append((args.json, json.dumps(report, indent=1) + "\n"))
    if args.html:
        files.append((args.html, serving_html(report)))
    write_outputs(files)
    if args.json != "-":
        sys.stdout.write(serving_text(report))


def _step(service, phase, args, report_notes):
    from compiler.driver import compile_model
    from runtime.interpreter import run_program
    try:
        compiled = compile_model(phase.model, args.target, service.phase_sizes(phase),
                                 devices=phase.devices, plan=phase.plan, place=phase.place,
                                 check_fit=not args.ignore_capacity)
    except DscError as err:
        raise err.with_note(f"in the {phase.name} step of serve {service.name} "
                            f"({phase.model})") from None
    report_notes(compiled)
    with Progress(f"simulating the {phase.name} step") as progress:
        return run_program(compiled.program, compiled.target, progress=progress.update), \
            compiled
