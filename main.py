"""mooltiproxy command line: `mooltiproxy` or `python -m main`, with [--config PATH] [--check], or
`bans` / `unban ADDRESS` for the operator."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mooltiproxy import __version__
from mooltiproxy.config.loader import load_config
from mooltiproxy.config.masterkey import resolve_master_key
from mooltiproxy.core import accelerators
from mooltiproxy.core.errors import ConfigError
from mooltiproxy.operations import ban_commands
from mooltiproxy.operations.certificates import generate_self_signed
from mooltiproxy.operations.init import init
from mooltiproxy.operations.logs import setup_logging
from mooltiproxy.operations.routes import route_lines
from mooltiproxy.server import serve, tls_context
from mooltiproxy.workers import run_workers

CONFIG_ENV = "MOOLTIPROXY_CONFIG"
DEFAULT_CERTFILE = "certificates/cert.pem"
DEFAULT_KEYFILE = "certificates/key.pem"

log = logging.getLogger("mooltiproxy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mooltiproxy",
        description="mooltiproxy (also run as python -m main): an API-translation proxy for LLM servers",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV) or "config.yaml",
        help=f"the YAML config file (default: ${CONFIG_ENV}, else ./config.yaml)",
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config, print a summary and exit (0: valid, 1: invalid)"
    )
    parser.add_argument("--routes", action="store_true", help="with --check: print each route, its target and mappers")
    parser.add_argument("--version", action="version", version=f"mooltiproxy {__version__}")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["init", "bans", "unban"],
        help="init: write --config from the documented template, and a proxy key beside it; bans: list the "
        "banned addresses; unban ADDRESS: lift a ban (through the running proxy's system.admin_socket, else on "
        "its state store)",
    )
    parser.add_argument("address", nargs="?", help="the address to unban")
    tls = parser.add_argument_group("self-signed certificate")
    tls.add_argument("--gen-cert", action="store_true", help="write a self-signed certificate and key, and exit")
    tls.add_argument("--certfile", help="where to write the certificate (default: certificates/cert.pem)")
    tls.add_argument("--keyfile", help="where to write the key (default: certificates/key.pem)")
    tls.add_argument(
        "--hostname", action="append", default=[], help="a name or address the certificate is for (repeatable)"
    )
    tls.add_argument("--force", action="store_true", help="replace existing certificate and key files")
    return parser.parse_args(argv)


def gen_cert(args: argparse.Namespace) -> int:
    # The defaults sit next to the config file, where system.certfile / keyfile look for them.
    folder = Path(args.config).resolve().parent
    certfile = Path(args.certfile) if args.certfile else folder / DEFAULT_CERTFILE
    keyfile = Path(args.keyfile) if args.keyfile else folder / DEFAULT_KEYFILE
    try:
        generate_self_signed(certfile, keyfile, args.hostname, force=args.force)
    except ConfigError as error:
        print(f"mooltiproxy: {error}", file=sys.stderr)
        return 1
    print(f"wrote {certfile} and {keyfile} (mode 0600)")
    return 0


def report(config_path: str, error: ConfigError) -> None:
    print(f"mooltiproxy: {config_path}: {len(error.problems)} problem(s):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gen_cert:
        return gen_cert(args)
    if args.command == "init":
        return init(Path(args.config))
    setup_logging(debug=False)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        report(args.config, error)
        return 1
    setup_logging(config.system.debug, config.system.log_format == "json", config.system.log_access)
    if args.command is not None:
        status: int = accelerators.run(ban_commands.run(config, args.command, args.address))
        return status
    for warning in config.warnings:
        log.warning("%s", warning)
    try:
        master_key, key_warnings = resolve_master_key(config.system.masterkey, os.environ)
    except ConfigError as error:
        if not args.check:
            report(args.config, error)
            return 1
        # The proxy key lives in the environment of the server, not in the file being checked.
        log.warning("the file is valid, but serving from here would refuse to start: %s", error)
        key_warnings = []
    for warning in key_warnings:
        log.warning("%s", warning)
    if args.check:
        if config.system.ssl:
            try:
                tls_context(config.system)  # the files the proxy would load, loaded
            except ConfigError as error:
                report(args.config, error)
                return 1
        print(f"{args.config}: valid; {config.summary()}")
        for note in config.notes:
            print(note)
        if args.routes:
            print("\n".join(route_lines(config)))
        return 0
    for note in config.notes:
        log.info("%s", note)
    if config.system.workers > 1:
        return run_workers(config, master_key)
    try:
        accelerators.run(serve(config, master_key))
    except ConfigError as error:
        report(args.config, error)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
