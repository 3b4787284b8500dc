"""Command line: ``python -m harness {list,run,report,compare,baseline,validate,lm-eval,ab}``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .env import data_dir

SUITES_DIR = data_dir("suites")


def _suite_path(arg: str) -> Path:
    """A path, or a bare suite name looked up in the repository's suites/ directory."""
    path = Path(arg)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    candidate = SUITES_DIR / f"{arg}.yaml"
    return candidate if candidate.exists() else path


def cmd_list(args) -> int:
    import architectures

    if args.what == "mixers":
        from architectures.plugins import ORIGIN

        rows = []
        for name in architectures.list_mixers(args.pattern):
            if name.startswith("_"):
                continue
            s = architectures.get_mixer(name).spec
            rows.append({"mixer": name, **({"plugin": ORIGIN.get(name, "-")} if ORIGIN else {}), "family": s.family, "paper": f"{s.paper.title[:48]} ({s.paper.year}, "
                         f"arXiv:{s.paper.arxiv})", "time": s.claimed_time or "-", "memory": s.claimed_memory or "-",
                         "exp t/mem/state": "/".join("-" if e is None else f"{e:g}" for e in
                                                    (s.time_exponent, s.memory_exponent, s.state_exponent)),
                         "quality": s.claimed_quality or "-", "modes": ",".join(sorted(s.modes)),
                         "impls": ",".join(s.impls),
                         "hparams": ", ".join(f"{k}={v}" for k, v in s.default_hparams.items()) or "-"})
        _print_table(rows)
    elif args.what == "models":
        _print_table(_model_rows(args.pattern))
    elif args.what == "benchmarks":
        from .benchmarks import BENCHMARKS

        _print_table([{"benchmark": n, "modes": ",".join(BENCHMARKS.get(n).modes),
                       "description": BENCHMARKS.get(n).description} for n in BENCHMARKS.list(args.pattern)])
    else:
        import yaml

        rows = []
        for path in sorted(SUITES_DIR.glob("*.yaml")):
            try:
                meta = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                meta = {"description": "(invalid YAML)"}
            desc = " ".join(str(meta.get("description", "")).split())
            rows.append({"suite": path.stem, "file": str(path), "description": desc[:100]})
        _print_table(rows)
    return 0


def _model_rows(pattern: str) -> list[dict]:
    """One row per registered model preset; parameters counted on the meta device (no memory, seconds)."""
    from architectures.models import build_model, get_model, list_models

    def size(n: float) -> str:
        return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"

    rows = []
    for name in list_models(pattern):
        p = get_model(name)
        model = build_model(name, "full", device="meta")
        total = model.num_params()
        active = model.active_params() if hasattr(model, "active_params") else total
        ref = f"arXiv:{p.paper.arxiv}" if p.paper.arxiv[:1].isdigit() else p.paper.arxiv
        rows.append({"model": name, "family": p.family, "kind": p.kind,
                     "paper": f"{p.paper.title[:44]} ({p.paper.year}, {ref})",
                     "params": size(total), "active": size(active),
                     "published": ", ".join(f"{'active ' if k == 'active_params' else ''}{size(v)}"
                                            for k, v in p.published.items()) or "-"})
    return rows


def _print_table(rows: list[dict]) -> None:
    if not rows:
        print("(none)")
        return
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", tablefmt="simple"))


def cmd_validate(args) -> int:
    import torch

    from .suites import load_suite
    from .runner import plan

    suite, _ = load_suite(_suite_path(args.suite))
    for device_type in ("cpu", "cuda"):
        cells = plan(suite, torch.device(device_type))
        print(f"{args.suite}: valid; {len(cells)} cells with the {device_type} profile")
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: completed cells are kept, a partial report written, the resume command shown."""


_SIGTERM_SEEN: list[bool] = []  # set by the handler: Ray's ray.get re-raises any KeyboardInterrupt as a plain one


def _on_sigterm(signum, frame):
    _SIGTERM_SEEN.append(True)
    raise Terminated


def _tolerance(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _partial_report(out) -> str:
    """The report of the cells completed so far (an interrupted run), or why there is none."""
    from .results import read_rows

    if not read_rows(Path(out) / "results.jsonl"):
        return "no completed cells yet, no report"
    try:
        from .report.build import write_report

        return f"partial report: {write_report(out)}"
    except Exception as err:  # noqa: BLE001 - the run's results are safe; the report is a courtesy here
        return f"no partial report ({type(err).__name__}: {err})"


def cmd_run(args) -> int:
    import signal

    from .suites import load_suite
    from .device import resolve_device
    from .executors import load_plugins
    from .runner import pending_cells, plan, run_suite

    load_plugins(args.plugin or None)
    path = _suite_path(args.suite)
    suite, _ = load_suite(path)
    device = resolve_device(args.device)
    out = args.out
    if isinstance(args.resume, str):
        if out and Path(out) != Path(args.resume):
            raise ValueError(f"--out {out} and --resume {args.resume} name different directories")
        out = args.resume
    if out is None:
        if args.resume:
            raise ValueError("--resume needs the run directory: --resume OUT (or --out OUT --resume)")
        out = Path.cwd() / "results" / f"{suite.suite}-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.dry_run:
        cells = plan(suite, device, args.only, args.benchmarks, args.cells)
        for c in cells:
            print(c.cell_id)
        print(f"{len(cells)} cells on {device} (dry run: nothing measured)")
        return 0
    options = {"address": args.ray_address} if args.executor == "ray" else {}
    _SIGTERM_SEEN.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary = run_suite(suite, Path(out), device, suite_path=path, only=args.only, benchmarks=args.benchmarks,
                            resume=bool(args.resume),
                            progress=not args.no_progress, cpu_allocator=args.cpu_allocator, threads=args.threads,
                            cpu_memory_fraction=args.cpu_memory_limit, executor=args.executor,
                            executor_options=options, rerun=args.rerun, cells_glob=args.cells)
    except KeyboardInterrupt as err:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the report short
        terminated = isinstance(err, Terminated) or bool(_SIGTERM_SEEN)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"\n{what}: completed cells are saved in {out}/results.jsonl; {_partial_report(out)}; finish the run "
              f"with:\n  python -m harness run {args.suite} --out {out} --resume --executor {args.executor}",
              file=sys.stderr)
        return 143 if terminated else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.statuses.items())) or "nothing to do"
    print(f"{summary.cells} cells ({summary.reused} from before, {summary.ran} run: {counts}) in "
          f"{summary.seconds:.0f} s")
    print(f"results: {summary.out / 'results.jsonl'}\nreport:  {summary.out / 'report.md'}")
    left = pending_cells(summary.out)
    if left:
        print(f"{sum(left.values())} planned cells have no result yet ("
              + ", ".join(f"{label}: {n}" for label, n in left.items()) + "); run them with:\n"
              f"  python -m harness run {args.suite} --resume {out}")
    return 0


def cmd_report(args) -> int:
    from .report.build import write_report
    from .results import read_rows

    results = Path(args.out) / "results.jsonl"
    if not results.exists():
        raise FileNotFoundError(f"{args.out} is not a run directory: no {results.name} in it")
    if not read_rows(results):
        print(f"error: {results} holds no completed cell; nothing to report", file=sys.stderr)
        return 2
    formats = {"md": ("md",), "html": ("md", "html"), "all": ("md", "html")}[args.format]
    path = write_report(args.out, formats)
    print(path)
    if "html" in formats:
        print(path.parent / "report.html")
    return 0


def cmd_check_mixer(args) -> int:
    """The fidelity kit (harness.testing) on one registered mixer, e.g. a plugin's."""
    from .testing import check_mixer

    results = check_mixer(args.name, args.impl)
    _print_table([{"check": r.check, "result": r.status, "detail": r.message} for r in results])
    failed = [r.check for r in results if r.status == "failed"]
    print(f"\n{args.name}: " + (f"FAILED {', '.join(failed)}" if failed else "every applicable check passed"))
    return 1 if failed else 0


def cmd_compare(args) -> int:
    from .compare import compare

    table, regressed = compare(args.base, args.new, args.tolerance)
    if regressed:
        print(f"REGRESSION: {len(table)} deterministic figure(s) moved beyond tolerance {args.tolerance:g} "
              f"or went missing:\n")
        print(table.to_markdown(index=False, floatfmt=".6g"))
        return 1
    print(f"OK: every deterministic figure of {args.base} is within {args.tolerance:g} in {args.new}")
    return 0


def cmd_baseline(args) -> int:
    from .compare import write_baseline

    n = write_baseline(args.run, args.dest)
    print(f"wrote {n} deterministic figures to {args.dest}")
    return 0


def cmd_lm_eval(args) -> int:
    try:
        from .lm_eval_adapter import LOCAL_TASK, run_lm_eval
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import json

    from lm_eval.utils import make_table

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    results = run_lm_eval(args.checkpoint, tasks, device=args.device, batch_size=args.batch_size, limit=args.limit,
                          num_fewshot=args.num_fewshot, include_path=args.include_path)
    print(make_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps({"checkpoint": str(args.checkpoint), "results": results["results"],
                                                 "configs": results.get("configs")}, indent=2, default=str))
        print(f"results: {args.output}")
    if LOCAL_TASK in (tasks or [LOCAL_TASK]):
        import torch

        meta = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        print(f"the harness's own val_bpb of this checkpoint: {meta.get('val_bpb'):.6f}")
    return 0


def cmd_ab(args) -> int:
    import signal

    from .ab import ABInputError, ABSettings, run_ab
    from .executors import ExecutorError

    out = Path(args.out or Path.cwd() / "results" / f"ab-{time.strftime('%Y%m%d-%H%M%S')}")
    settings = ABSettings(rounds=args.rounds, threshold=args.threshold, confidence=args.confidence,
                          device=args.device, only=args.only, threads=args.threads, repo=args.repo,
                          echo_stderr=args.verbose, fresh_processes=not args.keep_processes)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)  # SIGTERM unwinds like Ctrl-C: worktrees are removed
    try:
        result = run_ab(args.base, args.head, args.suite, out, settings, progress=not args.no_progress)
    except (ABInputError, ExecutorError) as err:  # bad input, or a side whose process cannot start (its reason)
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print((out / "ab.md").read_text())
    print(f"written: {out}/ab.md, ab.json, measurements.jsonl, base.json and head.json (pytest-benchmark format)")
    return 1 if result.flagged else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    name = Path(sys.argv[0]).name
    p = argparse.ArgumentParser(prog="python -m harness" if name in ("__main__.py", "-c", "") else name,
                                description="Benchmark and compare attention methods (transformer-bench).")
    p.add_argument("--version", action="version", version=f"%(prog)s (transformer-bench) {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list registered mixers, model presets, benchmark kinds or suites")
    s.add_argument("what", nargs="?", choices=["mixers", "models", "suites", "benchmarks"], default="mixers")
    s.add_argument("pattern", nargs="?", default="*", help="glob filter, e.g. '*attn*'")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("run", help="run a suite")
    s.add_argument("suite", help="suite YAML path, or a name in suites/")
    s.add_argument("--out", help="output directory (default: ./results/<suite>-<device>-<time>, under the current directory)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    s.add_argument("--only", help="glob over the suite's mixer labels/names")
    s.add_argument("--benchmarks", metavar="GLOBS",
                   help="comma-separated globs over the suite's benchmark entry labels (e.g. 'perplexity,mqar'): run "
                        "those entries only; a later --resume without it runs the rest")
    s.add_argument("--cells", metavar="GLOBS",
                   help="comma-separated globs over cell ids (* and ? wildcards, the rest literal; e.g. "
                        "'mqar/*/n=64/*': one configuration for every mixer first): run those cells only; a later "
                        "--resume without it runs the rest")
    s.add_argument("--resume", nargs="?", const=True, default=False, metavar="OUT",
                   help="complete an interrupted run: rerun only cells without results")
    s.add_argument("--rerun", metavar="GLOB",
                   help="with --resume: withdraw the committed cells whose id matches GLOB (* and ? wildcards, the rest "
                        "literal; e.g. 'perplexity/mamba[*' after a fix to mamba) and measure them again; the old rows "
                        "stay in results.jsonl, marked as withdrawn")
    s.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    s.add_argument("--threads", type=int, help="torch intra-op threads (default: the suite's timing.cpu_threads on CPU, else torch's choice)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--cpu-allocator", choices=["caching", "system"], default="caching",
                   help="caching (default): keep freed CPU memory for reuse, as CUDA does; system: glibc defaults")
    s.add_argument("--cpu-memory-limit", type=_fraction, default=0.9, metavar="FRACTION",
                   help="on CPU, cap the run's address space at this fraction of physical memory, so that a cell "
                        "too large for the machine is recorded as `oom` instead of the kernel killing the run "
                        "(default 0.9; 0 = no cap)")
    s.add_argument("--executor", choices=["isolated", "inline", "ray"], default="isolated",
                   help="isolated (default): each cell in a reused worker subprocess, killed past its budget, a "
                        "crash recorded as a `crashed` row; inline: in this process (debugging); ray: one Ray task "
                        "per cell on a cluster (needs the `ray` extra)")
    s.add_argument("--ray-address", help="Ray cluster address for --executor ray (default: $RAY_ADDRESS, else a "
                                         "local cluster started for the run)")
    s.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import MODULE first, in this process and in every worker (registers extra mixers or "
                        "benchmark kinds; repeatable; also $HARNESS_PLUGINS, comma-separated)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("report", help="(re)build OUT/report.md, OUT/report.html and plots from a run directory")
    s.add_argument("out")
    s.add_argument("--format", choices=["md", "html", "all"], default="all",
                   help="md: report.md and plots; html: also report.html (self-contained, interactive); "
                        "all (default): both")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("check-mixer", help="run the fidelity kit on a mixer (oracle, causality, decode, state bytes, "
                                           "gradients, dtypes); exit 1 on a failure")
    s.add_argument("name", help="a registered mixer, e.g. one a plugin package registers")
    s.add_argument("--impl", help="implementation (default: the spec's default)")
    s.set_defaults(func=cmd_check_mixer)

    s = sub.add_parser("compare", help="compare deterministic figures; exit 1 on a regression")
    s.add_argument("base", help="baseline results.jsonl or run directory")
    s.add_argument("new", help="new results.jsonl or run directory")
    s.add_argument("--tolerance", type=_tolerance, default=0.0, help="allowed relative change (default 0: exact)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("baseline", help="write a run's deterministic figures as a baseline file")
    s.add_argument("run")
    s.add_argument("dest")
    s.set_defaults(func=cmd_baseline)

    s = sub.add_parser("validate", help="check a suite file against the schema and the registries")
    s.add_argument("suite")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("ab", help="A/B speed of two revisions on this machine, interleaved; exit 1 on a flagged "
                                  "slowdown", description="Measure the timed cells of SUITE for BASE and HEAD on "
                       "this machine in interleaved rounds (A B, B A, ...), each side in its own process (a fresh one "
                       "each round) that imports that side's tree, and flag the cells whose median HEAD/BASE ratio exceeds "
                       "1 + threshold with a confidence interval above 1. Exit 0: no flagged slowdown; 1: flagged "
                       "(or a cell that fails only on HEAD); 2: bad input.")
    s.add_argument("base", help="a git revision (checked out into a temporary worktree, removed afterwards) or an "
                                "existing directory (a transformer-bench tree, used as it is)")
    s.add_argument("head", help="the same for the side under test; `.` is the working tree with uncommitted changes")
    s.add_argument("suite", help="suite file, resolved from the HEAD side: a path relative to HEAD's tree, an "
                                 "absolute path, or a name in HEAD's suites/")
    s.add_argument("--rounds", type=int, default=6, help="measurements of every cell per side (default 6)")
    s.add_argument("--threshold", type=_tolerance, default=0.05,
                   help="relative slowdown below which nothing is flagged (default 0.05)")
    s.add_argument("--confidence", type=_fraction, default=0.95,
                   help="of the sign-test interval of the median ratio (default 0.95, which needs >= 6 rounds)")
    s.add_argument("--out", help="output directory (default ./results/ab-<time>)")
    s.add_argument("--repo", help="git repository of the revisions (default: the one around the current directory)")
    s.add_argument("--device", default="cpu", help="cpu (default) | cuda[:i] | auto")
    s.add_argument("--only", help="glob over the suite's mixer labels/names")
    s.add_argument("--threads", type=int, help="torch intra-op threads (default: the suite's timing.cpu_threads)")
    s.add_argument("--keep-processes", action="store_true",
                   help="one process per side for all rounds (faster) instead of a fresh one per side each round "
                        "(the default: a process's own bias of a few %% then counts as noise, not as a difference)")
    s.add_argument("--no-progress", action="store_true", help="no line per round on stderr")
    s.add_argument("--verbose", action="store_true", help="show the sides' stderr (warnings) on ours")
    s.set_defaults(func=cmd_ab)

    s = sub.add_parser("lm-eval", help="run lm-evaluation-harness tasks on a checkpoint (needs the lmeval extra)")
    s.add_argument("checkpoint", help="a checkpoint written by the perplexity benchmark (OUT/checkpoints/*.pt)")
    s.add_argument("--tasks", help="comma-separated lm-eval tasks (default: transformer_bench_val, the checkpoint's "
                   "own validation text, offline)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--limit", type=float, help="examples per task (testing only); below 1: a fraction")
    s.add_argument("--num-fewshot", type=int)
    s.add_argument("--include-path", action="append", help="a directory of extra lm-eval task YAMLs (repeatable)")
    s.add_argument("--output", help="write lm-eval's results as JSON here")
    s.set_defaults(func=cmd_lm_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import SuiteError
    from .runner import RunError

    try:
        return args.func(args)
    except SuiteError as err:
        print("invalid suite:\n  " + "\n  ".join(err.problems), file=sys.stderr)
        return 2
    except (RunError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an unwritable or full output directory, an unreadable input
        print(f"error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130

