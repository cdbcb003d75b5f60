"""The `cmil` command line: train, eval, demos, main, and the tools other modules register."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cmil.errors import UsageError

# Subcommands that live in their own modules; each exposes add_parser(subparsers) setting `func`.
TOOL_MODULES = ("cmil.model_tool", "cmil.plot", "cmil.sweep")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors (one line, exit 2 from `main`) instead of usage + exit.

    Subparsers inherit the class, so every subcommand reports alike."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _tyro_message(box: str) -> str:
    """The first paragraph of tyro's error box (its title is the kind, its first section the problem)."""
    lines = []
    for line in box.splitlines()[1:]:
        text = line.strip().strip("│").strip()
        if text.startswith("─") or line.startswith("╰"):
            break
        lines.append(text)
    return " ".join(lines) or box.strip().splitlines()[0]


def _train_config(argv: list[str]):
    """`--preset NAME` then the Config flags (tyro; field docstrings are the help), with the
    method's implied settings applied. A parse error becomes one UsageError line."""
    import contextlib
    import io

    import tyro

    from cmil.config import replace
    from cmil.config_io import flatten
    from cmil.launch import dry_run_preset
    from cmil.presets import PRESETS, apply_method

    pre = ArgumentParser(prog="cmil train", add_help=False)
    pre.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ns, rest = pre.parse_known_args(argv)
    preset = PRESETS[ns.preset]
    if "--dry-run" in rest:  # shrink the preset, so that explicit flags still win
        preset = dry_run_preset(preset)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            cfg = tyro.cli(type(preset), default=preset, args=rest, prog="cmil train",
                           description=f"Train a method (preset: {ns.preset}; `--preset NAME` picks another: "
                                       f"{', '.join(sorted(PRESETS))}).")
    except SystemExit as exc:
        if exc.code in (0, None):  # --help
            sys.stderr.write(errors.getvalue())
            raise
        raise UsageError(f"cmil train: {_tyro_message(errors.getvalue())}") from None
    before = flatten(replace(preset, method=cfg.method))
    return apply_method(cfg, explicit={k: v for k, v in flatten(cfg).items() if before[k] != v})


def cmd_train(argv: list[str]) -> int:
    from cmil.launch import plan_run

    return _run(plan_run(_train_config(argv)))


def _run(plan) -> int:
    from cmil.launch import launch, result_line

    if plan.state == "finished":
        print(f"{plan.run_dir} already finished.")
    print(result_line(launch(plan), plan.run_dir))
    return 0


def cmd_main(args: argparse.Namespace, rest: list[str]) -> int:
    """The README's main job: demos for the default task (once), then CMIL with the default preset."""
    from cmil.data.collect import collect_demos
    from cmil.launch import plan_run
    from cmil.presets import PRESETS

    task = PRESETS["default"].task
    demos = Path("demos") / task
    run_dir = Path("runs") / f"main__{task}__cmil__seed{args.seed}"
    plan = plan_run(_train_config(["--preset", "default", "--method", "cmil", "--seed", str(args.seed),
                                   "--demos", str(demos), "--run-dir", str(run_dir), *rest]))
    if plan.state != "finished" and not demos.exists():  # every flag is checked before this long step
        print(f"collecting {PRESETS['default'].num_demos} expert demos of {task} into {demos}")
        collect_demos(task, PRESETS["default"].num_demos, demos, seed=1_000_000)
    return _run(plan)


def cmd_eval(args: argparse.Namespace) -> int:
    """Re-evaluate a saved run: reads its config and latest checkpoint, writes only under RUN/eval/."""
    from cmil.launch import evaluate_run

    _at_least(args, episodes=1, video_episodes=0, seed=0)
    metrics = evaluate_run(Path(args.run_dir), args.episodes, args.seed, not args.stochastic, args.video_episodes)
    print(json.dumps(metrics, indent=2))
    return 0


def _at_least(args: argparse.Namespace, **minimums: int) -> None:
    """A one-line error for the first integer option below its minimum (`--video-episodes` etc.)."""
    for name, minimum in minimums.items():
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


def _env_kwargs(text: str | None) -> dict:
    """--env-kwargs JSON as a dict, checked as `cmil train` checks it."""
    from cmil.config import Config
    from cmil.config_io import validate
    from cmil.launch import env_kwargs_of

    cfg = Config(env_kwargs=text)
    validate(cfg)
    return env_kwargs_of(cfg)


def cmd_demos(args: argparse.Namespace) -> int:
    if args.demos_cmd == "collect":
        from cmil.config_io import MIN_IMAGE_SIZE
        from cmil.data.collect import collect_demos
        from cmil.envs import task_spec

        task_spec(args.task)
        _at_least(args, episodes=1, image_size=MIN_IMAGE_SIZE, seed=0, max_episode_steps=1, action_repeat=1)
        stats = collect_demos(args.task, args.episodes, Path(args.out), seed=args.seed, image_size=args.image_size,
                              keep_failures=args.keep_failures, env_kwargs=_env_kwargs(args.env_kwargs),
                              success_key=args.success_key, max_episode_steps=args.max_episode_steps,
                              action_repeat=args.action_repeat, expert=args.expert)
        print(json.dumps(stats, indent=2))
    elif args.demos_cmd == "import" and args.minari is not None:
        from cmil.config_io import MIN_IMAGE_SIZE
        from cmil.data.minari_io import import_minari

        if args.src is not None:
            raise UsageError("demos import: give either SRC (DreamerV2 files) or --minari, not both")
        _at_least(args, image_size=MIN_IMAGE_SIZE, action_dim=1)
        paths = import_minari(args.minari, args.out, args.image_size, args.image_key, args.success_key,
                              args.action_dim)
        print(f"imported {len(paths)} episodes into {args.out}")
    elif args.demos_cmd == "import":
        from cmil.config_io import MIN_IMAGE_SIZE
        from cmil.data.dreamer_import import import_dreamer_episodes

        if args.src is None:
            raise UsageError("demos import: give SRC (a directory of DreamerV2 .npz files) or --minari PATH_OR_ID")
        _at_least(args, image_size=MIN_IMAGE_SIZE, action_dim=1)
        success_fn = None
        if args.success_reward is not None:
            def success_fn(raw):
                return raw["reward"].reshape(-1) >= args.success_reward
        paths = import_dreamer_episodes(args.src, args.out, args.image_size, args.action_dim, success_fn)
        print(f"imported {len(paths)} episodes into {args.out}")
    elif args.demos_cmd == "export":
        from cmil.data.minari_io import export_minari

        dataset = export_minari(args.dir, args.minari, task=args.task, root=args.root)
        print(f"exported {dataset.total_episodes} episodes ({dataset.total_steps} steps) as the Minari dataset "
              f"{args.minari!r} in {dataset.storage.data_path.parent}")
    elif args.demos_cmd == "show":
        from cmil.data.episodes import load_episodes, summarize
        from cmil.data.sheet import contact_sheet

        image_size = action_dim = None
        if args.task is not None:  # check the demos against the task's env (what `cmil train` will check)
            from cmil.envs import make_env
            from cmil.launch import action_dim_of

            _at_least(args, max_episode_steps=1, action_repeat=1)
            env = make_env(args.task, env_kwargs=_env_kwargs(args.env_kwargs), success_key=args.success_key,
                           max_episode_steps=args.max_episode_steps, action_repeat=args.action_repeat,
                           image_size=args.image_size)
            try:
                image_size, action_dim = args.image_size, action_dim_of(env, args.task)
            finally:
                env.close()
        episodes = load_episodes(args.dir, image_size, action_dim)
        out = Path(args.sheet) if args.sheet else Path(args.dir) / "contact_sheet.png"
        if not out.parent.is_dir() or out.is_dir():
            raise UsageError(f"--sheet: cannot write {out} (no such directory, or it is one)")
        print(json.dumps(summarize(episodes), indent=2))
        contact_sheet(episodes, out)
        print(f"contact sheet: {out}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from cmil.envs import GYM_PREFIX, list_tasks, task_spec

    print(f"{'task':33s} {'steps':>5s}  {'expert':>13s}  description")
    for name in list_tasks():
        spec = task_spec(name)
        length = "-" if spec.episode_length is None else str(spec.episode_length)
        expert = "-" if spec.expert_success is None else "{}/{} = {:.2f}".format(
            *spec.expert_success, spec.expert_success[0] / spec.expert_success[1])
        print(f"{name:33s} {length:>5s}  {expert:>13s}  {spec.description}")
    print(f"\n{GYM_PREFIX}ID is any gymnasium env that renders (e.g. {GYM_PREFIX}gymnasium_robotics:FetchReach-v4). "
          "expert: the expert's successes over seeded episodes (Meta-World: docs/metaworld_tasks.md).")
    return 0


def add_env_options(parser: argparse.ArgumentParser) -> None:
    """The options that build a task's env, as `cmil train` has them (and saves them in config.yaml)."""
    parser.add_argument("--env-kwargs", default=None, metavar="JSON",
                        help="keyword arguments of the task's env (gym:ID: gym.make's), a JSON object")
    parser.add_argument("--success-key", default=None, help="info key of the success flag (gym:ID tasks)")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="episode length cap (gym:ID tasks)")
    parser.add_argument("--action-repeat", type=int, default=None,
                        help="env steps per agent step, the action held (gym:ID and Meta-World tasks; default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="cmil", description=__doc__)
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
    c.add_argument("--expert", default=None, metavar="MODULE:FUNCTION",
                   help="policy(obs) -> action in the env's own units ('module:function' or 'file.py:function'); "
                        "default: the task's expert")
    add_env_options(c)
    i = dsub.add_parser("import", help="import DreamerV2 .npz episodes (the paper's demos) or a local Minari dataset")
    i.add_argument("src", nargs="?", default=None, help="directory of DreamerV2 .npz files")
    i.add_argument("--minari", default=None, metavar="PATH_OR_ID",
                   help="a local Minari dataset (its directory, or an id under MINARI_DATASETS_PATH / ~/.minari); "
                        "never downloads")
    i.add_argument("--image-key", default=None, help="Minari: the image entry of Dict observations (default: found)")
    i.add_argument("--success-key", default=None, help="Minari: the infos key of the success flag (default: "
                                                       "success, else is_success)")
    i.add_argument("--out", required=True)
    i.add_argument("--image-size", type=int, default=64)
    i.add_argument("--action-dim", type=int, default=None, help="required action dimension")
    i.add_argument("--success-reward", type=float, default=None,
                   help="mark frames with reward >= this as successful (kitchen demos: 4 = all subtasks)")
    e = dsub.add_parser("export", help="write a demo directory as a Minari dataset")
    e.add_argument("dir")
    e.add_argument("--minari", required=True, metavar="NAME", help="dataset id, e.g. cmil/mw-push/expert-v0")
    e.add_argument("--task", default=None, help="the task of the env spec (default: from DIR/expert_stats.json)")
    e.add_argument("--root", default=None, help="Minari's dataset root (default: MINARI_DATASETS_PATH or ~/.minari/datasets)")
    s = dsub.add_parser("show", help="summary and contact sheet of a demo directory")
    s.add_argument("dir")
    s.add_argument("--sheet", default=None, help="contact-sheet PNG path (default DIR/contact_sheet.png)")
    s.add_argument("--task", default=None, help="also check that the demos fit this task's env (action dimension, image size)")
    s.add_argument("--image-size", type=int, default=64, help="with --task: the run's image size")
    add_env_options(s)
    sub.add_parser("tasks", help="list the tasks")
    for module in TOOL_MODULES:
        try:
            mod = __import__(module, fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. A UsageError is one line `error: ...` on stderr and exit status 2; any other
    exception is a bug and propagates with its traceback (exit status 1)."""
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
    except UsageError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        print("error: " + " ".join(message.split()), file=sys.stderr)
        return 2


def entry() -> None:
    """The `cmil` command (and `python -m cmil.cli`): the process first re-executes itself once with glibc
    malloc settings that keep freed tensor memory mapped (`cmil.allocator`; 1.5x faster updates at the
    paper's sizes)."""
    from cmil.allocator import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    sys.exit(main())


if __name__ == "__main__":
    entry()
