"""The `dsc` command line.

Exit status: 0 on success, 1 on bad input (one message, no traceback), 2 on bad usage
(argparse). Output files are written whole or not at all.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from compiler.cli.output import Progress, check_outputs, write_output, write_outputs
from compiler.cli.serve import add_serve_command
from compiler.errors import DscError
from compiler.passes import PASS_NAMES
from isa.errors import ListingError
from isa.formats import FormatError
from isa.target_loader import TargetError
from runtime.errors import SimulationError


def _sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise DscError(f"--set expects NAME=VALUE, got '{pair}'",
                           expected="e.g. --set batch=256 or --set weights=mxfp4")
        out[name.strip()] = value.strip()
    return out


def _target(args):
    """The target of a command: --target with its --target-set keys over the file's."""
    from isa.target_loader import load_target, parse_override
    return load_target(args.target, dict(parse_override(o) for o in args.target_set),
                       peak=getattr(args, "peak", False))


class _Version(argparse.Action):
    """--version, looked up only when asked for (it reads the installed metadata)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print dsc's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from compiler.version import dsc_version
        print(f"dsc {dsc_version()}")
        parser.exit()


def cmd_compile(args) -> None:
    from compiler.driver import compile_model
    from compiler.ir.graph import Graph
    from compiler.ir.text import print_graph
    from compiler.passes.fuse import kernel_stats
    from isa.listing import render
    dumps, counts = [], {}

    def after(name, result):                    # a graph, or a program after plan and place
        if name in args.print_after:
            text = print_graph(result) if isinstance(result, Graph) else render(result)
            dumps.append(f"# after {name}\n" + text)
        if args.stats and name in ("precision", "fuse"):
            counts[name] = kernel_stats(result)

    with Progress("compiling") as progress:
        compiled = compile_model(args.model, _target(args), _sets(args.set), after=after,
                                 die_mode=args.die_mode, clock=progress.stage,
                                 **_deployment(args))
    _report_notes(compiled)
    if args.stats:
        (k0, b0), (k1, b1) = counts["precision"], counts["fuse"]
        sys.stdout.write(f"kernels:        {k0:>8,d} before fusion, {k1:>8,d} after\n"
                         f"off-chip bytes: {b0 / 1e9:>8,.2f} GB before, {b1 / 1e9:>8,.2f} GB after "
                         "(values crossing kernel boundaries)\n")
        if args.output == "-":
            return
    if dumps:
        write_output(args.output, "".join(dumps))
        return
    text = print_graph(compiled.graph) if args.emit == "ir" else render(compiled.program)
    write_output(args.output, text)


def _report_notes(compiled) -> None:
    """The passes' notes, on stderr; notes repeated across layers are shown once with their
    count."""
    from runtime.report.summary import layer_pattern
    counts: dict[str, int] = {}
    for note in compiled.notes:
        key = layer_pattern(note)
        counts[key] = counts.get(key, 0) + 1
    for note, n in counts.items():
        print(f"note: {note}" + (f" ({n} times)" if n > 1 else ""), file=sys.stderr)


def cmd_run(args) -> None:
    from runtime.interpreter import run_program
    from runtime.report.json_report import report_dict
    from runtime.report.text import summary_text
    compiled = None                   # functional mode: the model compared with
    if args.functional:
        program, target, compiled = _functional_program(args)
    else:
        program, target = _program_to_run(args)
    record = bool(args.trace or args.html)
    with Progress("simulating") as progress:
        run = run_program(program, target, progress=progress.update, record=record)
    functional = None
    if compiled is not None:
        functional = _run_functional(program, compiled, args.seed)
    files = []                        # rendered in full before any is written
    if args.json:
        report = report_dict(run, _provenance(args))
        if functional is not None:
            report["functional"] = functional.to_dict()
        files.append((args.json, json.dumps(report, indent=1) + "\n"))
    if args.trace:
        from runtime.report.trace import trace_json
        files.append((args.trace, trace_json(run)))
    if args.html:
        from runtime.report.html import html_report
        files.append((args.html, html_report(run, _provenance(args))))
    write_outputs(files)
    if args.json != "-":
        sys.stdout.write(summary_text(run))
        if functional is not None:
            sys.stdout.write("\n" + functional.text())


def _provenance(args) -> dict:
    """What produced a report: dsc's version, the command line (less its output files), the
    target file (a builtin's name, or the path given) with the hash of its bytes and the keys
    overridden."""
    import shlex
    from compiler.version import dsc_version
    from isa.target_loader import builtin_names, parse_override, target_sha256
    return {"dsc_version": dsc_version(), "command": shlex.join(["dsc", *_inputs(args)]),
            "target_file": args.target + (" (builtin)" if args.target in builtin_names() else ""),
            "target_sha256": target_sha256(args.target),
            "target_overrides": dict(parse_override(o) for o in args.target_set)}


def _inputs(args) -> list[str]:
    """The command line less its output options (--json FILE, ...): what the run depends on,
    so that a report is the same wherever it is written."""
    outputs = {option for option, _ in getattr(args, "outputs", ())}
    outputs |= {"--output"} if "-o" in outputs else set()
    kept, skip = [], False
    for word in args.argv:
        if skip:
            skip = False
        elif word in outputs:
            skip = True
        elif word.split("=", 1)[0] not in outputs:
            kept.append(word)
    return kept


def _functional_program(args):
    """--functional: the program to run, its target, and the compiled model its outputs are
    compared with (the model itself, or with a listing, the model named by --model compiled
    with the listing's sizes)."""
    from compiler.driver import compile_model
    from isa.listing_file import is_listing
    from runtime.functional import FunctionalError, check_size
    if is_listing(args.model):
        if args.reference is None:
            raise DscError("--functional on a listing needs the model it was compiled from, "
                           "to compare with its reference evaluation",
                           expected=f"dsc run {args.model} --target {args.target} --functional "
                                    "--model MODEL.ds")
        from runtime.functional.listing import reference_sizes
        program, target = _program_to_run(args, reference=True)
        compiled = compile_model(args.reference, target,       # every node: the
                                 {**reference_sizes(program), **_sets(args.set)},
                                 die_mode=args.die_mode, unroll=True,   # reference needs them
                                 peak=args.peak)
    else:
        if args.reference is not None:
            raise DscError("--model names the model of a listing run with --functional; "
                           f"{args.model} is a model itself")
        compiled = compile_model(args.model, _target(args), _sets(args.set),
                                 die_mode=args.die_mode, unroll=True, **_deployment(args))
        program, target = compiled.program, compiled.target
    if program.deployment.devices > 1:
        raise DscError(f"--functional runs one device's program, and this one exchanges "
                       f"data with {program.deployment.devices - 1} other devices",
                       expected="a run without --devices (functional mode checks numerics; "
                                "deployments are timed without it)")
    try:
        check_size(program)
    except FunctionalError as err:
        raise DscError(str(err)) from None
    return program, target, compiled


def _run_functional(program, compiled, seed: int):
    import numpy as np
    from compiler.cli.functional import check_listing, check_numerics
    from runtime.functional import FunctionalError
    from runtime.functional.storage import InstructionFailed
    try:
        # The simulated formats overflow and divide as IEEE arithmetic does (an exp that
        # overflows is inf in the result, and the error figures report it): not a warning.
        with np.errstate(all="ignore"):
            if program is compiled.program:
                return check_numerics(compiled, seed)
            return check_listing(program, compiled, seed)
    except InstructionFailed as err:
        if program is compiled.program:         # dsc's own program: a bug in dsc, say so
            raise err.__cause__ from None
        raise DscError(f"functional mode: {err}") from None
    except FunctionalError as err:
        raise DscError(f"functional mode: {err}") from None


def _deployment(args) -> dict:
    return {"devices": args.devices, "plan": args.plan,
            "check_fit": not getattr(args, "ignore_capacity", False),
            "place": ",".join(args.place) or None, "peak": args.peak}


def _program_to_run(args, reference: bool = False):
    """What `dsc run` simulates: a listing (.lst, .isa, or a `; dsc listing` first line) read
    back and checked against the target, else the model compiled for it. With `reference`
    (a listing's functional run) --set applies to the model it is compared with."""
    from isa.listing_file import is_listing
    if is_listing(args.model):
        from isa.assembler import parse_listing, retarget_warning
        if (args.set and not reference) or args.devices is not None or args.plan is not None \
                or args.ignore_capacity or args.place:
            raise DscError("--set, --devices, --plan, --place and --ignore-capacity do not apply "
                           "to a listing: it is "
                           "compiled for its sizes, deployment and placement (edit the listing, "
                           "or compile the model with those options)")
        if args.reference is not None and not reference:
            raise DscError("--model applies to a listing run with --functional")
        target = _target(args)
        try:
            with open(args.model, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise DscError(f"cannot read listing '{args.model}': {exc.strerror}") from None
        except UnicodeDecodeError:
            raise DscError(f"cannot read listing '{args.model}': not UTF-8 text") from None
        program = parse_listing(text, args.model, target)
        warning = retarget_warning(program, target, args.model)
        if warning:
            print(warning, file=sys.stderr)
        from isa.deployment import DeploymentError, reserve_cores
        try:
            return program, reserve_cores(target, program.deployment)   # as it was compiled
        except DeploymentError as err:
            raise DscError(f"{args.model}: {err}") from None
    from compiler.driver import compile_model
    with Progress("compiling") as progress:
        compiled = compile_model(args.model, _target(args), _sets(args.set),
                                 die_mode=args.die_mode, clock=progress.stage,
                                 **_deployment(args))
    _report_notes(compiled)
    return compiled.program, compiled.target


def cmd_isa(args) -> None:
    from isa.reference import isa_reference
    from isa.target_loader import load_target
    sys.stdout.write(isa_reference(load_target(args.target)))


def cmd_stats(args) -> None:
    from compiler.stats import stats_of_model
    stats = stats_of_model(args.model, _sets(args.set))
    if args.json:
        sys.stdout.write(json.dumps(stats.contract(), indent=1) + "\n")
        return
    rows = [("parameters", f"{stats.params:,}"),
            ("active parameters per token", f"{stats.active_params:,}"),
            ("weight bytes", f"{stats.weight_bytes:,}"),
            ("KV-cache bytes per token", f"{stats.kv_cache_bytes_per_token:,}"),
            ("FLOPs per token", f"{stats.flops_per_token:,.4g} ({stats.tokens} tokens per step)")]
    for name, value in rows:
        print(f"{name:<30} {value}")


def cmd_import(args) -> None:
    import tempfile
    from pathlib import Path

    from compiler.frontend import load_model
    from compiler.importer import import_config
    name = Path(args.output).stem if args.output != "-" else None
    text = import_config(args.config, name)
    with tempfile.TemporaryDirectory() as tmp:      # the text must load before it is written
        check = Path(tmp) / "imported.ds"
        check.write_text(text)
        load_model(str(check))
    write_output(args.output, text)


def cmd_targets(args) -> None:
    from isa.target_loader import builtin_names, load_target, resolve_target_path
    from isa.target_reference import (SUMMARY_HEADER, derived_lines, render_reference,
                                      summary_row)
    if args.action == "schema":
        sys.stdout.write(render_reference())
        return
    if args.action in ("show", "check"):
        if not args.name:
            raise DscError(f"'dsc targets {args.action}' needs a target name or file")
        target = load_target(args.name)
        if args.action == "check":
            print(f"{args.name}: ok ({target.name})")
            return
        text = resolve_target_path(args.name).read_text()
        derived = [f"# {line}" for line in derived_lines(target)]
        sys.stdout.write(text.rstrip("\n") + "\n\n# -- derived by the loader --\n"
                         + "\n".join(derived) + "\n")
        return
    rows = [SUMMARY_HEADER] + [summary_row(load_target(name)) for name in builtin_names()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_HEADER) - 1)]
    for row in rows:
        cells = [c.rjust(w) if 1 < i < 4 else c.ljust(w) for i, (c, w) in
                 enumerate(zip(row, widths))]
        print("  ".join(cells + [row[-1]]))


def cmd_diff(args) -> None:
    from runtime.report.diff import compare, diff_text
    a, b = _json_report(args.a), _json_report(args.b)
    if args.html:
        from runtime.report.diff_html import diff_html
        write_output(args.html, diff_html(compare(a, b, args.a, args.b)))
        if args.html == "-":
            return
    sys.stdout.write(diff_text(a, b, args.a, args.b))


def _json_report(path: str) -> dict:
    """A JSON report of dsc run, read for dsc diff."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise DscError(f"cannot read '{path}': {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DscError(f"{path}: not a JSON file ({exc})",
                       expected="the JSON report of dsc run --json FILE") from None
    needed = ("model", "target", "total_cycles", "time_s", "kernels")
    missing = [k for k in needed if not isinstance(data, dict) or k not in data]
    if missing:
        raise DscError(f"{path}: not a dsc run report (no {', '.join(missing)})",
                       expected="the JSON report of dsc run --json FILE")
    return data


def cmd_validate(args) -> None:
    from compiler.cli.validate import table, validate
    target, rows = validate(args.target, args.peak)
    if args.json:
        write_output(args.json, json.dumps({"target": target.name,
                                            "figures": "sustained" if target.sustained
                                            else "peak",
                                            "rows": [r.to_dict() for r in rows]}, indent=1)
                     + "\n")
    if args.json != "-":
        sys.stdout.write(table(target, rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsc", description="Compile .ds models to a virtual "
                                     "accelerator ISA and simulate their schedules.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    def model_command(name, help_text, func):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model", help="a .ds model file")
        p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="override a top-level integer or a precision role (weights=mxfp4)")
        p.set_defaults(func=func)
        return p

    def deployment(p):
        p.add_argument("--devices", type=int, metavar="N",
                       help="run on N devices (the target's [system] joins them); the model's "
                       "sizes are one data-parallel replica's")
        p.add_argument("--plan", metavar="PLAN", help="how the model is spread: attn=dp|tpN, "
                       "ffn=dp|tpN, moe=ep|dp|tpN, mb=1|2, a2a=direct|node, "
                       "launch=stream|graph|dependent (default attn=dp,moe=ep; launch=graph "
                       "for a decode step, stream otherwise)")
        p.add_argument("--ignore-capacity", action="store_true",
                       help="compile even if the weights, caches and activations do not fit a "
                       "device's memory (a what-if: the time as if they did)")
        p.add_argument("--peak", action="store_true",
                       help="run on the target's datasheet peaks (clock, bandwidths) instead of "
                       "its sustained figures (the clock under matrix load, achievable "
                       "bandwidths measured by others, as its file cites them)")
        p.add_argument("--place", action="append", default=[], metavar="ROLE=MEMORY",
                       help="keep a role's tensors (weights, kv_cache, activations) in a memory "
                       "of the target, e.g. kv_cache=host (`dsc targets show T` lists them)")

    def target_option(p):
        p.add_argument("--target", required=True, help="builtin target name or a .toml file")
        p.add_argument("--target-set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the target, validated as the file's are (e.g. "
                       "memory.bandwidth_gbs=6000; `dsc targets schema` lists the keys)")

    def die_mode(p):
        p.add_argument("--die-mode", choices=("uma", "numa"), default="uma",
                       help="multi-die chips: one interleaved memory (uma, default), or work and "
                       "data placed per die with explicit die-to-die transfers (numa)")

    p = model_command("compile", "compile a model and print its ISA listing or IR", cmd_compile)
    target_option(p)
    p.add_argument("--emit", choices=("ir", "isa"), default="isa")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.set_defaults(outputs=(("-o", "output"),))
    p.add_argument("--print-after", action="append", default=[], metavar="PASS",
                   choices=PASS_NAMES,
                   help="print the IR after a graph pass, the listing after a program pass; "
                   f"passes: {', '.join(PASS_NAMES)}")
    p.add_argument("--stats", action="store_true",
                   help="print kernels and off-chip bytes before and after fusion")
    die_mode(p)
    deployment(p)
    p = model_command("run", "compile and simulate, or simulate a listing (FILE.lst); print a "
                      "summary", cmd_run)
    target_option(p)
    p.add_argument("--json", metavar="FILE", help="write the JSON report (- for stdout)")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace (Perfetto, "
                   "chrome://tracing): one track per unit, dependency arrows, bandwidth")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report: summary, "
                   "kernel table, timeline, roofline, top stalls")
    p.add_argument("--functional", action="store_true",
                   help="also execute the program with numpy on random inputs and report its "
                        "error against the model's float32 reference (small models)")
    p.add_argument("--seed", type=int, default=0, help="seed of the functional run's inputs")
    p.add_argument("--model", dest="reference", metavar="MODEL.ds",
                   help="with --functional on a listing: the model it was compiled from, whose "
                        "reference its outputs are compared with (compiled with the listing's "
                        "sizes; --set adds overrides such as precision roles)")
    p.set_defaults(outputs=(("--json", "json"), ("--trace", "trace"), ("--html", "html")))
    die_mode(p)
    deployment(p)
    p = model_command("stats", "parameters, active parameters, FLOPs and KV bytes per token",
                      cmd_stats)
    p.add_argument("--json", action="store_true", help="print the contract JSON")
    p = sub.add_parser("import", help="write a .ds model from a Hugging Face config.json "
                       "(llama, mistral, qwen2, qwen3, qwen2_moe, qwen3_moe, mixtral, "
                       "deepseek_v2, deepseek_v3, deepseek_v32, deepseek_v4)")
    p.add_argument("config", help="a local config.json")
    p.add_argument("-o", "--output", default="-", help="the .ds file (default: stdout); its "
                   "name is the model's")
    p.set_defaults(func=cmd_import, outputs=(("-o", "output"),))
    p = sub.add_parser("targets", help="list builtin targets; show or check one; print the "
                       "target file reference")
    p.add_argument("action", nargs="?", choices=("show", "check", "schema"),
                   help="show T: the file and its derived figures; check FILE: validate it; "
                        "schema: the reference of every key (default: list builtins)")
    p.add_argument("name", nargs="?", help="builtin target name or a .toml file")
    p.set_defaults(func=cmd_targets)
    from compiler.cli.sweep import add_parser as add_sweep
    add_sweep(sub)
    p = sub.add_parser("diff", help="compare two runs' JSON reports (dsc run --json): per-kernel "
                       "and per-layer deltas, what moved the bound, the top three causes")
    p.add_argument("a", metavar="A.json")
    p.add_argument("b", metavar="B.json")
    p.add_argument("--html", metavar="FILE", help="also write the comparison as an HTML page "
                   "(charts of time per block and of the kernels that moved most)")
    p.set_defaults(func=cmd_diff, outputs=[("--html", "html")])
    p = sub.add_parser("validate", help="run the target's microbenchmarks (streaming copy, "
                       "GEMMs, attention, launch gap, link ping-pong and bulk transfer) in "
                       "simulation and compare them with the measurements its file records")
    p.add_argument("target", help="builtin target name or a .toml file")
    p.add_argument("--peak", action="store_true", help="simulate on the datasheet peaks")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON (- for stdout)")
    p.set_defaults(func=cmd_validate, outputs=(("--json", "json"),))
    p = sub.add_parser("isa", help="print the instruction set reference for a target")
    p.add_argument("target", help="builtin target name or a .toml file")
    p.set_defaults(func=cmd_isa)
    add_serve_command(sub, "a setting (prompt=2048, request_rate=50) or a phase's deploy key "
                      "or model size (decode.batch=32, prefill.devices=64)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Output options are declared per command (`outputs`: option, attribute), so every
        # output path is checked before the work starts.
        check_outputs([(option, getattr(args, dest)) for option, dest in
                       getattr(args, "outputs", ()) if getattr(args, dest)])
        args.func(args)
    except (DscError, TargetError, FormatError, ListingError, SimulationError) as err:
        print(str(err), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except Exception as err:   # a bug: say so plainly; DSC_DEBUG=1 shows the traceback
        if os.environ.get("DSC_DEBUG"):
            raise
        print(f"dsc: internal error: {type(err).__name__}: {err}\n"
              "(this is a bug in dsc; rerun with DSC_DEBUG=1 for details)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
