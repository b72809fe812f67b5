"""Run the one-step image studio: parse the flags, load the models (with progress on the console),
build the UI and serve it.

    python app.py                       # http://127.0.0.1:7860, weights from --source auto
    python app.py --source hub          # download the real weights once, then run
    python app.py --source mini         # the small models this project trained (assets/mini), offline
    python app.py --host 0.0.0.0 --auth ana:secret --share
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check, no telemetry

import argparse
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import gradio as gr

from pipelines import Studio
from pipelines.errors import InputError
from pipelines.model_flags import add_model_flags, load_arguments
from ui import PAGE_CSS, build_app

APP_DIR = Path(__file__).resolve().parent
SERVED_DIRS = (APP_DIR / "assets" / "examples",)  # the only folders of ours the server may read
MAX_UPLOAD = "10mb"
DEFAULT_QUEUE_SIZE = 20
LAN_PROBE = ("10.255.255.255", 1)  # any routable address; a UDP connect sends nothing


@dataclass(frozen=True)
class Served:
    local_url: str
    lan_url: str | None
    share_url: str | None


def credentials(text: str) -> tuple[str, str]:
    """USER:PASS as a pair; the password may itself contain colons."""
    user, colon, password = text.strip().partition(":")
    if not colon or not user or not password:
        raise argparse.ArgumentTypeError(f"{text!r} is not USER:PASS")
    return user, password


def read_auth_file(path: Path) -> list[tuple[str, str]]:
    """USER:PASS per line; blank lines and lines starting with # are skipped. A file that cannot be
    read, or a line that is not USER:PASS, is a ValueError naming the file (and the line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ValueError(f"--auth-file {path} cannot be read: {reason}") from error
    pairs = []
    for number, line in enumerate(lines, start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                pairs.append(credentials(line))
            except argparse.ArgumentTypeError as error:
                raise ValueError(f"--auth-file {path}, line {number}: the line is not USER:PASS") from error
    return pairs


class PortTakenError(ValueError):
    """The port to serve on cannot be had; the message names it and --port."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"port {port} on {host} cannot be used ({reason}; is another app running there?); "
                         f"choose another with --port, e.g. --port {port + 1 if port < 65535 else 7860}")


def check_port(host: str, port: int) -> None:
    """Refuse a port that another program listens on, before any model loads (a bind with
    SO_REUSEADDR, as the server makes it, so a port just closed counts as free)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(f"--host {host} is not an address of this machine ({error})") from error
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortTakenError(host, port, error.strerror or str(error)) from error


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1 to 65535)")
    return value


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description="One-step image generation and translation in the browser "
                                                "(SD-Turbo, pix2pix-Turbo, CycleGAN-Turbo).")
    models = add_model_flags(parse)
    models.add_argument("--preview-size", type=positive, metavar="PIXELS",
                        help="side of the live sketch previews, a multiple of an eighth of the model's native side "
                             "up to that side (SD-Turbo: 64, 128, ..., 512; mini: 16, 32, ..., 128; the Generate "
                             "button always uses the full drawing); default: the native side on a GPU, half of it "
                             "on the CPU")
    serving = parse.add_argument_group("serving")
    serving.add_argument("--host", default="127.0.0.1",
                         help="address to listen on; 0.0.0.0 shares the app on your LAN (default: 127.0.0.1)")
    serving.add_argument("--port", type=port_number, default=7860, help="default: 7860")
    serving.add_argument("--share", action="store_true",
                         help="also ask Gradio for a public share link (needs the internet; without it the app "
                              "says so and keeps running locally)")
    serving.add_argument("--auth", type=credentials, action="append", metavar="USER:PASS",
                         help="require this login for the pages and the API; repeat for more users")
    serving.add_argument("--auth-file", type=Path, metavar="FILE", help="logins from a file, one USER:PASS a line")
    serving.add_argument("--queue-size", type=positive, default=DEFAULT_QUEUE_SIZE,
                         help=f"most requests waiting for the GPU; more are refused as busy (default: "
                              f"{DEFAULT_QUEUE_SIZE})")
    parse.add_argument("--debug", action="store_true",
                       help="print the full traceback of a start-up error (default: one line saying what went "
                            "wrong and what to do)")
    return parse


def logins(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    pairs = list(args.auth or [])
    if args.auth_file is not None:
        pairs += read_auth_file(args.auth_file)
    return pairs or None


def print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", flush=True)


def load_studio(args: argparse.Namespace) -> tuple[Studio, int]:
    """Load every model and warm it up at the shapes the app serves (the live preview side
    included), so the first click waits for neither weights nor compilation. Returns the studio
    and the preview side."""
    started = time.perf_counter()
    studio = Studio.load(**load_arguments(args), progress=print_progress, model_thread=True)  # type: ignore[arg-type]
    preview = preview_side(studio, args.preview_size)
    print("Warming up each task once ...", flush=True)
    studio.warm_up(preview)
    print(f"Models ready in {time.perf_counter() - started:.0f} s. {studio.source.describe()}", flush=True)
    for task, reason in studio.unavailable_tasks.items():
        print(f"  {task} is unavailable: {reason}", flush=True)
    return studio, preview


def preview_side(studio: Studio, requested: int | None) -> int:
    """The requested live preview side, checked against the loaded source; else its default."""
    limits = studio.limits
    if requested is None:
        return limits.default_preview_side(studio.device.type)
    if requested not in limits.preview_sides:
        raise InputError(f"--preview-size {requested} is not one of {', '.join(map(str, limits.preview_sides))}")
    return requested


def lan_address() -> str | None:
    """This machine's address on the local network, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(LAN_PROBE)
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def serve(demo: gr.Blocks, *, host: str, port: int, share: bool = False,
          auth: list[tuple[str, str]] | None = None) -> Served:
    """Start the server in the background with the app's limits: uploads up to MAX_UPLOAD, no file
    served from outside SERVED_DIRS and Gradio's own cache, a login on pages and API when given."""
    try:
        demo.launch(server_name=host, server_port=port, share=share, auth=auth, max_file_size=MAX_UPLOAD,
                    allowed_paths=[str(path) for path in SERVED_DIRS], css=PAGE_CSS, prevent_thread_lock=True,
                    quiet=True)
    except OSError as error:  # taken since check_port looked
        raise PortTakenError(host, port, str(error).splitlines()[0]) from error
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    lan = lan_address()
    return Served(local_url=f"http://{local_host}:{demo.server_port}",
                  lan_url=f"http://{lan}:{demo.server_port}" if lan else None,
                  share_url=demo.share_url)


def report(served: Served, *, host: str, share: bool) -> None:
    print(f"Local:  {served.local_url}", flush=True)
    if served.lan_url is None:
        print("LAN:    this machine has no network address", flush=True)
    elif host in ("0.0.0.0", "::"):
        print(f"LAN:    {served.lan_url}", flush=True)
    else:
        print(f"LAN:    {served.lan_url} (only after restarting with --host 0.0.0.0)", flush=True)
    if share and served.share_url:
        print(f"Share:  {served.share_url}", flush=True)
    elif share:
        print("Share:  no share link could be made (is this machine offline?). The app keeps running at the "
              "addresses above.", flush=True)


def start(args: argparse.Namespace) -> tuple[gr.Blocks, list[tuple[str, str]] | None]:
    """Check the logins and the port, load the models, build the page and serve it."""
    auth = logins(args)
    check_port(args.host, args.port)
    studio, preview = load_studio(args)
    demo = build_app(studio, queue_size=args.queue_size, preview_side=preview)
    served = serve(demo, host=args.host, port=args.port, share=args.share, auth=auth)
    report(served, host=args.host, share=args.share)
    return demo, auth


def failure(error: Exception, prog: str) -> tuple[int, str]:
    """The exit status and the one line a start-up error ends the program with."""
    if isinstance(error, (ValueError, OSError, argparse.ArgumentTypeError)):
        return 2, f"{prog}: error: {error}\n"
    if isinstance(error, RuntimeError):
        return 1, f"{prog}: could not load the models: {error}\n"
    return 1, f"{prog}: could not start: {type(error).__name__}: {error} (run with --debug for the traceback)\n"


def interrupted(prog: str) -> NoReturn:
    """End the process at once after Ctrl-C during start-up. The model thread may be inside torch
    (loading, converting); a normal exit would run C++ destructors under it, which abort ("terminate
    called without an active exception"). Files are written to .part names and renamed when whole,
    so nothing half-written is left under a real name."""
    print(f"{prog}: interrupted before serving; no model file was left half-written", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)


def main(argv: Sequence[str] | None = None) -> None:
    parse = parser()
    args = parse.parse_args(argv)
    try:
        demo, auth = start(args)
    except KeyboardInterrupt:
        interrupted(parse.prog)
    except Exception as error:  # every start-up error ends in one line, unless --debug asks for more
        if args.debug:
            raise
        parse.exit(*failure(error, parse.prog))
    if auth:
        print(f"Login required ({len(auth)} user{'s' if len(auth) > 1 else ''}).", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main(sys.argv[1:])
