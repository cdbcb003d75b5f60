"""The `cmil` command line: train, eval, demos, main, and the tools other modules register."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cmil.data.episodes import EpisodeError

# Subcommands that live in their own modules; each exposes add_parser(subparsers) setting `func`.
TOOL_MODULES = ("cmil.model_tool", "cmil.plot", "cmil.sweep")


def _train_config(argv: list[str]):
    """Parse `--preset NAME` then the Config flags (tyro; field docstrings are the help).

    Returns the requested config and the preset it started from (both with the method's implied
    settings), so that a resumed run can tell explicit overrides from preset values."""
    import tyro

    from cmil.config import PRESETS, apply_method, dry_run_config, replace

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ns, rest = pre.parse_known_args(argv)
    preset = PRESETS[ns.preset]
    if "--dry-run" in rest:  # shrink the preset, so that explicit flags still win
        preset = dry_run_config(replace(preset, dry_run=True))
    cfg = tyro.cli(type(preset), default=preset, args=rest, prog="cmil train",
                   description=f"Train a method (preset: {ns.preset}; `--preset NAME` picks another: "
                               f"{', '.join(sorted(PRESETS))}).")
    return apply_method(cfg), apply_method(replace(preset, method=cfg.method))


def resolve_run(cfg, preset_cfg) -> tuple:
    """Pick the run directory; an existing one is resumed with its saved config."""
    from cmil.config import RESUMABLE_FIELDS, flatten, load_config, replace, resume_conflicts
    from cmil.runs import default_run_dir

    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    saved_path = run_dir / "config.yaml"
    if saved_path.exists():
        saved = load_config(saved_path)
        conflicts = resume_conflicts(saved, cfg, preset_cfg)
        if conflicts:
            raise SystemExit(f"error: {run_dir} is an existing run; these overrides conflict with it:\n  "
                             + "\n  ".join(conflicts))
        requested = flatten(cfg)
        cfg = replace(saved, **{k: requested[k] for k in RESUMABLE_FIELDS if k in requested})
    return cfg, run_dir


def cmd_train(argv: list[str]) -> int:
    from cmil.config import replace
    from cmil.train import demo_dir, train

    cfg, preset_cfg = _train_config(argv)
    cfg, run_dir = resolve_run(cfg, preset_cfg)
    finished = run_dir / "final.json"
    if finished.exists():
        result = json.loads(finished.read_text())
        if result.get("target_env_steps") == cfg.env_steps:
            print(f"{run_dir} already finished.")
            print(_result_line(result, run_dir))
            return 0
    if cfg.dry_run and not demo_dir(cfg).exists():
        from cmil.data.collect import collect_demos

        cfg = replace(cfg, demos=str(run_dir / "demos"))
        if not (run_dir / "demos").exists():
            collect_demos(cfg.task, cfg.num_demos, run_dir / "demos", seed=cfg.seed, image_size=cfg.image_size,
                          keep_failures=True, quiet=True)
    elif not demo_dir(cfg).exists():
        raise SystemExit(f"error: no demos at {demo_dir(cfg)}; collect them with\n"
                         f"  cmil demos collect --task {cfg.task} --episodes {cfg.num_demos} --out {demo_dir(cfg)}\n"
                         "or pass --demos DIR")
    result = train(cfg, run_dir)
    print(_result_line(result, run_dir))
    return 0


def _result_line(result: dict, run_dir: Path) -> str:
    return (f"{result['method']} on {result['task']}: success rate {result['success_rate']:.2f} over "
            f"{result['episodes']} episodes (expert {result['expert_success_rate']:.2f}), "
            f"return {result['return']:.1f}, {result['env_steps']} env steps; run: {run_dir}")


def cmd_main(args: argparse.Namespace, rest: list[str]) -> int:
    """The README's main job: demos for the default task (once), then CMIL with the default preset."""
    from cmil.config import PRESETS
    from cmil.data.collect import collect_demos

    task = PRESETS["default"].task
    demos = Path("demos") / task
    if not demos.exists():
        print(f"collecting {PRESETS['default'].num_demos} expert demos of {task} into {demos}")
        collect_demos(task, PRESETS["default"].num_demos, demos, seed=1_000_000)
    run_dir = Path("runs") / f"main__{task}__cmil__seed{args.seed}"
    return cmd_train(["--preset", "default", "--method", "cmil", "--seed", str(args.seed),
                      "--demos", str(demos), "--run-dir", str(run_dir), *rest])


def cmd_eval(args: argparse.Namespace) -> int:
    from cmil.config import load_config, replace
    from cmil.evaluate import evaluate
    from cmil.runs import write_json
    from cmil.train import Trainer

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        raise SystemExit(f"error: {run_dir} is not a run directory (no config.yaml)")
    cfg = replace(load_config(run_dir / "config.yaml"), video_episodes=args.video_episodes)
    trainer = Trainer(cfg, run_dir, quiet=True)
    if trainer.ckpt.latest() is None:
        raise SystemExit(f"error: {run_dir} has no checkpoint to evaluate")
    try:
        metrics = evaluate(trainer.env, trainer.policy, args.episodes, deterministic=not args.stochastic,
                           seed=args.seed, video_dir=run_dir / "videos", video_episodes=args.video_episodes,
                           video_name="reeval")
    finally:
        trainer.env.close()
        trainer.logger.close()
    metrics["eval/expert_success_rate"] = trainer.expert_success
    write_json(run_dir / "eval" / f"eval_{args.episodes}ep_seed{args.seed}.json", metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_demos(args: argparse.Namespace) -> int:
    if args.demos_cmd == "collect":
        from cmil.data.collect import collect_demos

        stats = collect_demos(args.task, args.episodes, Path(args.out), seed=args.seed, image_size=args.image_size,
                              keep_failures=args.keep_failures)
        print(json.dumps(stats, indent=2))
    elif args.demos_cmd == "import":
        from cmil.data.dreamer_import import import_dreamer_episodes

        success_fn = None
        if args.success_reward is not None:
            def success_fn(raw):
                return raw["reward"].reshape(-1) >= args.success_reward
        paths = import_dreamer_episodes(args.src, args.out, args.image_size, args.action_dim, success_fn)
        print(f"imported {len(paths)} episodes into {args.out}")
    elif args.demos_cmd == "show":
        from cmil.data.episodes import load_episodes, summarize
        from cmil.data.sheet import contact_sheet

        episodes = load_episodes(args.dir)
        print(json.dumps(summarize(episodes), indent=2))
        out = Path(args.sheet) if args.sheet else Path(args.dir) / "contact_sheet.png"
        contact_sheet(episodes, out)
        print(f"contact sheet: {out}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from cmil.envs import list_tasks, task_spec

    for name in list_tasks():
        spec = task_spec(name)
        print(f"{name:28s} {spec.episode_length:4d} steps  {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmil", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a method (cmil, vmail, bc, dac); `cmil train --help` lists every field",
                   add_help=False)
    p = sub.add_parser("main", help="the README's main job: CMIL on the default task")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("eval", help="re-evaluate a saved run")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=20_000, help="seed of the first evaluation episode")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the policy's mode")
    p.add_argument("--video-episodes", type=int, default=2)
    p = sub.add_parser("demos", help="collect, import or inspect demonstrations")
    dsub = p.add_subparsers(dest="demos_cmd", required=True)
    c = dsub.add_parser("collect", help="roll out the task's expert")
    c.add_argument("--task", required=True)
    c.add_argument("--episodes", type=int, default=10)
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=1_000_000, help="seed of the first episode (others follow)")
    c.add_argument("--image-size", type=int, default=64)
    c.add_argument("--keep-failures", action="store_true", help="also save episodes the expert failed")
    i = dsub.add_parser("import", help="import DreamerV2 .npz episodes (the paper's demos)")
    i.add_argument("src")
    i.add_argument("--out", required=True)
    i.add_argument("--image-size", type=int, default=64)
    i.add_argument("--action-dim", type=int, default=None, help="required action dimension")
    i.add_argument("--success-reward", type=float, default=None,
                   help="mark frames with reward >= this as successful (kitchen demos: 4 = all subtasks)")
    s = dsub.add_parser("show", help="summary and contact sheet of a demo directory")
    s.add_argument("dir")
    s.add_argument("--sheet", default=None, help="contact-sheet PNG path (default DIR/contact_sheet.png)")
    sub.add_parser("tasks", help="list the tasks")
    for module in TOOL_MODULES:
        try:
            mod = __import__(module, fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            return cmd_train(argv[1:])
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if args.command == "main":
            return cmd_main(args, rest)
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        handlers = {"eval": cmd_eval, "demos": cmd_demos, "tasks": cmd_tasks}
        handler = handlers.get(args.command) or args.func
        return handler(args) or 0
    except (EpisodeError, FileExistsError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
