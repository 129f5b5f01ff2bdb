"""The command line: subcommands, exit codes, one-line errors (DESIGN.md contract)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from beep_av import __version__
from beep_av.config import Settings, load_config, load_preset, merge, validate_values
from beep_av.errors import EXIT_INTERRUPTED, BadInput, BeepError

EPILOG_SHOW = """\
examples:
  beep-av                                  the whole story on a safe cgroup stage (root)
  beep-av show --ram 192M --swap 128M --cache 48M --rate 96M/s --output headless
  beep-av rehearse --output terminal       no memory used: a model plays every phase
  beep-av show --audio wav:talk.wav --record talk.jsonl
  beep-av replay talk.jsonl --speed 2      re-perform last night's run
  beep-av replay example                   the real show shipped with beep-av
  beep-av report talk.jsonl -o talk.png    one picture of the show
  beep-av render talk.jsonl -o talk.mp4    the show as a video with its sound (or .webm, .gif)
  beep-av explain kern.log                 every OOM kill in a kernel log: who, why, who asked
  beep-av show --act who-dies --hogs big:1.0,small:0.4:500
                                           two hogs: whom does the kernel kill?
  beep-av show --act bystander --swap 128M
                                           another process's pages go to swap and back
  beep-av rehearse --act throttle          a CPU quota: everything slows, nobody dies
  beep-av show --act freeze --ram 128M     swap thrash: the work crawls, nothing dies,
                                           until a PSI trigger lets beep-av kill it
  beep-av show --act freeze --killer systemd-oomd
                                           the same freeze, ended by systemd-oomd (cgroup v2)
  beep-av show --act high --ram 256M       cgroup v2's memory.high: held, not killed

SIZE: 512M, 1.5G, 256MiB, 10% (of available memory). RATE: 64M/s.
exit codes: 0 finale reached or done; 1 an output failed mid-show; 2 bad input;
3 this machine cannot stage it, or the host guard stopped the show (the message names
the fix); 4 the hog was killed by a signal from user space (kill -9, earlyoom,
systemd-oomd), not by the kernel's OOM killer; 130 interrupted (after full cleanup).
"""

EPILOG_EXPLAIN = """\
examples:
  journalctl -k | beep-av explain          the kills in this boot's kernel log
  dmesg -T | beep-av explain -             the same, from dmesg
  beep-av explain node.log --json          one JSON object per OOM event
  beep-av explain kern.log -o why.png      the kernel's points as bars, the victim marked

exit codes: 0 at least one OOM event explained; 1 none in the text; 2 unreadable input.
"""

EPILOG_RENDER = """\
examples:
  beep-av render talk.jsonl -o talk.mp4    H.264 + AAC at 1280x720, 30 fps: for slides
  beep-av render example -o show.gif       a 480x270 GIF, no sound: for a README or a post
  beep-av render talk.jsonl -o talk.webm --size 1920x1080 --captions fr
  beep-av render talk.jsonl -o tty.mp4 --style terminal
                                           the terminal output's cells, drawn as pixels

The same recording and --seed give the same video, frame for frame (--look raw takes
the kernel's bytes: not reproducible). The file appears only when it is whole.
exit codes: 0 written; 2 bad input (a recording that is not one, an unknown extension,
a target that cannot be written): nothing is written; 130 interrupted: nothing written.
"""

EXAMPLE_HELP = "a recording (JSON Lines), or `example`: the real cgroup show shipped with beep-av"


def recording_path(name: str) -> str:
    """FILE of replay/report: `example` (when no such file is here) names the shipped one."""
    if name == "example" and not os.path.exists(name):
        from beep_av.resources import example_recording

        return str(example_recording())
    return name


SUBCOMMANDS = (
    "show", "rehearse", "replay", "watch", "report", "render", "explain", "doctor", "cleanup",
    "manifest",
)  # fmt: skip


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line on stderr and exit 2."""

    def error(self, message: str):  # type: ignore[override]
        raise BadInput(message)


def _add_outputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("outputs")
    g.add_argument(
        "--output",
        metavar="KIND",
        help="auto|window|fullscreen|kms|framebuffer[:DEV]|terminal|headless (default auto)",
    )
    g.add_argument(
        "--audio", metavar="SPEC", help="auto|device[:NAME|INDEX]|wav:PATH|off (default auto)"
    )
    g.add_argument(
        "--beep-freq", type=float, metavar="HZ", help="final beep frequency (default 880)"
    )
    g.add_argument(
        "--beep-length", type=float, metavar="MS", help="final beep length (default 400)"
    )
    g.add_argument("--beep-repeats", type=int, metavar="N", help="final beeps (default 1)")
    g.add_argument("--captions", metavar="LANG", help="en|fr|off (default en)")
    g.add_argument("--look", metavar="LOOK", help="static|raw: raw plays kernel bytes directly")
    g.add_argument("--frames", metavar="DIR", help="save PNG frames into DIR")
    g.add_argument("--frames-every", type=int, metavar="N", help="save every Nth frame")
    g.add_argument("--record", metavar="FILE", help="write the show's recording (JSON Lines)")
    g.add_argument("--seed", type=int, metavar="N", help="deterministic noise and rehearsal")
    g.add_argument(
        "--config", metavar="FILE", help="TOML file with the same keys as the long flags"
    )
    g.add_argument("--preset", metavar="NAME", help="talk|classroom|tty-art (shipped with beep-av)")
    g.add_argument("--keys", metavar="PLAN", help=argparse.SUPPRESS)  # scripted key plan (tests)


def _add_stage(p: argparse.ArgumentParser, with_stage: bool = True) -> None:
    g = p.add_argument_group("stage")
    if with_stage:
        g.add_argument(
            "--stage",
            metavar="KIND",
            help="auto|cgroup|host|rehearsal|container[:docker|:podman] (default auto)",
        )
        g.add_argument(
            "--restarts",
            type=int,
            metavar="N",
            help="--stage container: the engine restarts the killed container N times"
            " (restart policy on-failure:N); N+1 kills",
        )
    g.add_argument(
        "--ram", metavar="SIZE", help="stage RAM limit (default: a safe share of MemAvailable)"
    )
    g.add_argument("--swap", metavar="SIZE", help="auto|off|SIZE (default auto)")
    g.add_argument("--cache", metavar="SIZE", help="page cache warmed in the stage (default ram/4)")
    g.add_argument(
        "--rate", metavar="RATE", help="hog pace, e.g. 64M/s (default: a one-minute story)"
    )
    g.add_argument(
        "--calm", type=float, metavar="S", help="seconds of calm before the hog climbs (default 3)"
    )
    g.add_argument("--sample-hz", type=float, metavar="HZ", help="sampling rate (default 50)")
    g.add_argument(
        "--host-floor",
        metavar="SIZE",
        help="release the hog (exit 3) if the host has less left outside the stage "
        "(default: the larger of 256M and 3%% of RAM; 0: off)",
    )
    g.add_argument(
        "--yes", action="store_true", default=None, help="confirm --stage host without asking"
    )
    g.add_argument(
        "--act", metavar="ACT", help="story|who-dies|bystander|throttle|freeze|high (default story)"
    )
    g.add_argument(
        "--hogs", metavar="SPEC", help="who-dies: NAME:SIZE[:OOM_SCORE_ADJ],... (2 to 4 hogs)"
    )
    g.add_argument(
        "--killer",
        metavar="WHO",
        help="freeze: beep-av (its own PSI trigger, default) or systemd-oomd (cgroup v2: the"
        " running systemd-oomd acts on the stage, after its configured duration)",
    )


def build_parser() -> Parser:
    p = Parser(
        prog="beep-av",
        description="See and hear the Linux OOM killer: noise from /dev/random that follows "
        "memory pressure on a safe stage, then the kill, the victim, and one final beep.",
        epilog=EPILOG_SHOW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"beep-av {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    show = sub.add_parser(
        "show",
        help="the real show on a stage (default)",
        epilog=EPILOG_SHOW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_stage(show)
    _add_outputs(show)

    reh = sub.add_parser("rehearse", help="the show without risk: a model plays every phase")
    _add_stage(reh, with_stage=False)
    _add_outputs(reh)

    rep = sub.add_parser("replay", help="re-perform a recording through the outputs")
    rep.add_argument("file", metavar="FILE", help=EXAMPLE_HELP)
    rep.add_argument("--speed", type=float, metavar="X", help="playback speed (default 1)")
    _add_outputs(rep)

    watch = sub.add_parser(
        "watch",
        help="no hog: follow a live machine or cgroup, beep at every OOM kill",
        description="Follow the memory pressure of this machine (or of one memory cgroup) "
        "and show the victim card and beep at every kernel OOM kill seen there. Nothing "
        "is allocated. Watch has no finale: Ctrl-C (or SIGTERM, or q) is its normal end, "
        "exit 0, after a summary of the kills seen (one line each and a total, on stdout).",
    )
    watch.add_argument(
        "--cgroup",
        metavar="PATH",
        help="watch this memory cgroup (a directory, or a path like /system.slice) "
        "instead of the host",
    )
    watch.add_argument(
        "--containers",
        action="store_true",
        help="follow the container engine's events: a card for every container OOM kill",
    )
    _add_outputs(watch)

    report = sub.add_parser("report", help="one PNG picture of a recording")
    report.add_argument("file", metavar="FILE", help=EXAMPLE_HELP)
    report.add_argument("-o", "--out", required=True, metavar="PICTURE.png")
    report.add_argument("--size", default="1600x900", metavar="WxH")

    ren = sub.add_parser(
        "render",
        help="a recording as a video with its sound (MP4, WebM) or a GIF",
        description="Draw a recording offline, frame by frame, with the window's picture\n"
        "(or the terminal's) and the live show's sound, and write it as a video.",
        epilog=EPILOG_RENDER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ren.add_argument("file", metavar="RECORDING", help=EXAMPLE_HELP)
    ren.add_argument("-o", "--out", required=True, metavar="OUT.mp4|OUT.webm|OUT.gif")
    ren.add_argument("--size", metavar="WxH",
                     help="pixels (default 1280x720; a GIF 480x270)")  # fmt: skip
    ren.add_argument(
        "--fps", type=int, metavar="N", help="frames per second (default 30; a GIF 10)"
    )
    ren.add_argument("--look", default="static", metavar="LOOK", help="static|raw (default static)")
    ren.add_argument("--captions", default="en", metavar="LANG", help="en|fr|off (default en)")
    ren.add_argument("--style", default="window", metavar="STYLE",
                     help="window|terminal: whose picture (default window)")  # fmt: skip
    ren.add_argument(
        "--seed", type=int, default=0, metavar="N", help="the noise's seed (default 0)"
    )

    exp = sub.add_parser(
        "explain",
        help="every OOM kill in a kernel log, explained: who, why, who asked, which limit",
        description="Read a kernel log (dmesg, dmesg -T, journalctl -k, syslog, a node's"
        " log) and explain every OOM event in it: the victim, the kernel's own points for"
        " each candidate it weighed, the task that asked for the page, the limit.",
        epilog=EPILOG_EXPLAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument("file", metavar="FILE", nargs="?", default="-",
                     help="a kernel log, or - for stdin (default)")  # fmt: skip
    exp.add_argument("--json", action="store_true", help="one JSON object per event (JSON Lines)")
    exp.add_argument("-o", "--out", metavar="PICTURE.png", help="the candidates' points as bars")

    sub.add_parser("doctor", help="what this machine can stage, and the fix for each gap")
    man = sub.add_parser(
        "manifest",
        help="print a Kubernetes Pod manifest that runs the same hog under a memory limit",
    )
    man.add_argument("--ram", metavar="SIZE", default="256M", help="the memory limit (256M)")
    man.add_argument("--rate", metavar="RATE", default="64M/s", help="the hog's rate (64M/s)")
    man.add_argument("--restarts", type=int, metavar="N", default=0,
                     help="N > 0: restartPolicy OnFailure (CrashLoopBackOff)")  # fmt: skip
    sub.add_parser(
        "cleanup",
        help="remove what a killed show left behind",
        description="Remove what killed shows left behind (their state files list it),"
        " checking each item is one a stage of ours makes: beep-av-* cgroups on a cgroup"
        " mount (only our hogs inside are killed), beep-av-swap-*/swapfile files of ours,"
        " hogs by pid, start time and command line, beep-av-* containers labelled beep-av=1"
        " (with their volumes). Anything else is refused, named and"
        " left alone. Exit 0 done; 1 something was refused or could not be removed yet;"
        " 3 the state dir is not a private dir of ours.",
    )
    return p


SETTING_FLAGS = (
    "stage",
    "ram",
    "swap",
    "cache",
    "rate",
    "output",
    "audio",
    "beep_freq",
    "beep_length",
    "beep_repeats",
    "record",
    "captions",
    "seed",
    "yes",
    "calm",
    "sample_hz",
    "frames",
    "frames_every",
    "look",
    "host_floor",
    "speed",
    "restarts",
    "act",
    "hogs",
    "killer",
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Preset, then --config FILE, then flags; each layer validated. Raises BadInput."""
    layers: list[dict[str, Any]] = []
    if getattr(args, "preset", None):
        layers.append(load_preset(args.preset))
    if getattr(args, "config", None):
        layers.append(load_config(args.config))
    flags = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k, None) is not None}
    validate_values(flags, "flags")
    layers.append(flags)
    return merge(Settings(), *layers)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `beep-av` and `beep-av --ram 192M ...` mean `beep-av show ...`
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "show")
    argv = _join_negative_values(argv)
    return run_guarded(lambda: dispatch(build_parser().parse_args(argv)))


def run_guarded(fn: Callable[[], int]) -> int:
    """Run a command: its exit code, or one line on stderr and the code of the error
    (BeepError's own, 130 for Ctrl-C, 1 for a bug; BEEP_DEBUG=1 shows the traceback)."""
    try:
        return fn()
    except BeepError as e:
        print(f"beep-av: {e.message}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("beep-av: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("BEEP_DEBUG"):
            raise
        print(
            f"beep-av: internal error: {type(e).__name__}: {e} (BEEP_DEBUG=1 shows more)",
            file=sys.stderr,
        )
        return 1


_NEGATIVE = re.compile(r"^-[0-9.]")


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--ram -5M` -> `--ram=-5M`, so the value reaches our own check (which names the
    problem) instead of argparse's "expected one argument"."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if (
            a.startswith("--")
            and "=" not in a
            and i + 1 < len(argv)
            and _NEGATIVE.match(argv[i + 1])
        ):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _manifest(args: argparse.Namespace) -> int:
    """`beep-av manifest`: a Pod manifest (YAML) on stdout."""
    from beep_av.config import parse_rate, parse_size
    from beep_av.engines import pod_manifest

    ram = parse_size(args.ram, available=1 << 40, what="--ram")
    if ram <= 0:
        raise BadInput(f"--ram: {args.ram!r} must be more than 0")
    if not 0 <= args.restarts <= 10:
        raise BadInput(f"--restarts: {args.restarts} is outside 0..10")
    rate = parse_rate(args.rate, what="--rate")
    print(pod_manifest(ram, restarts=args.restarts, rate=rate, cache=0), end="")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "doctor":
        from beep_av.doctor import run_doctor

        return run_doctor(print)
    if cmd == "cleanup":
        from beep_av.stages.cleanup import run_cleanup

        r = run_cleanup(print, refuse=_say)
        n = r.removed
        done = f"cleanup: removed {n} item(s)" if n else "cleanup: nothing to remove"
        if r.clean:
            print(done)
            return 0
        # each refused or kept item has had its own line on stderr
        print(f"{done}; refused {len(r.refused)}, kept {len(r.kept)} (named above, left untouched)")
        return 1
    if cmd == "manifest":
        return _manifest(args)
    if cmd == "explain":
        from beep_av.explain import run_explain

        return run_explain(args.file, as_json=args.json, out=args.out)
    if cmd == "report":
        from beep_av.recording import load
        from beep_av.report import parse_size_arg, render_report

        size = parse_size_arg(args.size)
        rec = load(recording_path(args.file))
        render_report(rec, args.out, size=size)
        print(f"report: wrote {args.out} ({size[0]}x{size[1]})")
        return 0
    if cmd == "render":
        from beep_av.render import parse_size, run_render

        size = parse_size(args.size) if args.size else None
        return run_render(
            recording_path(args.file),
            args.out,
            name=args.file,
            size=size,
            fps=args.fps,
            seed=args.seed,
            look=args.look,
            captions=args.captions,
            style=args.style,
            say=_say,
        )
    from beep_av import app

    settings = settings_from_args(args)
    if cmd == "rehearse":
        from dataclasses import replace

        settings = replace(settings, stage="rehearsal")
    if cmd == "replay":
        return app.run_replay(settings, recording_path(args.file), keys=args.keys, say=_say)
    if cmd == "watch" and getattr(args, "containers", False):
        if args.cgroup:
            raise BadInput("watch: --containers and --cgroup do not go together")
        return app.run_watch_containers(settings, keys=args.keys, say=_say)
    if cmd == "watch":
        return app.run_watch(settings, args.cgroup, keys=args.keys, say=_say)
    return app.run_live(settings, keys=args.keys, say=_say)  # the story and every act


if __name__ == "__main__":
    raise SystemExit(main())
